"""The README is one screen, and every page it leads to is there: relative links and images resolve, and
every Python example of the docs is run by a test."""
import re
from pathlib import Path

from conftest import DOCS, README, ROOT, python_blocks

PAGES = [README, *sorted(DOCS.rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def test_the_readme_fits_a_first_look():
    assert len(README.read_text().splitlines()) <= 250


def test_every_relative_link_and_image_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor in the page
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_python_example_of_the_docs_is_one_a_test_runs():
    """test_cli runs the API examples, test_center_loss_guide the center-loss page's: no other page may
    hold an example that nothing runs."""
    tested = {DOCS / "python-api.md", DOCS / "center-loss.md", README}
    untested = [str(p.relative_to(ROOT)) for p in PAGES if p not in tested and python_blocks(p)]
    assert not untested
    assert python_blocks(README) == python_blocks(DOCS / "python-api.md")[:1]


def test_make_demo_ends_by_saying_where_the_plots_are_and_what_to_run_next():
    import subprocess

    shown = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "outputs/demo/plots/" in shown and "plot outputs/demo --gif" in shown and "train --config fast" in shown


def test_the_test_extra_installs_what_the_suite_imports():
    """`pip install -e '.[test]' && pytest` failed: the suite imports tensorboard (and make test runs ruff)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert {"pytest", "hypothesis", "tensorboard", "ruff"} <= set(extra)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


# --- each number is written once, where a command writes it -------------------------------------------------

# What a command writes: the results pages (scripts/reproduce_all.sh, make paper) and bench/RESULTS.md (the
# benchmarks' tables). Prose links to them, or quotes them; a number quoted must be there, so a page that is
# written again and a quote that was not cannot disagree unseen.
WRITTEN = [*sorted((DOCS / "results").glob("*/README.md")), ROOT / "bench" / "RESULTS.md"]
# A result in prose: a percentage with decimals, a number said of a ratio, a spread (± x), a speed-up (1.65x).
RESULT = re.compile(r"(\d+\.\d+)\s?%|\bratios?\b\D{0,20}?(\d+\.\d+)|±\s?(\d+\.\d+)|(\d+\.\d+)x\b")
# Numbers that no command of ours writes, each with where it comes from.
ALLOWED = {
    ("docs/options.md", "98.10"): "an example of `centerloss list`'s format: a stopped run's last epoch",
    ("docs/options.md", "0.081"): "the same example line",
}


def quoted_results(page: Path) -> list[str]:
    """The results a page states, as written (98.82, 0.169): every match's group that matched."""
    return [next(g for g in m.groups() if g) for m in RESULT.finditer(page.read_text())]


def test_every_result_in_the_readme_and_docs_is_one_a_command_wrote():
    written = "\n".join(p.read_text() for p in WRITTEN)
    stray = sorted({(str(page.relative_to(ROOT)), n) for page in [README, *sorted(DOCS.glob("*.md"))]
                    for n in quoted_results(page)
                    if not re.search(rf"(?<![\d.]){re.escape(n)}(?!\d)", written)
                    and (str(page.relative_to(ROOT)), n) not in ALLOWED})
    assert not stray, f"numbers in the docs that no command wrote (quote a results page or bench/RESULTS.md): {stray}"


def test_the_number_check_finds_a_number_that_no_page_holds(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("reaches 99.99% test accuracy at test ratio 0.123 (± 0.004), 3.21x faster")
    assert quoted_results(page) == ["99.99", "0.123", "0.004", "3.21"]


def test_make_paper_says_how_long_its_pages_trained_in_all_and_each(tmp_path):
    """`make paper` said "hours" where it is about 11 h on 2 cores: it now sums its pages' training times."""
    import subprocess

    row = "| `run{}` | 0.1 | 0.5 | 0 | 3 | 98.00% | 0.070 | 0.060 | {} min |\n"
    (tmp_path / "a.md").write_text(row.format(1, "30.0") + row.format(2, "60.0"))
    (tmp_path / "b.md").write_text(row.format(3, "1.5 "))
    said = subprocess.run(["scripts/training_time.sh", tmp_path / "a.md", tmp_path / "b.md", tmp_path / "none.md"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert said.startswith("3 runs, 1.5 h of training")
    none = subprocess.run(["scripts/training_time.sh", tmp_path / "none.md"], cwd=ROOT, capture_output=True, text=True)
    assert none.stdout.strip() == "not written yet"
    assert "scripts/training_time.sh $(PAGES)" in (ROOT / "Makefile").read_text()
