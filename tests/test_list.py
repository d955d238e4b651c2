"""`centerloss list`: a line per run folder, each in its state, sweeps grouped."""
import json
import os
from pathlib import Path

from conftest import TINY

from centerloss_cli.rundir.lock import acquire


def test_list_shows_every_run_in_its_state_and_groups_sweeps(run_cli, mnist, trained):
    trained.copy(1, Path("outputs/fin"))
    stopped = trained.copy(1, Path("outputs/stop"))
    record = json.loads((stopped / "config.json").read_text())
    (stopped / "config.json").write_text(json.dumps({**record, "epochs": 2}))  # one of its two epochs done
    running = trained.copy(1, Path("outputs/busy"))
    diverged = run_cli("train", *mnist.args, *TINY, "--lambda", "1e30", "--lr", "1e6", "--name", "div")
    assert diverged.exit_code == 1, diverged.output
    Path("outputs/sweeps/s1").mkdir(parents=True)
    Path("outputs/sweeps/s1/sweep.json").write_text(json.dumps({"runs": ["fin", "stop"]}))
    Path("outputs/notes").mkdir()  # not a run folder: not listed
    lock = acquire(running, "run folder")  # as a training process holds it
    try:
        before = {p: p.stat().st_mtime_ns for p in Path("outputs").rglob("*")}
        result = run_cli("list")
    finally:
        lock.release()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "sweep sweeps/s1/ (2 runs)"  # each folder by its path under the one given
    assert lines[1].startswith("  fin  mnist  λ 0.01  α 0.5  seed 0  epoch 1/1 ") and lines[1].endswith("finished")
    assert lines[2].startswith("  stop  ") and "epoch 1/2" in lines[2] and lines[2].endswith("stopped")
    assert lines[3] == "runs of no sweep:"
    assert lines[4].startswith("  busy  ") and lines[4].endswith("running")
    assert lines[5].startswith("  div  ") and "no epoch finished yet" in lines[5] and lines[5].endswith("diverged")
    assert lines[6] == "4 runs, 1 sweep; looked in 8 folders under outputs/"  # outputs, 4 runs, notes, sweeps, s1
    assert len(lines) == 7
    assert {p: p.stat().st_mtime_ns for p in Path("outputs").rglob("*")} == before  # it wrote nothing
    refusal = "Error: nowhere is not a folder; expected an output folder such as outputs"
    assert run_cli("list", "nowhere").output.strip() == refusal


def test_list_finds_runs_at_any_depth_and_a_damaged_run_is_one_line(run_cli, trained):
    """The README's Python example trains into outputs/notebook/...: `list` used to look one level deep only.
    A metrics.csv without its step column, or with an empty row, used to end the listing in a KeyError; a
    .lock that is a FIFO hung it."""
    trained.copy(1, Path("outputs/a/b/deep"))
    no_step = trained.copy(1, Path("outputs/nostep"))
    rows = (no_step / "metrics.csv").read_text().splitlines()
    (no_step / "metrics.csv").write_text("\n".join(",".join(c for i, c in enumerate(r.split(",")) if i != 1)
                                           for r in rows) + "\n")  # the step column gone
    empty_row = trained.copy(1, Path("outputs/emptyrow"))
    with open(empty_row / "metrics.csv", "a") as f:
        f.write("," * 15 + "\n")
    fifo = trained.copy(1, Path("outputs/fifo"))
    (fifo / ".lock").unlink(missing_ok=True)
    os.mkfifo(fifo / ".lock")
    Path("outputs/bad\nname").mkdir()
    (Path("outputs/bad\nname") / "config.json").write_text("{not json")

    result = run_cli("list", "outputs")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(ln.startswith("a/b/deep  mnist  λ 0.01") and ln.endswith("finished") for ln in lines), lines
    assert any(ln.startswith("fifo  mnist") and ln.endswith("finished") for ln in lines), lines
    assert "nostep  cannot be read: " in result.output and "no column step" in result.output
    assert "emptyrow  cannot be read: " in result.output and "line 3 has no epoch, step, test_acc, test_ratio" \
        in result.output
    assert "bad\\nname  cannot be read: " in result.output  # one line, the newline shown as its escape
    assert lines[-1].startswith("5 runs, 0 sweeps; looked in ")
