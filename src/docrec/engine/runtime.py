"""Where and how a run executes: device, precision, distributed setup, seeding."""

from __future__ import annotations

import contextlib
import enum
import os
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Runtime:
    """Resolved execution settings of this process."""

    device: torch.device
    precision: str  # bf16 | fp16 | fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self):
        """bf16/fp16 autocast on the run's device, or nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={spec} but no CUDA device is available (use auto or cpu)")
    return dev


def setup(device: str = "auto", precision: str = "auto", channels_last: str | bool = "auto") -> Runtime:
    """Resolve device/precision and join the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if world > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if precision == "auto":
        precision = "bf16" if dev.type == "cuda" else "fp32"
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"trainer.precision must be auto, bf16, fp16 or fp32, got {precision!r}")
    if channels_last == "auto":  # oneDNN's convolutions gain too: a CPU training step 3.0 -> 2.4 s (README)
        channels_last = dev.type in ("cuda", "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return Runtime(dev, precision, bool(channels_last), rank, world, local)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; deterministic mode also forces deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def broadcast_str(value: str, rt: Runtime) -> str:
    """Rank 0's string on every rank (e.g. the run dir), so all ranks agree."""
    if not rt.distributed:
        return value
    obj = [value]
    dist.broadcast_object_list(obj, src=0)
    return obj[0]


def all_reduce_mean(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Mean over ranks (identity when not distributed)."""
    if rt.distributed:
        t = t.clone()
        dist.all_reduce(t)
        t /= rt.world_size
    return t


#: Dense bf16 tensor-core peak FLOP/s by card name (vendor data sheets), for the model FLOP utilisation.
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10": 125e12}


def peak_bf16_flops(device: torch.device) -> float | None:
    """The card's dense bf16 peak (the first ``PEAK_BF16`` name in the device's name); None on a CPU
    or an unlisted card."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


#: On a CPU, a run whose measured ETA exceeds this many hours gets a note naming experiment=cpu.
CPU_ETA_NOTE_HOURS = 2.0


def cpu_speed_note(rt: Runtime, seconds_per_step: float, remaining_steps: int,
                   experiments: list[str] | tuple[str, ...] = ()) -> str | None:
    """What a CPU run prints once its first steps are measured: speed, ETA, and when the ETA is over
    ``CPU_ETA_NOTE_HOURS``, what to do: ``experiment=cpu`` when the run is not on it (the config is
    sized for a GPU), else that the machine is slower than that experiment assumes. None on a GPU."""
    if rt.device.type != "cpu":
        return None
    eta_h = seconds_per_step * remaining_steps / 3600
    eta = f"{eta_h:.1f} h" if eta_h >= 1 else f"{eta_h * 60:.0f} min"
    note = f"cpu: {seconds_per_step:.1f} s per step measured, {remaining_steps} steps to go: about {eta}"
    if eta_h <= CPU_ETA_NOTE_HOURS:
        return note
    if "cpu" in experiments:
        return note + (". experiment=cpu is sized for about an hour on 2 idle cores: this machine is slower "
                       "(other processes on its cores? `top` shows them), or trainer.max_steps was raised")
    return note + (". This config is sized for a GPU; without one, `experiment=cpu` (ResNet-18, a slim "
                   "reader, about an hour on 2 cores) shows the network learn")


def hydra_choices(group: str) -> list[str]:
    """The options of a config group this Hydra run composed (``experiment=[cpu,finetune]`` gives
    both: Hydra records a list of options among the overrides only); [] outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    choice = hc.runtime.choices.get(group)
    if isinstance(choice, str):
        return [choice]
    for override in OverridesParser.create().parse_overrides(list(hc.overrides.task)):
        if override.key_or_group == group and not override.is_delete():
            value = override.value()
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def alive_pids(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still exist and are not zombies (Linux /proc)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


class StopReason(enum.IntEnum):
    """Why the loop ends before ``trainer.max_steps``. Integers, so DDP ranks agree on one with a
    single all-reduce (the largest wins: early stopping is decided on rank 0, a signal may reach
    the ranks at different steps)."""

    NONE = 0
    SIGINT = signal.SIGINT
    SIGTERM = signal.SIGTERM
    EARLY_STOP = 1000


class StopFlag:
    """SIGTERM/SIGINT set the reason; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self) -> None:
        self.reason = StopReason.NONE
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}

    def _set(self, signum, frame) -> None:
        self.reason = StopReason(signum)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def agree_to_stop(stop: StopFlag, rt: Runtime) -> None:
    """DDP: every rank takes the largest stop reason of all ranks, so they stop at the same step (or
    the others hang in the next all-reduce)."""
    flag = torch.tensor([int(stop.reason)], device=rt.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if stop.reason is StopReason.NONE:
        stop.reason = StopReason(int(flag))
