"""The `centerloss` command: it parses arguments and calls the library; the work happens elsewhere."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer

from .errors import CenterLossError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Reproduce the MNIST center-loss experiment of Wen et al. (ECCV 2016) with LeNet++ and 2-D features.",
)

DEBUG_HELP = "Show the full traceback on errors."


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


# Options shared by `train` and `sweep`: each maps to the TrainConfig key named in `dest`.
def _training_overrides(**values: object) -> dict[str, object]:
    """The settings given on the command line (None means 'not given'), with user-facing keys."""
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of settings; flags given here win over it."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="Center loss weight λ (>= 0; 0 = softmax only). [default: 0.01]"),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Center update rate α in [0, 1]. [default: 0.5]"),
    center_update: Optional[str] = typer.Option(None, "--center-update", help="paper (Eq. 4) or sgd (centers trained by SGD with lr α). [default: paper]"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs to train. [default: as many as 10,000 iterations fill, 21 on full MNIST]"),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Iteration budget used when --epochs is not given. [default: 10000]"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Mini-batch size. [default: 128]"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate. [default: 0.01]"),
    momentum: Optional[float] = typer.Option(None, "--momentum", help="SGD momentum. [default: 0.9]"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="Weight decay of the network (never of the centers). [default: 5e-4]"),
    classifier_bias: Optional[bool] = typer.Option(None, "--classifier-bias/--no-classifier-bias", help="Give the 10-way classifier a bias (the paper's net has none). [default: no]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the initialisation and the batch order. [default: 0]"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps. [default: auto]"),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Train on a fixed, seeded subset of N images."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Evaluate on a fixed, seeded subset of N test images."),
    plot_train_samples: Optional[int] = typer.Option(None, "--plot-train-samples", help="Training images whose features are saved and plotted. [default: 10000]"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="MNIST root. [default: $CENTERLOSS_DATA, else ./data]"),
    verify: Optional[bool] = typer.Option(None, "--verify/--no-verify", help="Check the MNIST md5 sums (--no-verify for other IDX data, e.g. Fashion-MNIST). [default: verify]"),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help="Folder that holds the run folders. [default: outputs]"),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name. [default: from the settings, e.g. lambda0.01_alpha0.5_seed0]"),
    log_every: Optional[int] = typer.Option(None, "--log-every", help="Batches between progress-bar loss updates. [default: 20]"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the folder exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the run folder's contents and start again."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Train LeNet++ under softmax + λ·center loss, plotting the 2-D features every epoch."""
    from .config import resolve_config
    from .train import summary, train as run_training

    overrides = _training_overrides(
        **{"lambda": lam}, alpha=alpha, center_update=center_update, epochs=epochs, iterations=iterations,
        batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
        classifier_bias=classifier_bias, seed=seed, device=device, train_limit=train_limit,
        test_limit=test_limit, plot_train_samples=plot_train_samples, data_dir=data_dir, verify=verify,
        output_dir=output_dir, name=name, log_every=log_every,
    )
    with user_errors(debug):
        cfg = resolve_config(config, overrides)
        explicit = set(overrides) | (set(_file_keys(config)) if config else set())
        result = run_training(cfg, resume=resume, overwrite=overwrite, explicit=explicit, progress=not quiet)
        if result.trained_epochs == 0 and resume:
            typer.echo(f"{result.run_dir} is already complete; nothing to train.")
        typer.echo(summary(result))


def _file_keys(config: Path) -> list[str]:
    from .config import load_toml

    return list(load_toml(config))


@app.command()
def data(
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="MNIST root. [default: $CENTERLOSS_DATA, else ./data]"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the md5 sums."),
    debug: bool = typer.Option(False, "--debug", help=DEBUG_HELP),
) -> None:
    """Fetch MNIST if it is missing, verify it, and print where it came from and the per-class counts."""
    from .data import class_counts, load_mnist

    with user_errors(debug):
        mnist = load_mnist(data_dir, "cpu", verify=verify)
    typer.echo(f"MNIST {mnist.source}" + (" (md5 verified)" if verify else " (md5 not checked)"))
    for split in ("train", "test"):
        s = getattr(mnist, split)
        counts = " ".join(str(c) for c in class_counts(s.labels))
        typer.echo(f"{split}: {len(s)} images; per digit 0..9: {counts}")


def main() -> None:
    app(prog_name="centerloss")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
