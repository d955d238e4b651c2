"""`centerloss report`: one self-contained HTML page of a sweep's runs. Its inputs are checked in-process; the
page itself is tested in a real browser (headless Chromium, marker `browser`): the slider, the split, the
play button, a point drawn where its saved coordinates say, and under the mouse the digit itself."""
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import files_of, one_line, tiny

from centerloss_cli.plots.report import GENERATOR
from centerloss_cli.rundir.files import load_features

TWO = tiny(epochs=2)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, mnist) -> Path:
    """A tiny sweep (λ 0 and 0.1, 2 epochs), trained once for this module; its runs save their predictions."""
    from typer.testing import CliRunner

    from centerloss_cli.cli import app

    cwd = tmp_path_factory.mktemp("report")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        done = CliRunner().invoke(app, ["sweep", "--lambda", "0,0.1", *mnist.args, *TWO])
    finally:
        os.chdir(old)
    assert done.exit_code == 0, done.output
    [folder] = (cwd / "outputs" / "sweeps").iterdir()
    return folder


def test_a_report_is_one_file_with_nothing_to_fetch_and_its_runs_in_figure_3_order(run_cli, sweep, tmp_path):
    said = run_cli("report", sweep, "-o", tmp_path / "r.html", "--points", "10")
    assert said.exit_code == 0, said.output
    page = (tmp_path / "r.html").read_text()
    assert GENERATOR in page and "http://" not in page and "https://" not in page and "<script src" not in page
    assert page.index("λ = 0 (softmax only)") < page.index("λ = 0.1, α = 0.5")  # ordered by λ, then α, then seed
    # the default place: the sweep's own folder (a sweep with --plots writes it there itself)
    assert run_cli("report", sweep).exit_code == 0 and (sweep / "report.html").is_file()


@pytest.mark.parametrize("case", ["not a run", "no epoch", "damaged features", "exists", "not a report", "suffix"])
def test_bad_input_is_one_line_and_writes_nothing(run_cli, sweep, tmp_path, case):
    run = sorted(p for p in sweep.parent.parent.iterdir() if p.name.startswith("lambda"))[0]
    out, paths = tmp_path / "r.html", [sweep]
    if case == "not a run":
        paths = [tmp_path]
    elif case == "no epoch":
        bare = tmp_path / "bare"
        shutil.copytree(run, bare)
        shutil.rmtree(bare / "features")
        paths = [bare]
    elif case == "damaged features":
        broken = tmp_path / "broken"
        shutil.copytree(run, broken)
        (broken / "features" / "epoch_002.npz").write_bytes(b"not npz")
        paths = [broken]
    elif case in ("exists", "not a report"):
        out.write_text("my notes" if case == "not a report" else f"<head>{GENERATOR}</head>")
    else:
        out = tmp_path / "r.txt"
    before = files_of(tmp_path)
    said = one_line(run_cli("report", *paths, "-o", out, *(["--overwrite"] if case == "not a report" else [])))
    expected = {"not a run": "is neither a run folder (no config.json) nor a sweep folder",
                "no epoch": "has no saved features",
                "damaged features": "epoch_002.npz: damaged or not a features file",
                "exists": "exists; add --overwrite to replace it", "not a report": "is not a report of centerloss's",
                "suffix": "a report is an .html file"}[case]
    assert expected in said, said
    assert files_of(tmp_path) == before


def test_a_report_is_replaced_only_where_it_is_the_tools(run_cli, sweep, tmp_path):
    out = tmp_path / "r.html"
    assert run_cli("report", sweep, "-o", out, "--points", "5").exit_code == 0
    first = out.read_text()
    assert run_cli("report", sweep, "-o", out, "--points", "8", "--overwrite").exit_code == 0
    assert out.read_text() != first


def test_the_python_api_writes_the_same_page_from_plain_strings(sweep, tmp_path):
    from centerloss_cli import write_report

    written = write_report([str(sweep)], str(tmp_path / "api.html"), points=5)
    assert written == tmp_path / "api.html" and GENERATOR in written.read_text()


# --- in a real browser -----------------------------------------------------------------------------------

def browser_or_skip():
    """Headless Chromium through Selenium, or a skip with one line where there is none (a newcomer's machine);
    CENTERLOSS_TEST_BROWSER=required (CI) makes a missing one a failure."""
    missing = [what for what in ("chromium", "chromedriver") if not shutil.which(what)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        reason = (f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver, "
                  "pip install selenium)")
        if os.environ.get("CENTERLOSS_TEST_BROWSER") == "required":
            pytest.fail(f"CENTERLOSS_TEST_BROWSER=required, but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = browser_or_skip()
    yield driver
    driver.quit()


def canvas(driver, ri: int) -> str:
    return driver.execute_script(f"return document.getElementById('panel{ri}').toDataURL()")


def expected_pixel(run: Path, epoch_index: int, point: int, chosen: list[int]) -> tuple[float, float]:
    """Where a point should be drawn, from its saved coordinates: the axes fixed over the run's epochs (the
    square that holds every chosen point, with a 10% margin), as the page draws them."""
    feats = [load_features(run, e).test_features[chosen] for e in (1, 2)]
    pts = np.concatenate(feats).astype(np.float64)
    lo, hi = pts.min(0), pts.max(0)
    side = max(*(hi - lo), 1e-9) * 1.1
    x0, y0 = (lo + hi) / 2 - side / 2
    x, y = feats[epoch_index][point]
    return 10 + (x - x0) / side * 280, 300 - 10 - (y - y0) / side * 280


def digit_pixels(mnist, test_index: int) -> np.ndarray:
    """The test image `test_index` of the tiny runs' test split, as the run trained on it."""
    from centerloss_cli.dataset.loading import load_dataset

    data = load_dataset(mnist.root, "cpu", 32, 16, verify=mnist.real)
    return (data.test.images[test_index, 0] * 128 + 127.5).round().numpy().astype(np.uint8)


@pytest.mark.browser
@pytest.mark.process
def test_the_page_moves_with_the_slider_splits_plays_and_shows_the_digit_under_the_mouse(run_cli, sweep, tmp_path,
                                                                                         browser, mnist):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    out = tmp_path / "r.html"
    assert run_cli("report", sweep, "-o", out).exit_code == 0
    browser.get(out.as_uri())
    caption = lambda: browser.find_element(By.ID, "caption1").text  # noqa: E731 (λ = 0.1, the second panel)
    assert caption().startswith("epoch 2: test acc") and "test ratio" in caption()
    last = canvas(browser, 1)
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)  # the arrow keys move the epoch
    assert caption().startswith("epoch 1: test acc") and canvas(browser, 1) != last
    # a point is drawn where its saved coordinates say, in its digit's colour
    run = sweep.parent.parent / read_record_names(sweep)[1]
    chosen = list(range(len(load_features(run, 1).test_labels)))  # 16 test points: all of them drawn
    px, py = browser.execute_script("return window.report.pixel(1, 3)")
    ex, ey = expected_pixel(run, 0, 3, chosen)
    assert abs(px - ex) < 0.5 and abs(py - ey) < 0.5, ((px, py), (ex, ey))
    # under the mouse: the digit itself, its label and the network's class
    element = browser.find_element(By.ID, "panel1")
    ActionChains(browser).move_to_element_with_offset(element, px - 150, py - 150).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and "predicted" in tip.text and "test image" in tip.text, tip.text
    index = int(tip.text.split("test image ")[1].split()[0])
    shown = browser.execute_script("const c = document.querySelector('#tip canvas');"
                                   "return Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data)")
    assert np.array_equal(np.array(shown, dtype=np.uint8)[::4], digit_pixels(mnist, index).reshape(-1))
    # the training subset instead of the test set
    browser.find_element(By.CSS_SELECTOR, "input[value=train]").click()
    assert caption().startswith("epoch 1: train acc")
    # play: the epochs go by by themselves, then it stops at the last
    browser.find_element(By.ID, "play").click()
    deadline = time.monotonic() + 5
    while not caption().startswith("epoch 2") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert caption().startswith("epoch 2")
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def read_record_names(sweep: Path) -> list[str]:
    return json.loads((sweep / "sweep.json").read_text())["runs"]


def test_a_run_that_diverged_is_shown_up_to_what_it_saved(run_cli, sweep, tmp_path):
    """Its last epoch's features gone (a divergence, a stop): the report shows what was saved, and says so."""
    run = sweep.parent.parent / read_record_names(sweep)[1]
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    (cut / "features" / "epoch_002.npz").unlink()
    (cut / "diverged.txt").write_text("the loss became NaN")
    assert run_cli("report", run, cut, "-o", tmp_path / "r.html").exit_code == 0
    page = (tmp_path / "r.html").read_text()
    assert '"epochs":[1]' in page and '"state":"diverged"' in page
