"""voice2mesh.logmel_process: the helper process gives the same log mel and features as one thread,
overlaps the VAD in features_from_audio, and every way it can fail falls back to computing here."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from voice2mesh import features as vf
from voice2mesh import logmel_process
from voice2mesh.audio import Audio, TooLittleSpeechError, load_audio

CLIPS = ["Alan_Tudyk", "Alicja_Bachleda", "Damian_Lewis", "Eoin_Macken", "Gilles_Marini", "Witney_Carson"]


@pytest.fixture()
def helper():
    """A running helper for one test, stopped afterwards (other tests see the library default: off)."""
    logmel_process.enable()
    assert logmel_process.wait_ready(30.0), "the helper process did not start"
    yield logmel_process.ready()
    logmel_process.enable(False)


@pytest.fixture(scope="module")
def speech(assets_dir) -> np.ndarray:
    """~34 s of real speech (the six clips), int16."""
    return np.concatenate([sf.read(assets_dir / "voices" / f"{c}.wav", dtype="int16")[0] for c in CLIPS])


def _plain(x: np.ndarray) -> np.ndarray:
    return vf.log_mel(x, threads=1)


def test_disabled_means_no_helper(speech):
    logmel_process.enable(False)
    assert logmel_process.ready() is None and not logmel_process.wait_ready(0.1)
    assert vf._log_mel_with_helper(speech[:200_000], vf.FrontEndConfig()) is None


@pytest.mark.parametrize("n", [160_000, 160_037, 90_000, 41_000, 480_001])
def test_log_mel_with_helper_equals_one_thread(helper, speech, n):
    x = speech[:n]
    used = vf._log_mel_with_helper(x, vf.FrontEndConfig())
    if vf.frame_count(n) // 2 < vf._MIN_FRAMES_PER_THREAD:
        assert used is None  # short signals stay in this process
    else:
        np.testing.assert_allclose(used, _plain(x), rtol=0, atol=1e-6)
    np.testing.assert_allclose(vf.log_mel(x), _plain(x), rtol=0, atol=1e-6)


def test_job_limit_progress_and_cancel(helper, speech):
    cfg = vf.FrontEndConfig()
    x = speech[:320_000]
    rows = vf._whole_frame_count(len(x), cfg)
    job = helper.start(x, rows, cfg)
    assert job is not None
    assert helper.start(x, rows, cfg) is None  # busy: a second caller uses the threads
    job.limit(300)
    got = job.finish()
    assert got.shape == (300, 64)
    np.testing.assert_allclose(got, _plain(x)[:300], rtol=0, atol=1e-6)
    assert 0 <= job.progress() <= rows
    again = helper.start(x, rows, cfg)  # free again; cancel stops it and keeps the pipe in step
    again.cancel()
    assert again.finish() is None
    third = helper.start(x[:160_000], 700, cfg)
    np.testing.assert_allclose(third.finish(), _plain(x[:160_000])[:700], rtol=0, atol=1e-6)


def _choppy(speech: np.ndarray, seed: int) -> np.ndarray:
    """Speech with silent gaps of random lengths (many VAD junctions, not on any grid); odd seeds
    start with silence, so the first voiced frame comes from the middle of the recording."""
    rng = np.random.default_rng(seed)
    parts, i = ([np.zeros(int(rng.integers(3_000, 9_000)), np.int16)] if seed % 2 else []), 0
    while i < len(speech):
        n = int(rng.integers(4_000, 30_000))
        parts += [speech[i: i + n], np.zeros(int(rng.integers(100, 12_000)), np.int16)]
        i += n
    return np.concatenate(parts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_overlapping_the_vad_equal_the_plain_path(helper, speech, seed):
    pcm = _choppy(speech[: 16000 * 20], seed)
    audio = Audio(samples=pcm.astype(np.float32) / 32768, sample_rate=16000, duration_s=len(pcm) / 16000,
                  original_sample_rate=16000, original_channels=1, pcm16=pcm)
    calls = []
    real = vf._log_mel_of_voiced
    try:
        vf._log_mel_of_voiced = lambda *a: calls.append(1) or real(*a)
        got = vf.features_from_audio(audio)
    finally:
        vf._log_mel_of_voiced = real
    assert calls, "the overlapped path was not taken"
    want_vad = vf.vad(pcm)
    np.testing.assert_array_equal(got.vad, want_vad)
    np.testing.assert_allclose(got.logmel, _plain(want_vad), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.features, vf.tile(vf.normalise(_plain(want_vad))), rtol=0, atol=1e-5)


@pytest.mark.parametrize("clip", CLIPS)
def test_reference_clips_with_the_helper(helper, assets_dir, clip):
    audio = load_audio(assets_dir / "voices" / f"{clip}.wav")
    got = vf.features_from_audio(audio)
    np.testing.assert_allclose(got.logmel, _plain(got.vad), rtol=0, atol=1e-6)


def test_too_little_speech_leaves_the_helper_in_step(helper, speech):
    silence_then_word = np.concatenate([np.zeros(16000 * 8, np.int16), speech[16000: 16000 + 4000]])
    audio = Audio(samples=silence_then_word.astype(np.float32) / 32768, sample_rate=16000,
                  duration_s=len(silence_then_word) / 16000, original_sample_rate=16000,
                  original_channels=1, pcm16=silence_then_word)
    with pytest.raises(TooLittleSpeechError):
        vf.features_from_audio(audio)
    x = speech[:200_000]
    np.testing.assert_allclose(vf._log_mel_with_helper(x, vf.FrontEndConfig()), _plain(x), rtol=0, atol=1e-6)


def test_a_dead_helper_falls_back_to_this_process(helper, speech):
    x = speech[:200_000]
    job = helper.start(x[:100_000], 600, vf.FrontEndConfig())
    helper._process.kill()
    helper._process.wait()
    assert job.finish() is None  # the pipe closed: no rows, the helper is marked broken
    assert logmel_process.ready() is None
    np.testing.assert_allclose(vf.log_mel(x), _plain(x), rtol=0, atol=1e-6)  # threads again


def test_a_helper_that_cannot_start_leaves_the_threads(monkeypatch, speech):
    logmel_process.enable(False)

    def no_shared_memory(*args, **kwargs):
        raise OSError("no /dev/shm here")

    monkeypatch.setattr(logmel_process.shared_memory, "SharedMemory", no_shared_memory)
    with pytest.warns(RuntimeWarning, match="could not start"):
        logmel_process.enable()
    assert logmel_process.ready() is None and not logmel_process.wait_ready(0.1)
    x = speech[:200_000]
    np.testing.assert_allclose(vf.log_mel(x), _plain(x), rtol=0, atol=1e-6)


def test_an_interrupted_wait_retires_the_helper(helper, speech, monkeypatch):
    """A wait that ends without the helper's answer (timeout, Ctrl-C) must not leave that answer to be
    read as the next request's: the helper is retired and the threads take over."""
    x = speech[:200_000]
    job = helper.start(x, 1000, vf.FrontEndConfig())

    def interrupted(timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(helper, "_read_line", interrupted)
    with pytest.raises(KeyboardInterrupt):
        job.finish()
    assert logmel_process.ready() is None
    np.testing.assert_allclose(vf.log_mel(x), _plain(x), rtol=0, atol=1e-6)


def test_a_forked_child_does_not_use_its_parents_helper(helper, speech):
    import os

    x = speech[:200_000]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own answer, through the threads, must be right
        try:
            ok = logmel_process.ready() is None and np.allclose(vf.log_mel(x), _plain(x), rtol=0, atol=1e-6)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert logmel_process.ready() is helper  # the parent keeps its helper
    np.testing.assert_allclose(vf._log_mel_with_helper(x, vf.FrontEndConfig()), _plain(x), rtol=0, atol=1e-6)
