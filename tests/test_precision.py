"""--precision auto: bf16 where the device has it natively, fp32 elsewhere; the resolved precision names
and records the run, and a resume keeps what the run started with."""
import json
from pathlib import Path

import pytest
import torch
from conftest import cpu_bf16, one_line, tiny

from centerloss_cli.rundir.files import read_metrics
from centerloss_cli.settings.devices import EMULATED_BF16_SLOWDOWN, resolve_precision

CPU = torch.device("cpu")
# The trainings here take one step of 8 images an epoch: in CI's pass that plays an AVX2 CPU every bf16 step is
# emulated, about 12 times an fp32 one.
ONE_STEP = {"train_limit": 8, "plot_train_samples": 8}
ONE = tiny(**ONE_STEP)


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, "bf16"), (False, True, "bf16"),
                                                         (False, False, "fp32")])
def test_auto_takes_bf16_only_where_the_cpu_has_it(monkeypatch, avx512_bf16, amx, expected):
    cpu_bf16(monkeypatch, avx512_bf16, amx)
    assert resolve_precision("auto", CPU) == expected
    assert [resolve_precision(p, CPU) for p in ("fp32", "tf32", "bf16")] == ["fp32", "tf32", "bf16"]


@pytest.mark.parametrize("env, capability, expected", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX512", "fp32"), ({"DNNL_MAX_CPU_ISA": "avx512_core"}, "AVX512", "fp32"),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "AVX512", "bf16"), ({"ONEDNN_MAX_CPU_ISA": "ALL"}, "AVX512", "bf16"),
    ({}, "AVX2", "fp32"), ({}, "AVX512", "bf16")])
def test_auto_honours_the_switches_that_cap_the_cpus_kernels(monkeypatch, env, capability, expected):
    """ONEDNN_MAX_CPU_ISA=AVX2 or ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU: torch emulates bf16, so auto takes fp32
    (which lets CI play an AVX2 machine on any CPU)."""
    cpu_bf16(monkeypatch, avx512_bf16=True)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resolve_precision("auto", CPU) == expected


def test_bf16_where_it_is_emulated_says_so_once_and_still_trains(run_cli, mnist, monkeypatch):
    cpu_bf16(monkeypatch, avx512_bf16=True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    result = run_cli("train", "--precision", "bf16", "--device", "cpu", *mnist.args, *ONE)
    assert result.exit_code == 0, result.output
    line = (f"precision bf16 is emulated here (ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN's kernels below bf16): about "
            f"{EMULATED_BF16_SLOWDOWN}x slower than fp32 (bench/RESULTS.md); --precision fp32 (or auto) trains fast")
    assert result.output.count(line) == 1, result.output
    assert len(read_metrics(mnist.run(precision="bf16", **ONE_STEP))) == 1
    refused = run_cli("train", "--precision", "bf16", "--device", "cpu", *mnist.args, *ONE, "--batch-size", "4096")
    one_line(refused)  # a refused run says only why: the warning came first, a second line
    # λ 0.01 is the run above (the default λ), found finished: the sweep trains one, and says it once for two
    sweep = run_cli("sweep", "--lambda", "0.01,0.1", "--precision", "bf16", "--device", "cpu", *mnist.args, *ONE)
    assert sweep.exit_code == 0 and "2 runs (1 trained now)" in sweep.output, sweep.output
    assert sweep.output.count("precision bf16 is emulated here") == 1, sweep.output
    again = run_cli("sweep", "--lambda", "0.01,0.1", "--precision", "bf16", "--device", "cpu", *mnist.args, *ONE)
    assert again.output.count("precision bf16 is emulated here") == 1, again.output  # said before it looks
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")  # the same CPU without the switch: bf16 is native, nothing said
    native = run_cli("sweep", "--lambda", "0.01,0.1", "--precision", "bf16", "--device", "cpu", *mnist.args, *ONE)
    assert native.exit_code == 0 and "emulated" not in native.output, native.output


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cuda_asks_the_device(monkeypatch, native):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")


def test_the_fast_recipe_and_the_demo_use_auto_and_the_paper_fp32():
    from centerloss_cli.settings.config import resolve_config

    assert [resolve_config(c).precision for c in ("fast", "quick", "paper")] == ["auto", "auto", "fp32"]


def test_auto_names_and_records_what_it_chose_and_a_resume_keeps_it(run_cli, mnist, monkeypatch):
    cpu_bf16(monkeypatch, avx512_bf16=True)
    result = run_cli("train", "--precision", "auto", "--device", "cpu", *mnist.args, *ONE)
    assert result.exit_code == 0, result.output
    run = mnist.run(precision="bf16", **ONE_STEP)
    assert "_bf16" in run.name and json.loads((run / "config.json").read_text())["precision"] == "bf16"

    # The same command on a CPU without bf16: a resume goes on in bf16, and says so; a new run is fp32.
    cpu_bf16(monkeypatch, avx512_bf16=False)
    resumed = run_cli("train", "--precision", "auto", "--device", "cpu", "--resume", *mnist.args,
                      *tiny(epochs=2, **ONE_STEP))
    assert resumed.exit_code == 0, resumed.output
    warning = f"precision bf16 is emulated here (this CPU has neither AVX512_BF16 nor AMX): about " \
              f"{EMULATED_BF16_SLOWDOWN}x slower than fp32 (bench/RESULTS.md); this run started in bf16 and goes " \
              "on in it; a new run with --precision fp32 (or auto) is the fast way"
    assert resumed.output.count(warning) == 1, resumed.output
    assert [r["epoch"] for r in read_metrics(run)] == [1.0, 2.0]
    assert not mnist.run(epochs=2, **ONE_STEP).exists()
    fresh = run_cli("train", "--precision", "auto", "--device", "cpu", *mnist.args, *ONE)
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((mnist.run(**ONE_STEP) / "config.json").read_text())["precision"] == "fp32"


def test_a_sweep_resolves_auto_once_for_its_name_and_its_runs(run_cli, mnist, monkeypatch):
    cpu_bf16(monkeypatch, avx512_bf16=True)
    result = run_cli("sweep", "--lambda", "0.1", "--precision", "auto", "--device", "cpu", *mnist.args, *ONE)
    assert result.exit_code == 0, result.output
    assert mnist.run(lam=0.1, precision="bf16", **ONE_STEP).is_dir()
    [folder] = Path("outputs/sweeps").iterdir()
    assert "_bf16" in folder.name and "auto" not in folder.name
