"""End to end: the web app in a subprocess on loopback, driven by Debian's headless Chromium (Selenium).

Run with ``python -m pytest -q -m browser`` (``.ci/run-browser`` installs chromium + chromium-driver with apt first).
Artefacts (screenshots, the server's log) go to ``$IMMERSIVEDEPTH_ARTIFACTS`` (default ``<repo>/test-artifacts``).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from plyfile import PlyData
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "example_data" / "living_room"
CHROMIUM = Path(os.environ.get("IMMERSIVEDEPTH_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("IMMERSIVEDEPTH_CHROMEDRIVER", "/usr/bin/chromedriver"))
ARTIFACTS = Path(os.environ.get("IMMERSIVEDEPTH_ARTIFACTS", REPO / "test-artifacts"))
START_TIMEOUT_S = 240   # importing torch + gradio and composing the config on a busy 2-core machine
UPLOAD_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300     # the depth job of the example (reference distance) plus its mesh and splat export
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2200")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py`` on a free loopback port with its own working directory -> base URL."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    workdir = tmp_path_factory.mktemp("app_work")
    log_path = ARTIFACTS / "app_server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), f"workdir={workdir}"], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}; log: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer on {url} within {START_TIMEOUT_S} s; log: {log_path}")
            time.sleep(1.0)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def browser():
    for exe, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not exe.is_file():
            pytest.fail(f"{exe} not found: install Debian's {package} (.ci/run-browser does: apt-get install -y "
                        "chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile.name}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def _upload(driver, elem_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))
    # the component shows the file with a download link once the upload has reached the server
    WebDriverWait(driver, UPLOAD_TIMEOUT_S).until(
        lambda d: path.stem in d.find_element(By.ID, elem_id).text
        and d.find_elements(By.CSS_SELECTOR, f"#{elem_id} a[href]"))


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        assert r.status == 200
        return r.read()


def test_depth_of_the_bundled_example_in_the_browser(server, browser):
    browser.get(server)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "run-depth"))
    _upload(browser, "panorama", EXAMPLE / "image.png")
    _upload(browser, "reference", EXAMPLE / "image_distance.npy")
    browser.find_element(By.ID, "run-depth").click()
    WebDriverWait(browser, JOB_TIMEOUT_S).until(
        lambda d: "Done" in d.find_element(By.ID, "depth-status").text or "Error" in
        d.find_element(By.ID, "depth-status").text)
    status = browser.find_element(By.ID, "depth-status").text
    assert status.startswith("Done"), status
    # the distance picture is the run's distance.png
    img = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#distance img"))[0]
    picture = cv2.imdecode(np.frombuffer(_fetch(img.get_attribute("src")), np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (512, 1024, 3)
    # the 3D viewers draw something (a WebGL canvas with more than one colour)
    for viewer in ("depth-mesh", "splat"):
        canvas = WebDriverWait(browser, 120).until(
            lambda d, v=viewer: d.find_elements(By.CSS_SELECTOR, f"#{v} canvas"))[0]
        assert canvas.is_displayed() and canvas.size["width"] > 100 and canvas.size["height"] > 100
    def mesh_contrast(d) -> float:
        shot = cv2.imdecode(np.frombuffer(d.find_element(By.CSS_SELECTOR, "#depth-mesh canvas").screenshot_as_png,
                                          np.uint8), cv2.IMREAD_COLOR)
        return float(shot.reshape(-1, 3).std(axis=0).max())

    # the viewer draws once it has fetched and parsed the GLB (megabytes): poll instead of guessing a delay
    try:
        WebDriverWait(browser, 120, poll_frequency=1.0).until(lambda d: mesh_contrast(d) > 10.0)
    except TimeoutException:
        raise AssertionError(f"the depth-mesh viewer shows a blank canvas (contrast {mesh_contrast(browser):.1f} "
                             "after 120 s)") from None
    # downloads: distance.npy is the reference distance, scene_splat.ply parses as a 3DGS PLY
    links = {a.text.strip().split("\n")[0]: a.get_attribute("href")
             for a in browser.find_elements(By.CSS_SELECTOR, "#depth-downloads a") if a.get_attribute("href")}
    npy = next(url for name, url in links.items() if "distance.npy" in name or url.endswith("distance.npy"))
    got = np.load(io.BytesIO(_fetch(npy)), allow_pickle=False)
    np.testing.assert_array_equal(got, np.load(EXAMPLE / "image_distance.npy").astype(np.float32))
    splat = next(url for url in links.values() if url.endswith("scene_splat.ply"))
    ply = PlyData.read(io.BytesIO(_fetch(splat)))
    assert {"x", "f_dc_0", "opacity", "scale_0", "rot_0"} <= {p.name for p in ply["vertex"].properties}
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(ARTIFACTS / "web_app_depth.png"))


def test_a_non_image_upload_shows_its_message_in_the_page(server, browser, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("not a picture at all\n")
    browser.get(server)
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "run-depth"))
    _upload(browser, "panorama", fake)
    browser.find_element(By.ID, "run-depth").click()
    WebDriverWait(browser, 120).until(lambda d: "Error" in d.find_element(By.ID, "depth-status").text)
    status = browser.find_element(By.ID, "depth-status").text
    assert "panorama: the file is not an image (not PNG/JPEG/TIFF/EXR by its content, whatever its name)" in status
    browser.save_screenshot(str(ARTIFACTS / "web_app_bad_input.png"))
