"""How a setting is declared, checked and converted: the machinery behind the schemas of config.py.

A setting is a dataclass field made by `setting(...)`, whose metadata says how it is spelled (its key
in TOML files, config.json and as a flag), explained, checked and named. Inside the code a setting
has one name, its field name (`lam`); keys (`lambda`) and flags (`--lambda`) exist only at the edges,
where `from_dict`, `to_dict` and cli.py convert. This module imports neither torch nor anything of
the package but errors.
"""
from __future__ import annotations

import math
import numbers
import os
import typing
import unicodedata
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from typing import Any, Callable

from ..errors import ConfigError

NAME_MAX_BYTES = 255  # the longest file name most file systems allow
PATH_MAX_BYTES = 3000  # Linux takes 4,095 bytes; the run and file names below an output folder need the rest


@dataclass(frozen=True)
class Setting:
    """How one field of a settings dataclass is spelled, explained and checked."""

    key: str  # the name in TOML files and config.json; the flag is --key with "_" as "-"
    help: str
    accepted: str = ""  # what the error message says is accepted, when `check` fails
    check: Callable[[Any], bool] = lambda value: True
    choices: tuple[str, ...] = ()
    default_text: str = ""  # the default as --help and docs/options.md show it, where the value alone says too little
    # May differ on resume: it changes where, how long or how visibly a run trains, not what it learns.
    resumable: bool = False
    metavar: str | None = None
    # How a value other than the default shows in a default run name ("n{}" -> "_n2000"); every setting
    # that changes what a run learns has one, or is one of the name's fixed parts (lambda, alpha, seed).
    suffix: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def setting(default: Any, key: str, help: str, **options: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(key=key, help=help, **options)})


class SettingError(ConfigError):
    """A value of the wrong type or out of range. It names the setting as the caller spelled it: the field
    name for Python (`lam = -1.0`), the key for a file or the command line (`lambda = -1.0 in f.toml`)."""

    def __init__(self, label: str, value: Any, accepted: str, where: str = ""):
        self.label, self.value, self.accepted, self.where = label, value, accepted, where
        super().__init__(f"{label} = {value!r}{where}: expected {accepted}")

    def __reduce__(self):
        return (type(self), (self.label, self.value, self.accepted, self.where))


@cache
def schema(cls: type) -> dict[str, Setting]:
    """Field name -> its Setting."""
    return {f.name: f.metadata["setting"] for f in fields(cls)}


@cache
def field_types(cls: type) -> dict[str, tuple[type, bool]]:
    """Field name -> (its base type, whether it may be None), from the annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for name in schema(cls):
        args = typing.get_args(hints[name])
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hints[name]
        out[name] = (typing.get_origin(base) or base, optional)
    return out


_DESCRIBE = {float: "a number", int: "an integer", str: "a string", bool: "true or false", tuple: "a list of integers"}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # `epochs = true` is no count


def _number(text: str, base: type) -> Any:
    """A flag's text as an int (digits only: "1e3" and "1.5" are no counts) or a float; the text itself where
    it is neither, for the refusal to name."""
    try:
        return int(text) if base is int else float(text)
    except ValueError:
        return text


def coerce(cls: type, name: str, value: Any, label: str, where: str = "") -> Any:
    """`value` as field `name`'s type, or a SettingError under `label`. Ints pass as floats, paths as
    strings, lists as tuples, and a list may come as "5000,8000" (a flag)."""
    base, optional = field_types(cls)[name]
    if value is None and optional:
        return None
    if base is tuple and isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",")]
        except ValueError:
            raise SettingError(label, value, _DESCRIBE[tuple], where) from None
    if base is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    if base in (int, float) and isinstance(value, str):  # a flag's text, parsed here so a refusal names it
        value = _number(value, base)
    ok = {
        float: _is_int(value) or isinstance(value, numbers.Real) and not isinstance(value, bool),
        int: _is_int(value), str: isinstance(value, str), bool: isinstance(value, bool),
        tuple: isinstance(value, (list, tuple)) and all(_is_int(v) for v in value),
    }[base]
    if not ok:
        raise SettingError(label, value, _DESCRIBE[base], where)
    if base is float:
        return float(value) + 0.0  # -0.0 is 0: `--lambda -0` is softmax alone, and named lambda0 as such
    if base is int:
        return int(value)
    return tuple(int(v) for v in value) if base is tuple else value


class Checked:
    """A dataclass of `setting` fields, converted and validated on construction: one that exists is a
    valid one. Errors name fields as Python spells them; `from_dict` renames them to keys."""

    def __post_init__(self) -> None:
        cls = type(self)
        for name, s in schema(cls).items():
            value = coerce(cls, name, getattr(self, name), name)
            object.__setattr__(self, name, value)  # frozen: the converted value replaces the given one
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingError(name, value, "a finite number")
            if s.choices and value not in s.choices:
                raise SettingError(name, value, f"one of {', '.join(s.choices)}")
            if not s.check(value):
                raise SettingError(name, value, s.accepted)


def from_dict(values: dict[str, Any], base: Any, where: str = "") -> Any:
    """`base` (a settings dataclass) with `values` (keys, as in TOML and config.json) applied, each checked
    for name, type and range; errors name the key and `where` (" in FILE")."""
    key_to_field = {s.key: name for name, s in schema(type(base)).items()}
    unknown = [key for key in values if key not in key_to_field]
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}{where}; known keys: {', '.join(sorted(key_to_field))}")
    return with_given({key_to_field[key]: value for key, value in values.items()}, base, where)


def with_given(values: dict[str, Any], base: Any, where: str = "") -> Any:
    """`base` with `values` given by field name (lam, as every module reads it) converted and checked at the
    edge they came from (a flag's text, a file's value); an error names the setting by its key (lambda),
    as the command line and the files spell it, and `where`."""
    cls = type(base)
    settings = schema(cls)
    changes = {name: coerce(cls, name, value, settings[name].key, where) for name, value in values.items()}
    try:
        return replace(base, **changes)
    except SettingError as e:
        raise SettingError(settings[e.label].key, e.value, e.accepted, where) from None


def to_dict(config: Any) -> dict[str, Any]:
    """The settings by their keys (what TOML and config.json spell), JSON-ready."""
    s = schema(type(config))
    return {s[k].key: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def default_text(cls: type, name: str) -> str:
    """A setting's default as --help and docs/options.md show it."""
    s, value = schema(cls)[name], getattr(cls(), name)
    if s.default_text:
        return s.default_text
    if isinstance(value, bool):
        return s.flag[2:] if value else "no-" + s.flag[2:]
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# Characters that would let a name break a line, hide a part of itself or reorder what follows it: control
# characters (a newline), format characters (the right-to-left override, zero-width ones), line and
# paragraph separators, and the surrogates that stand for a file name's bytes that are not UTF-8.
UNSAFE_CATEGORIES = ("Cc", "Cf", "Cs", "Zl", "Zp")


def printable(text: str) -> str:
    """`text` as one honest line: each unsafe character (UNSAFE_CATEGORIES) written as its escape (\\n,
    \\u202e, \\udcff), so that a folder another program named cannot break or disguise a line we print."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in UNSAFE_CATEGORIES
                   else c for c in text)


def is_folder_name(name: str) -> bool:
    """One folder name: not empty, no '/', not . or .., printable (no unsafe character, NUL included), and
    short enough for the file system."""
    return (bool(name) and "/" not in name and name not in (".", "..") and printable(name) == name
            and len(name.encode()) <= NAME_MAX_BYTES)


def is_path(text: str) -> bool:
    """A path the OS can take and a line can show: not empty ('' would silently mean the default),
    printable (no NUL byte, no unsafe character), no part longer than a file name may be, and room below
    it for the run's own names."""
    return (bool(text) and printable(text) == text and len(text.encode()) <= PATH_MAX_BYTES
            and all(len(part.encode()) <= NAME_MAX_BYTES for part in text.split("/")))


def number_text(value: float) -> str:
    """A number as names show it: short ('0.01', '1e-05'), but exact, so that 0.1000001 never shares
    0.1's folder."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def suffix_text(value: Any) -> str:
    if isinstance(value, tuple):
        return "-".join(map(str, value))
    return number_text(value) if isinstance(value, float) else str(value)


def counted(n: int, noun: str) -> str:
    """'1 run', '3 runs': a count as a user reads it."""
    return f"{n} {noun}" + ("" if n == 1 else "s")
