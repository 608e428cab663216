"""Training configuration: dataclasses loaded from small YAML files (``training/configs/*.yaml``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """Where the data is and how it becomes model inputs."""

    kind: str = "synthvox"             # synthvox | voxceleb3d | csv
    path: str = ""                     # dataset root (synthvox, voxceleb3d) or manifest file (csv)
    face_model: str = ""               # face model id or file; "" = the one the dataset names
    max_utterances_per_speaker: int = 0  # 0 = all
    train_frames: int = 300            # random crop length (frames) for pretraining
    eval_frames: int = 1000            # the paper's tiling length at inference
    augment_copies: int = 2            # augmented feature variants cached per training utterance
    val_fraction: float = 0.1          # share of training speakers held out when the data has no val split


@dataclass
class AugmentConfig:
    """Waveform augmentation before the front end (training.augment)."""

    enabled: bool = True
    speed_p: float = 0.3
    speed_range: tuple[float, float] = (0.95, 1.05)
    gain_db_range: tuple[float, float] = (-12.0, 6.0)
    noise_p: float = 0.5
    snr_db_range: tuple[float, float] = (10.0, 35.0)
    phone_p: float = 0.25              # 300-3400 Hz band, 8 kHz round trip
    browser_p: float = 0.25            # opus-like low-pass (~7-8 kHz) + light compression


@dataclass
class ModelConfig:
    """Encoder choice and head sizes."""

    encoder: str = "voiceembednet"     # voiceembednet | ge2e
    encoder_checkpoint: str = ""       # pretrain checkpoint for voiceembednet (supervised stage)
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
    schedule: str = "cosine"           # cosine | step | constant
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
    threads: int = 0                   # torch intra-op threads; 0 = leave as is
    checkpoint_every: int = 1          # epochs


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong kind."""


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; accepted: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            if not isinstance(value, list | tuple) or len(value) != len(default):
                raise ConfigError(f"{where}.{name}: expected a list of {len(default)} numbers, got {value!r}")
            kwargs[name] = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{name}: expected true/false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}.{name}: expected a number, got {value!r}")
            kwargs[name] = type(default)(value)
        else:
            kwargs[name] = str(value)
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any], where: str = "config") -> TrainConfig:
    """A TrainConfig from nested plain values (unknown keys are errors, not silently ignored)."""
    return _build(TrainConfig, values or {}, where)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config; a bare name (``tiny``) means ``training/configs/tiny.yaml``; then apply
    ``key.sub=value`` overrides."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = CONFIG_DIR / f"{p.name}.yaml"
    if not p.is_file():
        raise ConfigError(f"config file not found: {path} (give a YAML path or one of "
                          f"{sorted(q.stem for q in CONFIG_DIR.glob('*.yaml'))})")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    cfg = config_from_dict(values, str(p))
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def override_values(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (YAML-parsed values) to nested config values, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. data.path=/data/x)")
        key, raw = item.split("=", 1)
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: unknown section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {parts[-1]!r}; accepted: {sorted(node)}")
        node[parts[-1]] = yaml.safe_load(raw)
    return values


def plain_values(cfg: Any) -> dict[str, Any]:
    """A config dataclass as plain nested values (checkpoints, model cards); tuples become lists."""
    out = asdict(cfg)
    for section in out.values():
        if isinstance(section, dict):
            for k, v in section.items():
                if isinstance(v, tuple):
                    section[k] = list(v)
    return out


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``key.sub=value`` overrides (YAML-parsed values), e.g. ``data.path=/data/x``."""
    return config_from_dict(override_values(asdict(cfg), overrides), "overrides")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested values (stored in checkpoints and model cards)."""
    return plain_values(cfg)
