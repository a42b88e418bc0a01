"""The before/after page (python -m onestep_sr.web) in a real headless Chromium, on the demo config.

In the slow set: the page runs as a subprocess and the browser starts (about 15 s). The refusal rules themselves
are checked in this process by ``tests/test_web_refusal.py``."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the page needs gradio: pip install -e ".[web]"')
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium: pip install selenium")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                       reason="needs a headless Chromium: apt-get install chromium chromium-driver (Debian packages)"),
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended"),
]
MAX_PIXELS = 5000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_exports) -> Iterator[str]:
    """The page on a free port, started where the demo chain's exported adapters lie (random weights, seed 0)."""
    folder = demo_exports(tmp_path_factory.mktemp("web"))
    port = _free_port()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "onestep_sr.web", "--port", str(port), "--max-pixels",
                             str(MAX_PIXELS)], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (folder / "server.log").read_text()
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def _submit(browser: webdriver.Chrome, url: str, path: Path) -> str:
    """Upload ``path``, press Upscale, return the status text once it is set."""
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    browser.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))
    wait.until(lambda d: path.stem in d.find_element(By.ID, "upload").text)  # shown as "stem\n.png"
    browser.find_element(By.ID, "run").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.strip())
    return browser.find_element(By.ID, "status").text


def _fetch(src: str) -> Image.Image:
    return Image.open(io.BytesIO(urllib.request.urlopen(src, timeout=30).read()))


def test_upload_shows_and_offers_the_x4_result(server: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    from skimage import data

    photo = data.astronaut()[200:230, 180:220]  # (30, 40, 3)
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(path)
    status = _submit(browser, server, path)
    assert "40x30 -> 160x120" in status
    link = WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#download a[href]"))[0]
    result = _fetch(link.get_attribute("href"))
    assert result.size == (160, 120) and result.mode == "RGB"
    sources = [img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "#slider img")]
    assert len(sources) == 2
    before, after = (_fetch(src) for src in sources)
    assert before.size == after.size == (160, 120)
    np.testing.assert_array_equal(np.asarray(after.convert("RGB")), np.asarray(result))


def test_refusals_show_a_message(server: str, browser: webdriver.Chrome, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "is not an image file" in _submit(browser, server, text)
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 60), (10, 200, 30)).save(big)
    assert f"100x60 = 6,000 pixels, the limit is {MAX_PIXELS:,}" in _submit(browser, server, big)
    assert not browser.find_elements(By.CSS_SELECTOR, "#download a[href]")
