"""Every setting of a run in one dataclass: defaults are the official MNIST settings of the paper."""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .center_loss import CENTER_UPDATES
from .devices import PRECISIONS, check_device_spec
from .errors import CenterLossError


class ConfigError(CenterLossError):
    """A setting is unknown, of the wrong type, or out of range."""


@dataclass(frozen=True)
class TrainConfig:
    lam: float = 0.01  # "lambda" in TOML, JSON and on the command line
    alpha: float = 0.5
    center_update: str = "paper"
    epochs: int | None = None  # None: as many epochs as `iterations` fills (21 on full MNIST)
    iterations: int = 10_000
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[int, ...] = (5000, 8000)
    lr_gamma: float = 0.8
    classifier_bias: bool = False
    seed: int = 0
    device: str = "auto"
    train_limit: int | None = None
    test_limit: int | None = None
    plot_train_samples: int = 10_000
    data_dir: str | None = None
    verify: bool = True
    output_dir: str = "outputs"
    name: str | None = None
    log_every: int = 20
    precision: str = "fp32"

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        name = f"lambda{self.lam:g}_alpha{self.alpha:g}_seed{self.seed}"
        if self.center_update != "paper":
            name += f"_{self.center_update}"
        if self.classifier_bias:
            name += "_bias"
        if self.precision != "fp32":
            name += f"_{self.precision}"
        return name

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def with_(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


# TOML/JSON/CLI key -> dataclass field, where they differ ("lambda" is a Python keyword).
KEY_TO_FIELD = {"lambda": "lam"}
FIELD_TO_KEY = {v: k for k, v in KEY_TO_FIELD.items()}

# What each key accepts: (python types, description for messages).
_INT = ((int,), "an integer")
_FLOAT = ((int, float), "a number")
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "lam": _FLOAT, "alpha": _FLOAT, "center_update": ((str,), "a string"), "epochs": _INT,
    "iterations": _INT, "batch_size": _INT, "lr": _FLOAT, "momentum": _FLOAT, "weight_decay": _FLOAT,
    "lr_milestones": ((list, tuple), "a list of integers"), "lr_gamma": _FLOAT,
    "classifier_bias": ((bool,), "true or false"), "seed": _INT, "device": ((str,), "a string"),
    "train_limit": _INT, "test_limit": _INT, "plot_train_samples": _INT, "data_dir": ((str,), "a string"),
    "verify": ((bool,), "true or false"), "output_dir": ((str,), "a string"), "name": ((str,), "a string"),
    "log_every": _INT, "precision": ((str,), "a string"),
}
assert set(_TYPES) == {f.name for f in fields(TrainConfig)}
# Settings that may be unset (None: null in config.json; TOML has no null, so a file just leaves them out).
_OPTIONAL = {f.name for f in fields(TrainConfig) if f.default is None}


def key_of(field_name: str) -> str:
    return FIELD_TO_KEY.get(field_name, field_name)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """The config with user-facing keys ("lambda", not "lam"), JSON-ready."""
    d = asdict(config)
    d["lr_milestones"] = list(d["lr_milestones"])
    return {key_of(k): v for k, v in d.items()}


def _check_type(field_name: str, value: Any, where: str) -> Any:
    types, desc = _TYPES[field_name]
    if value is None and field_name in _OPTIONAL:
        return None
    # bool is an int in Python; a TOML `epochs = true` must still be refused.
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if ok and field_name == "lr_milestones":
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value)
    if not ok:
        raise ConfigError(f"{key_of(field_name)} = {value!r}{where}: expected {desc}")
    if isinstance(value, int) and not isinstance(value, bool) and _TYPES[field_name] is _FLOAT:
        value = float(value)
    return value


def from_dict(values: dict[str, Any], base: TrainConfig | None = None, where: str = "") -> TrainConfig:
    """`base` (default: the defaults) with `values` applied; keys are user-facing; checks names and types."""
    changes = {}
    for key, value in values.items():
        name = KEY_TO_FIELD.get(key, key)
        if name not in _TYPES or name in FIELD_TO_KEY and key == name:
            known = ", ".join(sorted(key_of(f) for f in _TYPES))
            raise ConfigError(f"unknown key {key!r}{where}; known keys: {known}")
        changes[name] = _check_type(name, value, where)
    config = replace(base or TrainConfig(), **changes)
    validate(config, where)
    return config


def load_toml(path: str | Path) -> dict[str, Any]:
    """The key/value pairs of a TOML config file (not yet checked)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the config file, then `overrides` (user-facing keys): the later wins."""
    config = TrainConfig()
    if config_file is not None:
        config = from_dict(load_toml(config_file), config, where=f" in {config_file}")
    return from_dict(overrides or {}, config)


def _finite(name: str, value: float, where: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key_of(name)} = {value}{where}: expected a finite number")


def validate(config: TrainConfig, where: str = "") -> None:
    """Raise ConfigError naming the first out-of-range value and the accepted range."""
    def bad(name: str, accepted: str) -> ConfigError:
        return ConfigError(f"{key_of(name)} = {getattr(config, name)!r}{where}: expected {accepted}")

    for name in ("lam", "alpha", "lr", "momentum", "weight_decay", "lr_gamma"):
        _finite(name, getattr(config, name), where)
    if config.lam < 0:
        raise bad("lam", "a number >= 0")
    if not 0 <= config.alpha <= 1:
        raise bad("alpha", "a number in [0, 1]")
    if config.center_update not in CENTER_UPDATES:
        raise bad("center_update", f"one of {', '.join(CENTER_UPDATES)}")
    if config.epochs is not None and config.epochs < 1:
        raise bad("epochs", "an integer >= 1")
    if config.iterations < 1:
        raise bad("iterations", "an integer >= 1")
    if config.batch_size < 1:
        raise bad("batch_size", "an integer >= 1")
    if config.lr <= 0:
        raise bad("lr", "a number > 0")
    if not 0 <= config.momentum < 1:
        raise bad("momentum", "a number in [0, 1)")
    if config.weight_decay < 0:
        raise bad("weight_decay", "a number >= 0")
    if not 0 < config.lr_gamma <= 1:
        raise bad("lr_gamma", "a number in (0, 1]")
    if any(m < 1 for m in config.lr_milestones):
        raise bad("lr_milestones", "positive iteration numbers")
    for name in ("train_limit", "test_limit"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise bad(name, "an integer >= 1")
    if config.plot_train_samples < 1:
        raise bad("plot_train_samples", "an integer >= 1")
    if config.precision not in PRECISIONS:
        raise bad("precision", f"one of {', '.join(PRECISIONS)}")
    if config.log_every < 1:
        raise bad("log_every", "an integer >= 1")
    if config.name is not None and (not config.name or "/" in config.name or config.name in (".", "..")):
        raise bad("name", "a non-empty folder name without '/'")
    try:
        check_device_spec(config.device)
    except CenterLossError as e:
        raise ConfigError(f"{e}{where}") from None
