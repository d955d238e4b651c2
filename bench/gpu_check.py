"""The device check (scripts/gpu_check.sh runs this): the CUDA tests, then every GPU figure the project
promises, within a wall-time budget, each printed as it is measured, and all packed into at most 8
files in one folder.

    python bench/gpu_check.py [--device cuda|cpu] [--smoke] [--budget SECONDS] [--out DIR] [--data DIR] [--no-verify]

Targets on one H200 (issue 21): training at >= 150,000 images/s at batch 128, eager and captured both
reported; the paper's schedule (10,000 iterations, evaluation and both plots every epoch) in <= 60 s;
`sweep --batched` of 5 runs in <= 2x one run; the whole reproduction (Figure 2, Figure 3, the alpha
sweep, 3 seeds each) in <= 5 minutes. --smoke runs every step on a tiny schedule (on the CPU, for the
test that keeps this script from failing on a typo on the device). It imports the project from this
tree: nothing is installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
NEEDS = ("torch", "numpy", "matplotlib", "typer", "tqdm", "filelock", "PIL")
FIG3_LAMS = [0.0, 0.0001, 0.001, 0.01, 0.1]  # Figure 2 (lambda 0) and Figure 3's four
ALPHAS = [0.01, 0.1, 0.5, 1.0]
SEEDS = [0, 1, 2]
TARGETS = {"captured images/s": 150_000, "full schedule s": 60, "batched 5 / one run": 2.0, "reproduction s": 300}


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def preflight(args: argparse.Namespace) -> None:
    """Everything the steps need, in their first seconds: a missing one is one line and exit code 2."""
    if sys.version_info < (3, 10):
        fail(f"Python {sys.version.split()[0]}: 3.10 or newer is needed")
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"missing Python packages: {', '.join(missing)}")
    sys.path.insert(0, str(ROOT))
    import torch

    from centerloss_cli.dataset.fetch import find_files

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}, but torch {torch.__version__} sees no CUDA device")
    if args.data is None:  # where make gpu-data puts it, else where this machine keeps it
        args.data = next((str(d) for d in data_candidates() if find_files(d) is not None), str(DATA_FOR_DEVICE))
    if find_files(Path(args.data)) is None:
        fail(f"no MNIST in {args.data}: run `make gpu-data` (copies it there from ../shared/mnist, $CENTERLOSS_DATA "
             "or ./data, where make demo puts it), and carry that folder")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / ".writable").touch()
        (Path(args.out) / ".writable").unlink()
    except OSError as e:
        fail(f"output folder {args.out} is not writable ({e.strerror or e})")


class Check:
    """The steps, their figures and the log, within the budget."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.started = args, time.monotonic()
        self.out, self.work = Path(args.out), Path(args.out) / "work"
        self.results: dict[str, Any] = {"device": args.device, "smoke": args.smoke, "budget_s": args.budget}
        self.log = open(self.out / "log.txt", "w")

    def say(self, message: str) -> None:
        print(message, flush=True)
        self.log.write(message + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.started)

    def step(self, name: str, work: Callable[[], None], needs: float) -> None:
        """Run `work` if about `needs` seconds are left; a failure is recorded, and the next step runs."""
        if self.left() < needs:
            self.results[name] = f"not run: {self.left():.0f} s of the budget left, about {needs:.0f} s needed"
            self.say(f"== {name}: {self.results[name]}")
            return
        self.say(f"== {name} ({self.left():.0f} s of the budget left)")
        t = time.monotonic()
        try:
            work()
        except BaseException as e:  # noqa: BLE001 - a failed step must not cost the others
            self.results[name] = f"failed: {type(e).__name__}: {e}"
            self.say(traceback.format_exc())
        self.say(f"   {name}: {time.monotonic() - t:.1f} s")

    def config(self, **changes: Any):
        from centerloss_cli.settings.config import TrainConfig

        tiny = {"train_limit": 256, "test_limit": 128, "plot_train_samples": 128, "batch_size": 64,
                "plot_dpi": 30} if self.args.smoke else {}
        return TrainConfig(device=self.args.device, data_dir=self.args.data, verify=not self.args.no_verify,
                           output_dir=str(self.work), **tiny, **changes)

    def iterations(self) -> int:
        return 8 if self.args.smoke else 10_000  # the paper's schedule, or two tiny epochs

    # --- the steps ----------------------------------------------------------------------------------------

    def cuda_tests(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CENTERLOSS_DATA": self.args.data, "MPLBACKEND": "Agg"}
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider",
                               str(ROOT / "tests" / "test_cuda.py")], env=env, cwd=self.work.parent,
                              capture_output=True, text=True, timeout=max(60, int(self.left())))
        self.log.write(done.stdout + done.stderr)
        last = (done.stdout.strip().splitlines() or ["no output"])[-1]
        self.results["cuda tests"] = last
        self.say(f"   pytest -m cuda: {last}")

    def throughput(self) -> None:
        """Training images/s through train(), epoch 2 (the first pays warm-up and capture), evaluation and
        the epoch's commit taken out; captured and eager."""
        sys.path.insert(0, str(ROOT / "bench"))
        from epoch import timed

        from centerloss_cli.engine.commit import Commit
        from centerloss_cli.engine.training import train

        for mode in ("auto", "off"):
            phases: dict[str, float] = {}
            config = self.config(epochs=2, name=f"throughput_{mode}", cuda_graphs=mode)
            with timed(phases, Commit, "epoch", "end of epoch"):
                result = train(config, progress=False)
            h = result.history[-1]
            per_epoch = h["step"] - result.history[-2]["step"]
            train_s = h["seconds"] - phases["end of epoch"] / 2  # the two epochs' commits took about alike
            rate = per_epoch * config.batch_size / train_s
            key = "captured images/s" if mode == "auto" else "eager images/s"
            self.results[key] = round(rate)
            self.say(f"   {key}: {rate:,.0f} ({per_epoch} steps of {config.batch_size} in {train_s:.2f} s)")

    def full_schedule(self) -> None:
        from centerloss_cli.engine.training import train

        t = time.monotonic()
        result = train(self.config(lam=0.01, iterations=self.iterations(), name="full_schedule"), progress=False)
        wall = time.monotonic() - t
        self.results.update({"full schedule s": round(wall, 1), "full schedule test acc": result.final["test_acc"],
                             "full schedule test ratio": result.final["test_ratio"]})
        self.say(f"   one run, {self.iterations()} iterations with evaluation and plots every epoch: {wall:.1f} s, "
                 f"test acc {100 * result.final['test_acc']:.2f}%, test ratio {result.final['test_ratio']:.3f}")

    def sweep(self, lams: list[float], alphas: list[float], seeds: list[int], key: str):
        from centerloss_cli.launch.sweep import run_sweep

        t = time.monotonic()
        result = run_sweep(self.config(iterations=self.iterations()), lams, alphas, seeds, batched=True, progress=False)
        wall = time.monotonic() - t
        self.results[key] = round(wall, 1)
        self.results.setdefault("sweeps", {})[key] = str(result.folder)
        self.say(f"   {key}: {wall:.1f} s, {result.trained_runs} runs trained now\n{result.table}")
        return result

    def batched_five(self) -> None:
        self.sweep(FIG3_LAMS, [0.5], [0], "batched 5 s")
        one = self.results.get("full schedule s")
        if isinstance(one, float):
            self.results["batched 5 / one run"] = round(self.results["batched 5 s"] / one, 2)
            self.say(f"   batched 5 / one run: {self.results['batched 5 / one run']}")

    def reproduction(self) -> None:
        seeds = SEEDS[:2] if self.args.smoke else SEEDS  # the smoke run: every step, fewer runs
        figure3 = self.sweep(FIG3_LAMS, [0.5], seeds, "figure 3 sweep s")
        alpha = self.sweep([0.01], ALPHAS, seeds, "alpha sweep s")
        already = self.results.get("batched 5 s", 0.0)  # seed 0 of Figure 3, trained by the step before
        total = already + self.results["figure 3 sweep s"] + self.results["alpha sweep s"]
        self.results["reproduction s"] = round(total, 1)
        self.say(f"   the whole reproduction (Figures 2 and 3, the alpha sweep, 3 seeds): {total:.1f} s")
        self.pack(figure3.folder, alpha.folder)

    def pack(self, figure3: Path, alpha: Path) -> None:
        from centerloss_cli.plots.figures import grid_of_runs

        for name, source in (("figure3_grid_test.png", figure3 / "grid_test.png"),
                             ("figure3_compactness.png", figure3 / "compactness.png"),
                             ("alpha_grid_test.png", alpha / "grid_test.png"),
                             ("alpha_compactness.png", alpha / "compactness.png")):
            shutil.copyfile(source, self.out / name)
        runs = [r for r in (self.work).iterdir() if r.name.startswith("lambda0_alpha0.5_seed0")]
        grid_of_runs(runs[:1], self.out / "figure2.png", splits=("train", "test"))
        titled = (("Figure 2 and Figure 3: lambda, 3 seeds", figure3),
                  ("The alpha sweep at lambda 0.01, 3 seeds", alpha))
        tables = [f"## {title}\n\n{(folder / 'summary.md').read_text()}" for title, folder in titled]
        self.results["tables"] = "\n".join(tables)

    def report(self) -> None:
        lines = ["# gpu_check", "", f"device {self.args.device}, budget {self.args.budget} s"
                 + (", smoke (tiny schedule)" if self.args.smoke else ""), "", "| target | measured | verdict |",
                 "|---|---|---|"]
        for key, target in TARGETS.items():
            value = self.results.get(key, "not measured")
            if isinstance(value, (int, float)):
                met = value >= target if key.endswith("images/s") else value <= target
                verdict = "met" if met else "missed"
            else:
                verdict = str(value)
            lines.append(f"| {key} (target {target:,}) | {value} | {verdict} |")
        lines += ["", f"eager images/s: {self.results.get('eager images/s', 'not measured')}",
                  f"cuda tests: {self.results.get('cuda tests', 'not run')}", "", self.results.get("tables", "")]
        (self.out / "results.md").write_text("\n".join(lines) + "\n")
        (self.out / "results.json").write_text(json.dumps({k: v for k, v in self.results.items() if k != "tables"},
                                                          indent=2) + "\n")
        self.say("\n".join(lines[:len(TARGETS) + 6]))


DATA_FOR_DEVICE = ROOT / "data" / "mnist"  # what make gpu-data fills, inside the tree, to be carried


def data_candidates() -> list[Path]:
    env = os.environ.get("CENTERLOSS_DATA")
    return [DATA_FOR_DEVICE, ROOT.parent / "shared" / "mnist", *([Path(env)] if env else []), ROOT / "data"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="a tiny schedule: every step, in seconds")
    ap.add_argument("--budget", type=float, default=None, help="wall-time seconds [default: 480, smoke 120]")
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--data", default=None, help="an MNIST folder [default: data/mnist, else ../shared/mnist, "
                                                   "$CENTERLOSS_DATA or data]")
    ap.add_argument("--no-verify", action="store_true", help="let other IDX data through (the tests' synthetic data)")
    args = ap.parse_args()
    args.budget = args.budget or (120.0 if args.smoke else 480.0)
    os.environ.setdefault("MPLBACKEND", "Agg")
    preflight(args)
    check = Check(args)
    check.work.mkdir(exist_ok=True)
    check.step("cuda tests", check.cuda_tests, needs=30)
    check.step("throughput", check.throughput, needs=10 if args.smoke else 40)
    check.step("full schedule", check.full_schedule, needs=10 if args.smoke else 70)
    check.step("batched 5", check.batched_five, needs=10 if args.smoke else 120)
    check.step("reproduction", check.reproduction, needs=20 if args.smoke else 200)
    check.report()
    shutil.rmtree(check.work, ignore_errors=True)  # at most 8 files come back: the run folders stay behind


if __name__ == "__main__":
    main()
