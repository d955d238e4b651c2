"""The command line's options for the settings, made from their declarations in config.py, so each
setting is declared once: its flag, type, choices, default and help."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer

from .config import SCHEMA, SlurmConfig, TrainConfig, builtin_configs
from .schema import default_text, field_types, schema


def setting_option(name: str, cls: type = TrainConfig, flags: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The annotation and typer.Option of one setting, derived from its declaration in config.py.

    Every default is None, meaning "not given": then a config file's value, or the schema's default,
    stays. The help text shows the schema's default instead."""
    s = schema(cls)[name]
    base, _ = field_types(cls)[name]
    help = f"{s.help} [default: {default_text(cls, name)}]"
    if base is bool:
        return Optional[bool], typer.Option(None, f"{s.flag}/--no-{s.flag[2:]}", help=help)
    if s.choices:
        return Optional[Literal[s.choices]], typer.Option(None, *flags, s.flag, help=help)
    # Numbers and lists come as text, converted by schema.coerce, so that a refusal names the value given
    # (`batch_size = '1e3': expected an integer`); a list comes as "5000,8000".
    annotation = str if base in (tuple, int, float) else base
    metavar = s.metavar or {int: "<int>", float: "<float>"}.get(base)  # what the text stands for, as before
    return Optional[annotation], typer.Option(None, *flags, s.flag, help=help, metavar=metavar)


def complete_config(incomplete: str) -> list[str]:
    """--config <TAB>: the built-in configs' names, then the .toml files here, that start with what is typed."""
    names = builtin_configs() + sorted(str(p) for p in Path(".").glob(f"{incomplete}*.toml"))
    return [n for n in names if n.startswith(incomplete)]


_COMMON = [
    ("config", Optional[Path], typer.Option(
        None, "--config", metavar="FILE", autocompletion=complete_config,
        help=f"TOML file of settings, or a built-in config's name ({', '.join(builtin_configs())}); flags given here "
             "win over it.")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
    ("debug", bool, typer.Option(False, "--debug", help="Show the full traceback on errors.")),
]


def training_options(*, exclude: tuple[str, ...] = (), slurm: bool = False) -> Callable[[Callable], Callable]:
    """Give a command an option for every setting in the schema (less `exclude`, by field name), and
    --config, --quiet and --debug. It receives `settings`: the settings given, by field name; with
    `slurm`, also an option per SlurmConfig setting, given to it as `slurm_settings`.

    Why generated: each setting is declared once, in config.py, with its flag, type, check and help; an
    option written out here for each would declare the forty of them twice. Typer reads a command's
    options from its signature, so the command's signature is the function's own parameters and these."""
    # Each option's parameter name -> the settings class and field it gives. Slurm's parameters are
    # prefixed, so that a Slurm setting added later never meets a training setting of the same name.
    options = {n: (TrainConfig, n) for n in SCHEMA if n not in exclude}
    if slurm:
        options |= {f"slurm_{n}": (SlurmConfig, n) for n in schema(SlurmConfig)}

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        generated = [n for n, _, _ in _COMMON] + ["settings", "slurm_settings"]
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in generated]
        own.sort(key=lambda p: p.kind)  # ctx, a positional parameter, first
        keyword = inspect.Parameter.KEYWORD_ONLY
        shared = [inspect.Parameter(name, keyword, default=option, annotation=annotation)
                  for name, (cls, field) in options.items()
                  for annotation, option in [setting_option(field, cls)]]
        common = [inspect.Parameter(n, keyword, default=o, annotation=t) for n, t, o in _COMMON]

        @functools.wraps(func)
        def command(**kwargs: Any) -> None:
            given: dict[type, dict[str, Any]] = {TrainConfig: {}, SlurmConfig: {}}
            for name, (cls, field) in options.items():
                if (value := kwargs.pop(name)) is not None:
                    given[cls][field] = value
            if slurm:
                kwargs["slurm_settings"] = given[SlurmConfig]
            func(settings=given[TrainConfig], **kwargs)

        command.__signature__ = inspect.Signature(own + shared + common)  # type: ignore[attr-defined]
        return command

    return decorate
