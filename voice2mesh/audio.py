"""Load any accepted recording as float32 mono 16 kHz samples, with checks people can act on.

soundfile (libsndfile) decodes WAV, FLAC, OGG/Vorbis, Opus and MP3; ffmpeg (a subprocess: list arguments,
no shell, a timeout) WebM (what browsers record), M4A/MP4 and anything else it reads. A header beyond
:class:`AudioConfig`'s limits (rate, channels, duration) is refused before decoding; decoding runs in blocks
of :attr:`AudioConfig.block_frames` that are checked (NaN/inf, clipping), downmixed and resampled as they
come, so memory is bounded whatever the file claims; then a digital-silence check. Bad input raises an
:class:`AudioError` subclass whose message says which file, what was wrong and what is accepted.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

MiB = 1 << 20
ACCEPTED = "WAV, FLAC, OGG/Vorbis, Opus, MP3, WebM, M4A/MP4 (anything ffmpeg decodes)"
# Containers libsndfile does not read: go straight to ffmpeg.
# fmt: off
FFMPEG_SUFFIXES = frozenset({
    ".webm", ".weba", ".m4a", ".mp4", ".m4v", ".aac", ".mkv", ".mka",
    ".mov", ".3gp", ".amr", ".wma", ".wmv", ".avi", ".ac3", ".caf",
})
# fmt: on


class AudioError(ValueError):
    """Bad audio input; the message says which input, what was wrong and what is accepted."""


class EmptyAudioError(AudioError):
    """The file or buffer holds no bytes or no samples."""


class UnreadableAudioError(AudioError):
    """Not audio, a damaged file, or a format no decoder here reads."""


class AudioTooLongError(AudioError):
    """Longer than :attr:`AudioConfig.max_duration_s` (rejected before decoding)."""


class AudioFormatLimitError(AudioError):
    """Sample rate or channel count outside :class:`AudioConfig`'s limits (rejected before decoding)."""


class AudioTooLargeError(AudioError):
    """More bytes than :attr:`AudioConfig.max_bytes` (rejected before reading)."""


class SilentAudioError(AudioError):
    """Digital silence: the peak level is below :attr:`AudioConfig.silence_peak`."""


class NonFiniteAudioError(AudioError):
    """NaN or infinite samples (a broken float recording)."""


class TooLittleSpeechError(AudioError):
    """Voice activity detection kept less speech than :attr:`AudioConfig.min_speech_s`."""


@dataclass(frozen=True)
class AudioConfig:
    """Limits and target format of decoded audio.

    The header limits (rate, channels, duration) bound the work a file can ask for: at most
    ``max_sample_rate * max_channels * max_duration_s`` samples are decoded (46 M by default, about
    a second of CPU). Memory does not depend on them: decoding runs in blocks of ``block_frames``.
    96 kHz and 8 channels admit hi-res and multichannel recorders; 8 kHz is telephone speech.
    """

    max_duration_s: float = 60.0  # longer recordings are rejected before decoding
    min_sample_rate: int = 8000  # header rates outside [min, max] are rejected before decoding
    max_sample_rate: int = 96000
    max_channels: int = 8  # more channels are rejected before decoding
    block_frames: int = 1 << 16  # frames decoded, checked and downmixed at a time (bounded memory)
    min_speech_s: float = 1.0  # less speech after VAD -> TooLittleSpeechError (voice2mesh.features)
    sample_rate: int = 16000  # the paper's front end runs at 16 kHz
    max_bytes: int = 100 * MiB  # files/buffers above this are rejected before reading
    silence_peak: float = 1e-4  # peak below this (-80 dBFS, ~3 LSB of 16 bit) is digital silence
    clip_level: float = 0.99  # |sample| at or above this counts as clipped (8-bit tops at 0.992)
    clip_fraction: float = 1e-3  # warn when more than this fraction of samples is clipped
    ffmpeg_timeout_s: float = 30.0  # per ffprobe/ffmpeg call


@dataclass
class Audio:
    """Decoded audio: float32 mono samples in [-1, 1] at ``sample_rate`` (16 kHz)."""

    samples: np.ndarray
    sample_rate: int
    duration_s: float
    original_sample_rate: int
    original_channels: int
    warnings: list[str] = field(default_factory=list)
    source: str = "<array>"
    config: AudioConfig = field(default_factory=AudioConfig)
    pcm16: np.ndarray | None = None  # the file's int16 samples when it was 16-bit mono PCM at sample_rate

    def int16(self) -> np.ndarray:
        """The samples as int16 PCM (what the paper's VAD reads): the file's own when it had them."""
        return self.pcm16 if self.pcm16 is not None else to_int16(self.samples)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] → int16 PCM as the paper's VAD reads it from a 16-bit WAV: times 32768 (the
    inverse of reading 16-bit PCM as float), rounded, clipped, so a 16-bit recording comes back bit-exact."""
    x = np.rint(np.asarray(samples, dtype=np.float32) * np.float32(32768.0))
    return np.clip(x, -32768, 32767).astype(np.int16)


def load_audio(
    source: str | os.PathLike | bytes | bytearray | memoryview, config: AudioConfig | None = None
) -> Audio:
    """Decode, check and convert a recording (path or bytes) to float32 mono 16 kHz."""
    cfg = config or AudioConfig()
    data, path, label = _resolve(source, cfg)
    suffix = path.suffix.lower() if path is not None else _sniff_suffix(data)
    reasons: list[str] = []
    try:
        if suffix in FFMPEG_SUFFIXES:
            return _decode_ffmpeg(data, path, label, suffix, cfg)
        try:
            return _decode_soundfile(data, path, label, cfg)
        except _NotForSoundfileError as e:
            reasons.append(str(e))
            return _decode_ffmpeg(data, path, label, suffix, cfg)
    except _FfmpegFailedError as e:
        reasons.append(str(e))
        raise UnreadableAudioError(
            f"{label}: not a readable audio file ({'; '.join(reasons)}); accepted: {ACCEPTED}"
        ) from None


# ----------------------------------------------------------------------------- input
def _resolve(source, cfg: AudioConfig) -> tuple[bytes | None, Path | None, str]:
    """(bytes or None, path or None, label) after the size checks, which need no decoding."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, path = bytes(source), None
        label, size = f"<{len(data)} bytes>", len(data)
    elif isinstance(source, (str, os.PathLike)):
        data, path = None, Path(source)
        label = str(path.name) or str(path)
        if not path.is_file():
            raise UnreadableAudioError(
                f"{path}: no such file; accepted: a path to an audio file ({ACCEPTED}) or its bytes"
            )
        size = path.stat().st_size
    else:
        raise TypeError(f"load_audio takes a path or bytes, not {type(source).__name__}")
    if size == 0:
        raise EmptyAudioError(
            f"{label}: the file is empty (0 bytes); accepted: a recording of "
            f"{cfg.min_speech_s:g}-{cfg.max_duration_s:g} s of speech"
        )
    if size > cfg.max_bytes:
        raise AudioTooLargeError(
            f"{label}: {size / MiB:.1f} MB is too large; accepted: up to "
            f"{cfg.max_bytes / MiB:g} MB and {cfg.max_duration_s:g} s"
        )
    return data, path, label


def _sniff_suffix(data: bytes) -> str:
    """A suffix for bytes whose container libsndfile cannot read (WebM/Matroska, MP4)."""
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return ".webm"
    if data[4:8] == b"ftyp":
        return ".m4a"
    return ""


def _too_long(label: str, duration: float, cfg: AudioConfig, more: bool = False) -> AudioTooLongError:
    """``more``: decoding stopped at ``duration`` (the file is at least that long)."""
    return AudioTooLongError(
        f"{label}: {duration:.1f} s{' or more' if more else ''} is too long; accepted: "
        f"at most {cfg.max_duration_s:g} s (trim the recording)"
    )


def _check_header(label: str, rate: int, channels: int, duration: float | None, cfg: AudioConfig) -> None:
    """Refuse what the header announces beyond the limits, before anything is decoded."""
    if not cfg.min_sample_rate <= rate <= cfg.max_sample_rate:
        raise AudioFormatLimitError(
            f"{label}: the header gives a sample rate of {rate} Hz; accepted: {cfg.min_sample_rate}-"
            f"{cfg.max_sample_rate} Hz (save or export the recording at 16, 44.1 or 48 kHz)"
        )
    if not 1 <= channels <= cfg.max_channels:
        raise AudioFormatLimitError(
            f"{label}: the header gives {channels} audio channels; accepted: 1 to {cfg.max_channels} "
            "(mono or stereo recordings)"
        )
    if duration is not None and duration > cfg.max_duration_s:
        raise _too_long(label, duration, cfg)


# ---------------------------------------------------------------------------- soundfile
class _NotForSoundfileError(Exception):
    """libsndfile cannot open this input (try ffmpeg)."""


def _decode_soundfile(data: bytes | None, path: Path | None, label: str, cfg: AudioConfig) -> Audio:
    """Header checks, then decode in blocks (16-bit mono PCM at the target rate: in one read)."""
    try:
        f = sf.SoundFile(io.BytesIO(data) if data is not None else str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = (getattr(e, "error_string", None) or str(e).split("\n")[0].split(": ", 1)[-1]).strip()
        raise _NotForSoundfileError(reason[:1].lower() + reason[1:].rstrip(".")) from None
    with f:
        rate, frames, channels = int(f.samplerate), int(f.frames), int(f.channels)
        if rate <= 0:
            raise UnreadableAudioError(f"{label}: the header gives no sample rate; accepted: {ACCEPTED}")
        _check_header(label, rate, channels, frames / rate, cfg)
        if frames <= 0:
            raise _no_samples(label, cfg)
        try:
            if f.subtype == "PCM_16" and channels == 1 and rate == cfg.sample_rate:
                # already the front end's format (at most max_duration_s of int16): see _finish_pcm16
                return _finish_pcm16(f.read(dtype="int16"), label, cfg)
            stream = _MonoStream(rate, channels, label, cfg)
            while (block := f.read(cfg.block_frames, dtype="float32", always_2d=True)).shape[0]:
                stream.add(block)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise UnreadableAudioError(f"{label}: damaged audio data ({e}); accepted: {ACCEPTED}") from None
    return stream.finish([])


# ------------------------------------------------------------------------------- ffmpeg
class _FfmpegFailedError(Exception):
    """ffprobe/ffmpeg could not read the input (the message says why, without paths)."""


def _ffmpeg_reason(stderr: bytes, url: str) -> str:
    """The last line of ffmpeg's stderr, without the (temporary) file name."""
    lines = stderr.decode(errors="replace").strip().splitlines()
    line = lines[-1] if lines else ""
    line = line.replace(f"{url}: ", "").replace(url, "the file")
    return f"ffmpeg: {line[:1].lower()}{line[1:]}" if line else "ffmpeg could not decode it"


def _decode_ffmpeg(data: bytes | None, path: Path | None, label: str, suffix: str, cfg: AudioConfig) -> Audio:
    """ffprobe (stream, rate, channels, duration), header checks, then ffmpeg to raw float32 read from its
    pipe in blocks, at most max+1 s; a file that breaks off keeps what decoded, with a warning."""
    ffmpeg, ffprobe = shutil.which("ffmpeg"), shutil.which("ffprobe")
    if ffmpeg is None or ffprobe is None:
        raise _FfmpegFailedError(
            "this format needs ffmpeg, which is not installed (Debian/Ubuntu: sudo apt-get install ffmpeg)"
        )
    with tempfile.TemporaryDirectory(prefix="voice2mesh-audio-") as tmp:
        if data is not None:
            src = Path(tmp) / f"input{suffix or '.bin'}"
            src.write_bytes(data)
        else:
            src = path.resolve()
        url = f"file:{src}"  # never read as an option or another protocol
        probe_args = "-v error -print_format json -show_streams -show_format -select_streams a:0"
        probe_cmd = [ffprobe, *probe_args.split(), url]
        try:
            probe = subprocess.run(
                probe_cmd, capture_output=True, timeout=cfg.ffmpeg_timeout_s, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise _FfmpegFailedError(f"ffprobe took longer than {cfg.ffmpeg_timeout_s:g} s") from None
        if probe.returncode != 0:
            raise _FfmpegFailedError(_ffmpeg_reason(probe.stderr, url))
        info = json.loads(probe.stdout)  # ffprobe's -print_format json
        streams = info.get("streams") or []
        if not streams:
            raise _FfmpegFailedError("ffmpeg: no audio stream in the file")
        stream = streams[0]
        rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
        if rate <= 0 or channels <= 0:
            raise _FfmpegFailedError("the audio stream has no sample rate or channels")
        duration = _float(stream.get("duration")) or _float((info.get("format") or {}).get("duration"))
        _check_header(label, rate, channels, duration, cfg)
        # Browser recordings (WebM) often carry no duration: decode at most max + 1 s and check.
        limit = f"{cfg.max_duration_s + 1.0:.3f}"
        decode_args = (
            f"-map 0:a:0 -vn -sn -dn -t {limit} -f f32le -acodec pcm_f32le -ac {channels} -ar {rate}"
        )
        cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", url, *decode_args.split(), "pipe:1"]
        mono = _MonoStream(rate, channels, label, cfg)
        returncode, stderr = _stream_ffmpeg(cmd, Path(tmp) / "stderr.txt", mono, cfg)
    if returncode != 0 and mono.frames == 0:
        raise _FfmpegFailedError(_ffmpeg_reason(stderr, url))
    cut = f"{label}: the file is damaged or cut short; using the {mono.frames / rate:.1f} s that decoded"
    return mono.finish([cut] if returncode != 0 else [])


def _stream_ffmpeg(
    cmd: list[str], stderr_path: Path, mono: _MonoStream, cfg: AudioConfig
) -> tuple[int, bytes]:
    """Run ffmpeg, feeding its float32 output to ``mono`` block by block; (return code, stderr). The
    process is killed after ``cfg.ffmpeg_timeout_s`` and when reading stops early (an error)."""
    block_bytes = cfg.block_frames * mono.channels * 4
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    timer = threading.Timer(cfg.ffmpeg_timeout_s, proc.kill)
    timer.start()
    try:
        while chunk := proc.stdout.read(block_bytes):
            whole = len(chunk) // (4 * mono.channels) * 4 * mono.channels
            mono.add(np.frombuffer(chunk[:whole], dtype="<f4").reshape(-1, mono.channels))
        returncode = proc.wait()
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
    if timed_out:
        raise _FfmpegFailedError(f"ffmpeg took longer than {cfg.ffmpeg_timeout_s:g} s")
    return returncode, stderr_path.read_bytes()[-4096:]


def _float(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


# ------------------------------------------------------------------------------ checks
class _MonoStream:
    """Checks and converts decoded blocks as they come: counts NaN/inf and clipped samples, downmixes
    to mono (the channel mean) and resamples to the target rate with a streaming soxr resampler
    (the same output as resampling the whole signal at once). Only the mono result is kept."""

    def __init__(self, rate: int, channels: int, label: str, cfg: AudioConfig) -> None:
        self.rate, self.channels, self.label, self.cfg = rate, channels, label, cfg
        self.frames = self.non_finite = self.clipped = 0
        self._max_frames = int(cfg.max_duration_s * rate) + 1
        self._parts: list[np.ndarray] = []
        # soxr: a band-limited (linear-phase, anti-aliasing) resampler in C for any ratio
        # (44.1k -> 16k included), faster than scipy's polyphase filter and librosa's default.
        self._resampler = (
            None
            if rate == cfg.sample_rate
            else soxr.ResampleStream(rate, cfg.sample_rate, 1, dtype="float32", quality="HQ")
        )

    def add(self, block: np.ndarray) -> None:
        """One (frames, channels) float32 block."""
        self.frames += block.shape[0]
        if self.frames > self._max_frames:  # no length in the header, or one that understated it
            raise _too_long(self.label, self.frames / self.rate, self.cfg, more=True)
        bad = block.size - int(np.count_nonzero(np.isfinite(block)))
        self.non_finite += bad
        if self.non_finite:  # refused in finish(); only counting from here on
            return
        self.clipped += int(np.count_nonzero(np.abs(block) >= self.cfg.clip_level))
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=False)
        self._parts.append(np.array(mono, dtype=np.float32))

    def finish(self, warnings: list[str]) -> Audio:
        """Non-finite check, clipping warning, the mono samples, silence check."""
        label, cfg = self.label, self.cfg
        if self.frames == 0:
            raise _no_samples(label, cfg)
        if self.frames > self.rate * cfg.max_duration_s:
            raise _too_long(label, self.frames / self.rate, cfg)
        if self.non_finite:
            raise NonFiniteAudioError(
                f"{label}: {self.non_finite} sample(s) are NaN or infinite (a broken "
                "float recording); accepted: finite samples, e.g. 16-bit PCM"
            )
        warnings = list(warnings)
        clipped = self.clipped / (self.frames * self.channels)
        if clipped > cfg.clip_fraction:
            warnings.append(_clipping_warning(label, clipped))
        if self._resampler is not None:
            self._parts.append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        mono = np.clip(np.concatenate(self._parts), -1.0, 1.0).astype(np.float32, copy=False)
        self._parts = []
        peak = float(np.max(np.abs(mono))) if mono.size else 0.0
        if peak < cfg.silence_peak:
            raise _silent(label, peak)
        duration, rate, channels = mono.size / cfg.sample_rate, int(self.rate), int(self.channels)
        return Audio(mono, cfg.sample_rate, duration, rate, channels, warnings, label, cfg)


def _finish_pcm16(pcm: np.ndarray, label: str, cfg: AudioConfig) -> Audio:
    """:class:`_MonoStream`'s checks for 16-bit mono PCM at the target rate, on the integers: no NaN is
    possible, nothing to downmix or resample, and the float samples are ``pcm / 32768`` exactly (what
    libsndfile returns for PCM_16), so the same checks give the same answers, faster."""
    if pcm.size == 0:
        raise _no_samples(label, cfg)
    warnings = []
    samples = pcm.astype(np.float32)
    samples *= np.float32(1.0 / 32768.0)
    hi, lo = int(pcm.max()), int(pcm.min())
    limit = int(np.ceil(np.float32(cfg.clip_level) * np.float32(32768.0)))  # |x| / 32768 >= clip_level
    if max(hi, -lo) >= limit:
        clipped = float(np.count_nonzero((pcm >= limit) | (pcm <= -limit))) / pcm.size
        if clipped > cfg.clip_fraction:
            warnings.append(_clipping_warning(label, clipped))
    peak = max(hi, -lo) / 32768.0
    if peak < cfg.silence_peak:
        raise _silent(label, peak)
    duration = pcm.size / cfg.sample_rate
    return Audio(samples, cfg.sample_rate, duration, cfg.sample_rate, 1, warnings, label, cfg, pcm16=pcm)


def _no_samples(label: str, cfg: AudioConfig) -> EmptyAudioError:
    return EmptyAudioError(
        f"{label}: the file holds no audio samples; accepted: a recording of "
        f"{cfg.min_speech_s:g}-{cfg.max_duration_s:g} s of speech"
    )


def _clipping_warning(label: str, fraction: float) -> str:
    return (
        f"{label}: {100 * fraction:.1f} % of the samples are clipped (recording level too high); "
        "the face may be less reliable - record a little further from the mic"
    )


def _silent(label: str, peak: float) -> SilentAudioError:
    level = "-inf" if peak <= 0 else f"{20 * np.log10(peak):.0f}"
    return SilentAudioError(
        f"{label}: the recording is silent (peak level {level} dBFS); accepted: "
        "a recording with audible speech - check the microphone"
    )
