"""The settings schema: every setting of a run declared once, as a field of TrainConfig.

Each field carries its type (the annotation), its default (the official MNIST settings of the
paper), and in its metadata the user-facing key, the help text, what it accepts and whether a resumed
run may change it. TOML and config.json parsing (`from_dict`), validation (`TrainConfig.__post_init__`,
so no TrainConfig can exist unchecked) and the CLI's options, help and defaults (`cli.py`) are all
derived from these declarations. This module does not import torch: the CLI builds its options and
checks every value before the seconds that importing torch takes.
"""
from __future__ import annotations

import math
import re
import shlex
import sys
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

CENTER_UPDATES = ("paper", "sgd", "caffe")
NETS = ("official", "table1")
DATASET_NAMES = ("mnist", "fashion-mnist")  # fetch.DATASETS describes each
PRECISIONS = ("fp32", "tf32", "bf16")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
NAME_MAX_BYTES = 255  # the longest file name most file systems allow
PLOT_DPI = 200  # PNG resolution: legible at full-page width (a 5.6-inch plot is 1120 px); PDF and SVG are vectors


@dataclass(frozen=True)
class Setting:
    """How one field of TrainConfig is spelled, explained and checked."""

    key: str  # the name in TOML files and config.json; the flag is --key with "_" as "-"
    help: str
    accepted: str = ""  # what the error message says is accepted, when `check` fails
    check: Callable[[Any], bool] = lambda value: True
    choices: tuple[str, ...] = ()
    default_text: str = ""  # the default as --help and the README show it, where the value alone says too little
    resumable: bool = False  # may differ on --resume: it changes where or how long a run trains, not what it learns
    metavar: str | None = None
    # How a value other than the default shows in a default run name ("n{}" -> "_n2000"); every setting
    # that changes what a run learns has one, or is one of the name's fixed parts (lambda, alpha, seed).
    suffix: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def setting(default: Any, key: str, help: str, **options: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(key=key, help=help, **options)})


def is_folder_name(name: str) -> bool:
    """One folder name: not empty, no '/' or NUL, not . or .., and short enough for the file system."""
    return (bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")
            and len(name.encode()) <= NAME_MAX_BYTES)


def is_path(text: str) -> bool:
    """A path the OS can take: not empty ('' would silently mean the default), no NUL byte."""
    return bool(text) and "\0" not in text


def number_text(value: float) -> str:
    """A number as names show it: short ('0.01', '1e-05'), but exact, so that 0.1000001 never shares
    0.1's folder."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def suffix_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "-".join(map(str, value))
    return number_text(value) if isinstance(value, float) else str(value)


class Checked:
    """A dataclass of `setting` fields, validated on construction: one that exists is a valid one."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            s = f.metadata["setting"]
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingError(s.key, value, "a finite number")
            if s.choices and value not in s.choices:
                raise SettingError(s.key, value, f"one of {', '.join(s.choices)}")
            if not s.check(value):
                raise SettingError(s.key, value, s.accepted)


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Every setting of one run. Constructing one validates it; `with_` and `from_dict` make changed copies."""

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
    net: str = setting(
        "official", "net",
        "official: the official Caffe net (pool3 3x3 stride 2, ceil mode); table1: the paper's Table 1 as "
        "printed (pool3 2x2 stride 2, which never sees row and column 6 of conv3's 7x7 map).",
        choices=NETS, suffix="{}")
    dataset: str = setting(
        "mnist", "dataset", "mnist, or fashion-mnist (Zalando's clothing images, in MNIST's format).",
        choices=DATASET_NAMES, suffix="{}")
    epochs: int | None = setting(None, "epochs", "Epochs to train.", accepted="an integer >= 1",
                                 check=lambda v: v >= 1,
                                 default_text="exactly --iterations steps (21 epochs and 151 steps on full MNIST)",
                                 resumable=True)
    iterations: int = setting(10_000, "iterations", "Steps of --batch-size images, when --epochs is not given.",
                              accepted="an integer >= 1", check=lambda v: v >= 1, resumable=True)
    batch_size: int = setting(128, "batch_size", "Mini-batch size.", accepted="an integer >= 1", check=lambda v: v >= 1,
                              suffix="b{}")
    lr: float = setting(0.01, "lr", "SGD learning rate of the network (biases: twice it).", accepted="a number > 0",
                       check=lambda v: v > 0, suffix="lr{}")
    momentum: float = setting(0.9, "momentum", "SGD momentum.", accepted="a number in [0, 1)", check=lambda v: 0 <= v < 1,
                             suffix="mom{}")
    weight_decay: float = setting(5e-4, "weight_decay", "Weight decay of the network's weights; never of its biases or the centers.",
                                  accepted="a number >= 0", check=lambda v: v >= 0, suffix="wd{}")
    lr_milestones: tuple[int, ...] = setting(
        (5000, 8000), "lr_milestones", "Iterations at which the learning rate is multiplied by --lr-gamma.",
        accepted="positive iteration numbers", check=lambda v: all(m >= 1 for m in v), metavar="I,I,...",
        suffix="steps{}")
    lr_gamma: float = setting(0.8, "lr_gamma", "Factor of each learning-rate drop.",
                              accepted="a number in (0, 1]", check=lambda v: 0 < v <= 1, suffix="gamma{}")
    classifier_bias: bool = setting(False, "classifier_bias", "A bias in the 10-way classifier (the paper's net has none).",
                                   suffix="bias")
    seed: int = setting(0, "seed", "Seed of the initialisation and of the batch order.",
                        accepted="an integer in [0, 2^32)", check=lambda v: 0 <= v < 2**32)
    device: str = setting("auto", "device", "auto, cpu, cuda, cuda:N or mps; auto takes CUDA when there is one.",
                          accepted=DEVICE_CHOICES, check=lambda v: re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
                          resumable=True, metavar="DEVICE")
    train_limit: int | None = setting(None, "train_limit", "Train on a fixed, seeded subset of N training images.",
                                      accepted="an integer >= 1", check=lambda v: v >= 1, default_text="all", suffix="n{}")
    test_limit: int | None = setting(None, "test_limit", "Evaluate on a fixed, seeded subset of N test images.",
                                     accepted="an integer >= 1", check=lambda v: v >= 1, default_text="all",
                                     suffix="test{}")
    plot_train_samples: int = setting(10_000, "plot_train_samples",
                                      "Training images whose features are saved and plotted each epoch.",
                                      accepted="an integer >= 1", check=lambda v: v >= 1, suffix="plot{}")
    data_dir: str | None = setting(None, "data_dir", "The data root.", default_text="for MNIST $CENTERLOSS_DATA, else ./data",
                                   accepted="a non-empty path without NUL bytes", check=is_path, resumable=True, metavar="DIR")
    verify: bool = setting(True, "verify", "Check the md5 sums of the dataset's files; --no-verify lets other IDX "
                           "data through.", resumable=True)
    output_dir: str = setting("outputs", "output_dir", "Folder that holds the run folders.",
                              accepted="a non-empty path without NUL bytes", check=is_path, resumable=True, metavar="DIR")
    name: str | None = setting(None, "name", "The run folder's name.",
                               accepted=f"a folder name without '/' of at most {NAME_MAX_BYTES} bytes", check=is_folder_name,
                               default_text="from the settings, e.g. lambda0.01_alpha0.5_seed0_n2000")
    tensorboard: bool = setting(False, "tensorboard", "Also log each epoch's metrics and test-feature scatter to "
                                "RUN/tensorboard/ (pip install 'centerloss-cli[tensorboard]').", resumable=True)
    log_every: int = setting(20, "log_every", "Batches between the progress bar's loss updates.",
                             accepted="an integer >= 1", check=lambda v: v >= 1, resumable=True)
    precision: str = setting("fp32", "precision", "tf32: TF32 matmuls and convolutions on CUDA; bf16: bf16 autocast "
                             "of the network. The losses, the centers and their update stay fp32 either way.",
                             choices=PRECISIONS, suffix="{}")

    @property
    def run_name(self) -> str:
        """--name, else λ, α and seed, then a suffix for each setting that differs from the paper's (see
        Setting.suffix). Under the caffe update α has no effect, so it is left out."""
        if self.name:
            return self.name
        alpha = "" if self.center_update == "caffe" else f"_alpha{number_text(self.alpha)}"
        name = f"lambda{number_text(self.lam)}{alpha}_seed{self.seed}"
        for f in fields(self):
            s, value = SCHEMA[f.name], getattr(self, f.name)
            if s.suffix and value != getattr(DEFAULTS, f.name):
                name += "_" + s.suffix.format(suffix_text(value))
        return name

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


class SettingError(ConfigError):
    """A value out of range; `where` (" in FILE") is added by whoever knows where the value came from."""

    def __init__(self, key: str, value: Any, accepted: str, where: str = ""):
        self.key, self.value, self.accepted = key, value, accepted
        super().__init__(f"{key} = {value!r}{where}: expected {accepted}")

    def at(self, where: str) -> "SettingError":
        return SettingError(self.key, self.value, self.accepted, where)


@cache
def schema(cls: type = TrainConfig) -> dict[str, Setting]:
    """Field name -> its Setting."""
    return {f.name: f.metadata["setting"] for f in fields(cls)}


SCHEMA: dict[str, Setting] = schema(TrainConfig)
KEY_TO_FIELD: dict[str, str] = {s.key: name for name, s in SCHEMA.items()}  # "lambda" -> "lam"
DEFAULTS = TrainConfig()
SLURM_DEFAULTS = SlurmConfig()
SLURM_TABLE = "slurm"  # the config file's table of SlurmConfig settings


@cache
def field_types(cls: type = TrainConfig) -> dict[str, tuple[type, bool]]:
    """Field name -> (its base type, whether it may be None), from the annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name in schema(cls):
        hint = hints[name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        out[name] = (typing.get_origin(base) or base, optional)
    return out


_DESCRIBE = {float: "a number", int: "an integer", str: "a string", bool: "true or false", tuple: "a list of integers"}


def coerce(name: str, value: Any, where: str = "", cls: type = TrainConfig) -> Any:
    """`value` as field `name`'s type, or a ConfigError naming the key. A list may come as "5000,8000"."""
    base, optional = field_types(cls)[name]
    key = schema(cls)[name].key
    if value is None and optional:
        return None
    if base is tuple and isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",")]
        except ValueError:
            raise ConfigError(f"{key} = {value!r}{where}: expected {_DESCRIBE[tuple]}") from None
    is_int = isinstance(value, int) and not isinstance(value, bool)  # bool is an int in Python; `epochs = true` is not
    ok = {
        float: is_int or isinstance(value, float), int: is_int, str: isinstance(value, str),
        bool: isinstance(value, bool),
        tuple: isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[base]
    if not ok:
        raise ConfigError(f"{key} = {value!r}{where}: expected {_DESCRIBE[base]}")
    return float(value) if base is float else tuple(value) if base is tuple else value


def from_dict(values: dict[str, Any], base: Any = DEFAULTS, where: str = "") -> Any:
    """`base` (a TrainConfig or SlurmConfig) with `values` (user-facing keys, as in TOML) applied, each
    checked for name, type and range."""
    cls = type(base)
    key_to_field = {s.key: name for name, s in schema(cls).items()}
    changes = {}
    for key, value in values.items():
        if key not in key_to_field:
            raise ConfigError(f"unknown key {key!r}{where}; known keys: {', '.join(sorted(key_to_field))}")
        changes[key_to_field[key]] = coerce(key_to_field[key], value, where, cls)
    try:
        return replace(base, **changes)
    except SettingError as e:
        raise e.at(where) from None


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config with user-facing keys ("lambda", not "lam"), JSON-ready."""
    return {SCHEMA[k].key: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


BUILTIN_CONFIGS = Path(__file__).with_name("configs")  # shipped in the package; configs/ in the repository


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
        raise ConfigError(f"config file {path} does not exist (built-in configs: {', '.join(builtin_configs())})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The defaults, then the config file, then `overrides` (user-facing keys): the later wins."""
    config = DEFAULTS
    if config_file is not None:
        values = {k: v for k, v in load_toml(config_file).items() if k != SLURM_TABLE}  # that table is a sweep's
        config = from_dict(values, config, where=f" in {config_file}")
    return from_dict(overrides or {}, config)


def resolve_slurm(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SlurmConfig:
    """The Slurm defaults, then the config file's [slurm] table, then `overrides`: the later wins."""
    config = SLURM_DEFAULTS
    if config_file is not None:
        table = load_toml(config_file).get(SLURM_TABLE, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{SLURM_TABLE} = {table!r} in {config_file}: expected a [{SLURM_TABLE}] table")
        config = from_dict(table, config, where=f" in [{SLURM_TABLE}] of {config_file}")
    return from_dict(overrides or {}, config)


def default_text(name: str, cls: type = TrainConfig) -> str:
    """A setting's default as --help and the README show it."""
    s, value = schema(cls)[name], getattr(cls(), name)
    if s.default_text:
        return s.default_text
    if isinstance(value, bool):
        return s.flag[2:] if value else "no-" + s.flag[2:]
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)
