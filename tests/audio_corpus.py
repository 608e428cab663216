"""A corpus of good and bad audio inputs, generated on the spot (no files in the repo).

``make_bad_input_corpus(dir)`` writes every case into ``dir`` and returns
``{name: (path, expected)}`` where ``expected`` is ``"ok"`` (features come out) or the
:class:`voice2mesh.audio.AudioError` subclass that must be raised. The app and service tests reuse
it through this function. Format and resampling cases are real speech (a reference clip converted
with sox/ffmpeg); ffmpeg and sox are Debian packages the project needs anyway.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from voice2mesh.audio import (
    AudioError,
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
    TooLittleSpeechError,
    UnreadableAudioError,
)
from voice2mesh.paths import shared_assets_dir

Expected = str | type[AudioError]
SPEECH_CLIP = "Alan_Tudyk.wav"  # 3.9 s of real speech, 16 kHz mono 16-bit (VoxCeleb1, CC BY 4.0)


def speech_clip(path: Path | None = None) -> Path:
    """The real speech clip the format cases are made from (shared assets)."""
    if path is not None:
        return Path(path)
    assets = shared_assets_dir()
    if assets is None or not (assets / "voices" / SPEECH_CLIP).is_file():
        raise FileNotFoundError(
            f"voices/{SPEECH_CLIP} not found in the shared assets (../shared/assets or $VOICE2MESH_ASSETS)"
        )
    return assets / "voices" / SPEECH_CLIP


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-y", "-nostdin", "-v", "error", "-i", str(src), *args, str(dst)], check=True, timeout=60
    )
    return dst


def _sox(src: Path, dst: Path, *effects: str, out_opts: tuple[str, ...] = ()) -> Path:
    subprocess.run(["sox", str(src), *out_opts, str(dst), *effects], check=True, timeout=60)
    return dst


def make_bad_input_corpus(
    directory: str | Path,
    speech: str | Path | None = None,
) -> dict[str, tuple[Path, Expected]]:
    """Write the corpus into ``directory``; ``{name: (path, "ok" | AudioError subclass)}``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    src = speech_clip(Path(speech) if speech else None)
    x, sr = sf.read(src, dtype="float32")
    rng = np.random.default_rng(1234)
    cases: dict[str, tuple[Path, Expected]] = {}

    def add(name: str, path: Path, expected: Expected) -> None:
        cases[name] = (path, expected)

    # --- broken or empty files
    p = d / "empty.wav"
    p.write_bytes(b"")
    add("empty_file", p, EmptyAudioError)
    p = d / "truncated_header.wav"
    p.write_bytes(src.read_bytes()[:20])  # RIFF header cut inside the fmt chunk
    add("truncated_header", p, UnreadableAudioError)
    p = d / "not_audio.wav"
    p.write_text("This is a text file with a .wav name, not a recording.\n" * 20)
    add("text_named_wav", p, UnreadableAudioError)

    # --- signals that are not usable speech
    p = d / "digital_silence.wav"
    sf.write(p, np.zeros(3 * sr, dtype=np.int16), sr, subtype="PCM_16")
    add("digital_silence", p, SilentAudioError)
    # Loud broadband noise (-20 dBFS RMS): WebRTC VAD models speech by sub-band energies, so it
    # labels such noise as speech - the paper's front end turns it into features (no error).
    p = d / "white_noise.wav"
    sf.write(p, np.clip(rng.standard_normal(3 * sr) * 0.1, -1, 1), sr, subtype="PCM_16")
    add("white_noise", p, "ok")
    p = d / "one_ms.wav"
    sf.write(p, x[sr : sr + sr // 1000], sr, subtype="PCM_16")  # 16 samples of speech
    add("one_ms", p, TooLittleSpeechError)
    p = d / "ten_minutes.wav"
    reps = int(np.ceil(600 * sr / len(x)))
    sf.write(p, np.tile(x, reps)[: 600 * sr], sr, subtype="PCM_16")
    add("ten_minutes", p, AudioTooLongError)
    p = d / "nan_float.wav"
    y = x.copy()
    y[len(y) // 2 : len(y) // 2 + 10] = np.nan
    sf.write(p, y, sr, subtype="FLOAT")
    add("nan_float32", p, NonFiniteAudioError)

    # --- real speech in other rates, channel counts, sample formats and containers
    add("rate_8k", _sox(src, d / "rate_8k.wav", "rate", "-v", "8000"), "ok")
    add("rate_44k1", _sox(src, d / "rate_44k1.wav", "rate", "-v", "44100"), "ok")
    add("rate_48k", _sox(src, d / "rate_48k.wav", "rate", "-v", "48000"), "ok")
    add("stereo", _sox(src, d / "stereo.wav", "remix", "1", "1v0.5"), "ok")
    add(
        "six_channels",
        _sox(src, d / "six_channels.wav", "remix", "1", "1", "1v0.5", "1v0.5", "0", "1v0.2"),
        "ok",
    )
    add("pcm_u8", _sox(src, d / "pcm_u8.wav", out_opts=("-b", "8", "-e", "unsigned-integer")), "ok")
    add("float32", _sox(src, d / "float32.wav", out_opts=("-b", "32", "-e", "floating-point")), "ok")
    add("flac", _sox(src, d / "speech.flac"), "ok")
    add("mp3", _ffmpeg(src, d / "speech.mp3", "-c:a", "libmp3lame", "-b:a", "64k"), "ok")
    add("ogg_vorbis", _ffmpeg(src, d / "speech.ogg", "-c:a", "libvorbis"), "ok")
    add("ogg_opus", _ffmpeg(src, d / "speech.opus", "-c:a", "libopus", "-b:a", "32k"), "ok")
    add("webm_opus", _ffmpeg(src, d / "speech.webm", "-c:a", "libopus", "-b:a", "32k"), "ok")
    add("m4a_aac", _ffmpeg(src, d / "speech.m4a", "-c:a", "aac", "-b:a", "64k"), "ok")
    # A browser-style WebM (MediaRecorder writes to a stream: no duration in the header).
    p = d / "streamed.webm"
    with p.open("wb") as out:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-c:a", "libopus", "-f", "webm", "pipe:1"],
            stdout=out,
            check=True,
            timeout=60,
        )
    add("webm_streamed_no_duration", p, "ok")
    return cases


def tools_available() -> bool:
    """ffmpeg and sox are on PATH (Debian packages ffmpeg, sox)."""
    return all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "sox"))
