"""Checkpoints: reading ``.pt`` files with errors that name the file, atomic saves, weight digests, and
rebuilding any trained model (a frozen pretrained encoder, a supervised ``model.pt``, a KD ``model.pt``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.config import config_from_dict
from training.kd.mobilenet import DDFATeacher
from training.kd.nets import Generator, ImageRegressor, KDInference
from training.models import VoiceEmbedNet, VoiceToParams, build_encoder, build_voice_to_params, freeze

GE2E_DIGEST = "ge2e-resemblyzer-0.1.4"


def read_torch_file(
    path: str | Path, what: str = "checkpoint", *, weights_only: bool = False, hint: str = ""
) -> Any:
    """``torch.load`` onto the CPU: the one guarded loader of every ``.pt`` / ``.pth`` file.

    Raises FileNotFoundError (``"{what} not found: PATH{hint}"``) or ValueError (not a readable file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}{hint}")
    try:
        return torch.load(p, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        kind = "state dict" if weights_only else "checkpoint"
        raise ValueError(f"{p}: not a readable PyTorch {kind} ({exc})") from exc


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """``torch.save`` through a temporary file, so a reader never sees half a checkpoint."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint; FileNotFoundError, or RuntimeError when the file is not readable."""
    try:
        return read_torch_file(path, "checkpoint")
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the file's sha256 (names caches built from these weights)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_pretrained_encoder(path: str | Path) -> tuple[VoiceEmbedNet, str]:
    """The frozen VoiceEmbedNet of a pretrain checkpoint (``RUN/pretrain.pt``, a snapshot, or any checkpoint
    whose ``state_dict`` holds ``encoder.*`` weights) and the digest of the file."""
    if not path:
        raise ValueError(
            "no encoder checkpoint given: the VoiceEmbedNet must be pretrained first "
            "(RUN/pretrain.pt of `python -m training.train pretrain`)"
        )
    ck = load_checkpoint(path)
    state = ck.get("state_dict", {}) if isinstance(ck, dict) else {}
    enc_state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc_state:
        raise ValueError(f"{path}: no VoiceEmbedNet weights (no 'encoder.*' entries in state_dict)")
    enc = VoiceEmbedNet()
    enc.load_state_dict(enc_state)
    return freeze(enc), file_digest(path)


def load_encoder(kind: str, checkpoint: str | Path = "") -> tuple[nn.Module, str]:
    """A frozen encoder for the supervised stage and a digest naming its weights (for caches):
    ``voiceembednet`` from a pretrain checkpoint, ``ge2e`` with its published weights."""
    if kind == "voiceembednet":
        if not checkpoint:
            raise ValueError(
                "model.encoder_checkpoint is empty: the supervised stage needs a pretrained "
                "VoiceEmbedNet (run `python -m training.train pretrain` first)"
            )
        return load_pretrained_encoder(checkpoint)
    return freeze(build_encoder(kind, pretrained=True)), GE2E_DIGEST


def load_voice_to_params(path: str | Path) -> tuple[VoiceToParams, dict[str, Any]]:
    """A trained supervised ``model.pt`` as an eval-mode VoiceToParams (CPU) and its checkpoint dict."""
    ck = load_checkpoint(path)
    return voice_to_params_from_checkpoint(ck, path), ck


def voice_to_params_from_checkpoint(ck: dict[str, Any], path: str | Path = "checkpoint") -> VoiceToParams:
    """An eval-mode VoiceToParams from a loaded supervised ``model.pt`` dict."""
    if ck.get("stage") != "supervised" or "state_dict" not in ck:
        raise ValueError(
            f"{path}: not a supervised model checkpoint (stage={ck.get('stage')!r}); "
            "pass the model.pt a `training.train supervised` run wrote"
        )
    cfg = config_from_dict(ck["config"])
    model = build_voice_to_params(
        ck["encoder"],
        ck["n_identity"],
        ck["n_expression"],
        cfg.model.dropout,
        torch.from_numpy(ck["param_mean"]),
        torch.from_numpy(ck["param_std"]),
    )
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def is_kd_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and (ckpt.get("framework") == "kd" or ckpt.get("stage") == "kd")


def kd_model_from_checkpoint(ckpt: dict[str, Any]) -> KDInference:
    """An eval-mode KDInference (features -> VoiceEmbedNet -> generator -> student -> params, un-whitened)
    from a loaded KD ``model.pt`` dict."""
    if not is_kd_checkpoint(ckpt):
        raise ValueError(
            "not a KD checkpoint (framework != 'kd'); train one with `python -m training.kd train`"
        )
    for key in ("state_dict", "generator_arch", "student_arch"):
        if key not in ckpt:
            raise ValueError(f"KD checkpoint lacks {key!r}; keys: {sorted(ckpt)}")
    g, s = ckpt["generator_arch"], ckpt["student_arch"]
    if s.get("kind", "ict") == "ddfa":  # a student of the 3DDFA teacher's architecture
        student = DDFATeacher(np.zeros(62), np.ones(62))
    else:
        student = ImageRegressor(int(s["n_params"]), int(s["input_size"]), int(s["width"]))
    module = KDInference(
        VoiceEmbedNet(),
        Generator(int(g["embed_dim"]), tuple(g["channels"]), float(g["noise_std"])),
        student,
    )
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def load_kd_model(path: str | Path) -> tuple[KDInference, dict[str, Any]]:
    """A KD ``model.pt`` (RUN/model.pt of ``python -m training.kd train``) and its checkpoint dict."""
    ck = read_torch_file(path, "KD checkpoint")
    if not is_kd_checkpoint(ck):
        stage = ck.get("stage") if isinstance(ck, dict) else None
        raise ValueError(
            f"{path}: not a KD checkpoint (stage={stage!r}); pass RUN/model.pt of "
            "`python -m training.kd train`"
        )
    return kd_model_from_checkpoint(ck), ck
