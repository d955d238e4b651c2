"""--precision auto: bf16 where the device has it natively, fp32 elsewhere; the resolved precision names
and records the run, and a resume keeps what the run started with."""
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny

from centerloss_cli.devices import resolve_precision
from centerloss_cli.runfiles import read_metrics

CPU = torch.device("cpu")


def cpu_bf16(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    """This CPU, as torch's dispatch would report it: with or without each bf16 instruction set."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                         (False, False, "fp32")])
def test_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    cpu_bf16(monkeypatch, avx512_bf16, amx)
    assert resolve_precision("auto", CPU) == expected
    assert [resolve_precision(p, CPU) for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_asks_the_device(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")


def test_the_fast_recipe_and_the_demo_use_auto_and_the_paper_fp32():
    from centerloss_cli.config import resolve_config

    assert [resolve_config(c).precision for c in ("fast", "quick", "paper")] == ["auto", "auto", "fp32"]


def test_auto_names_and_records_what_it_chose_and_a_resume_keeps_it(run_cli, mnist, monkeypatch):
    cpu_bf16(monkeypatch, avx512_bf16=True)
    result = run_cli("train", "--precision", "auto", "--device", "cpu", *mnist.args, *tiny())
    assert result.exit_code == 0, result.output
    run = mnist.run(precision="bf16")
    assert "_bf16" in run.name and json.loads((run / "config.json").read_text())["precision"] == "bf16"

    # The same command on a CPU without bf16: a resume goes on in bf16, and says so; a new run is fp32.
    cpu_bf16(monkeypatch, avx512_bf16=False)
    resumed = run_cli("train", "--precision", "auto", "--device", "cpu", "--resume", *mnist.args, *tiny(epochs=2))
    assert resumed.exit_code == 0, resumed.output
    assert "started in bf16 elsewhere; it goes on in bf16, emulated on this device: slower" in resumed.output
    assert [r["epoch"] for r in read_metrics(run)] == [1.0, 2.0]
    assert not mnist.run(epochs=2).exists()
    fresh = run_cli("train", "--precision", "auto", "--device", "cpu", *mnist.args, *tiny())
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((mnist.run() / "config.json").read_text())["precision"] == "fp32"


def test_a_sweep_resolves_auto_once_for_its_name_and_its_runs(run_cli, mnist, monkeypatch):
    cpu_bf16(monkeypatch, avx512_bf16=True)
    result = run_cli("sweep", "--lambda", "0.1", "--precision", "auto", "--device", "cpu", *mnist.args, *tiny())
    assert result.exit_code == 0, result.output
    assert mnist.run(**{"lambda": 0.1, "precision": "bf16"}).is_dir()
    [folder] = Path("outputs/sweeps").iterdir()
    assert "_bf16" in folder.name and "auto" not in folder.name
