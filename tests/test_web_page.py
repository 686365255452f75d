"""The web page at / in a real headless browser (Debian's chromium + chromium-driver via selenium)
against the real service (real Redis, a real worker, uvicorn) with the API key enabled: a generate
job followed to 100 % and its image rendered, a dual-view pair side by side, an upload to
/anomaly-map shown with its overlay. Screenshots go to MAMMOGEN_SCREENSHOT_DIR (docs/images in the
repository) or the test's temporary folder."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.main import create_app
from tests.service_support import WorkerProcess, live_server, purge_queue, redis_or_skip, settings_for, unique_queue

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KEY = "page-key"


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if not chromium or not driver:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[dev]')")
    return chromium, driver


@pytest.fixture(scope="module")
def page(tmp_path_factory, mambo_bundle, dualview_bundle) -> Iterator[tuple[object, str]]:
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    conn = redis_or_skip()
    tmp = tmp_path_factory.mktemp("web")
    queue = unique_queue("web")
    settings = settings_for(tmp, queue, mambo_bundle=mambo_bundle, dualview_bundle=dualview_bundle, api_key=KEY)
    worker = WorkerProcess(settings, tmp / "worker.log")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    browser = None
    try:
        worker.wait_alive(conn)
        with live_server(create_app(settings)) as url:
            browser = webdriver.Chrome(service=Service(driver_path), options=options)
            browser.get(url + "/")
            _wait(browser, lambda b: b.find_element("tag name", "body").get_attribute("data-state") == "ready")
            key = browser.find_element("id", "api-key")
            key.send_keys(KEY)
            browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
            yield browser, url
    finally:
        if browser is not None:
            browser.quit()
        worker.stop()
        purge_queue(conn, queue)


def _wait(browser, predicate, timeout: float = 180):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(predicate)


def _shot(browser, name: str, tmp_path: Path) -> None:
    out = Path(os.environ.get("MAMMOGEN_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(out / name))


def _set(browser, name: str, value: str) -> None:
    el = browser.find_element("css selector", f'#fields [name="{name}"]')
    browser.execute_script("arguments[0].value = arguments[1]", el, value)


def _kind(browser, kind: str) -> None:
    browser.find_element("css selector", f'input[name=kind][value="{kind}"]').click()


def _run(browser) -> None:
    browser.execute_script("document.body.dataset.state = 'submitting'")  # not the last job's end
    browser.find_element("id", "submit").click()
    _wait(
        browser,
        lambda b: (
            b.find_element("tag name", "body").get_attribute("data-state") in ("shown", "failed")
            or b.find_element("id", "message").text
        ),
    )
    assert not browser.find_element("id", "message").text
    assert browser.find_element("tag name", "body").get_attribute("data-state") == "shown", browser.find_element(
        "id", "progress-text"
    ).text
    assert "100 %" in browser.find_element("id", "progress-text").text
    assert browser.find_element("id", "bar").value_of_css_property("width") != "0px"


def _pixels(element) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("L"))


def test_the_form_is_built_from_the_schema_and_lists_the_models(page, tmp_path):
    browser, _ = page
    fields = {el.get_attribute("name") for el in browser.find_elements("css selector", "#fields [name]")}
    assert {"model", "height", "width", "steps", "sampler", "priority", "formats"} <= fields
    steps = browser.find_element("css selector", '#fields [name="steps"]')  # unset: the job kind's default
    assert steps.get_attribute("value") == "" and steps.get_attribute("placeholder") == "(default)"
    assert browser.find_element("css selector", '#fields [name="height"]').get_attribute("max") == "8192"
    _wait(browser, lambda b: "test-mambo" in b.find_element("id", "models").text)  # needs the key: it was sent
    _shot(browser, "web-form.png", tmp_path)


def test_a_generate_job_reaches_100_percent_and_its_image_is_rendered(page, tmp_path):
    browser, _ = page
    _kind(browser, "generate")
    for name, value in (("model", "mambo"), ("height", "64"), ("width", "64"), ("steps", "4"), ("seed", "5")):
        _set(browser, name, value)
    _run(browser)
    images = browser.find_elements("css selector", "#images img")
    assert [i.get_attribute("data-name") for i in images] == ["image00.png"]
    pixels = _pixels(images[0])
    assert pixels.std() > 5 and pixels.max() > 50  # rendered, not blank
    before = pixels.mean()
    browser.execute_script(
        "const l = document.getElementById('level'); l.value = 0.2; l.dispatchEvent(new Event('change'))"
    )
    _wait(browser, lambda b: abs(_pixels(b.find_element("css selector", "#images img")).mean() - before) > 5, 30)
    _shot(browser, "web-generate.png", tmp_path)


def test_a_dual_view_pair_is_shown_side_by_side(page, tmp_path):
    browser, _ = page
    _kind(browser, "generate")
    for name, value in (("model", "dualview"), ("height", ""), ("width", ""), ("steps", "2")):
        _set(browser, name, value)
    _run(browser)
    cc, mlo = browser.find_elements("css selector", "#images img")
    assert (cc.get_attribute("data-name"), mlo.get_attribute("data-name")) == ("pair00_cc.png", "pair00_mlo.png")
    assert cc.location["y"] == mlo.location["y"] and cc.location["x"] < mlo.location["x"]
    _shot(browser, "web-dualview.png", tmp_path)


def test_an_upload_to_anomaly_map_shows_the_overlay(page, tmp_path):
    from training.phantoms import make_phantom_case

    browser, _ = page
    image = make_phantom_case(3, (96, 96), lesions=True).cc.image
    path = tmp_path / "mammogram.png"
    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
    _kind(browser, "anomaly-map")
    browser.find_element("id", "file").send_keys(str(path))
    _set(browser, "steps", "3")
    _set(browser, "repeats", "1")
    _run(browser)
    overlay = browser.find_element("id", "overlay-view")
    assert overlay.is_displayed()
    assert _pixels(browser.find_element("id", "overlay-base")).std() > 5
    opaque = browser.execute_script(
        "const o = document.getElementById('opacity'); o.value = 1; o.dispatchEvent(new Event('input'));"
        "return getComputedStyle(document.getElementById('overlay-top')).opacity"
    )
    assert float(opaque) == 1.0
    _shot(browser, "web-anomaly.png", tmp_path)
