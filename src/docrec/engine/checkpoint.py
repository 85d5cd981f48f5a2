"""One checkpoint format: atomic writes, verified weights-only loads, top-k retention."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1
_MARKER = "docrec_checkpoint"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message says which and why."""


#: What torch.save's zip writer says when a write comes up short (a full disk, a quota).
_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed", "file write failed")


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file intact."""
    path = Path(path)
    state = {**state, _MARKER: FORMAT_VERSION}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}; the previous checkpoint is untouched") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}; the previous checkpoint is untouched") from exc
    except RuntimeError as exc:
        Path(tmp).unlink(missing_ok=True)
        if not any(m in str(exc) for m in _WRITE_FAILED):
            raise
        free = shutil.disk_usage(path.parent).free
        raise CheckpointError(f"cannot write checkpoint {path}: the write stopped short ({str(exc).strip()}), most "
                              f"likely a full disk: {free / 1e6:.0f} MB free there; the previous checkpoint is "
                              f"untouched") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_partial(folder: str | Path) -> list[Path]:
    """Delete the temp files :func:`save_atomic` leaves when the process is killed mid-write
    (``.NAME.XXXX.tmp``; never read as checkpoints, each as large as one); returns those removed.
    Call it only from the run that owns ``folder``, before it saves."""
    removed = []
    for tmp in sorted(Path(folder).glob(".*.pt.*.tmp")):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def resolve(path: str | Path, prefer: str = "last") -> Path:
    """A checkpoint file, or a run dir's ``checkpoints/<prefer>.pt`` (falling back to last.pt)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / f"{prefer}.pt" if (folder / f"{prefer}.pt").is_file() else folder / "last.pt"
    return path


def load(path: str | Path, map_location="cpu", prefer: str = "last") -> dict:
    """Load with ``weights_only=True`` (no code runs) and check it is a complete docrec checkpoint."""
    path = resolve(path, prefer)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(f"{path}: not a loadable checkpoint (refused by the weights-only loader or "
                              f"truncated): {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get(_MARKER) != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a docrec checkpoint (format marker missing)")
    return state


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain tensors/lists (weights-only loadable)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    py = state["python"]
    random.setstate((state["python_version"], tuple(int(v) for v in py[:-1]), None if py[-1] == -1 else py[-1]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TopK:
    """Keep the k best checkpoints by a metric; the rest are deleted."""

    def __init__(self, folder: Path, k: int, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"trainer.monitor_mode must be 'max' or 'min', got {mode!r}")
        self.folder, self.k, self.mode = folder, k, mode
        self.entries: list[tuple[float, str]] = []

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def add(self, value: float, step: int, state: dict) -> Path | None:
        """Save ``state`` if it enters the top k; returns its path or None."""
        if self.k <= 0:
            return None
        ranked = sorted(self.entries, key=lambda e: e[0], reverse=self.mode == "max")
        if len(ranked) >= self.k and not self.better(value, ranked[-1][0]):
            return None
        path = save_atomic(state, self.folder / f"step{step:08d}.pt")
        self.entries.append((value, path.name))
        ranked = sorted(self.entries, key=lambda e: e[0], reverse=self.mode == "max")
        for _, name in ranked[self.k:]:
            (self.folder / name).unlink(missing_ok=True)
        self.entries = ranked[: self.k]
        return path

    def state_dict(self) -> dict:
        return {"entries": [[v, n] for v, n in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.entries = [(float(v), str(n)) for v, n in state["entries"]]
