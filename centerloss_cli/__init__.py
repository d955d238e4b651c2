"""centerloss: reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016).

The Python API, for notebooks and for your own models:

    from centerloss_cli import CenterLoss, LeNetPP, TrainConfig, train, load_features

`CenterLoss` is a drop-in module for any number of classes and any feature dimension; `train(config)`
trains (or resumes) one run into its run folder, as `centerloss train` does; `run_sweep` is `centerloss
sweep`; `load_features(run_dir, epoch)` reads back the 2-D features an epoch saved; `write_report(paths, out)`
is `centerloss report`. They work in a
plain script (no `if __name__ == "__main__":` needed), a notebook and a REPL. The names are imported on
first use, so that `import centerloss_cli` (and the CLI's checking of its options) does not wait for torch.
"""
import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_API = {
    "CenterLoss": "core.center_loss",
    "LeNetPP": "core.model",
    "TrainConfig": "settings.config",
    "resolve_config": "settings.config",
    "RunResult": "rundir.folder",
    "load_features": "rundir.files",
    "read_metrics": "rundir.files",
    "train": "engine.training",
    "train_stacked": "engine.training",
    "run_sweep": "launch.sweep",
    "Runtime": "engine.runtime",
    "write_report": "plots.report",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'centerloss_cli' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
