"""Stand-ins for the authors' released files, in their exact keys, shapes and containers, with random values,
and an independent forward pass of their supervised model written from the published facts
(docs/paper.md): VoiceEmbedNet (conv k3 s2 p1, BatchNorm, ReLU; last conv with bias) -> mean over time ->
L2 norm -> three linear heads -> scale de-normalisation, coefficient de-whitening, BFM vertices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

N_FLAT = 3 * 53215
CONVS = {0: (256, 64), 3: (384, 256), 6: (576, 384), 9: (864, 576), 12: (64, 864)}
SCALE_STD, SCALE_MEAN = 1.538597731841497e-05, 0.0005920184194110334


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def voice_embedding_state(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``voice_embedding.pth``: ``model.{0,3,6,9,12}`` Conv1d, ``model.{1,4,7,10}`` BatchNorm1d."""
    sd: dict[str, torch.Tensor] = {}
    for i, (out, inp) in CONVS.items():
        sd[f"model.{i}.weight"] = _t(rng.normal(0, (inp * 3) ** -0.5, (out, inp, 3)))
        if i == 12:
            sd["model.12.bias"] = _t(rng.normal(0, 0.1, out))
        else:
            bn = i + 1
            sd[f"model.{bn}.weight"] = _t(rng.uniform(0.5, 1.5, out))
            sd[f"model.{bn}.bias"] = _t(rng.normal(0, 0.1, out))
            sd[f"model.{bn}.running_mean"] = _t(rng.normal(0, 0.2, out))
            sd[f"model.{bn}.running_var"] = _t(rng.uniform(0.5, 2.0, out))
            sd[f"model.{bn}.num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)
    return sd


def supervised_head_state(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """``supervised_64/...pth``: ``classifier_{scale,shape,exp}.1`` linear layers of 1, 40, 10 outputs."""
    sd = {}
    for name, n in (("scale", 1), ("shape", 40), ("exp", 10)):
        sd[f"classifier_{name}.1.weight"] = _t(rng.normal(0, 1.0, (n, 64)))
        sd[f"classifier_{name}.1.bias"] = _t(rng.normal(0, 0.3, n))
    return sd


def tdmm_state(rng: np.random.Generator, reference: Path) -> dict[str, torch.Tensor]:
    """``2D-to-3D-pretrained.tar``'s ``state_dict``: the BFM mean face of ``reference`` and random bases
    (whitened coefficients of about unit size move vertices by about 1 cm), plus an image-network key."""
    u = np.load(reference / "u_shp.npy") + np.load(reference / "u_exp.npy")
    mean = np.zeros(102, np.float32)
    std = np.ones(102, np.float32)
    mean[12:62] = rng.normal(0, 1e5, 50)
    std[12:62] = rng.uniform(1e5, 6e5, 50)
    w_shp = rng.normal(0, 1e4 / 3e5 / 6.0, (N_FLAT, 40))
    w_exp = rng.normal(0, 1e4 / 3e5 / 3.0, (N_FLAT, 10))
    return {
        "module.u": _t(u.reshape(N_FLAT, 1)),
        "module.w_shp": _t(w_shp),
        "module.w_exp": _t(w_exp),
        "module.param_mean": _t(mean),
        "module.param_std": _t(std),
        "module.IGM.backbone.conv1.weight": _t(rng.normal(size=(8, 3, 3, 3))),
    }


def write_released_checkpoints(folder: Path, reference: Path, seed: int = 0) -> dict[str, Path]:
    """The three files of the authors' supervised model under ``folder/pretrained_models/``."""
    rng = np.random.default_rng(seed)
    root = folder / "pretrained_models"
    (root / "supervised_64").mkdir(parents=True, exist_ok=True)
    paths = {
        "voice_embedding": root / "voice_embedding.pth",
        "head": root / "supervised_64" / "supervised.pth",
        "tdmm": root / "2D-to-3D-pretrained.tar",
    }
    torch.save(voice_embedding_state(rng), paths["voice_embedding"])
    torch.save(supervised_head_state(rng), paths["head"])
    torch.save({"state_dict": tdmm_state(rng, reference), "epoch": 80}, paths["tdmm"])
    return paths


def reference_vertices(features: np.ndarray, paths: dict[str, Path]) -> np.ndarray:
    """The authors' supervised prediction for features (T, 64), in float64: (53215, 3)."""
    ve = {k: v.double() for k, v in torch.load(paths["voice_embedding"]).items() if v.is_floating_point()}
    head = {k: v.double() for k, v in torch.load(paths["head"]).items()}
    sd = {k: v.double() for k, v in torch.load(paths["tdmm"])["state_dict"].items()}
    x = torch.from_numpy(np.asarray(features, np.float64).T[None])  # (1, 64, T)
    for i in (0, 3, 6, 9):
        x = F.conv1d(x, ve[f"model.{i}.weight"], stride=2, padding=1)
        b = f"model.{i + 1}"
        x = F.batch_norm(
            x,
            ve[f"{b}.running_mean"],
            ve[f"{b}.running_var"],
            ve[f"{b}.weight"],
            ve[f"{b}.bias"],
            training=False,
            eps=1e-5,
        )
        x = F.relu(x)
    x = F.conv1d(x, ve["model.12.weight"], ve["model.12.bias"], stride=2, padding=1)
    e = x.mean(dim=2)
    e = e / e.norm(dim=1, keepdim=True)
    p = torch.cat(
        [
            F.linear(e, head[f"classifier_{n}.1.weight"], head[f"classifier_{n}.1.bias"])
            for n in ("scale", "shape", "exp")
        ],
        dim=1,
    )[0]
    s = p[0] * SCALE_STD + SCALE_MEAN
    alpha = p[1:51] * sd["module.param_std"][12:62] + sd["module.param_mean"][12:62]
    v = s * (sd["module.u"][:, 0] + sd["module.w_shp"] @ alpha[:40] + sd["module.w_exp"] @ alpha[40:])
    return v.numpy().reshape(-1, 3)
