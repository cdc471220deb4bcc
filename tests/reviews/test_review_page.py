"""The review page in headless Chromium (Debian's): open the worklist, open a case, paint a stroke, save,
reload, and the correction is there, in the page and over HTTP."""

from pathlib import Path

import httpx
import matplotlib
import numpy as np
import pytest
from tests.api.test_web_page import CHROMIUM, CHROMIUM_ARGUMENTS, wait_until
from tests.conftest import decode_png
from tests.reviews.test_cases_http import KEYS, Service

from lesionseg.imaging.regions import rle_decode

# Slow tier (`make test-fast` leaves it out): a real browser drives a real server.
pytestmark = pytest.mark.slow


def sync_playwright():
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: `make test` installs it"
    )
    return playwright.sync_playwright()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review-page")
    running = Service(f"sqlite:///{folder / 'cases.db'}", folder / "images").start()
    yield running
    running.stop()


def test_paint_a_correction_save_reload_and_it_persisted(service, real_image_path, tmp_path):
    uploaded = service.upload(real_image_path.read_bytes(), seed=0).json()  # one over HTTP, one in the page
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(service.url + "/review")
        page.fill("#api-key", KEYS["reviewer"])
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#worklist li canvas[data-drawn]", timeout=30_000)
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
    case = service.upload(real_image_path.read_bytes(), seed=7).json()
    with sync_playwright() as driver:
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


def open_review_page(driver, service, viewport=(1366, 768), key: str | None = KEYS["reviewer"]):
    """The page in a new browser, with `key` typed in its field (none: as a newcomer opens it)."""
    browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.goto(service.url + "/review")
    if key is not None:
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")
    return browser, page


def open_case(page, case_id: str) -> dict:
    page.wait_for_selector(f"#worklist li[data-id='{case_id}']", timeout=30_000)
    page.click(f"#worklist li[data-id='{case_id}']")
    page.wait_for_selector("#case-view:not(.hidden)")
    wait_until(page, "document.getElementById('case-summary').textContent.includes('version')")
    return page.locator("#canvas").bounding_box()


def on_screen(box: dict, shape: tuple[int, int], x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) is on the screen, for the canvas's bounding box as zoomed."""
    height, width = shape
    return box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height


def test_a_box_becomes_a_proposal_the_brush_adjusts_and_the_keyboard_saves_at_1366_by_768(service, real_image_path):
    """The one-gesture fix: draw a box, get LiteMedSAM's mask, touch it up, press S. With zoom, and the decision
    bar in view on a laptop's screen."""
    case = service.upload(real_image_path.read_bytes(), seed=3, external_id="MRN-7").json()
    model = rle_decode(case["mask_rle"])
    rows, columns = np.nonzero(model)
    sent = []
    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service)
        page.on("request", lambda request: "/proposal" in request.url and sent.append(request.post_data_json))
        box = open_case(page, case["id"])
        assert "MRN-7" in page.inner_text("#case-summary")
        for button in ("#accept", "#save", "#reject"):
            bounds = page.locator(button).bounding_box()
            assert bounds["y"] >= 0 and bounds["y"] + bounds["height"] <= 768, f"{button} is out of view"
        # The wheel zooms in at the pointer, 0 fits the image again.
        fitted = page.inner_text("#zoom-level")
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -300)
        wait_until(page, f"document.getElementById('zoom-level').textContent !== '{fitted}'")
        assert page.locator("#canvas").bounding_box()["width"] > 1.2 * box["width"]
        page.keyboard.press("0")
        assert page.inner_text("#zoom-level") == fitted
        # X, then a box dragged around the lesion the model found.
        page.keyboard.press("x")
        page.mouse.move(*on_screen(box, model.shape, columns.min() - 4, rows.min() - 4))
        page.mouse.down()
        page.mouse.move(*on_screen(box, model.shape, columns.max() + 4, rows.max() + 4), steps=8)
        page.mouse.up()
        wait_until(page, "document.getElementById('saved').textContent.includes('Proposal by LiteMedSAM')")
        # B, and a stroke across the top-left corner, where no lesion is; then S saves it all.
        page.keyboard.press("b")
        page.mouse.move(*on_screen(box, model.shape, 0.05 * model.shape[1], 0.08 * model.shape[0]))
        page.mouse.down()
        page.mouse.move(*on_screen(box, model.shape, 0.3 * model.shape[1], 0.08 * model.shape[0]), steps=10)
        page.mouse.up()
        page.keyboard.press("s")
        wait_until(page, "document.getElementById('saved').textContent.includes('corrected')")
        browser.close()
    saved = service.get(f"/cases/{case['id']}").json()
    assert saved["review"]["status"] == "corrected"
    corrected = rle_decode(saved["review"]["mask_rle"])
    # What the page was proposed, asked again over HTTP: the same box gives the same mask.
    assert len(sent) == 1
    proposal = httpx.post(
        f"{service.url}/cases/{case['id']}/proposal", json=sent[0], headers={"X-API-Key": KEYS["reviewer"]}, timeout=120
    ).json()
    proposed = rle_decode(proposal["mask_rle"])
    height, width = model.shape
    stroke = np.zeros_like(model)
    stroke[: int(0.2 * height), : int(0.4 * width)] = True
    assert np.array_equal(corrected[~stroke], proposed[~stroke]), "outside the stroke, the proposal as it came"
    row = int(0.08 * height)
    assert corrected[row - 3 : row + 3, int(0.07 * width) : int(0.28 * width)].all(), "the stroke is lesion"


def test_the_keyboard_corrects_a_case_with_a_proposal_and_never_acts_in_a_text_field(service, real_image_path):
    """P asks for a proposal from the model's own box, S saves it: a correction without the mouse. Typed into
    the API key field, the same letters are only text. The history lists both versions."""
    case = service.upload(real_image_path.read_bytes(), seed=4).json()
    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service)
        open_case(page, case["id"])
        page.focus("#api-key")
        page.keyboard.type("ps")
        assert page.input_value("#api-key") == KEYS["reviewer"] + "ps"
        assert not page.inner_text("#saved") and service.get(f"/cases/{case['id']}").json()["review"]["version"] == 1
        page.fill("#api-key", KEYS["reviewer"])
        page.evaluate("document.activeElement.blur()")
        page.keyboard.press("p")
        wait_until(page, "document.getElementById('saved').textContent.includes('Proposal by LiteMedSAM')")
        page.keyboard.press("s")
        wait_until(page, "document.getElementById('saved').textContent.includes('corrected')")
        saved = service.get(f"/cases/{case['id']}").json()
        page.select_option("#status", "")
        open_case(page, case["id"])
        page.click("#history-panel summary")
        wait_until(page, "document.querySelectorAll('#history li').length === 2")
        assert "version 2: corrected" in page.inner_text("#history")
        browser.close()
    proposal = httpx.post(
        f"{service.url}/cases/{case['id']}/proposal", headers={"X-API-Key": KEYS["reviewer"]}, timeout=120
    ).json()
    assert np.array_equal(rle_decode(saved["review"]["mask_rle"]), rle_decode(proposal["mask_rle"]))


def test_a_case_flagged_not_dermoscopy_is_accepted_only_after_the_reviewer_confirms(service):
    """The page warns, and asks before an accept that would send the picture to training; a "no" sends
    nothing."""
    portrait = (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes()
    case = service.upload(portrait, seed=0).json()
    assert case["out_of_distribution"] is True
    answers, questions = [False, True], []

    def answer(dialog) -> None:
        questions.append(dialog.message)
        dialog.accept() if answers.pop(0) else dialog.dismiss()

    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service)
        page.on("dialog", answer)
        open_case(page, case["id"])
        assert "does not look like dermoscopy" in page.inner_text("#case-warning")
        page.keyboard.press("a")
        # The dialog is answered in this process as it opens; the page's own state is then read back.
        assert len(questions) == 1 and "not dermoscopy" in questions[0]
        assert service.get(f"/cases/{case['id']}").json()["review"]["status"] == "pending", "a no sends nothing"
        page.keyboard.press("a")
        wait_until(page, "document.getElementById('saved').textContent.includes('accepted')")
        browser.close()
    assert len(questions) == 2
    assert service.get(f"/cases/{case['id']}").json()["review"]["status"] == "accepted"


def test_every_way_out_of_an_edited_case_asks_first_and_a_no_keeps_the_strokes(service, real_image_path):
    """← Worklist, Refresh, the status filter, Next and closing the page each ask; answered no, the case stays
    open with its strokes (Undo still enabled) and the filter shows what it showed."""
    case = service.upload(real_image_path.read_bytes(), seed=11).json()
    questions = []

    def decline(dialog) -> None:
        questions.append(dialog.type)
        dialog.dismiss()

    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service)
        open_case(page, case["id"])
        # Unedited, leaving asks nothing.
        page.click("#back")
        page.wait_for_selector("#worklist-view:not(.hidden)")
        box = open_case(page, case["id"])
        page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.1 * box["height"])
        page.mouse.down()
        page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.1 * box["height"], steps=8)
        page.mouse.up()
        assert page.is_enabled("#undo") and questions == []
        page.on("dialog", decline)
        page.click("#back")
        page.click("#refresh")
        page.select_option("#status", "")
        page.evaluate("document.activeElement.blur()")  # shortcuts never act in a field, the filter included
        page.keyboard.press("n")
        assert questions == ["confirm"] * 4
        assert page.is_visible("#case-view") and not page.is_visible("#worklist-view")
        assert page.is_enabled("#undo") and page.input_value("#status") == "pending"
        # Closing or reloading the page: its beforeunload handler asks the browser to ask (a cancelled event).
        leaving = (
            "() => { const e = new Event('beforeunload', {cancelable: true}); dispatchEvent(e); "
            "return e.defaultPrevented; }"
        )
        assert page.evaluate(leaving) is True
        page.click("#undo")  # back to the model's mask, but edited all the same: the page cannot tell intent
        assert page.evaluate(leaving) is True
        browser.close()
    assert service.get(f"/cases/{case['id']}").json()["review"]["status"] == "pending"


def test_a_new_key_and_refresh_at_once_list_each_case_once_and_a_verdict_names_its_case(service, real_image_path):
    first = service.upload(real_image_path.read_bytes(), seed=21, external_id="FIRST-CASE").json()
    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service)
        page.click("#refresh")  # a second load while the first is in flight
        page.wait_for_selector(f"#worklist li[data-id='{first['id']}']", timeout=30_000)
        page.wait_for_load_state("networkidle")  # both loads answered: the earlier one's must have been dropped
        ids = page.eval_on_selector_all("#worklist li", "items => items.map((item) => item.dataset.id)")
        assert len(ids) == len(set(ids)), "a case listed twice"
        open_case(page, first["id"])
        page.keyboard.press("r")
        wait_until(page, "document.getElementById('saved').textContent.includes('rejected')")
        assert "FIRST-CASE" in page.inner_text("#saved")
        browser.close()


def test_a_refused_key_is_explained_in_a_reviewers_words(service, real_image_path):
    """The API says "send it as X-API-Key or Authorization: Bearer"; the page has a key field, and says so."""
    case = service.upload(real_image_path.read_bytes(), seed=31).json()
    with sync_playwright() as driver:
        browser, page = open_review_page(driver, service, key=None)
        wait_until(page, "document.getElementById('error').textContent.includes('API key field')")
        assert "Bearer" not in page.inner_text("#error")
        page.fill("#api-key", "not-a-key")
        page.dispatch_event("#api-key", "change")
        wait_until(page, "document.getElementById('error').textContent.includes('not accepted')")
        page.fill("#api-key", KEYS["reader"])
        page.dispatch_event("#api-key", "change")
        open_case(page, case["id"])
        page.keyboard.press("r")
        wait_until(page, "document.getElementById('error').textContent.includes(\"reviewer's key\")")
        browser.close()
    assert service.get(f"/cases/{case['id']}").json()["review"]["status"] == "pending"
