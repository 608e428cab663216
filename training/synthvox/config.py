"""Configuration of a synthvox dataset (every number that shapes the generated world)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FORMAT_VERSION = 2  # 2: formant-dispersion control (hidden dispersion_log)

# Four male espeak-ng variants of similar base pitch (their `pitch` lines: 80-125 Hz) but different
# timbre (formant levels and bandwidths, echo, voicing): the "voice quality" code of the variant link.
DEFAULT_VARIANTS: tuple[str, ...] = ("m2", "m3", "m6", "m7")


@dataclass
class SynthVoxConfig:
    """What ``generate`` builds. Defaults: 1,200 speakers -> 720 train / 180 val / 300 test."""

    speakers: int = 1200
    utterances: int = 4  # per speaker, distinct sentences
    link_strength: float = 0.6  # s in h = s * z + sqrt(1 - s^2) * noise (docs/synthvox.md)
    seed: int = 0
    images: int = 0  # face renders per speaker (0: none)
    image_size: int = 64  # px, square (the paper's generator output size)
    face_model: str = "ict"
    n_identity: int = 40  # identity modes sampled (the rest stay 0)
    n_expression: int = 10  # expression modes sampled (the rest stay 0)
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    sample_rate: int = 16000
    workers: int = 2

    def __post_init__(self) -> None:
        self.variants = tuple(self.variants)
        problems = []
        if self.speakers < 1:
            problems.append(f"speakers must be >= 1, got {self.speakers}")
        if self.utterances < 1:
            problems.append(f"utterances must be >= 1, got {self.utterances}")
        if not 0.0 <= self.link_strength <= 1.0:
            problems.append(f"link_strength must be in [0, 1], got {self.link_strength}")
        if self.images < 0:
            problems.append(f"images must be >= 0, got {self.images}")
        if not 16 <= self.image_size <= 1024:
            problems.append(f"image_size must be in 16..1024, got {self.image_size}")
        if not (
            0 <= self.val_fraction < 1
            and 0 <= self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            problems.append(
                f"val_fraction ({self.val_fraction}) and test_fraction ({self.test_fraction}) "
                "must be in [0, 1) and sum to less than 1"
            )
        if self.workers < 1:
            problems.append(f"workers must be >= 1, got {self.workers}")
        if problems:
            raise ValueError("invalid SynthVoxConfig: " + "; ".join(problems))

    def split_sizes(self) -> tuple[int, int, int]:
        """(train, val, test) speaker counts."""
        n_test = round(self.speakers * self.test_fraction)
        n_val = round(self.speakers * self.val_fraction)
        return self.speakers - n_val - n_test, n_val, n_test

    def to_dict(self) -> dict:
        d = asdict(self)
        d["variants"] = list(self.variants)
        return d
