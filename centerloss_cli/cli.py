"""The `centerloss` command: it parses arguments and calls the library; the work happens elsewhere."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Literal, Optional

import typer

from .errors import CenterLossError, Interrupted
from .plots import DEFAULT_POINTS
from .settings.config import DEFAULTS, Resolved, SlurmConfig, many_epochs_warning, resolve
from .settings.options import setting_option, training_options
from .settings.schema import counted, schema

if TYPE_CHECKING:
    from .engine.runtime import Runtime
    from .launch.sweep import SweepResult
    from .rundir.folder import RunResult

SWEEP_LAMBDAS = "0,0.0001,0.001,0.01,0.1"  # the paper's Figure 3 values, and softmax alone

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016) with LeNet++ and 2-D features.",
)


def tell(message: str, err: bool = False) -> None:
    """The command's own lines (its results, warnings and errors), as Runtime.say prints a run's: output is a
    courtesy, so a closed or full stdout (`| head`, `> /dev/full`) ends the printing and never the command."""
    try:
        typer.echo(message, err=err)
    except OSError:
        pass


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        tell(f"centerloss {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016) with LeNet++ and 2-D features."""


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """A CenterLossError becomes one line on stderr and its exit code; --debug keeps the traceback."""
    try:
        yield
    except CenterLossError as e:
        if debug:
            raise
        # A stop the user asked for (Ctrl-C, SIGTERM) is no error: it says what was saved, and how to go on.
        tell(str(e) if isinstance(e, Interrupted) else f"Error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None


def command_runtime(ctx: typer.Context, **voice: bool) -> "Runtime":
    """The runtime this command owns: made here, or handed in as the context's object (tests share one
    across commands, and so one plotting process)."""
    from .engine.runtime import Runtime
    from .settings.voice import Voice

    rt = ctx.obj if isinstance(ctx.obj, Runtime) else Runtime()
    rt.voice = Voice(**voice)
    return rt


def _close(ctx: typer.Context, rt: "Runtime") -> None:
    if rt is not ctx.obj:
        rt.close()


def say_warning(warning: str | None) -> None:
    if warning:
        tell(f"Warning: {warning}", err=True)


def summary(result: "RunResult") -> str:
    f = result.final
    if not f:
        return f"run {result.run_dir}: no epoch finished yet"
    files = ["metrics.csv", "checkpoint.pt", "features/"] + ["plots/"] * result.config.plots + \
        ["tensorboard/"] * result.config.tensorboard
    later = "" if result.config.plots else f"; --no-plots: centerloss plot {result.run_dir} [--curves] draws them"
    return (
        f"finished {result.run_dir.name}: epoch {int(f['epoch'])}, test accuracy {100 * f['test_acc']:.2f}%, "
        f"compactness ratio (intra/inter) train {f['train_ratio']:.3f}, test {f['test_ratio']:.3f}\n"
        f"  files: {result.run_dir}/ ({', '.join(files)}){later}"
    )


@app.command()
@training_options()
def train(
    ctx: typer.Context,
    settings: dict,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the folder exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Delete what the tool made in the run folder and start again."),
    config: Optional[Path] = None,
    quiet: bool = False,
    debug: bool = False,
) -> None:
    """Train LeNet++ under softmax + λ·center loss, plotting the 2-D features every epoch.

    \b
    Examples:
      centerloss train --lambda 0.01                    # the paper's Figure 3 run (10,000 iterations)
      centerloss train --lambda 0 --epochs 3 --train-limit 10000   # softmax only, a few minutes
      centerloss train --name mine --resume             # continue a stopped run exactly
    """
    with user_errors(debug):
        resolved = resolve(config, settings, slurm=False)  # train ignores the [slurm] table
        say_warning(many_epochs_warning(resolved.config))
        from .engine.training import train as run_training

        rt = command_runtime(ctx)
        try:
            result = run_training(resolved.config, resume=resume, overwrite=overwrite, runtime=rt,
                                  explicit=resolved.given, progress=not quiet)
        finally:
            _close(ctx, rt)
    if resume and result.trained_epochs == 0:
        tell(f"{result.run_dir} is already complete; nothing to train.")
    tell(summary(result))


@app.command()
@training_options(exclude=("lam", "alpha", "seed", "name"), slurm=True)
def sweep(
    ctx: typer.Context,
    settings: dict,
    slurm_settings: dict,
    lams: Optional[str] = typer.Option(
        None, "--lambda", metavar="L,L,...",
        help=f"Comma-separated λ values. [default: {SWEEP_LAMBDAS}, or the config file's lambda]"),
    alphas: Optional[str] = typer.Option(
        None, "--alpha", metavar="A,A,...",
        help="Comma-separated α values. [default: 0.5, or the config file's alpha]"),
    seeds: Optional[str] = typer.Option(
        None, "--seed", metavar="S,S,...",
        help="Comma-separated seeds; with several, the summary adds mean ± std rows and the compactness plot error "
             "bars. [default: 0, or the config file's seed]"),
    jobs: int = typer.Option(
        1, "--jobs", "-j", metavar="N", help="Runs trained at once, in separate processes sharing the CPU threads."),
    batched: bool = typer.Option(
        False, "--batched", help="Train all runs as one stacked model in one process (fastest on a GPU)."),
    sweep_name: Optional[str] = typer.Option(
        None, "--sweep-name", metavar="NAME", help="Folder under OUTPUT_DIR/sweeps. [default: from the values]"),
    launcher: Literal["local", "slurm"] = typer.Option(
        "local", "--launcher",
        help="local: train here; slurm: one Slurm job per run (per seed with --batched), through submitit."),
    wait: bool = typer.Option(
        False, "--wait", help="With --launcher slurm: block until the jobs end, then write the outputs."),
    config: Optional[Path] = None,
    quiet: bool = False,
    debug: bool = False,
) -> None:
    """Train every λ × α × seed combination (finished runs are skipped, interrupted ones resumed), then
    draw the grids, the compactness plot and the summary table.

    \b
    Examples:
      centerloss sweep --lambda 0,0.0001,0.001,0.01,0.1 --jobs 2   # Figure 3 and softmax alone
      centerloss sweep --lambda 0,0.01 --seed 0,1,2                # mean ± std over seeds
      centerloss sweep --launcher slurm --gpus 1 --device cuda --wait
    """
    with user_errors(debug):
        if launcher == "local" and slurm_settings:
            raise CenterLossError(f"{schema(SlurmConfig)[next(iter(slurm_settings))].flag} is a Slurm setting: "
                                  "give it with --launcher slurm")
        resolved = resolve(config, settings, slurm_settings)
        say_warning(many_epochs_warning(resolved.config))
        from .launch.sweep import run_sweep

        values = sweep_values(resolved, lams, alphas, seeds)
        rt = command_runtime(ctx, sweep=True)
        try:
            result = run_sweep(resolved.config, *values, jobs=jobs, batched=batched, name=sweep_name,
                               progress=not quiet, launcher=launcher,
                               slurm=resolved.slurm if launcher == "slurm" else None, wait=wait, runtime=rt)
        finally:
            _close(ctx, rt)
    if result is None:  # Slurm jobs submitted, or still out
        return
    tell(result.table)
    tell(sweep_ending(result))


def sweep_ending(result: "SweepResult") -> str:
    """A finished sweep's last lines: what it trained and where its tables are, and its figures unless
    --no-plots; then figures left by an earlier call with --plots are named as that call's."""
    from .launch.sweep import FIGURES

    runs = f"{counted(len(result.results), 'run')} ({result.trained_runs} trained now)"
    if result.results[0].config.plots:
        note = f"{result.report}\n" if result.report else ""
        return f"{note}{runs}; report.html, figures and tables in {result.folder}/"
    kept = [f for f in FIGURES if (result.folder / f).is_file()]
    figures = (f"no new figures (--no-plots): {', '.join(kept)} are from an earlier call with --plots, which "
               "draws them anew" if kept else "no figures (--no-plots): the same sweep command with --plots draws them")
    return f"{figures}\n{runs}; tables in {result.folder}/"


def sweep_values(resolved: Resolved, lams: str | None, alphas: str | None,
                 seeds: str | None) -> tuple[list[float], list[float], list[int]]:
    """The sweep's values of λ, α and seed, from the flags, else the config file's single value, else the
    defaults; each checked here, where a bad one is named as its flag names it."""
    from .launch.sweep import parse_values

    def warn(msg: str) -> None:
        tell(f"Warning: {msg}", err=True)

    base = resolved.config
    if lams is None:
        lams = str(base.lam) if "lam" in resolved.given else SWEEP_LAMBDAS
    parsed = (parse_values(lams, "--lambda", warn),
              parse_values(str(base.alpha) if alphas is None else alphas, "--alpha", warn),
              parse_values(str(base.seed) if seeds is None else seeds, "--seed", warn, kind=int))
    for name, values in zip(("lam", "alpha", "seed"), parsed):
        for value in values:
            resolve(None, {name: value})
    return parsed


@app.command()
def plot(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR", show_default=False,
                                          help="Run folders (outputs/<name>), one or more."),
    epoch: str = typer.Option("all", "--epoch", metavar="<all|last|N>", help="all, last, or an epoch number."),
    split: Literal["train", "test", "both"] = typer.Option("both", "--split", help="train, test or both."),
    gif: bool = typer.Option(
        False, "--gif", help="Also write plots/train.gif and plots/test.gif, one frame per epoch."),
    grid: bool = typer.Option(
        False, "--grid", help="One figure with a panel per run (the paper's Figure 3 layout) instead; with --split "
                              "both, train and test side by side."),
    centers: Optional[bool] = typer.Option(None, "--centers/--no-centers", help="Draw the class centers. [default: "
                                           "with λ > 0 only, as the paper's Figure 2 (λ = 0) has none]"),
    dpi: Optional[int] = setting_option("plot_dpi", flags=("--dpi",))[1],
    fps: float = typer.Option(2.0, "--fps", help="GIF frames per second; the last frame is held for 2 s."),
    curves: bool = typer.Option(
        False, "--curves", help="Re-draw the runs' loss, accuracy and compactness curves per epoch instead: one "
                                "run's into its plots/curves.png, several runs overlaid in one figure."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="FILE", help="Figure file for --grid or for --curves of several runs (.png, "
                                                  ".pdf or .svg). [default: grid_<split>.png, curves.png]"),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """Re-draw figures from what runs saved; never trains.

    \b
    Examples:
      centerloss plot outputs/lambda0.01_alpha0.5_seed0 --gif --fps 4
      centerloss plot outputs/lambda0_* outputs/lambda0.01_* --grid --split both -o fig.pdf
      centerloss plot outputs/lambda0_* outputs/lambda0.01_* --curves -o curves.png
    """
    from .plots import figures

    with user_errors(debug):
        splits = ("train", "test") if split == "both" else (split,)
        dpi = DEFAULTS.plot_dpi if dpi is None else resolve(None, {"plot_dpi": dpi}).config.plot_dpi
        if curves and grid:
            raise CenterLossError("--curves and --grid are two different figures: give one")
        if gif:
            figures.check_fps(fps)  # before anything is drawn
        if curves:
            plot_curves(run_dirs, out, dpi)
        elif grid:
            path = figures.grid_of_runs(run_dirs, out or Path(f"grid_{split}.png"),
                                        epoch="last" if epoch == "all" else epoch, splits=splits, centers=centers,
                                        dpi=dpi)
            tell(f"wrote {path}")
        else:
            replot(run_dirs, epoch, splits, centers, dpi, fps if gif else None)


def replot(run_dirs: list[Path], epoch: str, splits: tuple[str, ...], centers: bool | None, dpi: int,
           gif_fps: float | None) -> None:
    """`plot RUN_DIR...`: each run's scatter plots drawn again from its saved features, and with `gif_fps`
    its GIFs."""
    from .plots import figures

    for run_dir in run_dirs:
        written = figures.replot_run(run_dir, epoch, splits, centers, dpi)
        tell(f"{run_dir}: re-drew {len(written)} plots in {Path(run_dir) / 'plots'}")
        for s in splits if gif_fps is not None else ():
            tell(f"wrote {figures.save_gif(run_dir, s, gif_fps, centers, dpi)}")


def plot_curves(run_dirs: list[Path], out: Path | None, dpi: int) -> None:
    """`plot --curves`: one run's curves into its plots/curves.png, or several runs overlaid in `out`."""
    from .plots import charts, figures
    from .rundir.files import read_metrics

    if len(run_dirs) == 1 and out is None:
        path = charts.draw_run_curves(run_dirs[0], read_metrics(run_dirs[0]), dpi)
    else:
        figures.check_figure_path(out or "curves.png")
        histories = [(Path(d).name, read_metrics(d)) for d in run_dirs]
        for d, (_, rows) in zip(run_dirs, histories):
            if not rows and len(run_dirs) > 1:
                tell(f"{d}: no finished epoch yet, left out of the curves")
        path = charts.save_curves(out or Path("curves.png"), histories, dpi)
    tell(f"wrote {path}" if path else f"{run_dirs[0]}: no finished epoch yet, so no curves")


@app.command()
def data(
    dataset: setting_option("dataset")[0] = setting_option("dataset")[1],  # its choices, as train --help lists them
    data_dir: Optional[str] = setting_option("data_dir")[1],
    verify: Optional[bool] = setting_option("verify")[1],
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """Fetch the dataset if it is missing, verify it, and print where it came from and the per-class counts.

    \b
    Examples:
      centerloss data                                   # MNIST into ./data, or $CENTERLOSS_DATA
      centerloss data --dataset fashion-mnist --data-dir ~/datasets
    """
    from .dataset.fetch import DATASETS
    from .dataset.loading import class_counts, load_dataset

    with user_errors(debug):
        given = {"dataset": dataset, "data_dir": data_dir, "verify": verify}
        cfg = resolve(None, {k: v for k, v in given.items() if v is not None}).config
        loaded = load_dataset(cfg.data_dir, "cpu", verify=cfg.verify, may_create=True,  # fetching is what it is for
                              dataset=cfg.dataset, say=lambda message: tell(message, err=True))
    d = DATASETS[cfg.dataset]
    tell(f"{d.title} {loaded.source}" + (" (md5 verified)" if cfg.verify else " (md5 not checked)"))
    for split in ("train", "test"):
        s = getattr(loaded, split)
        tell(f"{split}: {len(s)} images; per class ({', '.join(d.classes)}): "
                   f"{' '.join(map(str, class_counts(s.labels)))}")


@app.command()
def report(
    paths: List[Path] = typer.Argument(..., metavar="PATH", show_default=False,
                                       help="Run folders or a sweep folder (shell globs work: outputs/lambda0*)."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", metavar="FILE", help="The page (.html). [default: report.html in the sweep's folder, "
                                                  "the run's folder, or the folder the runs share]"),
    points: int = typer.Option(DEFAULT_POINTS, "--points", metavar="N", help="Points drawn per split and run, the "
                                                                             "same in every epoch (fewer: a smaller "
                                                                             "file)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace FILE, if it is a report the tool wrote."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """One page, with nothing to install or fetch, that shows the runs' features epoch by epoch: a scatter
    per run laid out as the paper's Figure 3, one epoch slider (and play, and the arrow keys), test or
    training features, the class centers, the runs' compactness and accuracy curves, and under the mouse
    the digit itself. It trains nothing.

    \b
    Examples:
      centerloss report outputs/sweeps/lambda0-0.0001-0.001-0.01-0.1_alpha0.5_seed0
      centerloss report outputs/lambda0_* outputs/lambda0.1_* -o outputs/two.html
    """
    from .plots.report import default_output, write_report

    with user_errors(debug):
        written = write_report(paths, out or default_output(paths), points=points, overwrite=overwrite)
    tell(f"report: {written} (open it in a browser; it needs no network)")


@app.command("list")
def list_runs(
    output_dir: Path = typer.Argument(Path("outputs"), metavar="DIR", show_default=False, help="The output folder."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
) -> None:
    """One line per run folder under DIR, at any depth (DIR/notebook/RUN too): its path under DIR, dataset,
    λ, α, seed, epochs done of total, the last test accuracy and compactness ratio, and whether it is
    finished, stopped, running or diverged; sweeps grouped; then how many folders it looked in.

    \b
    Examples:
      centerloss list                                   # what is under outputs/
      centerloss list runs/cluster
    """
    from .rundir.listing import listing

    with user_errors(debug):
        tell("\n".join(listing(output_dir)))


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
        tell(message if type(e).__name__ == "NoArgsIsHelpError" else f"Error: {message}", err=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        tell("Aborted.", err=True)
        sys.exit(130)
    sys.exit(code or 0)
