"""Training configuration: typed dataclasses (OmegaConf structured configs) read from small YAML files
(``training/configs/*.yaml``) with dotted overrides (``--set data.path=/x``).

``load_typed`` is the one loader of every training YAML (this module's ``TrainConfig`` and
``training.kd.config.KDConfig``): unknown keys and values of the wrong type are ``ConfigError``s that
name the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
T = TypeVar("T")


@dataclass
class DataConfig:
    """Where the data is and how it becomes model inputs."""

    kind: str = "synthvox"  # synthvox | voxceleb3d | csv
    path: str = ""  # dataset root (synthvox, voxceleb3d) or manifest file (csv)
    face_model: str = ""  # face model id or file; "" = the one the dataset names
    max_utterances_per_speaker: int = 0  # 0 = all
    train_frames: int = 300  # random crop length (frames) for pretraining
    eval_frames: int = 1000  # the paper's tiling length at inference
    augment_copies: int = 2  # augmented feature variants cached per training utterance
    val_fraction: float = 0.1  # share of training speakers held out when the data has no val split


@dataclass
class AugmentConfig:
    """Waveform augmentation before the front end (training.augment)."""

    enabled: bool = True
    speed_p: float = 0.3
    speed_range: tuple[float, float] = (0.95, 1.05)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)
    noise_p: float = 0.5
    snr_db_range: tuple[float, float] = (10.0, 35.0)
    phone_p: float = 0.25  # 300-3400 Hz band, 8 kHz round trip
    browser_p: float = 0.25  # opus-like low-pass (~7-8 kHz) + light compression


@dataclass
class ModelConfig:
    """Encoder choice and head sizes."""

    encoder: str = "voiceembednet"  # voiceembednet | ge2e
    encoder_checkpoint: str = ""  # pretrain checkpoint for voiceembednet (supervised stage)
    n_identity: int = 40
    n_expression: int = 10
    dropout: float = 0.2
    classifier_scale: float = 16.0


@dataclass
class OptimConfig:
    """AdamW + schedule for one stage."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | step | constant
    step_size: int = 10
    gamma: float = 0.5
    warmup_epochs: int = 0
    grad_clip: float = 5.0


@dataclass
class LossConfig:
    """Supervised loss = param_weight * L2(whitened params) + vertex_weight * L2(vertices)/prior var."""

    param_weight: float = 1.0
    vertex_weight: float = 1.0


@dataclass
class TrainConfig:
    """Everything one run needs."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: OptimConfig = field(default_factory=OptimConfig)
    supervised: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    checkpoint_every: int = 1  # epochs


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong kind."""


def _problem(exc: OmegaConfBaseException) -> str:
    """OmegaConf's message, first line, with the dotted key it concerns."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    key = getattr(exc, "full_key", None)
    if type(exc).__name__ == "ConfigKeyError" and key:
        return f"unknown key {key!r} ({first})"
    return f"{key}: {first}" if key else first


def build_typed(
    schema: type[T],
    values: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    where: str = "config",
) -> T:
    """An instance of the dataclass ``schema``: its defaults, then ``values`` (nested plain values), then
    ``key.sub=value`` overrides (YAML-parsed values)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: expected KEY=VALUE (e.g. data.path=/data/x)")
    if values is not None and not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    values = dict(values or {})
    cfg = _merged(OmegaConf.structured(schema), values, where)
    if overrides:
        cfg = _merged(cfg, OmegaConf.from_dotlist(list(overrides)), "overrides (--set)")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {_problem(exc)}") from exc


def _merged(cfg: Any, values: Any, where: str) -> Any:
    try:
        return OmegaConf.merge(cfg, values)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{where}: {_problem(exc)}") from exc


def load_typed(schema: type[T], path: str | Path, config_dir: Path, overrides: Sequence[str] = ()) -> T:
    """Read a YAML file into ``schema``; a bare name (``tiny``) means ``config_dir/tiny.yaml``."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = config_dir / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(
            f"config file not found: {path} (give a YAML path or one of "
            f"{sorted(q.stem for q in config_dir.glob('*.yaml'))})"
        )
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return build_typed(schema, values, overrides, str(p))


def plain_values(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested values (checkpoints, model cards, YAML); tuples become lists."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """A training config from YAML (a path or a name in ``training/configs/``) and overrides."""
    return load_typed(TrainConfig, path, CONFIG_DIR, overrides)


def config_from_dict(values: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from nested plain values (e.g. the ``config`` stored in a checkpoint)."""
    return build_typed(TrainConfig, values or {}, where=where)


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """``key.sub=value`` overrides (YAML-parsed values), e.g. ``data.path=/data/x``."""
    return build_typed(TrainConfig, plain_values(cfg), overrides, "overrides")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested values (stored in checkpoints and model cards)."""
    return plain_values(cfg)
