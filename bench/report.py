"""`centerloss report` on the Figure 3 family at the paper's 22 epochs: the file's size, and how long moving the
epoch slider takes to redraw every panel in headless Chromium.

    python bench/report.py [--sweep SWEEP] [--points 2000] [--data-dir ../shared/mnist] [--out bench_report]

Without --sweep it trains the family first, cheaply but with the paper's evaluation (5 runs, lambda = 0 to
0.1, 22 epochs of 512 training images, each epoch's features of the full test set and a 10,000-image
training subset: what the report reads), into --out; a second call reuses it. The redraw is timed by the page
itself (performance.now around drawing every panel and the curves), over every epoch of both splits,
after one untimed pass that decodes the data.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from table import print_table  # bench/table.py: python bench/X.py puts bench/ on the path

LAMBDAS = "0,0.0001,0.001,0.01,0.1"


def family(out: Path, data_dir: str) -> Path:
    """The sweep of the 5 runs at 22 epochs (trained here when missing; --no-plots: the report draws)."""
    done = subprocess.run([sys.executable, "-m", "centerloss_cli", "sweep", "--lambda", LAMBDAS, "--epochs", "22",
                           "--train-limit", "512", "--no-plots", "--data-dir", data_dir, "--output-dir", str(out),
                           "--quiet"], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return next((out / "sweeps").iterdir())


def redraw_ms(page: Path) -> list[float]:
    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
    from test_report import browser_or_skip  # the suite's headless Chromium

    driver = browser_or_skip()
    try:
        driver.get(page.resolve().as_uri())
        timings = driver.execute_script("""
            const r = window.report, times = [];
            for (const split of ["test", "train", "test"]) {
              r.state.split = split;
              for (let i = 0; i < r.epochs.length; i++) { r.setEpoch(i); times.push(r.state.lastRedrawMs); }
            }
            return times.slice(2 * r.epochs.length);  // the last pass: every split decoded by then
        """)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            raise SystemExit(f"the page logged errors: {errors}")
        return timings
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", type=Path)
    ap.add_argument("--points", type=int, default=2000)
    ap.add_argument("--data-dir", default=str(Path(__file__).parent.parent.parent / "shared" / "mnist"))
    ap.add_argument("--out", type=Path, default=Path("bench_report"))
    args = ap.parse_args()
    sweep = args.sweep or family(args.out, args.data_dir)
    page = args.out / "report.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "centerloss_cli", "report", str(sweep), "-o", str(page), "--points",
                    str(args.points), "--overwrite"], check=True, capture_output=True)
    times = redraw_ms(page)
    chromium = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                              text=True).stdout.strip()
    print(f"{sweep.name}: {args.points} points a split; {chromium}, headless")
    print_table(("what", "value"), [
        ("file size", f"{page.stat().st_size / 2**20:.1f} MiB"),
        ("redraw of every panel and the curves, median", f"{statistics.median(times):.1f} ms"),
        ("redraw, slowest of the test set's epochs", f"{max(times):.1f} ms"),
    ])


if __name__ == "__main__":
    main()
