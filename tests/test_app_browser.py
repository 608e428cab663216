"""The web app in headless Chromium (Debian's /usr/bin/chromium driven by Python playwright).

Upload a recording and see the 3D viewer draw a face; record through a fake microphone that plays a
synthetic voice. Screenshots go to the ``artifacts_dir`` fixture (test-artifacts/) for a person to
look at. Never runs ``playwright install``: without Debian's chromium the tests are skipped.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.app_server import AppServer, make_app_bundle, start_app, synthesise  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BACKGROUND = np.array([0.93, 0.94, 0.96]) * 255  # app.VIEWER_BACKGROUND
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) is needed to make test voices")
    return synthesise(
        tmp_path_factory.mktemp("voice") / "voice.wav",
        "Good morning. I am speaking to the web page through a microphone that is not real.",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> AppServer:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} (Debian package chromium) is not installed")
    try:
        bundle = make_app_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    except Exception as exc:
        pytest.skip(f"cannot make the test bundle: {exc}")
    srv = start_app(bundle, tmp_path_factory.mktemp("app"), ["--no-examples"])
    yield srv
    srv.stop()


@contextlib.contextmanager
def fake_microphone_chromium(wav: str | Path) -> Iterator[Any]:
    """Headless Debian Chromium whose microphone plays ``wav`` (permission granted without a prompt)."""
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def browser(voice):
    """Chromium with a fake microphone that plays ``voice``."""
    with fake_microphone_chromium(voice) as b:
        yield b


def open_app(browser, server: AppServer, viewport: tuple[int, int] = (1400, 1100), mobile: bool = False):
    """A fresh page on the app (microphone allowed) and the list its page errors go to."""
    w, h = viewport
    context = browser.new_context(
        viewport={"width": w, "height": h}, is_mobile=mobile, has_touch=mobile, device_scale_factor=1
    )
    context.grant_permissions(["microphone"], origin=server.url.rstrip("/"))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    page.wait_for_selector("#run", timeout=TIMEOUT_MS)
    return page, errors


def viewer_pixels(page, path: Path, timeout_s: float = 60.0, viewer: str = "#viewer-a") -> np.ndarray:
    """Screenshot of a viewer once its canvas has drawn (background colour plus an object)."""
    from PIL import Image

    canvas = page.locator(f"{viewer} canvas")
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    deadline = time.time() + timeout_s
    while True:
        png = canvas.screenshot(path=str(path))
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
        if 0.05 < face_fraction(rgb) < 0.9 or time.time() > deadline:  # not blank, not unpainted
            return rgb
        time.sleep(0.5)


def face_fraction(rgb: np.ndarray) -> float:
    """Share of pixels that differ clearly from the viewer background (the face, lit and shaded)."""
    return float((np.abs(rgb - BACKGROUND).max(axis=2) > 12).mean())


def assert_face_drawn(rgb: np.ndarray) -> None:
    frac = face_fraction(rgb)
    assert 0.05 < frac < 0.9, f"{frac:.1%} of the viewer differs from the background"
    h, w, _ = rgb.shape
    mask = np.abs(rgb - BACKGROUND).max(axis=2) > 12
    ys, xs = np.nonzero(mask)
    # one object near the middle of the view, shaded (many grey levels), not a flat rectangle
    assert abs(xs.mean() / w - 0.5) < 0.2 and abs(ys.mean() / h - 0.5) < 0.25
    assert len(np.unique(rgb[mask].mean(axis=1).round())) > 30


def test_upload_renders_a_face(browser, server, voice, artifacts_dir):
    page, errors = open_app(browser, server)
    assert page.get_by_role("button", name="GLB").first.is_disabled(), "nothing to download yet"
    page.set_input_files("#voice-input input[type=file]", str(voice))
    page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.click("#run")
    page.locator("#readouts [role=gridcell]", has_text="ER (ear to ear)").wait_for(timeout=TIMEOUT_MS)
    rgb = viewer_pixels(page, artifacts_dir / "app_viewer_upload.png")
    page.screenshot(path=str(artifacts_dir / "app_upload.png"), full_page=True)
    assert_face_drawn(rgb)
    # downloads are enabled once their files are written, just after the face is shown
    for label in ("GLB", "OBJ", "PLY"):
        playwright_api.expect(page.get_by_role("button", name=label).first).to_be_enabled(timeout=TIMEOUT_MS)
    assert not errors, errors


def test_bad_upload_shows_the_audio_error(browser, server, tmp_path, artifacts_dir):
    import soundfile as sf

    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(3 * 16000, dtype=np.int16), 16000, subtype="PCM_16")
    page, _ = open_app(browser, server)
    page.set_input_files("#voice-input input[type=file]", str(silent))
    page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.click("#run")
    toast = page.get_by_text("silence.wav: the recording is silent", exact=False)
    toast.wait_for(timeout=TIMEOUT_MS)  # the audio module's message, in Gradio's error toast
    page.screenshot(path=str(artifacts_dir / "app_bad_upload.png"), full_page=False)
    assert "accepted:" in toast.inner_text()


def test_microphone_recording_renders_a_face(browser, server, artifacts_dir):
    page, errors = open_app(browser, server)
    audio = page.locator("#voice-input")
    audio.get_by_role("button", name="Record audio").click()
    audio.get_by_role("button", name="Record", exact=True).click()
    time.sleep(4.0)  # the fake device plays the synthetic voice (and loops it)
    audio.get_by_role("button", name="Stop").first.click()
    audio.get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=str(artifacts_dir / "app_microphone_recorded.png"), full_page=False)
    page.click("#run")
    page.locator("#readouts [role=gridcell]", has_text="ER (ear to ear)").wait_for(timeout=TIMEOUT_MS)
    rgb = viewer_pixels(page, artifacts_dir / "app_viewer_microphone.png")
    page.screenshot(path=str(artifacts_dir / "app_microphone.png"), full_page=True)
    assert_face_drawn(rgb)
    assert not errors, errors


def test_both_models_with_heatmap(browser, server, voice, artifacts_dir):
    page, errors = open_app(browser, server)
    page.get_by_label("Both side by side", exact=False).check()
    page.get_by_label("Colour by distance from the average face", exact=False).check()
    page.set_input_files("#voice-input input[type=file]", str(voice))
    page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
    page.click("#run")
    page.locator("#readouts [role=gridcell]", has_text="ER (ear to ear)").wait_for(timeout=TIMEOUT_MS)
    a = viewer_pixels(page, artifacts_dir / "app_viewer_heatmap_a.png")
    b = viewer_pixels(page, artifacts_dir / "app_viewer_heatmap_b.png", viewer="#viewer-b")
    page.screenshot(path=str(artifacts_dir / "app_both_heatmap.png"), full_page=True)
    assert_face_drawn(a)
    assert_face_drawn(b)
    for rgb in (a, b):  # heatmap colours are warm (yellow to red), the plain face is a cool grey
        warm = (rgb[..., 0] - rgb[..., 2]) > 12
        assert warm.mean() > 0.01, f"only {warm.mean():.2%} warm pixels: no heatmap colours"
    assert page.get_by_text("Agreement of the two models").is_visible()
    assert not errors, errors
