"""`centerloss list`: a line per run folder, each in its state, sweeps grouped."""
import json
from pathlib import Path

from conftest import TINY
from filelock import FileLock


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
    before = {p: p.stat().st_mtime_ns for p in Path("outputs").rglob("*")}

    with FileLock(running / ".lock"):
        result = run_cli("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "sweep s1/ (2 runs)"
    assert lines[1].startswith("  fin  mnist  λ 0.01  α 0.5  seed 0  epoch 1/1 ") and lines[1].endswith("finished")
    assert lines[2].startswith("  stop  ") and "epoch 1/2" in lines[2] and lines[2].endswith("stopped")
    assert lines[3] == "runs of no sweep:"
    assert lines[4].startswith("  busy  ") and lines[4].endswith("running")
    assert lines[5].startswith("  div  ") and "no epoch finished yet" in lines[5] and lines[5].endswith("diverged")
    assert len(lines) == 6
    assert {p: p.stat().st_mtime_ns for p in Path("outputs").rglob("*")} == before  # it wrote nothing
    refusal = "Error: nowhere is not a folder; expected an output folder such as outputs"
    assert run_cli("list", "nowhere").output.strip() == refusal
