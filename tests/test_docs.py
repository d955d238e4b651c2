"""The README is one screen, and every page it leads to is there: relative links and images resolve, and
every Python example of the docs is run by a test."""
import re

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
