"""The `centerloss` command: it parses arguments and calls the library; the work happens elsewhere."""
from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional

import typer

from .errors import CenterLossError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016) with LeNet++ and 2-D features.",
)


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """A CenterLossError becomes one line on stderr and its exit code; --debug keeps the traceback."""
    try:
        yield
    except CenterLossError as e:
        if debug:
            raise
        typer.echo(f"Error: {e}", err=True)
        raise typer.Exit(e.exit_code)


def _opt(decl: str, help: str) -> Any:
    return typer.Option(None, decl, help=help)


# The settings `train` and `sweep` share: (config key, type, option). None means "not given", so a
# config file's value, or the default, stays.
TRAINING_OPTIONS: list[tuple[str, Any, Any]] = [
    ("config", Optional[Path], _opt("--config", "TOML file of settings; flags given here win over it.")),
    ("center_update", Optional[str], _opt("--center-update", "paper (Eq. 4) or sgd (centers trained by SGD with lr α). [default: paper]")),
    ("epochs", Optional[int], _opt("--epochs", "Epochs to train. [default: as many as --iterations fills: 21 on full MNIST]")),
    ("iterations", Optional[int], _opt("--iterations", "Iteration budget used when --epochs is not given. [default: 10000]")),
    ("batch_size", Optional[int], _opt("--batch-size", "Mini-batch size. [default: 128]")),
    ("lr", Optional[float], _opt("--lr", "SGD learning rate. [default: 0.01]")),
    ("momentum", Optional[float], _opt("--momentum", "SGD momentum. [default: 0.9]")),
    ("weight_decay", Optional[float], _opt("--weight-decay", "Weight decay of the network, never of the centers. [default: 5e-4]")),
    ("classifier_bias", Optional[bool], _opt("--classifier-bias/--no-classifier-bias", "Give the 10-way classifier a bias (the paper's net has none). [default: no]")),
    ("seed", Optional[int], _opt("--seed", "Seed of the initialisation and the batch order. [default: 0]")),
    ("device", Optional[str], _opt("--device", "auto, cpu, cuda, cuda:N or mps. [default: auto]")),
    ("train_limit", Optional[int], _opt("--train-limit", "Train on a fixed, seeded subset of N training images.")),
    ("test_limit", Optional[int], _opt("--test-limit", "Evaluate on a fixed, seeded subset of N test images.")),
    ("plot_train_samples", Optional[int], _opt("--plot-train-samples", "Training images whose features are saved and plotted. [default: 10000]")),
    ("data_dir", Optional[str], _opt("--data-dir", "MNIST root. [default: $CENTERLOSS_DATA, else ./data]")),
    ("verify", Optional[bool], _opt("--verify/--no-verify", "Check the MNIST md5 sums; --no-verify for other IDX data such as Fashion-MNIST. [default: verify]")),
    ("output_dir", Optional[str], _opt("--output-dir", "Folder that holds the run folders. [default: outputs]")),
    ("precision", Optional[str], _opt("--precision", "fp32, tf32 (CUDA) or bf16 autocast; the centers and their update stay fp32. [default: fp32]")),
    ("log_every", Optional[int], _opt("--log-every", "Batches between progress-bar loss updates. [default: 20]")),
    ("quiet", bool, typer.Option(False, "--quiet", "-q", help="No progress bars.")),
    ("debug", bool, typer.Option(False, "--debug", help="Show the full traceback on errors.")),
]
_NOT_SETTINGS = {"config", "quiet", "debug"}


def training_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add TRAINING_OPTIONS to a command; it receives them as `settings` (the given ones), `config`,
    `quiet` and `debug`."""
    names = {n for n, _, _ in TRAINING_OPTIONS}
    own = [p for p in inspect.signature(func, eval_str=True).parameters.values()
           if p.name != "settings" and p.name not in names]
    shared = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=o, annotation=t) for n, t, o in TRAINING_OPTIONS]

    @functools.wraps(func)
    def command(**kwargs: Any) -> None:
        settings = {n: kwargs.pop(n) for n, _, _ in TRAINING_OPTIONS if n not in _NOT_SETTINGS}
        settings = {k: v for k, v in settings.items() if v is not None}
        func(settings=settings, **kwargs)

    command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
    return command


def _resolve(config_file: Optional[Path], settings: dict[str, Any]):
    from .config import load_toml, resolve_config

    config = resolve_config(config_file, settings)
    given = set(settings) | (set(load_toml(config_file)) if config_file else set())
    return config, given


@app.command()
@training_options
def train(
    settings: dict,
    lam: Optional[float] = typer.Option(None, "--lambda", help="Center loss weight λ (>= 0; 0 = softmax only). [default: 0.01]"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Center update rate α in [0, 1]. [default: 0.5]"),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name. [default: from the settings, e.g. lambda0.01_alpha0.5_seed0]"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the folder exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run folder's contents and start again."),
    config: Optional[Path] = None,
    quiet: bool = False,
    debug: bool = False,
) -> None:
    """Train LeNet++ under softmax + λ·center loss, plotting the 2-D features every epoch."""
    from .train import summary, train as run_training

    settings |= {k: v for k, v in {"lambda": lam, "alpha": alpha, "name": name}.items() if v is not None}
    with user_errors(debug):
        cfg, given = _resolve(config, settings)
        result = run_training(cfg, resume=resume, overwrite=overwrite, explicit=given, progress=not quiet)
    if resume and result.trained_epochs == 0:
        typer.echo(f"{result.run_dir} is already complete; nothing to train.")
    typer.echo(summary(result))


@app.command()
@training_options
def sweep(
    settings: dict,
    lambdas: str = typer.Option("0,0.0001,0.001,0.01,0.1", "--lambda", help="Comma-separated λ values."),
    alphas: str = typer.Option("0.5", "--alpha", help="Comma-separated α values."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs trained at once, in separate processes sharing the CPU threads."),
    batched: bool = typer.Option(False, "--batched", help="Train all runs as one stacked model in one process (fastest on a GPU)."),
    sweep_name: Optional[str] = typer.Option(None, "--sweep-name", help="Folder under OUTPUT_DIR/sweeps. [default: from the values]"),
    config: Optional[Path] = None,
    quiet: bool = False,
    debug: bool = False,
) -> None:
    """Train every λ × α combination (finished runs are skipped, interrupted ones resumed), then draw
    the grids, the compactness plot and the summary table."""
    from .sweep import parse_values, run_sweep

    def warn(msg: str) -> None:
        typer.echo(f"Warning: {msg}", err=True)

    with user_errors(debug):
        lam_values = parse_values(lambdas, "--lambda", warn)
        alpha_values = parse_values(alphas, "--alpha", warn)
        base, _ = _resolve(config, settings)
        result = run_sweep(base, lam_values, alpha_values, jobs=jobs, batched=batched, name=sweep_name, progress=not quiet)
    typer.echo(result.table)
    typer.echo(f"{len(result.results)} runs ({result.trained_runs} trained now); figures and tables in {result.folder}/")


@app.command()
def plot(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...", help="Run folders (outputs/<name>)."),
    epoch: str = typer.Option("all", "--epoch", help="all, last, or an epoch number."),
    split: str = typer.Option("both", "--split", help="train, test or both."),
    gif: bool = typer.Option(False, "--gif", help="Also write plots/train.gif and plots/test.gif, one frame per epoch."),
    grid: bool = typer.Option(False, "--grid", help="One figure with a panel per run (the paper's Figure 3 layout) instead; with --split both, train and test side by side."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Figure file for --grid (.png, .pdf or .svg). [default: grid_<split>.png]"),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """Re-draw figures from what runs saved; never trains."""
    from . import plots

    with user_errors(debug):
        if split not in ("train", "test", "both"):
            raise CenterLossError(f"split {split!r}: expected train, test or both")
        splits = ("train", "test") if split == "both" else (split,)
        if grid:
            grid_epoch = "last" if epoch == "all" else epoch
            path = plots.grid_of_runs(run_dirs, out or Path(f"grid_{split}.png"), epoch=grid_epoch, splits=splits)
            typer.echo(f"wrote {path}")
            return
        for run_dir in run_dirs:
            written = plots.replot_run(run_dir, epoch, splits)
            typer.echo(f"{run_dir}: re-drew {len(written)} plots in {Path(run_dir) / 'plots'}")
            if gif:
                for s in splits:
                    typer.echo(f"wrote {plots.save_gif(run_dir, s)}")


@app.command()
def data(
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="MNIST root. [default: $CENTERLOSS_DATA, else ./data]"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the md5 sums."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """Fetch MNIST if it is missing, verify it, and print where it came from and the per-class counts."""
    from .data import class_counts, load_mnist

    with user_errors(debug):
        mnist = load_mnist(data_dir, "cpu", verify=verify)
    typer.echo(f"MNIST {mnist.source}" + (" (md5 verified)" if verify else " (md5 not checked)"))
    for split in ("train", "test"):
        s = getattr(mnist, split)
        typer.echo(f"{split}: {len(s)} images; per digit 0..9: {' '.join(map(str, class_counts(s.labels)))}")


def main() -> None:
    try:
        from click.exceptions import UsageError
    except ImportError:  # typer >= 0.2x ships its own copy of click
        from typer._click.exceptions import UsageError

    try:
        code = app(prog_name="centerloss", standalone_mode=False)
    except UsageError as e:
        # One line, with click's suggestion ("Possible options: --lambda"), instead of the usage block.
        message = e.format_message()
        # `centerloss` alone shows the help, which click raises as a usage error too.
        typer.echo(message if type(e).__name__ == "NoArgsIsHelpError" else f"Error: {message}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    sys.exit(code or 0)
