"""The app as a visitor sees it, in headless Chromium: ``python app.py`` on the committed default bundle
(what ``make app`` serves), with a committed example voice (no espeak-ng needed).

Record with the one-shot microphone (Chromium's fake audio capture plays the example voice), stop,
make a face; and the page after a prediction with both models and the heatmap on a laptop
(1400x1000) and a phone (390x844) viewport: both faces drawn, the supervised/KD comparison readable
(neither readouts table scrolls sideways), no server paths; one model keeps one readouts table.
Screenshots go to test-artifacts/; docs/img/app_desktop.png and app_phone.png are copies of its
app_desktop_docs.png and app_phone_docs.png (the page down to the percentile plot).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import soundfile as sf

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.app_server import REPO_ROOT, AppServer, start_app  # noqa: E402
from tests.test_app_browser import (  # noqa: E402
    CHROMIUM,
    TIMEOUT_MS,
    assert_face_drawn,
    fake_microphone_chromium,
    open_app,
    viewer_pixels,
)

pytestmark = pytest.mark.browser
EXAMPLE = REPO_ROOT / "examples" / "synthetic-low-voice.flac"
VIEWPORTS = {"desktop": (1400, 1000), "phone": (390, 844)}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> AppServer:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} (Debian package chromium) is not installed")
    srv = start_app(None, tmp_path_factory.mktemp("app"))  # no --bundle: models/default, as `make app`
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def example_wav(tmp_path_factory) -> Path:
    """The committed example voice as 16-bit WAV (what Chromium's fake audio capture plays)."""
    samples, sr = sf.read(EXAMPLE, dtype="int16")
    path = tmp_path_factory.mktemp("voice") / "example.wav"
    sf.write(path, samples, sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(example_wav):
    with fake_microphone_chromium(example_wav) as b:
        yield b


def wait_for_both_faces(page) -> None:
    page.locator("#readouts [role=gridcell]", has_text="ER (ear to ear)").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("Agreement of the two models").wait_for(timeout=TIMEOUT_MS)


def table_layout(page, selector: str) -> dict:
    """Where a gr.Dataframe lies: its right edge, its scroll area's scroll and client widths, and the
    left and right edge of each column header (by its text), in viewport pixels."""
    return page.evaluate(
        """(selector) => {
            const root = document.querySelector(selector);
            const area = root.querySelector(".virtual-table-viewport") || root.querySelector("table");
            const headers = {};
            for (const h of root.querySelectorAll("[role=columnheader]")) {
                const b = h.getBoundingClientRect();
                headers[h.innerText.trim()] = [b.left, b.right];
            }
            return {right: root.getBoundingClientRect().right, scroll_width: area.scrollWidth,
                    client_width: area.clientWidth, headers};
        }""",
        selector,
    )


def page_y(page, selector: str, edge: str) -> float:
    """The top or bottom edge of an element in page coordinates (what a full-page screenshot clips)."""
    return page.evaluate(
        "([sel, edge]) => document.querySelector(sel).getBoundingClientRect()[edge] + window.scrollY",
        [selector, edge],
    )


def assert_no_server_paths(page, server: AppServer) -> None:
    text = page.locator("body").inner_text()
    for path in (str(REPO_ROOT), str(server.temp_dir), "/tmp/", "/home/", "/work/"):
        assert path not in text, f"the page shows a server path ({path})"


def test_microphone_record_stop_make_a_face(browser, server, artifacts_dir):
    page, errors = open_app(browser, server, VIEWPORTS["desktop"])
    audio = page.locator("#voice-input")
    audio.get_by_role("button", name="Record audio").click()
    audio.get_by_role("button", name="Record", exact=True).click()
    time.sleep(4.0)  # the fake device plays the example voice (and loops it)
    audio.get_by_role("button", name="Stop").first.click()
    audio.get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(2000)  # the recording is uploaded after Stop; a click before that sends none
    page.click("#run")
    try:
        wait_for_both_faces(page)  # the default choice: both models
    except playwright_api.Error:
        page.screenshot(path=str(artifacts_dir / "visitor_microphone_failed.png"), full_page=True)
        raise
    assert_face_drawn(viewer_pixels(page, artifacts_dir / "visitor_microphone_a.png"))
    assert_face_drawn(viewer_pixels(page, artifacts_dir / "visitor_microphone_b.png", viewer="#viewer-b"))
    page.screenshot(path=str(artifacts_dir / "visitor_microphone.png"), full_page=True)
    assert_no_server_paths(page, server)
    assert not errors, errors


@pytest.mark.parametrize("name", list(VIEWPORTS))
def test_both_models_with_heatmap_readable(browser, server, artifacts_dir, name):
    page, errors = open_app(browser, server, VIEWPORTS[name], mobile=name == "phone")
    page.get_by_label("Colour by distance from the average face", exact=False).check()
    page.set_input_files("#voice-input input[type=file]", str(EXAMPLE))
    page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.click("#run")
    wait_for_both_faces(page)
    a = viewer_pixels(page, artifacts_dir / f"visitor_{name}_viewer_a.png")
    b = viewer_pixels(page, artifacts_dir / f"visitor_{name}_viewer_b.png", viewer="#viewer-b")
    for rgb in (a, b):
        assert_face_drawn(rgb)
        assert ((rgb[..., 0] - rgb[..., 2]) > 12).mean() > 0.01, "no heatmap colours"
    # the comparison: both models' ratios side by side, their agreement, inside the viewport width
    width = VIEWPORTS[name][0]
    table = table_layout(page, "#readouts")
    assert table["scroll_width"] <= table["client_width"] + 1, f"the readouts scroll sideways: {table}"
    for text in ("Supervised ratio", "KD ratio", "difference", "Agreement of the two models"):
        box = page.get_by_text(text, exact=False).first.bounding_box()
        assert box is not None and box["width"] > 0, text
    for header in ("measurement", "Supervised ratio", "KD ratio", "difference"):
        left, right = table["headers"][header]
        assert left >= 0 and right <= min(width, table["right"]) + 1, f"{header} is off-screen: {table}"
    details = table_layout(page, "#readout-details")
    assert details["scroll_width"] <= details["client_width"] + 1, f"the details scroll sideways: {details}"
    summary = page.locator("#summary").bounding_box()
    assert summary["x"] >= 0 and summary["x"] + summary["width"] <= width + 1, "the summary overflows"
    assert page.evaluate("document.documentElement.scrollWidth") <= width + 1, "the page scrolls sideways"
    page.locator("#viewer-a").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / f"app_{name}.png"), full_page=True)
    # docs/img/app_{name}.png: the page from the top (desktop) or the first viewer (phone) to the plot
    top = 0 if name == "desktop" else page_y(page, "#viewer-a", "top") - 8
    bottom = page_y(page, "#percentiles", "bottom") + 8
    clip = {"x": 0, "y": top, "width": width, "height": bottom - top}
    page.screenshot(path=str(artifacts_dir / f"app_{name}_docs.png"), full_page=True, clip=clip)
    assert_no_server_paths(page, server)
    assert not errors, errors


def test_one_model_keeps_one_table(browser, server):
    """One model: its readouts (ratio, mm, percentile, skill) in one table; the details table is hidden."""
    page, errors = open_app(browser, server, VIEWPORTS["desktop"])
    assert page.locator("#readout-details").is_visible()  # the default choice: both models
    page.get_by_label("Supervised", exact=True).check()
    playwright_api.expect(page.locator("#readout-details")).to_be_hidden(timeout=TIMEOUT_MS)
    page.set_input_files("#voice-input input[type=file]", str(EXAMPLE))
    page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.click("#run")
    page.locator("#readouts [role=columnheader]", has_text="ratio to OICD").wait_for(timeout=TIMEOUT_MS)
    headers = list(table_layout(page, "#readouts")["headers"])
    assert headers == ["measurement", "ratio to OICD", "distance (mm)", "percentile", "skill"], headers
    assert not page.locator("#viewer-b").is_visible() and not page.locator("#readout-details").is_visible()
    assert not errors, errors
