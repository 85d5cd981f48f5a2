"""Checkpoints: atomic writes, weights-only loads, top-k retention, resumable sampling."""

import os
import pickle

import pytest
import torch

from docrec.data.sampler import ResumableSampler
from docrec.engine import checkpoint as ckpt


def test_round_trip_and_marker(tmp_path):
    path = ckpt.save_atomic({"w": torch.arange(3), "cfg": {"a": [1, 2.5, None, "x"]}}, tmp_path / "last.pt")
    state = ckpt.load(path)
    assert torch.equal(state["w"], torch.arange(3)) and state["cfg"] == {"a": [1, 2.5, None, "x"]}
    assert ckpt.load(tmp_path)["cfg"]["a"][0] == 1  # a run folder resolves to its last.pt
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    path = ckpt.save_atomic({"v": torch.tensor(1)}, tmp_path / "last.pt")

    def broken_save(obj, fh):
        fh.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ckpt.CheckpointError, match="previous checkpoint is untouched"):
        ckpt.save_atomic({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_short_write_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    # What torch's zip writer raised when CI's disk filled: a RuntimeError, not an OSError.
    path = ckpt.save_atomic({"v": torch.tensor(1)}, tmp_path / "last.pt")

    def short_save(obj, fh):
        fh.write(b"partial bytes")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 111886912 vs 111886800")

    monkeypatch.setattr(torch, "save", short_save)
    with pytest.raises(ckpt.CheckpointError, match=r"last\.pt: the write stopped short .*unexpected pos.*full disk: "
                                                   r"\d+ MB free there; the previous checkpoint is untouched"):
        ckpt.save_atomic({"v": torch.tensor(2)}, path)
    monkeypatch.setattr(torch, "save", lambda obj, fh: (_ for _ in ()).throw(RuntimeError("something else")))
    with pytest.raises(RuntimeError, match="^something else$"):  # not a write failure: raised as it is
        ckpt.save_atomic({"v": torch.tensor(3)}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unwritable_output_dir(tmp_path):
    # A path under a regular file can never be created, even as root.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ckpt.CheckpointError, match="cannot write checkpoint .*previous checkpoint is untouched"):
        ckpt.save_atomic({"v": 1}, tmp_path / "afile" / "last.pt")


def test_truncated_and_foreign_files_refused(tmp_path):
    good = ckpt.save_atomic({"w": torch.zeros(1000)}, tmp_path / "a.pt")
    data = good.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="not a loadable checkpoint"):
        ckpt.load(tmp_path / "cut.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a docrec checkpoint"):
        ckpt.load(tmp_path / "plain.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": evil, ckpt._MARKER: ckpt.FORMAT_VERSION}))
    with pytest.raises(ckpt.CheckpointError, match="weights-only"):
        ckpt.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_topk_keeps_best(tmp_path):
    top = ckpt.TopK(tmp_path, k=2, mode="max")
    for step, value in enumerate([0.1, 0.5, 0.3, 0.7, 0.2]):
        top.add(value, step, {"v": value})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step00000001.pt", "step00000003.pt"]
    assert [v for v, _ in top.entries] == [0.7, 0.5]


def test_sampler_resume_and_shards():
    s = ResumableSampler(10, seed=3, rank=0, world_size=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full and sorted(s) == list(range(10))
    ranks = [ResumableSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for r in ranks:
        r.set_epoch(2)
    shards = [list(r) for r in ranks]
    assert all(len(x) == 4 for x in shards) and {i for x in shards for i in x} == set(range(10))
