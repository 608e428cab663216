"""The live microphone mode without a server: voice2mesh.live on a real service, real ONNX Runtime
sessions and an espeak-ng voice streamed in chunks."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from voice2mesh.audio import AudioConfig
from voice2mesh.inference import Predictor
from voice2mesh.live import HEARD_WAV, LiveStream, LiveStreams, history_rows
from voice2mesh.service import InputError, ServiceConfig, Voice2MeshService

TEXT = (
    "Good morning. I am speaking to the web page through a microphone that is not real, and the face "
    "forms while I speak."
)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from tests.bundles import make_test_bundle

    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "bundle", encoders=("voiceembednet", "ge2e"))


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> tuple[np.ndarray, int]:
    """An espeak-ng voice as int16 samples at its own rate (22.05 kHz)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) is needed to make test voices")
    from tests.app_server import synthesise

    path = synthesise(tmp_path_factory.mktemp("voice") / "voice.wav", TEXT)
    x, rate = sf.read(path, dtype="int16")
    return x, rate


def make_service(bundle: Path, work: Path, max_seconds: float = 60.0) -> Voice2MeshService:
    audio = replace(AudioConfig(), max_duration_s=max_seconds)
    return Voice2MeshService.from_bundle(bundle, work_dir=work, config=ServiceConfig(audio=audio))


def chunks(x: np.ndarray, rate: int, seconds: float = 0.5):
    step = int(rate * seconds)
    return [(rate, x[i : i + step]) for i in range(0, len(x), step)]


def test_each_update_is_the_one_shot_prediction_of_the_samples_heard(bundle, voice, tmp_path):
    x, rate = voice
    service = make_service(bundle, tmp_path / "work")
    live = LiveStreams(service)
    predictor = Predictor.from_bundle(bundle, model="supervised")
    try:
        live.start("s")
        updates = []
        for c in chunks(x, rate):
            u = live.update("s", c, "supervised", kinds=("glb", "ply"))
            updates.append(u)
            if u.result is None:
                continue
            heard = u.result.run_dir / HEARD_WAV  # checked at once: a session keeps its 4 latest runs
            pcm, sr = sf.read(heard, dtype="int16")
            assert sr == 16000 and len(pcm) == round(u.heard_s * 16000)
            one_shot = predictor.predict(str(heard))
            np.testing.assert_array_equal(u.result.faces[0].vertices, one_shot.vertices.astype(np.float64))
            assert u.result.faces[0].readouts["ratios"] == one_shot.readouts["ratios"]
            assert u.result.faces[0].speech_s == pytest.approx(one_shot.speech_s)
        first = next(i for i, u in enumerate(updates) if u.result is not None)
        assert first > 0 and "of speech" in updates[0].message  # too little speech at first: listening
        assert "microphone" in updates[0].message and ".live-" not in updates[0].message
        results = [u for u in updates if u.result is not None]
        assert len(results) >= 6
        # the buffer is the voice resampled in one go (the streaming resampler's output, less its tail)
        whole = soxr.resample(x.astype(np.float32) / 32768, rate, 16000, quality="HQ")
        heard = sf.read(results[-1].result.run_dir / HEARD_WAV, dtype="float32")[0]
        assert np.abs(heard - whole[: len(heard)]).max() < 2e-4
        assert len(whole) - len(heard) < 0.05 * 16000
        # the history: one point per update with a face, speech seconds growing
        hist = results[-1].history
        assert len(hist) == len(results)
        assert [p.speech_s for p in hist] == sorted(p.speech_s for p in hist)
        rows = history_rows(hist, {"Supervised (log-mel)": {"FR": "no skill"}})
        assert len(rows) == 4 * len(hist)
        assert {r["ratio"] for r in rows} == {"ER", "FR (no skill)", "CR", "MR"}
        # the service's latest result of the session is the last live face (downloads work as after /predict)
        assert service.sessions.latest("s") is results[-1].result
        assert service.mesh_files("s", "obj")[0].is_file()
    finally:
        service.close()


def test_two_models_and_a_new_recording(bundle, voice, tmp_path):
    x, rate = voice
    service = make_service(bundle, tmp_path / "work")
    live = LiveStreams(service)
    try:
        for c in chunks(x[: 4 * rate], rate, 1.0):
            u = live.update("s", c, "both")
        assert u.result is not None and len(u.result.faces) == 2 and u.result.agreement is not None
        assert len(history_rows(u.history)) == 2 * 4 * (len(u.history) // 2)
        live.start("s")  # a new recording starts empty
        u = live.update("s", chunks(x, rate, 0.3)[0], "both")
        assert u.result is None and u.heard_s == pytest.approx(0.3, abs=0.05) and u.history == []
    finally:
        service.close()


def test_the_buffer_stops_at_the_audio_limit(bundle, voice, tmp_path):
    x, rate = voice
    service = make_service(bundle, tmp_path / "work", max_seconds=3.0)
    live = LiveStreams(service)
    try:
        updates = [live.update("s", c, None) for c in chunks(x, rate)]
        assert max(u.heard_s for u in updates) == pytest.approx(3.0)
        full = [u for u in updates if u.heard_s == pytest.approx(3.0)]
        assert full[0].result is not None  # the update that filled the buffer still predicts
        assert all(u.result is None and "3 s limit" in u.message for u in full[1:])
        assert len(full) >= 2
        silent = live.update("quiet", (16000, np.zeros(3 * 16000, np.int16)), None)  # fills the buffer
        assert silent.result is None and "silent" in silent.message
        again = live.update("quiet", (16000, np.ones(16000, np.int16)), None)
        assert again.result is None and "3 s limit" in again.message  # a full buffer is not re-run
    finally:
        service.close()


def test_streams_are_bounded_and_end_with_their_session(bundle, voice, tmp_path):
    x, rate = voice
    service = make_service(bundle, tmp_path / "work")
    live = LiveStreams(service, max_streams=3, ttl_s=3600)
    try:
        for i in range(5):
            live.update(f"s{i}", (rate, x[: rate // 2]), None)
        assert len(live) == 3 and live.get("s0") is None and live.get("s4") is not None
        live.end("s4")
        assert live.get("s4") is None and len(live) == 2
        live.ttl_s = 0.0
        assert len(live) == 0  # idle longer than the TTL
    finally:
        service.close()


def test_chunk_formats():
    stream = LiveStream(16000 * 2)
    pcm = (np.sin(np.arange(8000) / 5) * 20000).astype(np.int16)
    assert stream.add(16000, pcm) == 8000
    np.testing.assert_array_equal(stream.samples[:8000], pcm)  # 16 kHz int16 mono: kept bit for bit
    stereo = np.stack([pcm, pcm], axis=1).astype(np.float32) / 32768
    assert stream.add(16000, stereo) == 8000  # float stereo: averaged, back to the same int16
    np.testing.assert_array_equal(stream.samples[8000:16000], pcm)
    assert stream.add(16000, np.concatenate([pcm] * 3)) == 16000  # the rest does not fit
    assert stream.full and stream.add(16000, pcm) == 0
    with pytest.raises(InputError, match="changed its sample rate"):
        stream.add(48000, pcm)
    with pytest.raises(InputError, match="accepted: 8000-96000 Hz"):
        LiveStream(100).add(4000, pcm)
    with pytest.raises(InputError, match="NaN"):
        LiveStream(100).add(16000, np.array([0.1, np.nan], dtype=np.float32))
