import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, assert_each_matches_only_itself, checkpoint, max_difference, tiny
from PIL import Image

from centerloss_cli.launch.sweep import default_sweep_name, parse_values, sweep_configs
from centerloss_cli.plots.figures import grid_panels
from centerloss_cli.rundir.files import load_features, save_features
from centerloss_cli.settings.config import DEFAULTS

TWO_EPOCHS = tiny(epochs=2)


def test_plot_redraws_from_saved_features_without_training(run_cli, mnist, trained):
    run = trained.copy(2, Path("outputs/p"))
    checkpoint_before = (run / "checkpoint.pt").stat().st_mtime_ns
    metrics_before = (run / "metrics.csv").read_text()
    for png in (run / "plots").glob("*.png"):
        png.unlink()
    result = run_cli("plot", run, "--dpi", "30")  # small, as a figure at 200 dpi takes longer to draw
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "plots").glob("*.png")) == [
        "test_epoch_001.png", "test_epoch_002.png", "train_epoch_001.png", "train_epoch_002.png"]
    assert (run / "checkpoint.pt").stat().st_mtime_ns == checkpoint_before
    assert (run / "metrics.csv").read_text() == metrics_before
    for png in (run / "plots").glob("*.png"):
        png.unlink()
    assert run_cli("plot", run, "--epoch", "last", "--split", "test").exit_code == 0
    assert [p.name for p in (run / "plots").glob("*.png")] == ["test_epoch_002.png"]
    with Image.open(run / "plots" / "test_epoch_002.png") as im:
        assert im.width >= 900  # 200 dpi by default: legible at full-page width

    gif = run_cli("plot", run, "--gif", "--epoch", "last", "--fps", "4", "--dpi", "30")
    assert gif.exit_code == 0, gif.output
    for split in ("train", "test"):
        with Image.open(run / "plots" / f"{split}.gif") as im:
            assert im.n_frames == 2
            durations = []
            for i in range(im.n_frames):
                im.seek(i)
                durations.append(im.info["duration"])
        assert durations == [250, 2000]  # 4 frames a second, and the last one held
    assert run_cli("plot", run, "--gif", "--fps", "0").exit_code == 2
    with Image.open(run / "plots" / "test_epoch_002.png") as im:  # drawn again with the GIF, at --dpi 30
        assert im.width < 300


@pytest.mark.process  # --jobs 2: worker processes
def test_a_sweep_in_parallel_or_not_its_tables_and_its_grid(run_cli, mnist):
    """`sweep --jobs 2` and a sequential sweep give the same runs; a sweep writes its tables, trains nothing
    when called again, then with --plots draws its figures, and its runs make a grid ordered by lambda, in
    every format."""
    args = ["sweep", "--lambda", "0.1,0", "--alpha", "0.5", *mnist.args, *TINY]  # not in order, on purpose
    parallel = run_cli(*args, "--jobs", "2", "--output-dir", "par")
    assert parallel.exit_code == 0, parallel.output
    first = run_cli(*args)
    assert first.exit_code == 0, first.output
    assert "2 runs (2 trained now)" in first.output and "| λ | α |" in first.output
    names = [mnist.run(lam=lam).name for lam in (0.1, 0)]
    # Each worker computes with one CPU thread and the sequential sweep with two, so the float sums
    # differ in their last bits: the runs agree to a tolerance, each with its own twin only.
    assert_each_matches_only_itself(Path("outputs"), Path("par"), names, tol=1e-3)

    (folder,) = Path("outputs/sweeps").iterdir()  # named from the values and the settings its runs share
    assert folder.name.startswith("lambda0.1-0_alpha0.5_seed0_b8_n32_test16_plot16")
    assert "no figures (--no-plots): the same sweep command with --plots draws them" in first.output
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "summary.csv", "summary.md", "sweep.json"]
    rows = list(csv.DictReader(open(folder / "summary.csv")))
    assert [float(r["lambda"]) for r in rows] == [0.0, 0.1]
    assert {"test_acc", "train_ratio", "test_ratio", "test_intra", "test_inter"} <= set(rows[0])
    checkpoints = {p: p.stat().st_mtime_ns for p in Path("outputs").glob("lambda*/checkpoint.pt")}
    assert len(checkpoints) == 2
    second = run_cli(*args, "--plots")
    assert second.exit_code == 0, second.output
    assert "2 runs (0 trained now); report.html, figures and tables in" in second.output
    for f in ("grid_train.png", "grid_test.png", "compactness.png", "report.html"):
        assert (folder / f).is_file(), f
    assert checkpoints == {p: p.stat().st_mtime_ns for p in Path("outputs").glob("lambda*/checkpoint.pt")}
    third = run_cli(*args)  # --no-plots again: the figures stay, and are said to be the earlier call's
    assert "no new figures (--no-plots): grid_train.png, grid_test.png, compactness.png, report.html are from an " \
           "earlier call with --plots" in third.output and (folder / "grid_test.png").is_file()

    runs = [f"outputs/{n}" for n in names]
    panels, _ = grid_panels(runs, "last", ("test",))
    assert len(panels) == 2
    # the paper's Figure 2 has neither α nor centers at λ = 0; Figure 3's panels have both
    assert panels[0][3].startswith("λ = 0 (softmax only)\nepoch 1, test acc") and panels[0][2] is None
    assert panels[1][3].startswith("λ = 0.1, α = 0.5\nepoch 1, test acc") and panels[1][2].shape == (10, 2)
    low = ["--dpi", "30"]  # what these figures show does not depend on it, and 200 dpi costs seconds
    result = run_cli("plot", *runs, "--grid", "--epoch", "last", "--split", "test", "-o", "fig.pdf", *low)
    assert result.exit_code == 0, result.output
    pdf = Path("fig.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/Subtype /Image" not in pdf  # vector points, not a raster image
    assert run_cli("plot", *runs, "--grid", "--split", "train", "-o", "fig.png", *low).exit_code == 0
    with Image.open("fig.png") as im:
        assert im.width > im.height  # two panels side by side
    both = run_cli("plot", runs[0], "--grid", "--split", "both", "-o", "pair.png", *low)
    assert both.exit_code == 0, both.output
    pair, _ = grid_panels(runs[:1], "last", ("train", "test"))
    # each panel names its split once: a train panel by its train accuracy, a test panel by the test's
    assert [p[3].split("\n")[1].split(", ")[1].split(" acc")[0] for p in pair] == ["train", "test"]
    assert [p[3].count(s) for p, s in zip(pair, ["train", "test"])] == [1, 1]
    old = replace(load_features(runs[0], 1), train_acc=None)  # a file of a version that kept no train accuracy
    save_features(Path(runs[0]), old)
    pair, _ = grid_panels(runs[:1], "last", ("train", "test"))
    assert pair[0][3].endswith(f"test acc {100 * old.test_acc:.2f}% (train)") and pair[1][3].endswith("%")
    bad = run_cli("plot", *runs, "--grid", "--split", "test", "-o", "fig.jpg")
    assert bad.exit_code != 0 and "fig.jpg" in bad.output


def test_sweep_duplicates_are_run_once_with_a_warning():
    warnings = []
    lambdas = parse_values("0.1,0.01,0.1", "--lambda", warnings.append)
    assert lambdas == [0.1, 0.01] and warnings == ["--lambda: 0.1 is listed twice; running it once"]
    assert [c.run_name for c in sweep_configs(DEFAULTS, lambdas, [0.5])] == [
        "lambda0.1_alpha0.5_seed0", "lambda0.01_alpha0.5_seed0"]


def test_values_that_print_alike_get_folders_of_their_own():
    """0.1 and 0.1000001 were both named 'lambda0.1', and so shared one folder and lost a run."""
    names = [c.run_name for c in sweep_configs(DEFAULTS, [0.1, 0.1000001], [0.5])]
    assert names == ["lambda0.1_alpha0.5_seed0", "lambda0.1000001_alpha0.5_seed0"]


def test_a_long_default_sweep_name_still_fits_the_file_system():
    """About 40 values used to make a name over 255 bytes: every run trained, then a traceback."""
    many = [i / 1000 for i in range(60)]
    name = default_sweep_name(DEFAULTS, many, [0.5], [0])
    assert len(name.encode()) <= 255 and name.startswith("lambda0-0.001-0.002-")
    assert name != default_sweep_name(DEFAULTS, [*many[:-1], 1.0], [0.5], [0])
    assert default_sweep_name(DEFAULTS, [0, 0.1], [0.5], [0]) == "lambda0-0.1_alpha0.5_seed0"
    assert default_sweep_name(DEFAULTS, [0.01], [0.5], [0, 1]) == "lambda0.01_alpha0.5_seed0-1"


@pytest.mark.parametrize("args,message", [
    (["--lambda", ""], "--lambda '': expected a comma-separated list"),
    (["--sweep-name", "../x"], "--sweep-name '../x': expected a folder name of printable UTF-8 characters without '/'"),
    (["--sweep-name", "/abs"], "--sweep-name '/abs': expected a folder name"),
    (["--lambda", "0.1,,0.2"], "expected a comma-separated list"),
    (["--lambda", "0.1,-0.01"], "lambda = -0.01: expected a number >= 0"),
    (["--lambda", "0.1,big"], "'big' is not a number"),
    (["--alpha", "0.5,inf"], "'inf' is not a finite number"),
    (["--alpha", "2"], "alpha = 2.0: expected a number in [0, 1]"),
    (["--jobs", "0"], "jobs = 0: expected an integer >= 1"),
    (["--seed", "0,1.5"], "--seed '0,1.5': '1.5' is not an integer"),
    (["--seed", "0,-1"], "seed = -1: expected an integer in [0, 2^32)"),
    (["--center-update", "caffe", "--alpha", "0.5,0.1"], "the caffe center update does not use α; give one value"),
])
def test_bad_sweep_values_are_refused_before_anything_runs(run_cli, mnist, args, message):
    result = run_cli("sweep", *args, *mnist.args, *TINY)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not Path("outputs").exists()


def test_plot_of_a_missing_or_empty_run_folder(run_cli, tmp_path):
    missing = run_cli("plot", "outputs/nope")
    assert missing.exit_code != 0 and "run folder outputs/nope does not exist" in missing.output
    Path("outputs/empty").mkdir(parents=True)
    empty = run_cli("plot", "outputs/empty")
    assert empty.exit_code != 0 and "outputs/empty has no saved features" in empty.output


def test_a_sweep_over_seeds_adds_mean_and_std_rows(run_cli, mnist):
    # No plots: the results page's test draws a sweep of two seeds with its error bars
    result = run_cli("sweep", "--lambda", "0,0.1", "--seed", "0,1", "--batched", *mnist.args, *tiny())
    assert result.exit_code == 0, result.output
    assert "4 runs (4 trained now)" in result.output
    (folder,) = Path("outputs/sweeps").iterdir()
    rows = list(csv.DictReader(open(folder / "summary.csv")))
    assert [(r["lambda"], r["seed"]) for r in rows] == [
        ("0.0", "0"), ("0.0", "1"), ("0.0", "mean"), ("0.1", "0"), ("0.1", "1"), ("0.1", "mean")]
    for runs, mean in ((rows[0:2], rows[2]), (rows[3:5], rows[5])):
        for key in ("test_acc", "test_ratio", "train_ratio"):
            values = [float(r[key]) for r in runs]
            if key != "test_acc":  # one epoch on 32 images: accuracies may tie, the ratios do not
                assert values[0] != values[1]  # two seeds, two different runs
            assert float(mean[key]) == pytest.approx(np.mean(values))
            assert float(mean[f"{key}_std"]) == pytest.approx(np.std(values, ddof=1))
    # A seed of a stacked sweep is the same run as that seed trained alone.
    alone = run_cli("train", "--lambda", "0.1", "--seed", "1", *mnist.args, *TINY, "--output-dir", "alone")
    assert alone.exit_code == 0, alone.output
    name = mnist.run(lam=0.1, seed=1).name
    assert max_difference(checkpoint(Path("alone") / name), checkpoint(Path("outputs") / name)) < 1e-3
    table = (folder / "summary.md").read_text()
    assert "| 0.1 | 0.5 | mean ± std (2 seeds) |" in table and " ± " in table.splitlines()[-1]
    # In a grid, runs of one lambda and alpha are told apart by their seed; runs of distinct settings are not.
    panels, _ = grid_panels(sorted(Path("outputs").glob("lambda0.1_*")), "last", ("test",))
    assert [p[3].split("\n")[0] for p in panels] == ["λ = 0.1, α = 0.5, seed 0", "λ = 0.1, α = 0.5, seed 1"]


def test_every_run_keeps_its_curves_and_plot_curves_overlays_runs(run_cli, mnist, tmp_path, trained):
    a, b = trained.copy(2), trained.copy(2, lam=0.0)
    curves = a / "plots" / "curves.png"
    with Image.open(curves) as im:  # drawn by training at the run's --plot-dpi (30), with every epoch of metrics.csv
        assert 200 < im.size[0] < 400
    curves.unlink()
    assert run_cli("plot", a, "--curves").exit_code == 0 and curves.is_file()
    with Image.open(curves) as im:  # `plot` draws at 200 dpi unless told otherwise
        assert im.size[0] > 1500
    both = run_cli("plot", a, b, "--curves", "-o", "both.pdf", "--dpi", "30")
    assert both.exit_code == 0, both.output
    assert Path("both.pdf").read_bytes().startswith(b"%PDF")
    missing = run_cli("plot", tmp_path / "nothing", "--curves")
    assert missing.exit_code == 2 and "metrics.csv: cannot be read" in missing.output


def test_curves_of_several_runs_keep_the_legend_off_the_panels_and_leave_out_empty_runs(run_cli, trained):
    """The legend of long run names covered the softmax panel, and a run stopped before its first epoch
    got a legend entry with no data."""
    one = trained.copy(2, Path("outputs/a_run_with_a_long_name_lambda0.01_alpha0.5_seed0_b8_n32"))
    other = trained.copy(1, Path("outputs/b"))
    empty = trained.copy(1, Path("outputs/empty"))
    (empty / "metrics.csv").write_text((empty / "metrics.csv").read_text().splitlines()[0] + "\n")
    result = run_cli("plot", one, other, empty, "--curves", "-o", "curves.png", "--dpi", "50")
    assert result.exit_code == 0, result.output
    assert "outputs/empty: no finished epoch yet, left out of the curves" in result.output
    assert run_cli("plot", one, "--curves", "-o", "single.png", "--dpi", "50").exit_code == 0
    with Image.open("curves.png") as several, Image.open("single.png") as single:
        assert several.width == single.width and several.height > single.height  # the legend sits below
