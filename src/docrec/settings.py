"""What every layer needs from the Hydra config: a config path made absolute against the folder
the command was started in, and the error that names the config key at fault."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import to_absolute_path


def abs_path(path: str) -> Path:
    """A config path made absolute against the launch directory (Hydra's original cwd)."""
    try:
        return Path(to_absolute_path(path))
    except ValueError:  # outside a Hydra app (tests, scripts)
        return Path(path).absolute()


class ConfigError(ValueError):
    """An impossible or missing config value; the message names the key."""
