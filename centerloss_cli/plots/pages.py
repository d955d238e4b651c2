"""A results page of the docs, written from run and sweep folders: the figures, the tables and what they show.

    python scripts/paper_figures.py --out docs/results/fast --label fast --command "..." \
        [--figure2 RUN] [--lambda-sweep SWEEP] [--alpha-sweep SWEEP] [--seeds-sweep SWEEP]

scripts/reproduce_all.sh trains the runs and calls it; nothing on a page is typed by hand, so running that
command again regenerates it. It keeps the tool's promises about files: every input is read and checked
before anything is written (the runs exist and are runs of the settings the page will caption them with),
it writes only into a folder that is empty or holds a page it wrote (PAGE_MARK), and the page and its
figures replace the old ones together, once all are drawn. Which numbers a page shows, and how, is
page_sections.py's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

from ..errors import CenterLossError, StorageError
from ..rundir.files import read_metrics, saved_epochs
from ..rundir.records import load_checkpoint, read_record
from ..rundir.storage import atomic_write_text, temp_path, writer_of
from ..settings.config import SCHEMA
from .charts import MEAN_ROW
from .page_sections import SYMBOL, Sweep, page

PAGE = "README.md"
PAGE_MARK = ".centerloss-page"  # in a folder the page writer wrote: its proof that it may write there again
SUMMARY = "summary.csv"
SUMMARY_COLUMNS = ("run", "lam", "alpha", "seed", "test_acc", "test_ratio", "test_intra", "test_inter",
                   "train_ratio")


def read_sweep(folder: Path, key: str) -> Sweep:
    """A sweep folder's summary, checked: it exists, has every column a page shows, a number in each, and it
    varies `key` alone (a λ family has one α, an α sweep one λ, a seeds page one of each)."""
    path = folder / SUMMARY
    try:
        with open(path, newline="", encoding="utf-8") as f:  # columns by key (lambda), read as fields (lam)
            field = {s.key: name for name, s in SCHEMA.items()}
            rows = [{field.get(k, k): v for k, v in r.items()} for r in csv.DictReader(f) if r.get("seed") != MEAN_ROW]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CenterLossError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e}); is {folder} a sweep "
                              "folder whose sweep finished?") from None
    if not rows:
        raise CenterLossError(f"{path}: lists no run")
    missing = [SCHEMA[c].key if c in SCHEMA else c for c in SUMMARY_COLUMNS if c not in rows[0]]
    if missing:
        raise CenterLossError(f"{path}: no column {', '.join(missing)}; was it written by centerloss sweep?")
    try:
        for r in rows:
            for k in SUMMARY_COLUMNS[1:]:
                r[k] = int(r[k]) if k == "seed" else float(r[k])
    except ValueError as e:
        raise CenterLossError(f"{path}: a value that is not a number ({e})") from None
    fixed = [SCHEMA[k].key for k in ("lam", "alpha") if k != key and len({r[k] for r in rows}) > 1]
    if fixed:
        raise CenterLossError(f"{folder}: its runs differ in {' and '.join(fixed)}, so it is no sweep over "
                              f"{SYMBOL[key]} alone; give the sweep of one family")
    return Sweep(folder, rows, key)


def run_facts(run: Path, lam: float | None = None) -> dict:
    """What a run's folder records, checked: a run folder with a checkpoint and saved features, trained with
    λ = `lam` where the page says so. Its epochs, time, precision, threads, machine and versions."""
    if not run.is_dir():
        raise CenterLossError(f"{run}: no such run folder")
    record, history = read_record(run), read_metrics(run)
    threads = load_checkpoint(run)["threads"]
    saved_epochs(run)  # the features the figures draw
    trained = record.get(SCHEMA["lam"].key)  # config.json spells it by its key
    if lam is not None and trained != lam:
        raise CenterLossError(f"{run}: trained with λ = {trained}, where this page shows λ = {lam:g} "
                              "(Figure 2 is softmax alone); give the run that was")
    return {"epochs": len(history), "seconds": sum(r["seconds"] for r in history),
            "precision": record.get("precision"), "torch": record.get("torch_version"), "tool": made_by(record),
            "device": record.get("resolved_device"), "device_name": record.get("device_name"), "threads": threads}


def made_by(record: dict) -> str:
    """The tool's version and commit a run's config.json records ("+changes": its checkout had uncommitted
    changes); runs made before the tool recorded itself say neither."""
    if "centerloss_version" not in record:
        return "a version that did not record itself"
    commit = record.get("centerloss_commit")
    at = f" at {commit[:12]}{'+changes' * commit.endswith('+changes')}" if commit else " (no git checkout)"
    return f"centerloss {record['centerloss_version']}{at}"


def check_out_folder(out: Path) -> None:
    """A page goes only into a folder that does not exist yet, is empty, or holds a page this writer wrote
    (its PAGE_MARK): a user's folder (DOCS_DIR=~/myproject) is never written, its README.md least of all."""
    if out.is_symlink() and not out.exists():
        raise CenterLossError(f"{out} is a symbolic link to nothing; choose another folder for the page")
    if out.exists() and not out.is_dir():
        raise CenterLossError(f"{out} exists and is not a folder; choose another folder for the page")
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir() if writer_of(p) is None)
    if entries and not (out / PAGE_MARK).is_file():
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise CenterLossError(f"{out} holds {shown}, but no {PAGE_MARK}: a results page is written only into an "
                              "empty folder or one that holds a page it wrote; choose another folder")


def write_page(out: Path, draw: Callable[[Path], str]) -> list[str]:
    """Draw a page into a staging folder inside `out` (`draw(folder)` writes the figures and returns the page's
    text), then swap the files in (put_in_place), and mark the folder as the page writer's. A failure at
    any point leaves the old page as it was. Figures of an earlier page that this one has not are removed.
    Returns the names written."""
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CenterLossError(f"{out}: cannot make the page's folder ({e.strerror or e})") from None
    staging = temp_path(out / "page")
    try:
        staging.mkdir()
        atomic_write_text(staging / PAGE, draw(staging))
        names = sorted(p.name for p in staging.iterdir() if p.name != PAGE) + [PAGE]
        if not (out / PAGE_MARK).is_file():
            atomic_write_text(out / PAGE_MARK, "a results page written by centerloss (scripts/paper_figures.py); "
                                               "it rewrites this folder's page and figures\n")
        put_in_place(staging, out, names)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            shutil.rmtree(out, ignore_errors=True)  # the folder this call made: nothing of anyone else's in it
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return names


def put_in_place(staging: Path, out: Path, names: list[str]) -> None:
    """Move the staged files into `out`, the page last, each old one first aside into the staging folder
    (renames within one folder); if a move fails, every file moved so far goes back, and the old page is as it
    was. Then the old page's own figures that the new one has not are removed."""
    old = staging / "old"
    old.mkdir()
    stale = {p.name for p in out.iterdir() if p.suffix == ".png" and p.is_file() and writer_of(p) is None} - set(names)
    done: list[str] = []
    try:
        for name in [*sorted(stale), *names]:
            if (out / name).exists():
                os.replace(out / name, old / name)
            done.append(name)
            if name in names:
                os.replace(staging / name, out / name)
    except OSError as e:
        for name in reversed(done):
            _put_back(name, old, out, new=name in names)
        raise StorageError(f"could not put the new page into {out} ({e.strerror or e}); the old page is as it "
                           "was") from None


def _put_back(name: str, old: Path, out: Path, new: bool) -> None:
    """Undo one move of put_in_place: the old file back where it was, or the new one gone where none was."""
    with contextlib.suppress(OSError):
        if (old / name).exists():
            os.replace(old / name, out / name)
        elif new:
            (out / name).unlink()
def main(argv: list[str] | None = None) -> None:
    """The command line of scripts/paper_figures.py: every bad input is one line and exit code 2."""
    ap = argparse.ArgumentParser(prog="paper_figures.py", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the page's folder: README.md and its figures")
    ap.add_argument("--label", required=True, help="the settings' name in the title, e.g. fast")
    ap.add_argument("--command", required=True, help="the command that made it, shown on the page")
    ap.add_argument("--figure2", type=Path, help="the softmax-only run of Figure 2")
    ap.add_argument("--lambda-sweep", type=Path, help="the sweep folder of Figure 3's λ family")
    ap.add_argument("--alpha-sweep", type=Path, help="the sweep folder of the α sweep")
    ap.add_argument("--seeds-sweep", type=Path, help="the sweep folder of the settings themselves over seeds")
    ap.add_argument("--dpi", type=int, default=200, help="the figures' resolution (default 200, as the docs')")
    args = ap.parse_args(argv)
    try:
        check_out_folder(args.out)
        sweeps = [read_sweep(folder, key) for key, folder in (("seed", args.seeds_sweep),
                                                              ("lam", args.lambda_sweep),
                                                              ("alpha", args.alpha_sweep)) if folder]
        runs = {s.run_dir(r): None for s in sweeps for r in s.rows}
        if args.figure2 is not None:
            runs[args.figure2] = 0.0  # Figure 2 is softmax alone: its run must have been trained so
        facts = {run: run_facts(run, lam) for run, lam in runs.items()}  # each run read once: sweeps share runs
        write_page(args.out, lambda folder: page(folder, args.label, args.command, args.figure2, sweeps, facts,
                                                 args.dpi))
    except CenterLossError as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out / PAGE} and its figures")
