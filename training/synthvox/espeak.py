"""espeak-ng as a voice source: synthesis through subprocess (list args, no shell), variant checks, F0.

Variant syntax: ``-v en+m3`` applies the variant file ``voices/!v/m3``; ``-v en-gb+m3`` silently ignores
it (checked by hand with espeak-ng 1.51: byte-identical output to ``-v en-gb``), and unknown names such as
``en+bogus`` are accepted silently too, so variant names are validated against ``espeak-ng --voices=variant``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import soundfile as sf

from voice2mesh.paths import cache_dir

ESPEAK = "espeak-ng"
BASE_VOICE = "en"  # "en+VARIANT" is a syntax that applies the variant (see the module docstring)
PITCH_RANGE = (0, 99)  # espeak-ng -p
SPEED_RANGE = (80, 450)  # espeak-ng -s, words per minute


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed."""


def espeak_binary() -> str:
    """Path of the espeak-ng binary, or a clear error saying how to install it."""
    path = shutil.which(ESPEAK)
    if path is None:
        raise EspeakError(
            "espeak-ng not found on PATH: install the Debian package `espeak-ng` (apt-get install espeak-ng)"
        )
    return path


@functools.lru_cache(maxsize=1)
def available_variants() -> tuple[str, ...]:
    """Variant names espeak-ng knows (the ``!v/NAME`` file column of ``espeak-ng --voices=variant``)."""
    out = subprocess.run([espeak_binary(), "--voices=variant"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise EspeakError(f"`espeak-ng --voices=variant` failed: {out.stderr.strip()}")
    names = re.findall(r"!v/(\S+)", out.stdout)
    if not names:
        raise EspeakError("`espeak-ng --voices=variant` listed no variants (is espeak-ng-data installed?)")
    return tuple(sorted(set(names)))


def validate_variants(names) -> tuple[str, ...]:
    """Return ``names`` as a tuple, or raise ValueError naming every unknown variant."""
    names = tuple(names)
    known = available_variants()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown espeak-ng voice variant(s) {unknown}: espeak-ng would silently use the "
            f"plain voice. Known variants (espeak-ng --voices=variant): {', '.join(known)}"
        )
    if not names:
        raise ValueError("at least one espeak-ng voice variant is needed")
    return names


def synthesize(
    text: str, variant: str, pitch: int, speed: int, language: str = BASE_VOICE
) -> tuple[np.ndarray, int]:
    """One utterance: int16 mono samples and their sample rate (espeak-ng writes 22,050 Hz).

    ``language``: the espeak-ng voice the variant applies to ("en", "en-us", "en-gb", ...).
    """
    if not text.strip():
        raise ValueError("empty text")
    pitch = int(np.clip(pitch, *PITCH_RANGE))
    speed = int(np.clip(speed, *SPEED_RANGE))
    args = [
        espeak_binary(),
        "-v",
        f"{language}+{variant}",
        "-p",
        str(pitch),
        "-s",
        str(speed),
        "--stdout",
        "--",
        text,
    ]
    out = subprocess.run(args, capture_output=True, check=False)
    if out.returncode != 0 or len(out.stdout) < 100:
        raise EspeakError(
            f"espeak-ng failed (rc {out.returncode}) for {args[1:-1]}: "
            f"{out.stderr.decode(errors='replace').strip()}"
        )
    samples, sr = sf.read(io.BytesIO(out.stdout), dtype="int16")
    return samples, int(sr)


def f0_median(samples: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 400.0) -> float:
    """Median F0 (Hz) of the voiced frames: normalised autocorrelation peak of 40 ms frames (10 ms hop).

    Frames quieter than 5 % of the median frame energy, or whose best normalised autocorrelation is below
    0.6, count as unvoiced. NaN if nothing is voiced.
    """
    x = np.asarray(samples, dtype=np.float64)
    fl, hop = int(0.04 * sr), int(0.01 * sr)
    if x.size < fl:
        return float("nan")
    n = 1 + (x.size - fl) // hop
    frames = x[np.arange(fl)[None, :] + hop * np.arange(n)[:, None]]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    if not (energy > 0).any():
        return float("nan")
    frames = frames[energy > 0.05 * np.median(energy[energy > 0])]
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 2 * fl)) ** 2, 2 * fl)[:, :fl]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = int(sr / fmax), int(sr / fmin)
    seg = ac[:, lo:hi]
    voiced = seg.max(axis=1) > 0.6
    if not voiced.any():
        return float("nan")
    lag = seg[voiced].argmax(axis=1) + lo
    return float(np.median(sr / lag))


CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog while seven bright owls watch."
CALIBRATION_PITCHES = tuple(range(0, 100, 11))  # 0, 11, ..., 99


@functools.lru_cache(maxsize=1)
def espeak_version() -> str:
    """First line of ``espeak-ng --version``."""
    out = subprocess.run([espeak_binary(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


@functools.lru_cache(maxsize=64)
def pitch_calibration(variant: str, speed: int = 165) -> tuple[np.ndarray, np.ndarray]:
    """Measured median F0 (Hz) of ``en+variant`` at espeak-ng ``-p`` values: (pitches, f0s), increasing.

    Measured once per espeak-ng version and kept under ``cache_dir()/synthvox-pitch/`` (a JSON file).
    """
    key = hashlib.sha256(
        f"{espeak_version()}|{variant}|{speed}|{CALIBRATION_TEXT}|{CALIBRATION_PITCHES}".encode()
    ).hexdigest()[:20]
    path = cache_dir() / "synthvox-pitch" / f"{variant}-{key}.json"
    pitches = np.asarray(CALIBRATION_PITCHES, dtype=np.float64)
    try:
        f0 = np.asarray(json.loads(path.read_text())["f0"], dtype=np.float64)
        if f0.shape == pitches.shape:
            return pitches, f0
    except (OSError, ValueError, KeyError):
        pass  # not cached yet (or unreadable): measure
    f0 = [f0_median(*synthesize(CALIBRATION_TEXT, variant, p, speed)) for p in CALIBRATION_PITCHES]
    f0 = np.maximum.accumulate(np.nan_to_num(np.asarray(f0), nan=0.0))  # monotone for interpolation
    if f0[0] <= 0:
        raise EspeakError(f"could not measure F0 of espeak-ng variant {variant!r} at -p 0")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {"variant": variant, "espeak": espeak_version(), "pitches": pitches.tolist(), "f0": f0.tolist()}
        )
    )
    os.replace(tmp, path)
    return pitches, f0


def pitch_for_f0(variant: str, f0_hz: float) -> int:
    """espeak-ng ``-p`` value whose measured F0 is closest to ``f0_hz`` (log-interpolated, clipped)."""
    pitches, f0s = pitch_calibration(variant)
    return int(round(np.interp(np.log(f0_hz), np.log(f0s), pitches)))
