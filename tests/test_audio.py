"""voice2mesh.audio: every input of the generated corpus gives features or its specific AudioError."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio_corpus import make_bad_input_corpus, speech_clip, tools_available
from voice2mesh.audio import (
    Audio,
    AudioConfig,
    AudioError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
    TooLittleSpeechError,
    UnreadableAudioError,
    load_audio,
    to_int16,
)
from voice2mesh.features import extract_features

pytestmark = pytest.mark.skipif(not tools_available(), reason="needs ffmpeg and sox (Debian packages)")

CORPUS_NAMES = [
    "empty_file",
    "truncated_header",
    "text_named_wav",
    "digital_silence",
    "white_noise",
    "one_ms",
    "ten_minutes",
    "nan_float32",
    "rate_8k",
    "rate_44k1",
    "rate_48k",
    "stereo",
    "six_channels",
    "pcm_u8",
    "float32",
    "flac",
    "mp3",
    "ogg_vorbis",
    "ogg_opus",
    "webm_opus",
    "m4a_aac",
    "webm_streamed_no_duration",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, assets_dir):
    return make_bad_input_corpus(tmp_path_factory.mktemp("corpus"), assets_dir / "voices" / "Alan_Tudyk.wav")


@pytest.fixture(scope="module")
def speech(assets_dir) -> Path:
    return speech_clip(assets_dir / "voices" / "Alan_Tudyk.wav")


def test_corpus_has_every_case(corpus):
    assert sorted(corpus) == sorted(CORPUS_NAMES)


def _check(source, expected, label: str) -> None:
    if expected == "ok":
        result = extract_features(source)
        assert result.features.shape == (1000, 64) and result.features.dtype == np.float32
        assert np.isfinite(result.features).all()
        assert result.speech_s >= 1.0
        return
    with pytest.raises(expected) as info:
        extract_features(source)
    message = str(info.value)
    got = type(info.value).__name__
    assert type(info.value) is expected, f"{label}: {got} instead of {expected.__name__}"
    assert "accepted" in message, f"{label}: the message does not say what is accepted: {message}"


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_case_from_path(corpus, name):
    path, expected = corpus[name]
    _check(path, expected, name)
    if expected != "ok":
        with pytest.raises(AudioError) as info:
            extract_features(path)
        assert path.name in str(info.value), "the message names the file"


@pytest.mark.parametrize(
    "name",
    [
        "empty_file",
        "text_named_wav",
        "nan_float32",
        "stereo",
        "mp3",
        "ogg_opus",
        "webm_opus",
        "m4a_aac",
        "webm_streamed_no_duration",
    ],
)
def test_corpus_case_from_bytes(corpus, name):
    path, expected = corpus[name]
    _check(path.read_bytes(), expected, f"{name} (bytes)")


def test_ten_minutes_rejected_from_the_header_without_decoding(corpus, monkeypatch):
    path, _ = corpus["ten_minutes"]
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def counting_read(self, *args, **kwargs):  # a spy: the real read, counted
        reads.append(1)
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    t0 = time.perf_counter()
    with pytest.raises(AudioTooLongError, match="600.0 s is too long") as info:
        load_audio(path)
    elapsed = time.perf_counter() - t0
    assert reads == [], "the samples were decoded before the length check"
    assert elapsed < 1.0, f"rejection took {elapsed:.2f} s"  # generous: the machine may be loaded
    assert "at most 60 s" in str(info.value)
    load_audio(corpus["rate_48k"][0])
    assert reads, "the spy sees decoding of an accepted file (in blocks)"


@pytest.mark.slow
def test_long_ffmpeg_inputs_rejected(tmp_path, monkeypatch):
    """A 70 s WebM: rejected from ffprobe's duration without running the decoder; a streamed WebM
    (no duration in the header, as browsers write it): rejected once more than 60 s decoded."""
    tone = ["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=70", "-c:a", "libopus"]
    with_duration = tmp_path / "long.webm"
    subprocess.run(["ffmpeg", "-y", "-nostdin", "-v", "error", *tone, str(with_duration)], check=True)
    streamed = tmp_path / "long_streamed.webm"
    with streamed.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", *tone, "-f", "webm", "pipe:1"], stdout=out, check=True
        )
    calls: list[str] = []
    real_run = subprocess.run

    def spy(cmd, *args, **kwargs):  # the real subprocess.run, with the program names recorded
        calls.append(Path(cmd[0]).name)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    with pytest.raises(AudioTooLongError, match="70.0 s is too long"):
        load_audio(with_duration)
    assert calls == ["ffprobe"]
    calls.clear()
    with pytest.raises(AudioTooLongError, match=r"6\d\.\d s or more is too long"):
        load_audio(streamed)  # decoding (ffmpeg through a pipe) stops past 60 s
    assert calls == ["ffprobe"]


def test_sixteen_bit_wav_round_trips_exactly_to_int16(speech):
    ints, rate = sf.read(speech, dtype="int16")
    audio = load_audio(speech)
    assert audio.sample_rate == rate == 16000 and audio.original_channels == 1
    assert audio.samples.dtype == np.float32 and audio.samples.shape == ints.shape
    np.testing.assert_array_equal(to_int16(audio.samples), ints)
    assert audio.warnings == []


@pytest.mark.parametrize("level", [1.0, 20.0, 1e-4])  # as recorded, clipped, near-silent
def test_sixteen_bit_mono_fast_path_equals_the_float_path(speech, tmp_path, level):
    """16-bit mono 16 kHz files are checked on their integers (voice2mesh.audio._finish_pcm16): the
    same samples, warnings and errors as the float path, and Audio.int16() is the file's own PCM."""
    x, rate = sf.read(speech, dtype="float32")
    path = tmp_path / "pcm16.wav"
    sf.write(path, np.clip(x * level, -1, 1), rate, subtype="PCM_16")
    ints = sf.read(path, dtype="int16")[0]
    as_float = tmp_path / "float" / "pcm16.wav"  # the same name: the same messages
    as_float.parent.mkdir()
    sf.write(as_float, sf.read(path, dtype="float32")[0], rate, subtype="FLOAT")
    try:
        slow = load_audio(as_float)
    except AudioError as e:
        with pytest.raises(type(e), match=re.escape(str(e))):
            load_audio(path)
        return
    fast = load_audio(path)
    assert fast.pcm16 is not None and slow.pcm16 is None
    np.testing.assert_array_equal(fast.samples, slow.samples)
    assert fast.warnings == slow.warnings and (level != 20.0 or "clipped" in fast.warnings[0])
    np.testing.assert_array_equal(fast.int16(), ints)
    np.testing.assert_array_equal(slow.int16(), ints)
    assert (fast.duration_s, fast.original_sample_rate, fast.original_channels) == (
        slow.duration_s,
        slow.original_sample_rate,
        slow.original_channels,
    )


def test_to_int16_rounds_and_clips():
    x = np.array([-1.5, -1.0, -0.5 / 32768, 0.0, 0.6 / 32768, 32767 / 32768, 1.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(to_int16(x), [-32768, -32768, 0, 0, 1, 32767, 32767, 32767])


@pytest.mark.parametrize("name", ["rate_8k", "rate_44k1", "rate_48k"])
def test_resampled_speech_matches_the_original(corpus, speech, name):
    """Resampled back to 16 kHz, real speech stays the same signal (correlation with the 16 kHz original)."""
    ref = load_audio(speech).samples
    got = load_audio(corpus[name][0])
    assert got.sample_rate == 16000 and got.original_sample_rate != 16000
    n = min(len(ref), len(got.samples))
    assert abs(len(ref) - len(got.samples)) <= 2
    # 8 kHz loses the 4-8 kHz band; the other rates go there and back almost losslessly.
    floor = 0.95 if name == "rate_8k" else 0.999
    assert np.corrcoef(ref[:n], got.samples[:n])[0, 1] > floor


def test_resampler_suppresses_aliasing(tmp_path):
    """A 12 kHz tone at 48 kHz is above 16 kHz's 8 kHz Nyquist limit: it must vanish, not fold to 4 kHz."""
    t = np.arange(48000) / 48000
    tone = tmp_path / "tone12k.wav"
    sf.write(
        tone, 0.5 * np.sin(2 * np.pi * 12000 * t) + 0.1 * np.sin(2 * np.pi * 440 * t), 48000, subtype="FLOAT"
    )
    y = load_audio(tone).samples[2000:-2000]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    alias = spec[np.abs(freqs - 4000) < 20].max()
    kept = spec[np.abs(freqs - 440) < 20].max()
    assert alias < kept * 1e-3, f"4 kHz alias at {20 * np.log10(alias / kept):.0f} dB of the 440 Hz tone"


def test_downmix_is_the_channel_mean(corpus, speech):
    mono = load_audio(speech).samples
    stereo = load_audio(corpus["stereo"][0])  # channels: speech, 0.5 * speech
    assert stereo.original_channels == 2
    np.testing.assert_allclose(stereo.samples, 0.75 * mono, atol=2 / 32768)
    assert load_audio(corpus["six_channels"][0]).original_channels == 6


def test_clipping_is_a_warning_not_an_error(speech, tmp_path):
    x, rate = sf.read(speech, dtype="float32")
    loud = tmp_path / "clipped.wav"
    sf.write(loud, np.clip(x * 20, -1, 1), rate, subtype="PCM_16")
    audio = load_audio(loud)
    assert len(audio.warnings) == 1 and "clipped" in audio.warnings[0]
    result = extract_features(loud)
    assert result.features.shape == (1000, 64) and result.warnings == audio.warnings


def test_size_limit_before_reading(speech):
    cfg = AudioConfig(max_bytes=10_000)
    with pytest.raises(AudioTooLargeError, match="too large"):
        load_audio(speech, cfg)
    with pytest.raises(AudioTooLargeError):
        load_audio(speech.read_bytes(), cfg)


def test_duration_limit_is_configurable(speech):
    with pytest.raises(AudioTooLongError, match="at most 2 s"):
        load_audio(speech, AudioConfig(max_duration_s=2.0))


def test_missing_file_and_wrong_type(tmp_path):
    with pytest.raises(UnreadableAudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(EmptyAudioError):
        load_audio(b"")
    with pytest.raises(TypeError):
        load_audio(12345)  # type: ignore[arg-type]


def test_wav_header_without_samples_is_empty(tmp_path):
    p = tmp_path / "no_samples.wav"
    sf.write(p, np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    with pytest.raises(EmptyAudioError):
        load_audio(p)


def test_inf_and_quiet_floats(tmp_path):
    p = tmp_path / "inf.wav"
    x = np.full(16000, 0.1, dtype=np.float32)
    x[5] = np.inf
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError, match="NaN or infinite"):
        load_audio(p)
    p = tmp_path / "hiss.wav"  # +-1 LSB of dither is still digital silence
    sf.write(p, np.random.default_rng(0).integers(-1, 2, 16000).astype(np.int16), 16000, subtype="PCM_16")
    with pytest.raises(SilentAudioError, match="silent"):
        load_audio(p)


def test_error_hierarchy():
    for cls in (
        EmptyAudioError,
        UnreadableAudioError,
        AudioTooLongError,
        AudioTooLargeError,
        SilentAudioError,
        NonFiniteAudioError,
        TooLittleSpeechError,
    ):
        assert issubclass(cls, AudioError) and issubclass(cls, ValueError)


def test_audio_fields(speech):
    audio = load_audio(speech)
    assert isinstance(audio, Audio)
    assert audio.source == speech.name
    assert audio.duration_s == pytest.approx(len(audio.samples) / 16000)
    assert np.abs(audio.samples).max() <= 1.0


def test_messages_carry_no_paths(corpus):
    """What was wrong, in words: no temporary file names or library object reprs."""
    for name in ("truncated_header", "text_named_wav"):
        path = corpus[name][0]
        for source in (path, path.read_bytes()):
            with pytest.raises(UnreadableAudioError) as info:
                load_audio(source)
            message = str(info.value)
            assert str(path.parent) not in message and "voice2mesh-audio-" not in message, message
            assert "object at 0x" not in message and "file:" not in message, message


def test_cut_short_browser_recording_keeps_what_decodes(corpus):
    data = corpus["webm_opus"][0].read_bytes()
    full = load_audio(data)
    half = load_audio(data[: len(data) // 2])
    assert 0.3 * full.duration_s < half.duration_s < 0.7 * full.duration_s
    with pytest.raises(UnreadableAudioError):
        load_audio(data[:300])  # the header alone: nothing decodes
