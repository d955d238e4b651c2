"""The results-page writer (scripts/paper_figures.py, centerloss_cli/pages.py) keeps the tool's promises: every
input is checked before anything is written, it writes only into an empty folder or one that holds a page it
wrote, a run is never captioned with settings it was not trained with, and a failure leaves the old page whole.
Each case ran into a traceback, or wrote over a user's file, before. In-process, on the suite's tiny runs."""
import errno
import os
import shutil
from pathlib import Path

import pytest
from conftest import files_of

from centerloss_cli.launch.sweep import run_sweep
from centerloss_cli.plots import pages


@pytest.fixture(scope="module")
def made(tmp_path_factory, mnist, runtime) -> Path:
    """A tiny λ sweep (0 and 0.1, one seed), trained once for this module: its runs' own plots are not what
    the pages draw."""
    out = tmp_path_factory.mktemp("page_runs") / "outputs"
    run_sweep(mnist.config(out), [0.0, 0.1], [0.5], [0], runtime=runtime, progress=False)  # the pages draw
    return out


@pytest.fixture
def runs(made, tmp_path) -> Path:
    """A test's own copy of those runs."""
    return Path(shutil.copytree(made, tmp_path / "outputs"))


def sweep_of(runs: Path) -> Path:
    [sweep] = (runs / "sweeps").iterdir()
    return sweep


def softmax_run(runs: Path) -> Path:
    return next(p for p in runs.iterdir() if p.name.startswith("lambda0_"))


def write(out: Path, runs: Path, *more: str, figure2: Path | None = None) -> None:
    args = ["--out", str(out), "--label", "tiny", "--command", "the test", "--lambda-sweep", str(sweep_of(runs)),
            "--dpi", "30"]
    pages.main(args + (["--figure2", str(figure2)] if figure2 else []) + list(more))


def refused(capsys, out: Path, runs: Path, **given) -> str:
    with pytest.raises(SystemExit) as ended:
        write(out, runs, **given)
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def test_a_page_is_written_whole_rewritten_in_its_own_folder_and_kept_whole_by_a_full_disk(runs, tmp_path, capsys,
                                                                                          monkeypatch):
    out = tmp_path / "page"
    write(out, runs, figure2=softmax_run(runs))
    names = {p.name for p in out.iterdir()}
    assert names == {"README.md", ".centerloss-page", "figure2.png", "figure3_grid.png", "figure3_compactness.png",
                     "figure3_curves.png"}
    text = (out / "README.md").read_text()
    assert "## Figure 3: the λ family at α = 0.5" in text and "## Figure 2: softmax alone" in text
    before = files_of(out)

    class FullDisk:  # the os module as pages.py sees it, but the disk fills as the new page moves in
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def replace(*args):
            raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pages, "os", FullDisk())
        line = refused(capsys, out, runs)
    assert "No space left on device" in line and "the old page is as it was" in line, line
    assert files_of(out) == before and not [p for p in out.iterdir() if p.name.startswith(".page")]
    write(out, runs)  # again, without Figure 2: its figure, the writer's own, goes with it
    assert {p.name for p in out.iterdir()} == names - {"figure2.png"}


def test_a_users_folder_is_never_written(runs, tmp_path, capsys):
    """DOCS_DIR=~/myproject scripts/reproduce_all.sh replaced the user's README.md with a results page."""
    mine = tmp_path / "myproject"
    mine.mkdir()
    (mine / "README.md").write_text("my project")
    line = refused(capsys, mine, runs)
    assert "holds README.md, but no .centerloss-page: a results page is written only into an empty folder" in line
    assert files_of(mine) == {mine / "README.md": b"my project"}
    (tmp_path / "a-file").write_text("x")
    assert "a-file exists and is not a folder" in refused(capsys, tmp_path / "a-file", runs)


@pytest.mark.parametrize("damage, said", [
    ("no summary", "summary.csv: cannot be read"),
    ("no column", "summary.csv: no column test_ratio; was it written by centerloss sweep?"),
    ("no checkpoint", "checkpoint.pt: cannot be loaded"),
    ("figure 2 not a run", "no such run folder"),
    ("figure 2 not softmax", "trained with λ = 0.1, where this page shows λ = 0 (Figure 2 is softmax alone)"),
])
def test_each_bad_input_is_one_line_before_anything_is_written(runs, tmp_path, capsys, damage, said):
    """Each of these ended in a traceback, or (Figure 2 at λ = 0.5) in a page that captioned it softmax alone."""
    sweep, figure2 = sweep_of(runs), softmax_run(runs)
    if damage == "no summary":
        (sweep / "summary.csv").unlink()
    elif damage == "no column":
        lines = (sweep / "summary.csv").read_text().splitlines()
        (sweep / "summary.csv").write_text("\n".join(ln.replace("test_ratio", "ratio") for ln in lines) + "\n")
    elif damage == "no checkpoint":
        (figure2 / "checkpoint.pt").unlink()
    elif damage == "figure 2 not a run":
        figure2 = tmp_path / "nothing"
    else:
        figure2 = next(p for p in runs.iterdir() if p.name.startswith("lambda0.1_"))
    assert said in refused(capsys, tmp_path / "page", runs, figure2=figure2)
    assert not (tmp_path / "page").exists()
