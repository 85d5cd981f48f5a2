"""Every reader fuzzed: mutated files (truncated, re-encoded, bytes and numbers replaced, blocks
duplicated, deep nesting, entities) read correctly or raise a DataError naming the file; never
another exception, never a hang, never memory beyond a bound."""

from __future__ import annotations

import os
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from docrec.formats import load
from docrec.pages import DataError
from docrec.realdata import REALDATA

FIX = Path(__file__).parent / "fixtures" / "formats"
#: (format, annotation file, files beside it the reader needs, where they go relative to the annotation)
SEEDS = {
    "pagexml2013": ("pagexml", FIX / "pagexml" / "page2013.xml", {FIX / "pagexml" / "page.png": "page.png"}),
    "pagexml2019": ("pagexml", FIX / "pagexml" / "page2019.xml", {FIX / "pagexml" / "page.png": "page.png"}),
    "alto": ("alto", FIX / "alto" / "page.xml", {FIX / "alto" / "page.jpg": "page.jpg"}),
    "funsd": ("funsd", FIX / "funsd" / "training_data" / "annotations" / "form1.json",
              {FIX / "funsd" / "training_data" / "images" / "form1.png": "../images/form1.png"}),
    "sroie": ("sroie", FIX / "sroie" / "data" / "box" / "000.csv", {FIX / "sroie" / "data" / "img" / "000.jpg":
                                                                    "../img/000.jpg"}),
}
#: Bytes and numbers a broken or hostile export holds.
NASTY = [b"NaN", b"nan", b"inf", b"-inf", b"1e309", b"-1e309", b"-5", b"9" * 400, b"0x1F", b"1.5e-300", b"",
         b"\x00", b"\xff\xfe", b"\xe9", b"\xc3", b"&amp;", b"&x;", b"&#0;", b'<!DOCTYPE d [<!ENTITY x "y">]>',
         b"]]>", b"<", b">", b'"', b"'", b",", b" ", b"\n", b"\\u0000", b"{", b"}", b"[", b"]", b"null", b"true",
         b'id="r1"', b'ID="b1"', b"<TextLine/>", b"<String/>"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")
MAX_BYTES = 64 << 20  # a few-KB file may not make a reader allocate more than this
#: Examples per reader: a few hundred in `make test`; scripts/bench_faults.py --fuzz-scale runs more.
SCALE = max(1, int(os.environ.get("DOCREC_FUZZ_SCALE", "1")))


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` after one to three mutations."""
    data = seed
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "replace", "number", "duplicate", "nest", "reencode"]))
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 64)))
        token = draw(st.one_of(st.sampled_from(NASTY), st.binary(max_size=8)))
        if op == "truncate":
            data = data[:i]
        elif op == "insert":
            data = data[:i] + token + data[i:]
        elif op == "replace":
            data = data[:i] + token + data[j:]
        elif op == "number":
            numbers = list(NUMBER.finditer(data))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                data = data[: m.start()] + draw(st.sampled_from(NASTY[:10])) + data[m.end():]
        elif op == "duplicate":
            data = data[:j] + data[i:j] + data[j:]
        elif op == "nest":
            depth = draw(st.sampled_from([50, 5000]))
            opener, closer = draw(st.sampled_from([(b"<a>", b"</a>"), (b"[", b"]"), (b'{"a":', b"}")]))
            data = data[:i] + opener * depth + closer * depth + data[i:]
        else:
            text = data.decode("utf-8", errors="replace")
            data = text.encode(draw(st.sampled_from(["utf-16", "latin-1", "utf-8-sig", "cp1252"])), errors="replace")
    return data


def read_mutant(fmt: str, target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` and read it: a DataError must name the file; memory stays bounded."""
    target.write_bytes(data)
    tracemalloc.start()
    try:
        load(fmt, target)
    except DataError as exc:
        assert target.name in str(exc), f"{type(exc).__name__} does not name the file: {exc}"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_BYTES, f"reading {len(data)} bytes took {peak / 2**20:.0f} MiB"


def _layout(tmp: Path, seed: Path, beside: dict[Path, str]) -> Path:
    """The seed's folder layout in ``tmp``; returns where the annotation goes."""
    target = tmp / "ann" / seed.name
    target.parent.mkdir(parents=True, exist_ok=True)
    for src, rel in beside.items():
        dst = (target.parent / rel).resolve()
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            shutil.copy(src, dst)
    return target


@pytest.mark.parametrize("name", list(SEEDS))
def test_a_mutated_file_reads_or_fails_naming_itself(name, tmp_path_factory):
    fmt, seed, beside = SEEDS[name]
    target = _layout(tmp_path_factory.mktemp(name), seed, beside)
    seed_bytes = seed.read_bytes()
    load(fmt, seed)  # the seed itself reads

    @settings(max_examples=150 * SCALE, deadline=5000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated(seed_bytes))
    def check(data: bytes) -> None:
        read_mutant(fmt, target, data)

    check()


def _manifest_seed(tmp: Path) -> Path:
    from docrec.formats import manifest

    (page,) = load("pagexml", FIX / "pagexml" / "page2019.xml").pages
    shutil.copy(FIX / "pagexml" / "page.png", tmp / "page.png")
    page.root = tmp
    page.image = "page.png"
    return manifest.write([page, page], tmp / "seed.jsonl")


def test_a_mutated_manifest_reads_or_fails_naming_itself(tmp_path):
    seed = _manifest_seed(tmp_path)
    target = tmp_path / "m.jsonl"

    @settings(max_examples=150 * SCALE, deadline=5000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated(seed.read_bytes()))
    def check(data: bytes) -> None:
        read_mutant("manifest", target, data)

    check()


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
@pytest.mark.parametrize("fmt, seed", [
    ("alto", "cremma_testaments_de_poilus/data/batch-1/TestamentsDePoilus_will_AD78_0014-0.xml"),
    ("pagexml", "joseph_hooker_htr/JDH_2_16_40_002.xml"),
    ("funsd", "funsd/dataset/training_data/annotations/0000971160.json"),
    ("sroie", "sroie/data/box/006.csv"),
])
def test_mutated_real_files_read_or_fail_naming_themselves(fmt, seed, tmp_path_factory):
    src = REALDATA / seed
    image = {"alto": src.with_suffix(".jpg"), "pagexml": src.with_suffix(".jpg"),
             "funsd": src.parents[1] / "images" / (src.stem + ".png"),
             "sroie": src.parents[1] / "img" / (src.stem + ".jpg")}[fmt]
    rel = image.name if fmt in ("alto", "pagexml") else f"../{image.parent.name}/{image.name}"
    target = _layout(tmp_path_factory.mktemp(fmt), src, {image: rel})

    @settings(max_examples=40 * SCALE, deadline=10000, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=mutated(src.read_bytes()))
    def check(data: bytes) -> None:
        read_mutant(fmt, target, data)

    check()
