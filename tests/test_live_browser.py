"""The live microphone mode in headless Chromium: Chromium's fake microphone plays an espeak-ng voice
into the streaming Audio; the faces change while it speaks, and the last one is the one-shot
prediction of the samples the server heard (its WAV and PLY downloaded through the page)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.test_app_browser import (  # noqa: E402
    TIMEOUT_MS,
    fake_microphone_chromium,
    open_app,
    viewer_pixels,
)
from tests.test_app_browser import server as server  # noqa: E402,F401 - the module-scoped app fixture
from tests.test_app_browser import voice as voice  # noqa: E402,F401 - the espeak-ng voice fixture

pytestmark = pytest.mark.browser
SPEAK_S = 9.0  # the fake microphone loops the voice; long enough for several updates under load


@pytest.fixture(scope="module")
def browser(voice):  # noqa: F811 - the voice fixture imported above
    with fake_microphone_chromium(voice) as b:
        yield b


def _download(page, locator, folder: Path) -> tuple[Path, str]:
    """Click a download button; the saved file and the URL it came from."""
    playwright_api.expect(locator).to_be_enabled(timeout=TIMEOUT_MS)
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        locator.click(timeout=TIMEOUT_MS)
    d = info.value
    path = folder / d.suggested_filename
    d.save_as(path)
    return path, unquote(d.url)


def _run_folder(url: str) -> str:
    return url.rsplit("/", 2)[-2]


def test_live_faces_form_and_the_last_is_the_one_shot_prediction(browser, server, artifacts_dir, tmp_path):
    from voice2mesh.inference import Predictor
    from voice2mesh.meshio import read_vertices

    page, errors = open_app(browser, server)
    glbs: list[str] = []
    page.on("response", lambda r: glbs.append(r.url) if r.url.endswith("supervised.glb") else None)
    live = page.locator("#live-input")
    live.get_by_role("button", name="Record", exact=True).click()
    time.sleep(SPEAK_S)
    page.locator("#viewer-a canvas").screenshot(path=str(artifacts_dir / "live_viewer_while_speaking.png"))
    page.screenshot(path=str(artifacts_dir / "live_while_speaking.png"), full_page=True)
    live.get_by_role("button", name="Stop").first.click()
    status = page.locator("#live-status")
    last, stable_since = "", time.time()
    while time.time() - stable_since < 6.0:  # the last chunks are answered after the stop
        text = status.inner_text()
        if text != last:
            last, stable_since = text, time.time()
        time.sleep(0.5)
    assert "faces so far" in last, last
    faces = int(last.split(";")[1].split()[0])
    assert faces >= 3, last
    assert len(set(glbs)) >= 3, f"the viewer loaded {len(set(glbs))} different faces"
    # A picture for people; the drawing of a GLB is asserted by test_app_browser. Here the viewer reloads
    # every half second, and headless Chromium's software WebGL can leave the canvas unpainted under load.
    viewer_pixels(page, artifacts_dir / "live_viewer.png", timeout_s=10.0)
    page.screenshot(path=str(artifacts_dir / "live.png"), full_page=True)

    # the live plot has one point per face and ratio (4 ratios); the readouts are the last face's
    heard, heard_url = _download(page, page.locator("#live-heard"), tmp_path)
    ply, ply_url = _download(page, page.get_by_role("button", name="PLY").first, tmp_path)
    assert _run_folder(heard_url) == _run_folder(ply_url), "the WAV and the PLY of one result"
    assert _run_folder(glbs[-1]) == _run_folder(ply_url), "the viewer shows the last face"
    one_shot = Predictor.from_bundle(_bundle_of(server), model="supervised").predict(str(heard))
    np.testing.assert_allclose(read_vertices(ply), one_shot.vertices, rtol=0, atol=1e-4)
    cell = page.locator("#readouts [role=row]", has_text="ER (ear to ear)").locator("[role=gridcell]").nth(1)
    assert float(cell.inner_text()) == round(one_shot.readouts["ratios"]["ER"], 4)
    assert not errors, errors


def _bundle_of(server) -> str:
    """The --bundle argument the app process was started with."""
    args = server.proc.args
    return str(args[args.index("--bundle") + 1])
