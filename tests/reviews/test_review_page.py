"""The review page in headless Chromium (Debian's): open the worklist, open a case, paint a stroke, save,
reload, and the correction is there, in the page and over HTTP."""

import numpy as np
import pytest
from tests.api.test_web_page import CHROMIUM, CHROMIUM_ARGUMENTS, wait_until
from tests.conftest import decode_png
from tests.reviews.test_cases_http import KEYS, Service

from lesionseg.imaging.regions import rle_decode

# Slow tier (`make test-fast` leaves it out): a real browser drives a real server.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-page")
    running = Service(f"sqlite:///{folder / 'cases.db'}", folder / "images").start()
    yield running
    running.stop()


def test_paint_a_correction_save_reload_and_it_persisted(service, real_image_path, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make test` installs it"
    )
    uploaded = service.upload(real_image_path.read_bytes(), seed=0).json()  # one over HTTP, one in the page
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(service.url + "/review")
        page.fill("#api-key", KEYS["reviewer"])
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#worklist li img[src^='blob:']", timeout=30_000)
        page.set_input_files("#upload", str(real_image_path))
        wait_until(page, "document.querySelectorAll('#worklist li').length === 2")
        first = page.get_attribute("#worklist li:first-child", "data-id")
        page.click("#worklist li:first-child")
        page.wait_for_selector("#case-view:not(.hidden)")
        wait_until(page, "document.getElementById('canvas').width > 0")
        # A stroke across the top-left corner of the image, where the model found no lesion.
        box = page.locator("#canvas").bounding_box()

        def stroke() -> None:
            page.mouse.move(box["x"] + 0.05 * box["width"], box["y"] + 0.08 * box["height"])
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(box["x"] + (0.05 + 0.025 * step) * box["width"], box["y"] + 0.08 * box["height"])
            page.mouse.up()

        stroke()
        assert page.is_enabled("#undo")
        # Ctrl+Z from the page body undoes the stroke, and never reaches back into the API key field.
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press("Control+z")
        assert page.input_value("#api-key") == KEYS["reviewer"]
        assert not page.is_enabled("#undo")
        stroke()
        page.screenshot(path=str(tmp_path / "editor.png"))
        page.click("#save")
        # Saved, then on to the next case in the list.
        wait_until(page, "document.getElementById('canvas').dataset && !document.getElementById('error').textContent")
        page.reload()
        page.select_option("#status", "corrected")
        page.wait_for_selector(f"#worklist li[data-id='{first}']", timeout=30_000)
        browser.close()
    case = service.get(f"/cases/{first}").json()
    assert case["review"]["status"] == "corrected" and case["review"]["version"] == 2
    corrected, model = rle_decode(case["review"]["mask_rle"]), rle_decode(case["mask_rle"])
    height, width = corrected.shape
    # The stroke's centre line, 8 px tall, is lesion now; the model had none there.
    row, columns = int(0.08 * height), slice(int(0.06 * width), int(0.29 * width))
    assert corrected[row - 4 : row + 4, columns].all() and not model[row - 4 : row + 4, columns].any()
    assert corrected.sum() > model.sum()
    # Everything the stroke did not touch is the model's mask still.
    untouched = np.ones_like(corrected)
    untouched[: int(0.2 * height), : int(0.4 * width)] = False
    assert np.array_equal(corrected[untouched], model[untouched])
    served = decode_png(service.get(f"/cases/{first}/mask").content) == 255
    assert np.array_equal(served, corrected)
    listed = {item["id"] for item in service.get("/cases", limit=200).json()["cases"]}
    assert len(listed) == 2 and uploaded["id"] in listed and first in listed


def test_a_correction_refused_by_a_409_keeps_its_message_and_its_strokes(service, real_image_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make test` installs it"
    )
    case = service.upload(real_image_path.read_bytes(), seed=7).json()
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(service.url + "/review")
        page.fill("#api-key", KEYS["reviewer"])
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector(f"#worklist li[data-id='{case['id']}']", timeout=30_000)
        page.click(f"#worklist li[data-id='{case['id']}']")
        page.wait_for_selector("#case-view:not(.hidden)")
        wait_until(page, "document.getElementById('canvas').width > 0")
        box = page.locator("#canvas").bounding_box()
        page.mouse.move(box["x"] + 0.05 * box["width"], box["y"] + 0.08 * box["height"])
        page.mouse.down()
        for step in range(1, 11):
            page.mouse.move(box["x"] + (0.05 + 0.025 * step) * box["width"], box["y"] + 0.08 * box["height"])
        page.mouse.up()
        # Meanwhile another reviewer accepts the case.
        assert service.review(case["id"], {"status": "accepted", "version": 1}).status_code == 200
        page.click("#save")
        wait_until(page, "document.getElementById('error').textContent.includes('Not saved')")
        assert "version 1" in page.inner_text("#error") and "strokes kept" in page.inner_text("#error")
        # Deciding again, on the latest version, saves the strokes that were refused.
        page.click("#save")
        wait_until(page, "document.getElementById('saved').textContent.includes('corrected')")
        browser.close()
    saved = service.get(f"/cases/{case['id']}").json()
    assert saved["review"]["status"] == "corrected" and saved["review"]["version"] == 3
    corrected, model = rle_decode(saved["review"]["mask_rle"]), rle_decode(case["mask_rle"])
    height, width = corrected.shape
    row, columns = int(0.08 * height), slice(int(0.06 * width), int(0.29 * width))
    assert corrected[row - 4 : row + 4, columns].all() and not model[row - 4 : row + 4, columns].any()
