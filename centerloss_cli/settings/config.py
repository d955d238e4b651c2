"""The settings schema: every setting of a run declared once, as a field of TrainConfig, grouped by role.

Each field carries its type (the annotation), its default (the official MNIST settings of the paper),
and in its metadata its key, help text, what it accepts and whether a resumed run may change it
(schema.Setting). TOML and config.json parsing, validation on construction and the CLI's options are
all derived from these declarations. This module does not import torch: the CLI builds its options
and checks every value before the seconds that importing torch takes.
"""
from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..core.choices import CENTER_UPDATES, NETS
from ..core.schedule import epochs_left, steps_per_epoch, total_steps, warmup_steps
from ..errors import ConfigError
from .schema import (
    NAME_MAX_BYTES,
    PATH_MAX_BYTES,
    Checked,
    from_dict,
    is_folder_name,
    is_path,
    number_text,
    schema,
    setting,
    suffix_text,
    with_given,
)

DATASET_NAMES = ("mnist", "fashion-mnist")  # fetch.DATASETS describes each
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
LR_SCHEDULES = ("step", "linear", "cosine")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
PATH_ACCEPTED = (f"a non-empty path of printable UTF-8 characters, of at most {PATH_MAX_BYTES:,} bytes, each part "
                 f"at most {NAME_MAX_BYTES}")
NAME_ACCEPTED = f"a folder name of printable UTF-8 characters without '/', of at most {NAME_MAX_BYTES} bytes"
# Bounds that only a typo crosses: they stop it before it allocates or loops for days (the data and
# the machine bound the batch size further, once they are known: see training.check_fits).
MAX_STEPS = 100_000_000  # 4 days at 300 steps/s, the fastest measured
MAX_EPOCHS = 1_000_000
MAX_BATCH = 1_000_000


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Every setting of one run. Constructing one converts and validates it; `with_` makes changed copies."""

    # --- What a run learns: its identity. Each has a suffix in the default run name, or is a fixed part
    # of it (lambda, alpha, seed); a resume may not change any of them.
    # The loss and the centers (paper Eq. 2, 4 and 5).
    lam: float = setting(0.01, "lambda", "Center loss weight λ; 0 trains by softmax alone.",
                         accepted="a number >= 0", check=lambda v: v >= 0, metavar="L")
    alpha: float = setting(0.5, "alpha", "Center update rate α.",
                           accepted="a number in [0, 1]", check=lambda v: 0 <= v <= 1, metavar="A")
    center_update: str = setting(
        "paper", "center_update",
        "paper: Algorithm 1, c_j -= α Δc_j with Eq. 4's Δc_j = Σ(c_j - x_i) / (1 + n_j); caffe: the official code, "
        "Δc_j applied by the solver with the network's lr, schedule and momentum (α unused); sgd: plain SGD with "
        "learning rate α on the autograd gradient of L_C, as many re-implementations do.",
        choices=CENTER_UPDATES, suffix="{}")
    # The network (paper Table 1, official prototxt).
    net: str = setting(
        "official", "net",
        "official: the official Caffe net (pool3 3x3 stride 2, ceil mode); table1: the paper's Table 1 as "
        "printed (pool3 2x2 stride 2, which never sees row and column 6 of conv3's 7x7 map).",
        choices=NETS, suffix="{}")
    classifier_bias: bool = setting(False, "classifier_bias",
                                    "A bias in the 10-way classifier (the paper's net has none).",
                                   suffix="bias")
    # The data.
    dataset: str = setting(
        "mnist", "dataset", "mnist, or fashion-mnist (Zalando's clothing images, in MNIST's format).",
        choices=DATASET_NAMES, suffix="{}")
    train_limit: int | None = setting(None, "train_limit", "Train on a fixed, seeded subset of N training images.",
                                      accepted="an integer >= 1", check=lambda v: v >= 1, default_text="all",
                                      suffix="n{}")
    test_limit: int | None = setting(None, "test_limit", "Evaluate on a fixed, seeded subset of N test images.",
                                     accepted="an integer >= 1", check=lambda v: v >= 1, default_text="all",
                                     suffix="test{}")
    plot_train_samples: int = setting(10_000, "plot_train_samples",
                                      "Training images whose features are saved and plotted each epoch.",
                                      accepted="an integer >= 1", check=lambda v: v >= 1, suffix="plot{}")
    # The solver: the official Caffe solver's values (batch 128, SGD 0.01 with momentum 0.9, decay 5e-4,
    # lr x0.8 at iterations 5000 and 8000).
    batch_size: int = setting(128, "batch_size", "Mini-batch size.", accepted=f"an integer in [1, {MAX_BATCH:,}]",
                              check=lambda v: 1 <= v <= MAX_BATCH, suffix="b{}")
    lr: float = setting(0.01, "lr", "SGD learning rate of the network (biases: twice it).", accepted="a number > 0",
                        check=lambda v: v > 0, suffix="lr{}")
    momentum: float = setting(0.9, "momentum", "SGD momentum.", accepted="a number in [0, 1)",
                              check=lambda v: 0 <= v < 1, suffix="mom{}")
    weight_decay: float = setting(5e-4, "weight_decay",
                                  "Weight decay of the network's weights; never of its biases or the centers.",
                                  accepted="a number >= 0", check=lambda v: v >= 0, suffix="wd{}")
    lr_milestones: tuple[int, ...] = setting(
        (5000, 8000), "lr_milestones", "Iterations at which the learning rate is multiplied by --lr-gamma.",
        accepted="positive iteration numbers", check=lambda v: all(m >= 1 for m in v), metavar="I,I,...",
        suffix="steps{}")
    lr_gamma: float = setting(0.8, "lr_gamma", "Factor of each learning-rate drop.",
                              accepted="a number in (0, 1]", check=lambda v: 0 < v <= 1, suffix="gamma{}")
    # Not the paper's: what the fast recipe (configs/fast.toml) needs to train in a tenth of the steps.
    lr_schedule: str = setting(
        "step", "lr_schedule", "step: the official solver's drops (--lr-milestones, --lr-gamma); linear or cosine: "
        "from --lr down to 0 at the run's last step.", choices=LR_SCHEDULES, suffix="{}")
    label_smoothing: float = setting(0.0, "label_smoothing", "Label smoothing of the softmax loss: the target puts "
                                     "this much of its weight on the other classes, so the logits stay finite and "
                                     "the features stop growing, and the center loss pulls each class together "
                                     "sooner (0: the paper's softmax loss).",
                                     accepted="a number in [0, 1)", check=lambda v: 0 <= v < 1, metavar="EPS",
                                     suffix="ls{}")
    grad_clip: float = setting(0.0, "grad_clip", "Largest norm of the network's whole gradient: a larger one is "
                               "scaled down to it, which lets a high rate train without diverging (0: never).",
                               accepted="a number >= 0", check=lambda v: v >= 0, metavar="NORM", suffix="clip{}")
    warmup: int = setting(0, "warmup", "Steps over which the learning rate rises linearly to --lr first (a high "
                          "rate from the first step diverges).", accepted="an integer >= 0", check=lambda v: v >= 0,
                          metavar="STEPS", suffix="warmup{}")
    # The arithmetic and the randomness.
    precision: str = setting("fp32", "precision", "tf32: TF32 matmuls and convolutions on CUDA; bf16: bf16 autocast "
                             "of the network; auto: bf16 where the device computes it natively (a CPU with "
                             "AVX512_BF16 or AMX, a CUDA GPU from Ampere on), else fp32. A run is named and "
                             "recorded by the precision it trains in. The losses, the centers and their update "
                             "stay fp32 either way.",
                             choices=PRECISIONS, suffix="{}")
    seed: int = setting(0, "seed", "Seed of the initialisation and of the batch order.",
                        accepted="an integer in [0, 2^32)", check=lambda v: 0 <= v < 2**32)

    # --- How long it trains: a resume may extend it.
    epochs: int | None = setting(None, "epochs", "Epochs to train.", accepted=f"an integer in [1, {MAX_EPOCHS:,}]",
                                 check=lambda v: 1 <= v <= MAX_EPOCHS,
                                 default_text="exactly --iterations steps (21 epochs and 151 steps on full MNIST)",
                                 resumable=True)
    iterations: int = setting(10_000, "iterations", "Steps of --batch-size images, when --epochs is not given.",
                              accepted=f"an integer in [1, {MAX_STEPS:,}]", check=lambda v: 1 <= v <= MAX_STEPS,
                              resumable=True)

    # --- Where it runs and keeps its files: a moved run folder or another machine resumes it.
    device: str = setting("auto", "device", "auto, cpu, cuda, cuda:N or mps; auto takes CUDA when there is one.",
                          accepted=DEVICE_CHOICES,
                          check=lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
                          resumable=True, metavar="DEVICE")
    cuda_graphs: str = setting("auto", "cuda_graphs", "auto: on CUDA, replay each training step as one CUDA graph "
                               "(LeNet++ is launch-bound on a GPU); off: launch it kernel by kernel.",
                               choices=("auto", "off"), resumable=True)
    data_dir: str | None = setting(None, "data_dir", "The data root.",
                                   default_text="for MNIST $CENTERLOSS_DATA, else ./data",
                                   accepted=PATH_ACCEPTED, check=is_path, resumable=True,
                                   metavar="DIR")
    verify: bool = setting(True, "verify", "Check the md5 sums of the dataset's files; --no-verify lets other IDX "
                           "data through.", resumable=True)
    output_dir: str = setting("outputs", "output_dir", "Folder that holds the run folders.",
                              accepted=PATH_ACCEPTED, check=is_path, resumable=True,
                              metavar="DIR")
    name: str | None = setting(None, "name", "The run folder's name.",
                               accepted=NAME_ACCEPTED,
                               check=is_folder_name,
                               default_text="from the settings, e.g. lambda0.01_alpha0.5_seed0_n2000")

    # --- How it is shown: none of these changes what it learns.
    tensorboard: bool = setting(False, "tensorboard", "Also log each epoch's metrics and test-feature scatter to "
                                "RUN/tensorboard/ (pip install 'centerloss-cli[tensorboard]').", resumable=True)
    # Off where nobody watches the pictures as they come (a cluster sweep, the tests): three figures an epoch
    # cost seconds of CPU beside the training. The features are saved either way, so nothing is lost.
    plots: bool = setting(True, "plots", "Draw each epoch's feature plots and the run's curves while training; "
                          "--no-plots saves the features only, for centerloss plot RUN_DIR [--curves] to draw later.",
                          resumable=True)
    log_every: int = setting(20, "log_every", "Batches between the progress bar's loss updates.",
                             accepted="an integer >= 1", check=lambda v: v >= 1, resumable=True)
    # 200 dpi: legible at full-page width (a 5.6-inch plot is 1120 px). PDF and SVG are vectors.
    plot_dpi: int = setting(200, "plot_dpi", "Resolution of the PNG plots and GIF frames.",
                            accepted="an integer in [20, 1200]", check=lambda v: 20 <= v <= 1200, resumable=True,
                            metavar="DPI")

    @property
    def uses_alpha(self) -> bool:
        """Whether α acts: the caffe update moves the centers with the network's lr instead."""
        return self.center_update != "caffe"

    @property
    def identity_suffix(self) -> str:
        """A suffix for each setting of the run's identity that differs from the paper's (Setting.suffix),
        in NAME_ORDER."""
        return "".join("_" + SCHEMA[name].suffix.format(suffix_text(getattr(self, name))) for name in NAME_ORDER
                       if getattr(self, name) != getattr(DEFAULTS, name))

    @property
    def run_name(self) -> str:
        """--name, else λ, α (where it acts) and seed, then the identity suffix."""
        if self.name:
            return self.name
        alpha = f"_alpha{number_text(self.alpha)}" if self.uses_alpha else ""
        return f"lambda{number_text(self.lam)}{alpha}_seed{self.seed}{self.identity_suffix}"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def with_(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (field names: lam, not lambda), validated."""
        return replace(self, **changes)


def sbatch_options(text: str) -> dict[str, str | bool] | None:
    """"--qos=high --exclusive" -> {"qos": "high", "exclusive": True}; None when it is not such a list."""
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    out: dict[str, str | bool] = {}
    for w in words:
        m = re.fullmatch(r"--([a-z][a-z0-9-]*)(?:=(.+))?", w)
        if not m:
            return None
        out[m.group(1).replace("-", "_")] = True if m.group(2) is None else m.group(2)
    return out


@dataclass(frozen=True)
class SlurmConfig(Checked):
    """How `sweep --launcher slurm` asks Slurm for each job: flags, or a [slurm] table in the config file."""

    partition: str | None = setting(None, "partition", "Slurm partition.", default_text="the cluster's default",
                                    accepted="a partition name", check=lambda v: bool(v.strip()), metavar="NAME")
    time_limit: int = setting(180, "time_limit", "Minutes per job; a run that hits it is requeued and resumes.",
                              accepted="an integer >= 1", check=lambda v: v >= 1, metavar="MIN")
    cpus: int = setting(2, "cpus", "CPUs per job.", accepted="an integer >= 1", check=lambda v: v >= 1, metavar="N")
    mem_gb: float = setting(8.0, "mem_gb", "Memory per job in GB.", accepted="a number > 0", check=lambda v: v > 0,
                            metavar="GB")
    gpus: int = setting(0, "gpus", "GPUs per job (give --device cuda or auto).", accepted="an integer >= 0",
                        check=lambda v: v >= 0, metavar="N")
    account: str | None = setting(None, "account", "Slurm account to charge.", default_text="none",
                                  accepted="an account name", check=lambda v: bool(v.strip()), metavar="NAME")
    sbatch: str = setting("", "sbatch", "More sbatch options, e.g. \"--qos=high --constraint=a100\".",
                          default_text="none", accepted="sbatch options of the form --key or --key=value",
                          check=lambda v: sbatch_options(v) is not None, metavar="OPTIONS")


SCHEMA = schema(TrainConfig)
DEFAULTS = TrainConfig()
# The order of the suffixes in a run name: fixed, so that a folder keeps its name whatever order the
# schema lists its settings in (new settings go at the end).
NAME_ORDER = ("center_update", "net", "dataset", "batch_size", "lr", "momentum", "weight_decay", "lr_milestones",
              "lr_gamma", "classifier_bias", "train_limit", "test_limit", "plot_train_samples", "precision",
              "lr_schedule", "warmup", "grad_clip", "label_smoothing")
assert set(NAME_ORDER) == {name for name, s in SCHEMA.items() if s.suffix}, \
    "a setting with a suffix is not in NAME_ORDER"
SLURM_DEFAULTS = SlurmConfig()
SLURM_TABLE = "slurm"  # the config file's table of SlurmConfig settings
# What a resume may change; the rest is the run's identity. Under the caffe update α does not act, so a
# resume may change it too (TrainConfig.uses_alpha).
RESUMABLE = frozenset(name for name, s in SCHEMA.items() if s.resumable)


FULL_TRAIN_SET = 60_000  # MNIST's and Fashion-MNIST's training images, of which --train-limit takes a part


def planned_train_images(config: TrainConfig) -> int:
    """The training images a run of `config` will have, known before any data is read (MNIST's and
    Fashion-MNIST's full sets, or --train-limit of them); other data (--no-verify) may have fewer."""
    return min(config.train_limit or FULL_TRAIN_SET, FULL_TRAIN_SET)


def fit_to_run(config: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """A config made for a longer run (a built-in one shrunk by --train-limit or --epochs), fitted to this
    run, and a line for each change or trap: plot samples beyond the training images are clipped to them
    (so the name says what is plotted), a warm-up at least as long as the run is said to be halved (the
    schedule halves it, schedule.warmup_steps, and the setting stays as given: the run's name and a later
    resume go by what was asked), and milestones of the user's past the last step are named, since they
    never act."""
    n_train = planned_train_images(config)
    total = total_steps(config, n_train)
    changes, notes = {}, []
    if (warmup := warmup_steps(config, total)) != config.warmup:
        notes.append(f"warmup = {config.warmup} is not shorter than this run's {total} steps, so the rate would "
                     f"never reach lr nor decay: this run warms up over {warmup} steps, half of it")
    if config.train_limit is not None and config.plot_train_samples > n_train and \
            config.plot_train_samples != DEFAULTS.plot_train_samples:
        changes["plot_train_samples"] = n_train
        notes.append(f"plot_train_samples = {config.plot_train_samples} is more than the {n_train} training "
                     f"images: clipped to {n_train}")
    late = [m for m in config.lr_milestones if m >= total]
    # The paper's own milestones on a short run are what a quick look at the paper's solver means: no word.
    if config.lr_schedule == "step" and late and config.lr_milestones != DEFAULTS.lr_milestones:
        notes.append(f"lr_milestones {', '.join(map(str, late))} fall at or after this run's last step ({total}): "
                     "they never lower the rate")
    return (config.with_(**changes) if changes else config), notes


def resumable(config: TrainConfig) -> frozenset[str]:
    return RESUMABLE if config.uses_alpha else RESUMABLE | {"alpha"}


BUILTIN_CONFIGS = Path(__file__).parents[1] / "configs"  # shipped in the package; configs/ in the repository


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_CONFIGS.glob("*.toml"))


def config_path(path: str | Path) -> Path:
    """A config file's path: the file, else a built-in config named so ("paper" -> configs/paper.toml)."""
    path = Path(path)
    if not path.exists() and path.parent == Path(".") and (builtin := BUILTIN_CONFIGS / f"{path.stem}.toml").is_file() \
            and path.suffix in ("", ".toml"):
        return builtin
    return path


def load_toml(path: str | Path) -> dict[str, Any]:
    """The key/value pairs of a TOML config file, or of a built-in config by name (checked by from_dict)."""
    path = config_path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (built-in configs: {', '.join(builtin_configs())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        if _starts_with_bom(path):  # TOML forbids it; its parser says only "Invalid statement (at line 1, column 1)"
            raise ConfigError(f"config file {path} starts with a byte-order mark (BOM), which TOML does not allow: "
                              "save it as UTF-8 without one") from None
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deep for a config") from None


def _starts_with_bom(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(3) == b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Resolved:
    """A config file and the flags given, resolved once: the run's settings, the Slurm settings, and the
    keys the user gave (a resume takes only those from the command line)."""

    config: TrainConfig
    slurm: SlurmConfig
    given: frozenset[str]  # field names


def resolve(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
            slurm_overrides: dict[str, Any] | None = None, slurm: bool = True) -> Resolved:
    """The defaults, then the config file (read once, by key), then `overrides` (the flags given, by field
    name: lam): the later wins."""
    values = load_toml(config_file) if config_file is not None else {}
    table = values.pop(SLURM_TABLE, {})
    if slurm and not isinstance(table, dict):
        raise ConfigError(f"{SLURM_TABLE} = {table!r} in {config_file}: expected a [{SLURM_TABLE}] table")
    where = f" in {config_file}"
    config = with_given(overrides or {}, from_dict(values, DEFAULTS, where))
    # `train` ignores the [slurm] table (slurm=False), so a table meant for sweeps never stops a run.
    slurm_config = with_given(slurm_overrides or {}, from_dict(table, SLURM_DEFAULTS, f" in [{SLURM_TABLE}] of "
                                                               f"{config_file}")) if slurm else SLURM_DEFAULTS
    key_to_field = {s.key: name for name, s in SCHEMA.items()}
    return Resolved(config, slurm_config, frozenset({key_to_field[k] for k in values} | set(overrides or {})))


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The defaults, then the config file, then `overrides` (by field name, as TrainConfig takes them: lam):
    the later wins."""
    return resolve(config_file, overrides, slurm=False).config


MANY_EPOCHS = 50  # more than this from --train-limit alone is almost never what was meant


def many_epochs_warning(config: TrainConfig) -> str | None:
    """--train-limit without --epochs keeps the 10,000 iterations: on a small subset, hundreds of epochs,
    each evaluated and plotted. What to say before it starts, where it is so."""
    if config.train_limit is None or config.epochs is not None:
        return None
    per_epoch = steps_per_epoch(config, config.train_limit)
    epochs = epochs_left(0, total_steps(config, config.train_limit), per_epoch)
    if epochs <= MANY_EPOCHS:
        return None
    return (f"--train-limit {config.train_limit} without --epochs: the {config.iterations} iterations are {epochs} "
            f"epochs of {per_epoch} batches, each evaluated and plotted; give --epochs N for a short run")
