"""A run as the machinery drives it: its numerics (core's TrainState) and what its folder keeps beside them
(the metrics of its finished epochs, the CPU thread count it trains with, its data's fingerprint), and its
checkpoint, which holds all of it and resumes it exactly."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..rundir.files import FORMAT
from ..settings.schema import to_dict

if TYPE_CHECKING:
    from ..core.state import TrainState


@dataclass
class Run:
    state: TrainState
    threads: int  # CPU threads it trains with: CPU results depend on the count, so a resume keeps it
    fingerprint: str = ""  # of the data it trains on (dataset/fetch.fingerprint)
    history: list[dict[str, float]] = field(default_factory=list)  # a row per finished epoch, metrics.csv's
    tensorboard: Any = None  # its TensorBoard writer, with --tensorboard (plots/tensorboard.py)
    curves_at: float = -math.inf  # when its curves were last sent to be drawn

    @property
    def run_dir(self) -> Path:
        return self.state.config.run_dir


def checkpoint_of(run: Run) -> dict[str, Any]:
    """What checkpoint.pt holds: the whole training state, its settings and the data's fingerprint."""
    state = run.state
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT, "config": to_dict(state.config), "data_fingerprint": run.fingerprint,
        "n_train": state.n_train, "model": state.model.state_dict(), "center_loss": state.center_loss.state_dict(),
        "optimizer": state.optimizer.state_dict(), "epoch": state.epoch, "step": state.step, "batch": state.batch,
        "loss_sums": state.loss_sums.detach().cpu(), "seconds": state.seconds, "threads": run.threads,
        "history": run.history, "rng": rng,
    }


def restore(run: Run, ckpt: dict[str, Any]) -> None:
    """Put a checkpoint (rundir.files.load_checkpoint's, checked) back into a run made for its settings."""
    state = run.state
    state.model.load_state_dict(ckpt["model"])
    state.center_loss.load_state_dict(ckpt["center_loss"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.epoch, state.step, state.batch = ckpt["epoch"], ckpt["step"], ckpt["batch"]
    state.loss_sums = ckpt["loss_sums"].to(state.loss_sums.device)
    state.seconds, run.threads = ckpt["seconds"], ckpt["threads"]
    run.history = list(ckpt["history"])
    # Training draws nothing from these (the data order is a function of seed and step), but
    # restoring them keeps any later random draw identical to an uninterrupted run.
    torch.set_rng_state(ckpt["rng"]["torch"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
