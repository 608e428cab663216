"""Regenerate the app's committed example voices (``examples/*.flac``) with espeak-ng.

    python scripts/make_examples.py [-o OUT_DIR]

Synthetic speech only (espeak-ng voices, no recording of any person), 16 kHz mono 16-bit FLAC, a few
seconds each. The files are committed, so the app needs neither espeak-ng nor this script to show them;
run it only to change them (needs espeak-ng: ``sudo apt-get install espeak-ng``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from training.synthvox.espeak import synthesize  # noqa: E402
from voice2mesh.service import EXAMPLES_DIR  # noqa: E402

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class ExampleVoice:
    """One synthetic example: espeak-ng voice ("language+variant"), words per minute, pitch (0-99), text."""

    name: str
    voice: str
    speed: int
    pitch: int
    text: str


EXAMPLE_VOICES: tuple[ExampleVoice, ...] = (
    ExampleVoice(
        "synthetic-low-voice",
        "en-us+m3",
        150,
        30,
        "The quick brown fox jumps over the lazy dog near the quiet river bank, "
        "and then it runs back home before the evening rain.",
    ),
    ExampleVoice(
        "synthetic-high-voice",
        "en-us+f3",
        155,
        70,
        "Every morning I walk along the harbour, count the boats, and listen to the gulls "
        "calling over the water.",
    ),
    ExampleVoice(
        "synthetic-mid-voice",
        "en-gb+m7",
        145,
        50,
        "Please read this sentence aloud in your normal voice for about five seconds, "
        "so the model can hear how you speak.",
    ),
)


def make_example(example: ExampleVoice, out_dir: Path) -> Path:
    """espeak-ng WAV -> 16 kHz mono 16-bit FLAC ``out_dir/<name>.flac``."""
    language, variant = example.voice.split("+")
    samples, rate = synthesize(example.text, variant, example.pitch, example.speed, language=language)
    mono = samples.astype(np.float32) / 32768.0  # as soundfile reads 16-bit PCM as float32
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    out = out_dir / f"{example.name}.flac"
    sf.write(out, mono, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-o", "--out-dir", type=Path, default=EXAMPLES_DIR, help=f"output folder (default: {EXAMPLES_DIR})"
    )
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print(
            "error: making the example voices needs espeak-ng; install it with "
            "`sudo apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS)",
            file=sys.stderr,
        )
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for example in EXAMPLE_VOICES:
        path = make_example(example, args.out_dir)
        print(f"{path}  {path.stat().st_size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
