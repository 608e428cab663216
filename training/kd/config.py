"""Configuration of the knowledge-distillation (KD) framework: typed dataclasses read from small YAML files
(``training/kd/configs/*.yaml``) by the one config loader, ``training.config.load_typed``.

Every paper number lives in ``PAPER`` below with where it comes from; the dataclass defaults use them,
so ``configs/paper.yaml`` is the paper's setting and the other configs only list what they change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import ConfigError, build_typed, load_typed, plain_values

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Wu, Hsu, Neumann, "Cross-Modal Perceptionist" (CVPR 2022), Sec. 3.2 "Unsupervised learning with knowledge
# distillation" and the supplementary material; the generator and face-embedding nets follow Wen et al.,
# "Reconstructing faces from voices" (NeurIPS 2019), whose code the paper builds on.
PAPER: dict[str, Any] = {
    "noise_std": 0.05,  # N(0, 1) * 0.05 added to the voice embedding
    "image_size": 64,  # generator output, RGB
    "generator_channels": (1024, 512, 256, 128, 64),  # ConvTranspose 64->1024 k4 s1, then k4 s2 p1
    "face_embed_channels": (32, 64, 128, 256, 512),  # Wen et al.'s FaceEmbedNet convs (k3 s2 p1)
    "face_embed_dim": 64,
    "mse_weight": 0.5,  # 0.5 * MSE(teacher output, student output)
    "pkt_weight": 1e4,  # lambda on PKT(teacher, student) of the pooled and the intermediate features
    "triplet_weight": 1.5,  # triplet margin loss (p = 2) on the student's dense vertices, teacher frame units
    "triplet_margin": 1.0,
    "lr": 2e-4,
    "betas": (0.5, 0.999),
    "batch_size": 64,  # Adam for generator, D and student
    "teacher_input": 120,  # 3DDFA-V2's input size (the paper's teacher)
}


@dataclass
class KDDataConfig:
    """Voices (a training.data dataset) and face images of the same identities."""

    kind: str = "synthvox"  # synthvox | voxceleb3d | csv (voices; training.data readers)
    path: str = ""  # dataset root
    images: str = ""  # face image root (<identity>/<file>.png|jpg); "" = <path>/images
    encoder_checkpoint: str = ""  # pretrain.pt of training.train (frozen VoiceEmbedNet)
    eval_frames: int = 1000  # tiling length of the features fed to the encoder
    max_images_per_identity: int = 0  # 0 = all


@dataclass
class GeneratorConfig:
    """Voice embedding -> 64x64 RGB face (ConvTranspose stack)."""

    channels: tuple[int, ...] = PAPER["generator_channels"]
    noise_std: float = PAPER["noise_std"]


@dataclass
class DiscriminatorConfig:
    """Face embedding net with a real/fake head and an identity classifier."""

    channels: tuple[int, ...] = PAPER["face_embed_channels"]
    embed_dim: int = PAPER["face_embed_dim"]
    # identity classifier input: "own" (the face embedding, the paper) or "teacher" (the frozen teacher's
    # pooled features: a face-recognition front end that already reads geometry; not in the paper, for
    # small data / CPU budgets where the own embedding does not learn identities in time)
    identity_features: str = "own"


@dataclass
class TeacherConfig:
    """The frozen image -> parameters teacher."""

    kind: str = "ict"  # ict (training.kd.teacher) | ddfa (3DDFA-V2-style BFM regressor)
    checkpoint: str = ""  # teacher .pt (ict) or state dict (ddfa)
    param_stats: str = ""  # ddfa: param_mean_std_62d_120x120.pkl
    # ddfa: the BFM face model its parameters decode with (a built-in name or a FaceModel .npz; build it
    # from your own BFM files: docs/facemodel.md); an ict teacher names its own face model
    face_model: str = "bfm-38365"


@dataclass
class StudentConfig:
    """The image -> parameters student: a network of the teacher's architecture."""

    init: str = "random"  # random (freshly initialised: the paper) | teacher (starts from its weights)
    # BatchNorm while training: "train" (batch statistics, running averages updated: the usual) or
    # "frozen" (the initial running statistics, as the frozen teacher uses them; weights still train).
    # With ``init: teacher`` "frozen" makes student == teacher at step 0 and the same function in
    # training and at inference; batch statistics of near-identical generated faces are degenerate.
    batchnorm: str = "train"


@dataclass
class KDLossConfig:
    """Weights of every loss term (paper values by default)."""

    adv_weight: float = 1.0  # BCE real/fake (generator step)
    id_weight: float = 1.0  # NLL identity of generated faces (generator step)
    d_id_weight: float = 1.0  # NLL identity of real faces (discriminator step)
    mse_weight: float = PAPER["mse_weight"]
    pkt_weight: float = PAPER["pkt_weight"]
    pkt_pooled: bool = True
    pkt_intermediate: bool = True
    triplet_weight: float = PAPER["triplet_weight"]
    triplet_margin: float = PAPER["triplet_margin"]
    real_distill_weight: float = 0.0  # optional: the same distillation on real face images


@dataclass
class KDOptimConfig:
    """Adam for the generator, the discriminator and the student."""

    steps: int = 20000
    batch_size: int = PAPER["batch_size"]
    lr: float = PAPER["lr"]
    betas: tuple[float, float] = PAPER["betas"]
    utterances_per_speaker: int = 2  # per batch (positives for the triplet loss)
    d_warmup_steps: int = 0  # identity-only discriminator steps on real faces before the GAN
    # starts (not in the paper; a CPU-budget aid, 0 = the paper)
    log_every: int = 50
    checkpoint_every: int = 500
    max_seconds: float = 0.0  # stop early after this much training wall time (0 = run all steps)
    # exponential moving average of the generator and student weights (not in the paper; a common GAN
    # stabiliser): model.pt and the monitoring use the averaged nets; 0 = off (the paper)
    ema_decay: float = 0.0
    # monitoring only (trains nothing, picks no checkpoint; it reads the validation speakers' 3D faces, and
    # the model card says so):
    # every N steps log the validation speakers' mean ARE (when the dataset has 3D targets) and write
    # RUN/val_faces.png (faces generated from validation voices); 0 = off
    eval_every: int = 0


@dataclass
class KDConfig:
    """Everything one KD run needs."""

    name: str = "kd"
    seed: int = 0
    threads: int = 0
    data: KDDataConfig = field(default_factory=KDDataConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    loss: KDLossConfig = field(default_factory=KDLossConfig)
    optim: KDOptimConfig = field(default_factory=KDOptimConfig)


def validate_kd_config(cfg: KDConfig, where: str = "config") -> KDConfig:
    """Checks of values the types alone do not express (choices, ranges); returns ``cfg``."""
    for section in ("generator", "discriminator"):
        ch = getattr(cfg, section).channels
        if not ch or not all(c > 0 for c in ch):
            raise ConfigError(
                f"{where}.{section}.channels: expected a list of positive integers, got {list(ch)}"
            )
    if len(cfg.generator.channels) < 2:
        raise ConfigError(f"{where}.generator.channels: need at least 2 layers (4x4 start, then x2 each)")
    if cfg.optim.utterances_per_speaker < 2 and cfg.loss.triplet_weight > 0:
        raise ConfigError(f"{where}.optim.utterances_per_speaker must be >= 2 for the triplet loss")
    choices = {
        "teacher.kind": (cfg.teacher.kind, ("ict", "ddfa")),
        "discriminator.identity_features": (cfg.discriminator.identity_features, ("own", "teacher")),
        "student.init": (cfg.student.init, ("teacher", "random")),
        "student.batchnorm": (cfg.student.batchnorm, ("train", "frozen")),
    }
    for key, (value, accepted) in choices.items():
        if value not in accepted:
            raise ConfigError(f"{where}.{key}: {value!r}; accepted: {', '.join(accepted)}")
    if not 0.0 <= cfg.optim.ema_decay < 1.0:
        raise ConfigError(f"{where}.optim.ema_decay: {cfg.optim.ema_decay}; expected 0 (off) <= decay < 1")
    return cfg


def kd_config_from_dict(values: Mapping[str, Any], where: str = "config") -> KDConfig:
    """A KDConfig from nested plain values (unknown keys are errors)."""
    return validate_kd_config(build_typed(KDConfig, values or {}, where=where), where)


def load_kd_config(path: str | Path, overrides: Sequence[str] = ()) -> KDConfig:
    """Read a YAML config (a path or a name in ``training/kd/configs/``) and apply overrides."""
    return validate_kd_config(load_typed(KDConfig, path, CONFIG_DIR, overrides), str(path))


def kd_config_to_dict(cfg: KDConfig) -> dict[str, Any]:
    """Plain nested values (checkpoints, model cards); tuples become lists."""
    return plain_values(cfg)


def apply_kd_overrides(cfg: KDConfig, overrides: Sequence[str]) -> KDConfig:
    """``section.key=value`` overrides (YAML-parsed values)."""
    return validate_kd_config(build_typed(KDConfig, plain_values(cfg), overrides, "overrides"), "overrides")
