"""What a run folder records of the run beyond its epochs: config.json (the settings, the folder's format,
what made it: the tool's version and commit, the libraries', the machine) and checkpoint.pt (the whole
training state), each written atomically and read as untrusted. torch is imported only where a checkpoint
is read or written."""
from __future__ import annotations

import importlib.metadata
import io
import json
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CenterLossError
from ..settings.config import DEFAULTS, SCHEMA, TrainConfig
from ..settings.schema import from_dict, to_dict
from .files import CHECKPOINT, CONFIG_JSON, FORMAT, METRIC_COLUMNS
from .storage import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    import torch


# What a checkpoint holds (engine/run.checkpoint_of); one without them was not written by this version.
CHECKPOINT_KEYS = frozenset({"format", "config", "n_train", "model", "center_loss", "optimizer", "epoch", "step",
                             "batch", "loss_sums", "seconds", "threads", "history", "rng"})


# What every config.json of the tool's has recorded, from the first folder format on: settings by the tool's
# own names (plot_train_samples, center_update, log_every ...) and the torch they ran on. All of them together
# prove that a folder made before the mark was the tool's (folder.py); a few keys that many training scripts
# log (lambda, alpha, seed, torch_version) do not.
OWN_KEYS = frozenset([SCHEMA[name].key for name in ("lam", "alpha", "center_update", "batch_size", "lr", "momentum",
                                                    "weight_decay", "classifier_bias", "seed", "train_limit",
                                                    "test_limit", "plot_train_samples", "data_dir", "output_dir",
                                                    "log_every")] + ["torch_version"])


def cpu_model() -> str:
    """The CPU's model name as Linux reports it ("AMD EPYC 9654"), else what Python knows ("x86_64")."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def source_commit() -> str | None:
    """The git commit this package runs from, with "+changes" where its checkout had uncommitted changes
    (`git status` lists any); None where it is not a git checkout of its own (an installed wheel)."""
    top = Path(__file__).resolve().parents[2]  # centerloss_cli/rundir/files.py: the checkout's root
    git = ["git", "-C", str(top)]
    try:
        found = subprocess.run([*git, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True,
                               timeout=10)
        lines = found.stdout.split()
        if found.returncode or len(lines) != 2 or Path(lines[0]).resolve() != top:
            return None
        changed = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("+changes" if changed.returncode or changed.stdout.strip() else "")


def environment(device: torch.device) -> dict[str, str | None]:
    """What config.json records of what made the run, beside the settings: this tool's version and commit,
    the libraries', the machine's."""
    import torch

    from .. import __version__

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "centerloss_version": __version__, "centerloss_commit": source_commit(),
        # From the package's metadata: importing torchvision only for its version takes seconds.
        "torch_version": torch.__version__, "torchvision_version": importlib.metadata.version("torchvision"),
        "python_version": platform.python_version(), "resolved_device": str(device), "device_name": name,
    }


def write_config(run_dir: Path, config: TrainConfig, record: dict[str, Any]) -> None:
    """config.json: the settings (their keys), then `record` (format, data fingerprint, environment)."""
    atomic_write_text(Path(run_dir) / CONFIG_JSON, json.dumps({**to_dict(config), **record}, indent=2) + "\n")


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """config.json as saved: the settings and the record beside them."""
    path = Path(run_dir) / CONFIG_JSON
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
        return saved
    except RecursionError:
        raise CenterLossError(f"{path}: cannot read the run's settings (nested too deep)") from None
    except (OSError, ValueError) as e:
        raise CenterLossError(f"{path}: cannot read the run's settings ({e})") from None


def settings_of(saved: dict[str, Any], where: str) -> TrainConfig:
    """The settings in a config.json or a checkpoint (keys), less what is recorded beside them."""
    keys = to_dict(DEFAULTS)
    return from_dict({k: v for k, v in saved.items() if k in keys}, DEFAULTS, where=f" in {where}")


def save_checkpoint(run_dir: Path, state_dict: dict[str, Any]) -> None:
    import torch

    # Serialised in memory first: torch.save reports a failed write (a full disk) as RuntimeError
    # "unexpected pos"; written as bytes, it is an OSError, and so one line naming the file.
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buf.getvalue())


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint, on the CPU (the training state moves each part to its device); a file that is not
    a checkpoint of this version is one line."""
    import torch

    path = Path(run_dir) / CHECKPOINT
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file surfaces as many exception types; all mean the same here
        raise CenterLossError(f"{path}: cannot be loaded ({type(e).__name__}); use --overwrite to start again") from e
    if not isinstance(ckpt, dict):
        raise CenterLossError(f"{path} is not a checkpoint (it holds a {type(ckpt).__name__}); use --overwrite "
                              "to start again")
    missing = sorted(CHECKPOINT_KEYS - set(ckpt))
    kinds = {"config": dict, "history": list, "n_train": int, "epoch": int, "step": int, "batch": int, "threads": int}
    wrong = sorted(k for k, kind in kinds.items() if k in ckpt and not isinstance(ckpt[k], kind))
    if missing or wrong or ckpt.get("format") != FORMAT:
        if missing:
            what = f"it lacks {', '.join(missing)}"
        elif wrong:
            what = f"{', '.join(wrong)} of the wrong kind"
        else:
            what = f"format {ckpt.get('format')}"
        raise CenterLossError(f"{path} is not a checkpoint of this version ({what}); use --overwrite to start again")
    if (bad := _bad_value(ckpt)) is not None:
        raise CenterLossError(f"{path} is damaged ({bad}); use --overwrite to start again")
    return ckpt


MAX_THREADS = 4096  # more than any machine has: a count beyond it is damage (100,000 crashed torch)


def _bad_value(ckpt: dict[str, Any]) -> str | None:
    """The first value of a checkpoint that no run can have written, said as `key = value`; None if none:
    a tampered or damaged file is refused before torch is handed it."""
    import torch

    for key, low in (("n_train", 1), ("epoch", 0), ("step", 0), ("batch", 0), ("threads", 1)):
        if ckpt[key] < low or (key == "threads" and ckpt[key] > MAX_THREADS):
            return f"{key} = {ckpt[key]}"
    sums = ckpt["loss_sums"]
    if not isinstance(sums, torch.Tensor) or sums.shape != (2,):
        return f"loss_sums of shape {tuple(getattr(sums, 'shape', ()))}, not (2,)"
    for row in ckpt["history"]:
        if not isinstance(row, dict) or not all(isinstance(row.get(c), (int, float)) for c in METRIC_COLUMNS):
            return "a history row without its columns"
    if len(ckpt["history"]) != ckpt["epoch"]:
        return f"{len(ckpt['history'])} history rows for epoch {ckpt['epoch']}"
    return None
