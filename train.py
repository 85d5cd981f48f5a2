"""docrec training entry point: `python train.py [overrides]` (see README and configs/)."""

import os
import sys

import hydra
from omegaconf import DictConfig


def _rank_overrides() -> None:
    # Under torchrun only rank 0 writes Hydra's output dir; the others learn it by broadcast.
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        tmp = os.environ.get("TMPDIR", "/tmp")
        sys.argv += [f"hydra.run.dir={tmp}/docrec_rank{rank}_{os.getpid()}", "hydra.output_subdir=null",
                     "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from docrec.engine.trainer import train

    run_dir = HydraConfig.get().runtime.output_dir
    metrics = train(cfg, run_dir)
    if int(os.environ.get("RANK", "0")) > 0:
        os.rmdir(run_dir)  # the placeholder dir of _rank_overrides; rank 0's run dir holds everything
    # The optuna sweeper optimizes the returned value.
    return metrics.get(cfg.trainer.monitor)


if __name__ == "__main__":
    if "LOCAL_RANK" in os.environ:  # a torchrun rank dies with its launcher, however the launcher dies
        from docrec.data.loading import die_with_parent

        die_with_parent(os.getppid())
    _rank_overrides()
    main()
