"""Users' exports as the field's tools write them: Transkribus, eScriptorium/kraken, foreign paths,
folders holding several formats, and mixed sources as the README writes them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from docrec.data.loading import load_splits
from docrec.engine.config import check_config, data_sources
from docrec.formats import IMAGE_RULES, load, root_element
from docrec.formats import alto as alto_fmt
from docrec.formats import pagexml as page_fmt
from docrec.pages import DataError, Line, Page, Region
from docrec.realdata import REALDATA
from tests.conftest import REPO, compose_cfg, make_toy_pages

PARENT, BY_NAME = IMAGE_RULES[1], IMAGE_RULES[3]


def tiny_page(image: Path, text: str = "Ab 12") -> Page:
    """A one-line page whose image is written to ``image`` (its folder is created)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (120, 60), 255).save(image)
    return Page(image=image.name, width=120, height=60, root=image.parent, source="memory",
                regions=[Region("r1", [(2, 2), (118, 2), (118, 58), (2, 58)])],
                lines=[Line("l1", [(5, 10), (110, 10), (110, 40), (5, 40)], text=text, region="r1")])


def write_as(fmt, page: Page, out: Path, image_name: str) -> Path:
    """``page`` written in ``fmt`` (the module) at ``out``, naming its image ``image_name`` as the file says."""
    if fmt is page_fmt:
        return page_fmt.write(page, out, image_name=image_name)
    return alto_fmt.write(page, out, image_name=image_name, creator_version="test")


def convert(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/convert.py", *map(str, args)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


# ---- Transkribus: doc/*.jpg, doc/page/*.xml naming the image by file name


def transkribus_export(root: Path, docs: tuple[str, ...] = ("doc",), pages: int = 2) -> Path:
    """Transkribus' export layout, with its mets.xml and metadata.xml beside the PAGE files."""
    for doc in docs:
        for i in range(pages):
            page = tiny_page(root / doc / f"{i:04d}.jpg", text=f"{doc} {i}")
            write_as(page_fmt, page, root / doc / "page" / f"{i:04d}.xml", f"{i:04d}.jpg")
        (root / doc / "mets.xml").write_text('<?xml version="1.0"?>\n<mets:mets xmlns:mets="http://www.loc.gov/'
                                             'METS/"><mets:fileSec/></mets:mets>\n', encoding="utf-8")
        (root / doc / "metadata.xml").write_text("<trpDocMetadata><title>x</title></trpDocMetadata>\n",
                                                 encoding="utf-8")
    return root


def test_a_transkribus_export_reads_unchanged_and_says_where_its_images_were(tmp_path):
    root = transkribus_export(tmp_path / "export", docs=("doc1", "doc2"))
    result = load("pagexml", root)
    # Both documents have a 0000.jpg: each page takes the one of its own document (the nearest).
    assert [(Path(p.source).relative_to(root).as_posix(), p.image_path.resolve().relative_to(root).as_posix(),
             p.lines[0].text) for p in result.pages] == [
        ("doc1/page/0000.xml", "doc1/0000.jpg", "doc1 0"), ("doc1/page/0001.xml", "doc1/0001.jpg", "doc1 1"),
        ("doc2/page/0000.xml", "doc2/0000.jpg", "doc2 0"), ("doc2/page/0001.xml", "doc2/0001.jpg", "doc2 1")]
    assert list(result.found) == [PARENT] and len(result.found[PARENT]) == 4
    assert sorted((f.name, r) for f, r in result.left) == [("metadata.xml", "trpDocMetadata")] * 2 + [
        ("mets.xml", "mets")] * 2
    notes = result.notes("pagexml")
    assert notes[0].startswith(f"4 image(s) found {PARENT}, e.g. {root / 'doc1/page/0000.xml'} -> ")
    assert notes[1].startswith("left 4 file(s) that are not pagexml (2 <mets>, 2 <trpDocMetadata>)")


def test_convert_and_train_take_a_transkribus_export(tmp_path):
    root = transkribus_export(tmp_path / "doc_export")
    out = tmp_path / "out.jsonl"
    run = convert("--format", "pagexml", root, "--out", out)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == f"wrote {out}: 2 pages, 2 regions, 2 lines (0 with empty text), 10 characters"
    assert f"2 image(s) found {PARENT}" in run.stdout
    # What train.py data=pagexml reads, before any training step.
    cfg = compose_cfg(["data=pagexml", f"data.path={root}", "data.val_fraction=0.5"])
    check_config(cfg)
    splits = load_splits(cfg.data)
    assert len(splits.train) == len(splits.val) == 1
    assert splits.train[0].image_path.resolve() == (root / "doc" / "0001.jpg").resolve()


def test_one_file_of_a_transkribus_export_reads_when_the_export_has_its_mets(tmp_path):
    root = transkribus_export(tmp_path / "export")
    # doc/mets.xml marks the export's top: doc/ is the boundary, so page/0000.xml reaches up to its image.
    (page,) = load("pagexml", root / "doc" / "page" / "0000.xml").pages
    assert page.image_path.resolve() == (root / "doc" / "0000.jpg").resolve()
    # Without it the boundary is the folder passed, and the error says what to pass.
    (root / "doc" / "mets.xml").unlink()
    with pytest.raises(DataError, match=r"0000\.xml: image '0000\.jpg': image file not found \(looked beside it, "
                                        r"in its parent folder, in .*page and .*pass the export's top folder"):
        load("pagexml", root / "doc" / "page" / "0000.xml")
    assert len(load("pagexml", root / "doc").pages) == 2


# ---- absolute paths from another machine, traversal, ambiguity


@pytest.mark.parametrize("fmt", [page_fmt, alto_fmt], ids=["pagexml", "alto"])
@pytest.mark.parametrize("stored", [r"C:\Users\ann\Transkribus\doc\0000.jpg", "/home/kraken/scans/0000.jpg",
                                    "file:///srv/escriptorium/media/0000.jpg"])
def test_an_absolute_path_from_another_machine_is_matched_by_file_name(tmp_path, fmt, stored):
    root = tmp_path / "export"
    page = tiny_page(root / "images" / "0000.jpg")
    write_as(fmt, page, root / "xml" / "0000.xml", stored)
    result = load(fmt.__name__.rsplit(".", 1)[1], root)
    (got,) = result.pages
    assert got.image_path.resolve() == (root / "images" / "0000.jpg").resolve()
    assert list(result.found) == [BY_NAME]


def test_an_image_name_that_matches_two_files_is_an_error_naming_both(tmp_path):
    root = tmp_path / "export"
    tiny_page(root / "a" / "0000.jpg")
    page = tiny_page(root / "b" / "0000.jpg")
    src = write_as(page_fmt, page, root / "xml" / "deep" / "0000.xml", "/elsewhere/0000.jpg")
    with pytest.raises(DataError, match=re.escape(f"{src}: image '/elsewhere/0000.jpg': its file name matches 2 "
                                                  f"files under {root.resolve()}: {root.resolve() / 'a/0000.jpg'} "
                                                  f"and {root.resolve() / 'b/0000.jpg'}")):
        load("pagexml", root)


@pytest.mark.parametrize("fmt", [page_fmt, alto_fmt], ids=["pagexml", "alto"])
def test_a_path_leaving_the_folder_passed_is_still_refused(tmp_path, fmt):
    outside = tiny_page(tmp_path / "etc" / "x.jpg")
    root = tmp_path / "data" / "export"
    src = write_as(fmt, outside, root / "page" / "p.xml", "../../../etc/x.jpg")
    name = fmt.__name__.rsplit(".", 1)[1]
    with pytest.raises(DataError, match=re.escape(f"{src}: image: path '../../../etc/x.jpg' escapes the dataset root")):
        load(name, root)
    # An absolute path of this machine outside the folder passed is refused too, not matched by name.
    tiny_page(root / "x.jpg")
    write_as(fmt, outside, src, str((tmp_path / "etc" / "x.jpg").resolve()))
    with pytest.raises(DataError, match="escapes the dataset root"):
        load(name, root)
    (page,) = load(name, root, allow_outside_root=True).pages
    assert page.image_path.resolve() == (tmp_path / "etc" / "x.jpg").resolve()


# ---- eScriptorium / kraken ALTO exports


def test_an_escriptorium_export_unzipped_reads_with_its_images_beside_or_apart(tmp_path):
    root = tmp_path / "export_doc_alto"
    # The zip's layout: ALTO files and images side by side, images named by their upload name ...
    write_as(alto_fmt, tiny_page(root / "page_1.png"), root / "page_1.xml", "page_1.png")
    # ... and a kraken file naming the image by the path it was segmented from.
    write_as(alto_fmt, tiny_page(root / "scans" / "p2.jpg", "xy"), root / "p2.xml", "/data/kraken/run/p2.jpg")
    result = load("alto", root)
    assert [p.image_path.resolve().relative_to(root.resolve()).as_posix() for p in result.pages] == [
        "scans/p2.jpg", "page_1.png"]
    assert {rule: len(hits) for rule, hits in result.found.items()} == {BY_NAME: 1}


# ---- folders holding several formats (predict's own output)


def test_each_xml_reader_takes_its_own_files_from_a_mixed_folder(tmp_path):
    out = tmp_path / "pred"
    for i in range(3):
        page = tiny_page(tmp_path / "scans" / f"{i}.png")
        page_fmt.write(page, out / f"{i}.xml")
        alto_fmt.write(page, out / f"{i}.alto.xml", creator_version="test")
    (out / "notes.xml").write_text("<notes/>", encoding="utf-8")
    page_res = load("pagexml", tmp_path)
    alto_res = load("alto", tmp_path)
    assert sorted(Path(p.source).name for p in page_res.pages) == ["0.xml", "1.xml", "2.xml"]
    assert sorted(Path(p.source).name for p in alto_res.pages) == ["0.alto.xml", "1.alto.xml", "2.alto.xml"]
    assert sorted(r for _, r in page_res.left) == ["alto"] * 3 + ["notes"]
    assert sorted(r for _, r in alto_res.left) == ["PcGts"] * 3 + ["notes"]
    assert [ln.text for p in page_res.pages for ln in p.lines] == [ln.text for p in alto_res.pages for ln in p.lines]


def test_a_broken_file_of_the_format_is_still_an_error(tmp_path):
    page = tiny_page(tmp_path / "0.png")
    good = page_fmt.write(page, tmp_path / "0.xml")
    (tmp_path / "1.xml").write_text(good.read_text(encoding="utf-8")[:300], encoding="utf-8")  # truncated
    with pytest.raises(DataError, match=r"1\.xml: malformed XML"):
        load("pagexml", tmp_path)
    (tmp_path / "1.xml").write_text("not xml at all", encoding="utf-8")  # no root to tell: the reader judges
    with pytest.raises(DataError, match=r"1\.xml: malformed XML"):
        load("pagexml", tmp_path)
    # A file named directly is read whatever its root, so a wrong one says what it is.
    alto_file = alto_fmt.write(page, tmp_path / "a" / "0.alto.xml", creator_version="test")
    with pytest.raises(DataError, match=r"0\.alto\.xml: not PAGE-XML: root element is <alto>"):
        load("pagexml", alto_file)


@pytest.mark.parametrize(("head", "root"), [
    (b'<?xml version="1.0"?>\n<!-- Transkribus -->\n<PcGts xmlns="x">', "PcGts"),
    (b'\xef\xbb\xbf<?xml version="1.0"?><?xml-stylesheet href="a"?><alto:alto xmlns:alto="x">', "alto"),
    (b'<!DOCTYPE alto SYSTEM "alto.dtd">\n<alto>', "alto"),
    (b'<!DOCTYPE x [<!ENTITY a "b"> <!ENTITY c "d">]><PcGts>', "PcGts"),
    ('<?xml version="1.0" encoding="UTF-16"?><PcGts>'.encode("utf-16"), "PcGts"),
    (b"garbage", None),
    (b"", None),
])
def test_the_root_element_is_read_from_the_first_bytes(tmp_path, head, root):
    (tmp_path / "f.xml").write_bytes(head)
    assert root_element(tmp_path / "f.xml") == root


# ---- mixed sources as the README writes them


def test_the_readme_mixed_sources_example_validates_each_source_on_its_own_pages(tmp_path):
    synth = make_toy_pages(tmp_path / "synth", n_pages=4, seed=1)
    letters = make_toy_pages(tmp_path / "letters", n_pages=6, seed=2)
    for page in load("manifest", letters / "train.jsonl").pages + load("manifest", letters / "val.jsonl").pages:
        alto_fmt.write(page, letters / "alto" / f"{page.image_path.stem}.xml", creator_version="test")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"python train\.py '(data\.sources=\[\{name: synth.*?\])'", readme)
    override = example.replace("/data/alto", str(letters))
    cfg = compose_cfg([override, f"data.path={synth / 'train.jsonl'}", f"data.val_path={synth / 'val.jsonl'}"])
    check_config(cfg)
    synth_src, letters_src = data_sources(cfg.data)
    assert synth_src.val_path == str(synth / "val.jsonl") and letters_src.val_path is None
    splits = load_splits(cfg.data)
    n_synth_val = len(load("manifest", synth / "val.jsonl").pages)
    assert [(s.name, s.n_train, s.n_val) for s in splits.sources] == [("synth", 3, n_synth_val), ("letters", 5, 1)]
    # The letters' validation page is one of their own ALTO pages, never the group's manifest.
    assert Path(splits.val[-1].source).suffix == ".xml" and Path(splits.val[-1].source).parent == letters / "alto"


def test_a_source_with_its_own_path_takes_its_own_val_path_or_none():
    cfg = compose_cfg(["data.path=/a/train.jsonl", "data.val_path=/a/val.jsonl"])
    OmegaConf.update(cfg, "data.sources", [{"name": "own", "path": "/b", "val_path": "/b/val"},
                                           {"name": "apart", "path": "/c"}, {"name": "group"}], merge=False)
    assert [(s.path, s.val_path) for s in data_sources(cfg.data)] == [
        ("/b", "/b/val"), ("/c", None), ("/a/train.jsonl", "/a/val.jsonl")]


# ---- real pages laid out as exports (skipped without ../shared/realdata)


@pytest.mark.skipif(not (REALDATA / "joseph_hooker_htr").is_dir(), reason="../shared/realdata is absent")
def test_real_pages_read_the_same_from_a_transkribus_layout(tmp_path):
    src = REALDATA / "joseph_hooker_htr"
    doc = tmp_path / "JDH" / "doc"
    (doc / "page").mkdir(parents=True)
    for xml in sorted(src.glob("*.xml")):
        shutil.copy(xml.with_suffix(".jpg"), doc)
        shutil.copy(xml, doc / "page")
    original = load("pagexml", src, strict=False)
    moved = load("pagexml", tmp_path / "JDH", strict=False)
    assert len(moved.pages) == len(original.pages) == 7 and len(moved.skipped) == 2
    assert [[ln.text for ln in p.lines] for p in moved.pages] == [[ln.text for ln in p.lines] for p in original.pages]
    assert len(moved.found[PARENT]) == 9


@pytest.mark.skipif(not (REALDATA / "cremma_testaments_de_poilus").is_dir(), reason="../shared/realdata is absent")
def test_real_alto_pages_read_with_absolute_paths_from_the_server_that_wrote_them(tmp_path):
    src = sorted((REALDATA / "cremma_testaments_de_poilus" / "data" / "batch-1").glob("*.xml"))[:3]
    for xml in src:
        name = re.search(r"<fileName>(.*?)</fileName>", xml.read_text(encoding="utf-8"))[1]
        shutil.copy(xml.parent / name, tmp_path / name)
        (tmp_path / "alto").mkdir(exist_ok=True)
        (tmp_path / "alto" / xml.name).write_text(xml.read_text(encoding="utf-8").replace(
            f"<fileName>{name}</fileName>", f"<fileName>/srv/escriptorium/media/documents/{name}</fileName>"),
            encoding="utf-8")
    original = [load("alto", xml).pages[0] for xml in src]
    moved = load("alto", tmp_path)
    assert [p.image_path.name for p in moved.pages] == [p.image_path.name for p in original]
    assert [[ln.text for ln in p.lines] for p in moved.pages] == [[ln.text for ln in p.lines] for p in original]
    assert len(moved.found[BY_NAME]) == 3


# ---- OCR-D workspaces: mets.xml with one file group per processing step


def ocrd_workspace(ws: Path, groups: tuple[str, ...]) -> Path:
    """A workspace: OCR-D-IMG/ and a PAGE file group per name, each listed in mets.xml."""
    files = {"OCR-D-IMG": []}
    for i in range(2):
        page = tiny_page(ws / "OCR-D-IMG" / f"{i:04d}.png", text=f"page {i}")
        files["OCR-D-IMG"].append((f"OCR-D-IMG/{i:04d}.png", "image/png"))
        for grp in groups:
            write_as(page_fmt, page, ws / grp / f"{grp}_{i:04d}.xml", f"OCR-D-IMG/{i:04d}.png")
            files.setdefault(grp, []).append((f"{grp}/{grp}_{i:04d}.xml", page_fmt.PAGE_MIMETYPE))
    grps = "".join(f'<mets:fileGrp USE="{use}">' + "".join(
        f'<mets:file ID="{use}_{k}" MIMETYPE="{mime}"><mets:FLocat LOCTYPE="OTHER" OTHERLOCTYPE="FILE" '
        f'xlink:href="{href}"/></mets:file>' for k, (href, mime) in enumerate(fs)) + "</mets:fileGrp>"
        for use, fs in files.items())
    (ws / "mets.xml").write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<mets:mets xmlns:mets="http://www.loc.'
                                 f'gov/METS/" xmlns:xlink="http://www.w3.org/1999/xlink"><mets:fileSec>{grps}'
                                 "</mets:fileSec></mets:mets>\n", encoding="utf-8")
    return ws


def test_an_ocrd_workspace_reads_the_page_group_whose_folder_is_passed(tmp_path):
    ws = ocrd_workspace(tmp_path / "ws", ("OCR-D-GT-SEG-LINE", "OCR-D-OCR"))
    with pytest.raises(DataError, match=re.escape(
            f"{ws / 'mets.xml'}: an OCR-D workspace with 2 PAGE file groups: OCR-D-GT-SEG-LINE (2 files in "
            f"{ws / 'OCR-D-GT-SEG-LINE'}), OCR-D-OCR (2 files in {ws / 'OCR-D-OCR'}); pass the folder of the one")):
        load("pagexml", ws)
    result = load("pagexml", ws / "OCR-D-OCR")
    assert [(Path(p.source).name, p.image_path.resolve()) for p in result.pages] == [
        ("OCR-D-OCR_0000.xml", (ws / "OCR-D-IMG/0000.png").resolve()),
        ("OCR-D-OCR_0001.xml", (ws / "OCR-D-IMG/0001.png").resolve())]
    assert list(result.found) == [PARENT]
    # One PAGE group: the workspace itself reads, and mets.xml is left as another format's file.
    one = ocrd_workspace(tmp_path / "one", ("OCR-D-GT-SEG-LINE",))
    result = load("pagexml", one)
    assert len(result.pages) == 2 and result.left == [(one / "mets.xml", "mets")]
