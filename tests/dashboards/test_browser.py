"""End to end: start ``ms2 dashboard`` on a free loopback port, drive Debian's headless Chromium with
Selenium through every page, select a dataset and an episode, take screenshots, and assert on what a
person would read (dataset name, episode, success-rate figures, the Prefect note).

Set MS2FLOW_DASHBOARD_SCREENSHOTS=<dir> to keep the screenshots (docs/dashboard-*.png are made so).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.dashboards.conftest import CLOSED_PORT_API
from tests.dashboards.sample_data import NUM_POINTS, TASK, SampleData, stored

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STARTUP_TIMEOUT_S = 90
CONTENT_TIMEOUT_S = 60

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: scripts/setup installs chromium and chromium-driver", pytrace=False)
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup installs them)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard_url(sample_data, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    env |= {"PYTHONPATH": str(REPO_ROOT), "PREFECT_API_URL": CLOSED_PORT_API, "HOME": str(tmp_path)}
    log = open(tmp_path / "dashboard.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "dashboard", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(sample_data.root)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ms2 dashboard did not become ready: {(tmp_path / 'dashboard.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(CONTENT_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver, *needles: str, timeout_s: float = CONTENT_TIMEOUT_S) -> str:
    """Wait until every needle is visible and the app has stopped running the script."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout_s
    while True:
        text = page_text(driver)
        idle = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"][data-test-script-state="notRunning"]')
        if all(n in text for n in needles) and idle:
            return text
        if time.monotonic() > deadline:
            missing = [n for n in needles if n not in text]
            raise AssertionError(f"not visible after {timeout_s} s: {missing}\n--- page text ---\n{text[:3000]}")
        time.sleep(0.3)


def select_option(driver, label: str, option_text: str) -> None:
    """Open the Streamlit selectbox labelled ``label`` and click the option containing ``option_text``."""
    from selenium.webdriver.common.by import By

    # Streamlit's selectbox is a react-aria combobox: its "Open" button lists the options.
    open_button = f'[data-testid="stSelectbox"] input[aria-label="{label}"] + button[aria-label="Open"]'
    deadline = time.monotonic() + CONTENT_TIMEOUT_S
    while not driver.find_elements(By.CSS_SELECTOR, open_button):
        assert time.monotonic() < deadline, f"no selectbox labelled {label!r}"
        time.sleep(0.2)
    driver.find_element(By.CSS_SELECTOR, open_button).click()
    find_with_text(driver, '[role="option"]', option_text).click()


def set_number(driver, label: str, value: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    deadline = time.monotonic() + CONTENT_TIMEOUT_S
    while not driver.find_elements(By.CSS_SELECTOR, f'input[aria-label="{label}"]'):
        assert time.monotonic() < deadline, f"no number input labelled {label!r}"
        time.sleep(0.2)
    field = driver.find_element(By.CSS_SELECTOR, f'input[aria-label="{label}"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.ENTER)


def find_with_text(driver, css: str, text: str):
    """The first ``css`` element whose text contains ``text``, waiting while the app re-renders."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + CONTENT_TIMEOUT_S
    while True:
        try:
            found = [e for e in driver.find_elements(By.CSS_SELECTOR, css) if text in e.text]
        except StaleElementReferenceException:
            found = []
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {css} containing {text!r}"
        time.sleep(0.2)


def scroll_to_text(driver, css: str, text: str) -> None:
    """Scroll the first ``css`` element containing ``text`` to the top (for screenshots of that part)."""
    # The margin keeps the element clear of Streamlit's fixed header.
    driver.execute_script("arguments[0].style.scrollMarginTop = '90px'; arguments[0].scrollIntoView({block: 'start'});",
                          find_with_text(driver, css, text))
    time.sleep(1.0)  # let Plotly finish laying out after the scroll


def click_tab(driver, title: str) -> None:
    find_with_text(driver, '[role="tab"]', title).click()


def test_dashboard_in_headless_chromium(dashboard_url, browser, tmp_path, sample_data):
    shots = Path(os.environ.get("MS2FLOW_DASHBOARD_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        drive_every_page(dashboard_url, browser, shots, sample_data)
    except Exception:
        browser.save_screenshot(str(tmp_path / "failure.png"))
        print(f"screenshot of the failure: {tmp_path / 'failure.png'}")
        raise


def drive_every_page(dashboard_url, browser, shots: Path, data: SampleData) -> None:
    pointcloud, rgbd = SampleData.name_of(data.pointcloud_store), SampleData.name_of(data.rgbd_store)
    _, ends = stored(data.pointcloud_store)
    # Datasets: the list, the selected dataset's manifest and validation, then the episode viewer.
    browser.get(f"{dashboard_url}/")  # the default page
    # (table cells are drawn on a canvas: the tables' contents are checked in test_pages)
    wait_for_text(browser, "Datasets", f"{TASK} / {pointcloud}", "pointcloud", "control mode: pd_ee_delta_pose",
                  "Render options", "Versions")
    select_option(browser, "Dataset", rgbd)
    wait_for_text(browser, f"{TASK} / {rgbd}", "obs mode: rgbd")
    click_tab(browser, "Episode viewer")
    wait_for_text(browser, "hand_camera rgb", "base_camera rgb", "Episode 0")
    select_option(browser, "Dataset", pointcloud)
    wait_for_text(browser, f"{TASK} / {pointcloud}")
    click_tab(browser, "Validation")
    wait_for_text(browser, "Verdict", "failed")
    click_tab(browser, "Episode viewer")
    set_number(browser, "Episode", 2)
    wait_for_text(browser, "Episode 2", f"Episode length\n{ends[2] - ends[1]} steps", f"transitions {ends[1]}–{ends[2] - 1}",
                  f"{NUM_POINTS} of {NUM_POINTS} points")
    assert "episode=2" in browser.current_url  # the view can be shared as a link
    scroll_to_text(browser, '[role="tab"]', "Episode viewer")
    browser.save_screenshot(str(shots / "dashboard-datasets.png"))

    # Training: overlaid runs; BC's curves by update, PPO's by env step.
    browser.get(f"{dashboard_url}/training")
    wait_for_text(browser, "Training", "bc-default (bc)", "ppo-seed0 (ppo)", "eval/success_rate", "Parameters side by side",
                  "bc-default (bc) · eval/success_rate", "updates", "env steps")
    scroll_to_text(browser, "label p", "Compare runs")
    browser.save_screenshot(str(shots / "dashboard-training.png"))

    # Models: aliases, the champion's evaluation figures and its videos.
    browser.get(f"{dashboard_url}/models")
    wait_for_text(browser, f"ms2-{TASK}-bc", "Champion\nv1", "Candidate\nv1", "success once\n",
                  "eval/videos/episode_0.mp4")
    from selenium.webdriver.common.by import By

    # the caption can be drawn before its video element (seen on a loaded machine): wait for the element too
    deadline = time.monotonic() + CONTENT_TIMEOUT_S
    while not ((videos := browser.find_elements(By.TAG_NAME, "video")) and videos[0].get_attribute("src")):
        assert time.monotonic() < deadline, f"no <video> with a src after {CONTENT_TIMEOUT_S} s"
        time.sleep(0.2)
    scroll_to_text(browser, "h2, h3", "Evaluation")
    browser.save_screenshot(str(shots / "dashboard-models.png"))

    # Pipeline status: no Prefect server in the test, so the page must say so.
    browser.get(f"{dashboard_url}/pipeline")
    wait_for_text(browser, "Pipeline status", f"Prefect API not reachable at {CLOSED_PORT_API}")
    browser.save_screenshot(str(shots / "dashboard-pipeline.png"))
    for name in ("datasets", "training", "models", "pipeline"):
        assert (shots / f"dashboard-{name}.png").stat().st_size > 10_000
