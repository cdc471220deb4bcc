"""The web page at /, driven end to end in headless Chromium (Debian's, never a downloaded one)."""

import base64
import shutil
import time
from pathlib import Path

import httpx
import matplotlib
import numpy as np
import pytest
from PIL import Image
from tests.conftest import RunningServer, decode_png

# Slow tier (`make test-fast` leaves it out): each test talks to a real server process over HTTP.
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium tries to reach Google's hosts at start-up on a closed network.
CHROMIUM_ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def wait_until(page, expression: str, timeout_seconds: float = 60) -> None:
    """Polls with page.evaluate: the page's Content-Security-Policy (no eval) forbids wait_for_function."""
    deadline = time.monotonic() + timeout_seconds
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def page(server_url, tmp_path_factory):
    # Here, not at the top: the page's headers are tested without a browser.
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make test` installs it"
    )
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: `make test` installs it (apt-get install chromium)")
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server_url + "/")
        yield page
        browser.close()


def test_upload_shows_outline_mask_heatmap_score_and_flag(page, original_size_image_path, tmp_path_factory):
    page.set_input_files("#file", str(original_size_image_path))
    page.wait_for_selector("#result:not(.hidden)", timeout=60_000)
    for image in ("#overlay", "#mask", "#heatmap"):
        width = page.eval_on_selector(image, "element => element.complete ? element.naturalWidth : 0")
        assert width == 512, image
    summary = page.inner_text("#summary")
    assert "uncertainty score" in summary
    assert ("review recommended" in summary) or ("no review flagged" in summary)
    assert float(page.inner_text("#score")) >= 0
    assert not page.is_visible("#ood-warning"), "a dermoscopic photo raises no out-of-distribution warning"
    assert page.get_attribute("#download", "download") == f"{original_size_image_path.stem}_segmentation.png"
    # A click enlarges a panel to the page's width.
    narrow = page.locator("#mask").bounding_box()["width"]
    page.click("#mask")
    assert page.locator("#mask").bounding_box()["width"] > 1.5 * narrow
    page.click("#mask")
    screenshot = tmp_path_factory.mktemp("page") / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


def test_a_dicom_file_is_shown_as_any_picture_is(page, real_image_path, tmp_path):
    """A browser cannot decode DICOM: the server sends its photo back with the maps, and the page draws it."""
    from tests.dicom.pictures import wrap_jpeg

    dicom = tmp_path / "lesion.dcm"
    dicom.write_bytes(wrap_jpeg(real_image_path.read_bytes()))
    page.set_input_files("#file", str(dicom))
    page.wait_for_function(
        "() => !document.querySelector('#result').classList.contains('hidden')"
        " && document.querySelector('#download').getAttribute('download') === 'lesion_segmentation.png'",
        timeout=60_000,
    )
    width = page.eval_on_selector("#overlay", "element => element.complete ? element.naturalWidth : 0")
    assert width == Image.open(real_image_path).width
    assert not page.is_visible("#error") or not page.inner_text("#error")


def test_page_is_served_with_a_strict_content_security_policy(client):
    response = client.get("/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def shown_mask(page) -> np.ndarray:
    """The mask the page shows, decoded from its data URL (drawn by the page: grey levels in RGBA)."""
    source = page.get_attribute("#mask", "src")
    pixels = decode_png(base64.b64decode(source.split(",", 1)[1]))
    return (pixels[..., 0] if pixels.ndim == 3 else pixels) > 0


def test_changing_the_threshold_updates_the_result_without_asking_the_server_again(page):
    page.evaluate("window.previousMask = document.getElementById('mask').src")
    before = shown_mask(page)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.eval_on_selector(
        "#threshold", "element => { element.value = '0.9'; element.dispatchEvent(new Event('input')); }"
    )
    wait_until(page, "document.getElementById('mask').src !== window.previousMask")
    after = shown_mask(page)
    # Same image, same seed: a higher threshold keeps a subset of the pixels, and a real lesion's
    # boundary always has pixels between 0.5 and 0.9.
    assert after.shape == before.shape
    assert not (after & ~before).any(), "a pixel joined the mask when the threshold rose"
    assert after.sum() < before.sum()
    assert "at threshold 0.90" in page.inner_text("#summary")
    assert not [url for url in requests if "predict" in url], "the threshold is applied in the page"


def test_a_bad_file_shows_the_servers_reason(page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    wait_until(page, "document.getElementById('error').textContent.length > 0")
    assert "not an image" in page.inner_text("#error") and "notes.png" in page.inner_text("#error")
    assert not page.is_visible("#result"), "the last image's result is not shown beside this file's error"


def test_a_picture_that_is_not_dermoscopy_shows_a_clear_warning(page):
    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    page.set_input_files("#file", str(photo))
    wait_until(page, "!document.getElementById('ood-warning').classList.contains('hidden')")
    assert "does not look like dermoscopy" in page.inner_text("#ood-warning")
    assert "review recommended" in page.inner_text("#summary")


def test_the_page_explains_its_numbers_and_links_the_worklist_and_the_api(page, original_size_image_path):
    page.goto(page.url.split("#")[0])
    page.set_input_files("#file", str(original_size_image_path))
    page.wait_for_selector("#result:not(.hidden)", timeout=60_000)
    assert "expects to have wrong" in page.inner_text("#score-meaning")
    assert "Yellow: the model is unsure here" in page.inner_text("#heatmap-meaning")
    links = page.eval_on_selector_all("header nav a", "links => links.map((link) => link.getAttribute('href'))")
    assert {"review", "docs", "#what-it-means"} <= set(links)
    page.click("#heatmap-meaning a")
    assert page.is_visible("#what-it-means") and "Monte Carlo dropout" in page.inner_text("#what-it-means")


def test_the_api_docs_with_keys_on_say_a_key_is_needed_in_a_browser(page):
    server = RunningServer(api_keys="first-key")
    try:
        tab = page.context.browser.new_page()
        response = tab.goto(server.url + "/docs")
        assert response.status == 401
        assert tab.inner_text("h1") == "An API key is needed"
        assert "API key" in tab.inner_text("body") and tab.is_visible("a[href='review']")
        tab.close()
        # A program still gets JSON in our words.
        assert httpx.get(server.url + "/docs").json()["detail"].startswith("a valid API key is required")
    finally:
        server.stop()
