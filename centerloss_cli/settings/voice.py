"""How the tool names what the caller can do: flags on the command line, arguments for a Python caller, a
sweep's remedies for the runs of a sweep. Every refusal and hint that names a setting asks it."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from .config import SCHEMA, TrainConfig


@dataclass(frozen=True)
class Voice:
    """How refusals and hints name what the caller can do: flags for the command line, arguments for a
    Python caller, and a sweep's remedies for the runs of a sweep."""

    python: bool = False
    sweep: bool = False

    def option(self, name: str, value: Any = True) -> str:
        """A setting or argument as the caller gives it: `--lambda`, or `lam=...`."""
        if self.python:
            return f"{name}={value}" if isinstance(value, str) else f"{name}={value!r}"
        return SCHEMA[name].flag if name in SCHEMA else f"--{name}"

    def sweep_again(self) -> str:
        """How a sweep is resumed: the same call again, which skips what is finished."""
        return "the same run_sweep(...) call again" if self.python else "the same sweep command again"

    def resume_command(self, config: TrainConfig) -> str:
        """The call that continues this run; on the command line quoted so that it pastes into a shell."""
        if self.sweep:
            return self.sweep_again()
        if self.python:
            return "train(config, resume=True)"
        return shlex.join(["centerloss", "train", "--resume", "--output-dir", config.output_dir, "--name",
                           config.run_name])

    def remedy(self) -> str:
        if self.sweep:
            return f"give the sweep another {self.option('output_dir', '...')}, or move that folder away"
        given = "arguments" if self.python else "flags"
        return (f"drop those {given} to continue it as saved, give {self.option('name', '...')} to train a new run "
                f"beside it, or {self.option('overwrite')} to replace it")
