"""What a results page shows, section by section (pages.py reads and checks the runs and writes the page):
the command and the machine, Figure 2, a grid, charts and a table per sweep with a verdict per step between
its values, and every run's final numbers."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..rundir.files import read_metrics, sweep_run
from ..rundir.records import cpu_model
from . import charts, figures

# The per-value statistics of a sweep: (column, heading, how a value is shown).
STATS = [("test_acc", "test accuracy (%)", lambda v: f"{100 * v:.2f}"), ("test_ratio", "test ratio", "{:.3f}".format),
         ("test_intra", "test intra", "{:.3f}".format), ("test_inter", "test inter", "{:.2f}".format)]
PANELS = ("test_ratio", "test_acc", "test_intra", "test_inter")
SYMBOL = {**charts.SYMBOL, "seed": "seed"}


@dataclass
class Sweep:
    """A sweep's per-run rows (its summary.csv, without the mean rows) and where its runs live."""

    folder: Path
    rows: list[dict]
    key: str  # "lam", "alpha" or "seed" (field names): what varies

    def run_dir(self, row: dict) -> Path:
        return sweep_run(self.folder, row["run"])

    def values(self) -> list[float]:
        return sorted({r[self.key] for r in self.rows})

    def at(self, value: float) -> list[dict]:
        return [r for r in self.rows if r[self.key] == value]

    def first_seed_rows(self) -> list[dict]:
        """One run per value, the smallest seed's: the grid shows one panel per value, the curves a line."""
        seed = min(r["seed"] for r in self.rows)
        return [r for r in self.rows if r["seed"] == seed]


def mean_std(rows: list[dict], key: str) -> tuple[float, float]:
    values = [r[key] for r in rows]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(sweep: Sweep) -> list[str]:
    """Mean ± std over the seeds for each value of the sweep."""
    head = f"| {SYMBOL[sweep.key]} | seeds | " + " | ".join(h for _, h, _ in STATS) + " |"
    lines = [head, "|" + "---|" * (len(STATS) + 2)]
    for value in sweep.values():
        rows = sweep.at(value)
        cells = []
        for key, _, show in STATS:
            mean, std = mean_std(rows, key)
            cells.append(f"{show(mean)} ± {show(std)}" if len(rows) > 1 else show(mean))
        lines.append(f"| {value:g} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def beyond_spread(sweep: Sweep, key: str = "test_ratio") -> list[str]:
    """For each step to the next value, whether `key` moves by more than the seeds' spread: the intervals
    mean ± std of the two values do not overlap. A value with one seed has no spread: only the direction."""
    values, lines = sweep.values(), []
    for a, b in zip(values, values[1:]):
        (ma, sa), (mb, sb) = mean_std(sweep.at(a), key), mean_std(sweep.at(b), key)
        spread = f"({ma:.3f} ± {sa:.3f} → {mb:.3f} ± {sb:.3f})"
        if min(len(sweep.at(a)), len(sweep.at(b))) < 2:
            verdict = f"{'falls' if mb < ma else 'rises'} ({ma:.3f} → {mb:.3f}; one seed, so no spread to compare)"
        elif mb + sb < ma - sa:
            verdict = f"falls, beyond the spread of the seeds {spread}"
        elif mb - sb > ma + sa:
            verdict = f"rises, beyond the spread of the seeds {spread}"
        else:
            verdict = f"moves within the spread of the seeds: no difference shown {spread}"
        lines.append(f"- {SYMBOL[sweep.key]} {a:g} → {b:g}: the test ratio {verdict}.")
    return lines


def per_run_table(sweeps: list[Sweep], facts: dict[Path, dict]) -> list[str]:
    lines = ["| run | λ | α | seed | epochs | test accuracy | test ratio | train ratio | training time |",
             "|---|---|---|---|---|---|---|---|---|"]
    seen = set()
    for sweep in sweeps:
        for r in sorted(sweep.rows, key=lambda r: (r["lam"], r["alpha"], r["seed"])):
            if r["run"] in seen:
                continue
            seen.add(r["run"])
            run = facts[sweep.run_dir(r)]
            lines.append(f"| `{r['run']}` | {r['lam']:g} | {r['alpha']:g} | {r['seed']} | {run['epochs']} | "
                         f"{100 * r['test_acc']:.2f}% | {r['test_ratio']:.3f} | {r['train_ratio']:.3f} | "
                         f"{run['seconds'] / 60:.1f} min |")
    return lines


def machine(facts: list[dict]) -> str:
    """The machine, arithmetic and versions the runs record (each at its start), and the machine that wrote
    the page."""
    join = lambda key: ", ".join(sorted({str(f[key]) for f in facts}))  # noqa: E731
    threads = join("threads")
    return (f"Trained on {join('device')} ({join('device_name')}), {threads} "
            f"{'thread' if threads == '1' else 'threads'} a run, precision {join('precision')}, "
            f"torch {join('torch')}, {join('tool')}; page written {date.today().isoformat()} on {cpu_model()}, "
            f"{os.cpu_count()} cores.")


def figure(name: str, caption: str) -> list[str]:
    return [f"**{caption}**", "", f"![{caption}]({name})", ""]


def figure2_section(out: Path, run: Path, dpi: int) -> list[str]:
    """The softmax-only run (pages.run_facts has checked that it was trained with λ = 0)."""
    figures.grid_of_runs([run], out / "figure2.png", splits=("train", "test"), dpi=dpi)
    return ["## Figure 2: softmax alone", "",
            *figure("figure2.png", "λ = 0: training and test features at the last epoch"),
            f"Run: `{run.name}`.", ""]


def sweep_section(out: Path, sweep: Sweep, dpi: int) -> list[str]:
    """A sweep's grid (one panel per value, the first seed), its charts, its table and what they show; its
    title says what was held fixed, as its runs were trained (pages.read_sweep has checked it is one value)."""
    name, symbol = ("figure3", "λ") if sweep.key == "lam" else ("alpha", "α")
    fixed = sweep.rows[0]["alpha" if sweep.key == "lam" else "lam"]
    title = f"Figure 3: the λ family at α = {fixed:g}" if sweep.key == "lam" else f"The α sweep at λ = {fixed:g}"
    firsts = sweep.first_seed_rows()
    seed, runs = firsts[0]["seed"], [sweep.run_dir(r) for r in firsts]
    figures.grid_of_runs(runs, out / f"{name}_grid.png", splits=("test",), dpi=dpi)
    charts.save_compactness_plot(out / f"{name}_compactness.png", sweep.rows, panels=PANELS, dpi=dpi)
    charts.save_curves(out / f"{name}_curves.png",
                       [(f"{symbol} = {r[sweep.key]:g}", read_metrics(run)) for r, run in zip(firsts, runs)], dpi)
    several = len({r["seed"] for r in sweep.rows}) > 1
    over = "mean ± std over the seeds" if several else f"seed {seed} alone, so no error bars"
    return [f"## {title}", "",
            *figure(f"{name}_grid.png", f"One panel per {symbol}: test features at the last epoch, seed {seed}"),
            *figure(f"{name}_compactness.png", f"Test ratio, accuracy, intra and inter distance against {symbol}: "
                                               f"{over}"),
            *figure(f"{name}_curves.png", f"Epoch by epoch, one line per {symbol}, seed {seed}: losses, accuracy "
                                          "and compactness (solid test, dashed train)"),
            "Mean ± std over the seeds:" if several else f"One run per value, seed {seed}:", "", *table(sweep), "",
            f"Does the test ratio move with {symbol} beyond the spread of the seeds? Each step to the next value:",
            "", *beyond_spread(sweep), ""]


def seeds_section(out: Path, sweep: Sweep, dpi: int) -> list[str]:
    """The settings themselves over seeds (a demo, a recipe): one panel and one curve per seed, a row per seed
    and their mean ± std: the spread to expect on another machine."""
    rows = sorted(sweep.rows, key=lambda r: r["seed"])
    runs = [sweep.run_dir(r) for r in rows]
    lam, alpha = rows[0]["lam"], rows[0]["alpha"]
    figures.grid_of_runs(runs, out / "seeds_grid.png", splits=("test",), dpi=dpi)
    charts.save_curves(out / "seeds_curves.png",
                       [(f"seed {r['seed']}", read_metrics(run)) for r, run in zip(rows, runs)], dpi)
    lines = ["| seed | " + " | ".join(h for _, h, _ in STATS) + " |", "|" + "---|" * (len(STATS) + 1)]
    lines += [f"| {r['seed']} | " + " | ".join(show(r[key]) for key, _, show in STATS) + " |" for r in rows]
    if len(rows) > 1:
        spread = [mean_std(rows, key) for key, _, _ in STATS]
        lines.append("| **mean ± std** | " + " | ".join(f"**{show(m)} ± {show(sd)}**" for (_, _, show), (m, sd)
                                                        in zip(STATS, spread)) + " |")
    return [f"## λ = {lam:g}, α = {alpha:g}, over seeds", "",
            *figure("seeds_grid.png", "One panel per seed: test features at the last epoch"),
            *figure("seeds_curves.png", "Epoch by epoch, one line per seed: losses, accuracy and compactness "
                                        "(solid test, dashed train)"),
            *lines, ""]


def page(out: Path, label: str, command: str, figure2: Path | None, sweeps: list[Sweep],
         facts: dict[Path, dict], dpi: int = figures.DPI) -> str:
    """The whole page, drawing its figures into `out` on the way (at `dpi`); `facts`: each run's
    (pages.run_facts)."""
    seeds = sorted({r["seed"] for sweep in sweeps for r in sweep.rows})
    lines = [f"# Results: the {label} settings", "",
             "Written by this command from the run folders; do not edit it by hand, run it again:", "",
             f"    {command}", "", machine(list(facts.values())) + f" Seeds: {', '.join(map(str, seeds))}.", ""]
    if figure2 is not None:
        lines += figure2_section(out, figure2, dpi)
    for sweep in sweeps:
        lines += seeds_section(out, sweep, dpi) if sweep.key == "seed" else sweep_section(out, sweep, dpi)
    if sweeps:
        lines += ["## Every run", "", *per_run_table(sweeps, facts), ""]
    return "\n".join(lines)
