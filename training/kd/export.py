"""Rebuild the KD inference graph (features -> VoiceEmbedNet -> generator -> student -> params) from a KD
checkpoint, for ``export/to_onnx.py`` and the evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from training.kd.ddfa import DDFATeacher
from training.kd.nets import Generator, ImageRegressor, KDInference
from training.models import VoiceEmbedNet
from training.torchfile import read_torch_file


def is_kd_checkpoint(ckpt: dict[str, Any]) -> bool:
    return isinstance(ckpt, dict) and (ckpt.get("framework") == "kd" or ckpt.get("stage") == "kd")


def model_from_checkpoint(ckpt: dict[str, Any]) -> KDInference:
    """An eval-mode KDInference from a loaded ``model.pt`` dict (what export/to_onnx.py calls)."""
    if not is_kd_checkpoint(ckpt):
        raise ValueError(
            "not a KD checkpoint (framework != 'kd'); train one with `python -m training.kd train`"
        )
    for key in ("state_dict", "generator_arch", "student_arch"):
        if key not in ckpt:
            raise ValueError(f"KD checkpoint lacks {key!r}; keys: {sorted(ckpt)}")
    g = ckpt["generator_arch"]
    module = KDInference(
        VoiceEmbedNet(),
        Generator(int(g["embed_dim"]), tuple(g["channels"]), float(g["noise_std"])),
        student_from_arch(ckpt["student_arch"]),
    )
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def student_arch(student: nn.Module) -> dict[str, Any]:
    """What rebuilds ``student`` (its weights and buffers come from the state dict)."""
    if isinstance(student, DDFATeacher):
        return {"kind": "ddfa", "n_params": student.n_params, "input_size": student.input_size}
    return {"kind": "ict", "n_params": student.n_params, "input_size": student.input_size,
            "width": student.width}


def student_from_arch(arch: dict[str, Any]) -> nn.Module:
    """An untrained student of the architecture ``student_arch`` describes."""
    if arch.get("kind", "ict") == "ddfa":
        return DDFATeacher(np.zeros(62), np.ones(62))
    return ImageRegressor(int(arch["n_params"]), int(arch["input_size"]), int(arch["width"]))


def kd_inference_module(checkpoint: str | Path | dict[str, Any]) -> KDInference:
    """The KD graph from a ``model.pt`` path (or its loaded dict): input ``features`` (batch, time, 64),
    output ``params`` (batch, 1 + K + E), un-whitened."""
    if isinstance(checkpoint, dict):
        return model_from_checkpoint(checkpoint)
    ck = read_torch_file(checkpoint, "KD checkpoint")
    if not is_kd_checkpoint(ck):
        raise ValueError(
            f"{checkpoint}: not a KD checkpoint (stage={ck.get('stage')!r}); pass RUN/model.pt of "
            "`python -m training.kd train`"
        )
    return model_from_checkpoint(ck)
