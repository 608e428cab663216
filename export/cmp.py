"""The authors' released model (Cross-Modal Perceptionist, Wu, Hsu, Neumann, CVPR 2022) -> voice2mesh.

- ``face_models``: their 3DMM data (``2D-to-3D-pretrained.tar``: ``module.u``, ``module.w_shp``,
  ``module.w_exp``, ``module.param_mean``, ``module.param_std``) + the topology of a bfm-reference /
  ``train.configs`` folder -> BFM face model files on the 53,215 and 38,365-vertex layouts, written to the
  cache where ``load_face_model("bfm-53215")`` finds them (``python -m export.cmp facemodel``).
- ``export_cmp_bundle``: their supervised model (``voice_embedding.pth`` + the ``supervised_64`` head) ->
  a normal bundle (``python -m export.to_onnx --cmp-voice-embedding ... --out DIR``), local only.

How their supervised model predicts (the facts this module is written from, docs/paper.md): features
(1, 64, T) -> VoiceEmbedNet -> mean over time -> L2 norm -> three linear heads (51 values p);
scale ``s = p[0] * CMP_SCALE_STD + CMP_SCALE_MEAN``; coefficients ``p[1:51] * param_std[12:62] +
param_mean[12:62]``; vertices ``s * (u + w_shp @ shape + w_exp @ expression)``. The face model written
here folds ``param_mean``/``param_std`` into its mean and bases, so its weights are ``p[1:51]`` itself and
the graph's ``params`` are ``[s, p[1:51]]``: the same vertices, in the authors' frame (no re-centring).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.manifest import (
    face_model_entry,
    finish_bundle,
    front_end_config,
    model_card,
    save_predicted_modes,
    training_data_entry,
)
from export.to_onnx import ExportError, LoadedModel, check_parity, export_graph
from training.checkpoints import read_torch_file
from training.models import SupervisedHead, VoiceEmbedNet, VoiceToParams
from voice2mesh.bundle import ENCODER_INPUTS, file_sha256
from voice2mesh.facemodel import FaceModel, bfm
from voice2mesh.facemodel.builtin import BFM_NAMES, bfm_cache_path
from voice2mesh.paths import shared_assets_dir

# The authors' de-normalisation of the predicted scale (their supervised model's prediction step).
CMP_SCALE_STD = 1.538597731841497e-05
CMP_SCALE_MEAN = 0.0005920184194110334
N_IDENTITY, N_EXPRESSION = 40, 10
# The vertices the authors' model predicts: BFM micrometres times their scale, i.e. the 120-pixel crop of
# the image-to-3D network: no physical size (readouts in mm are NaN).
PREDICTED_UNITS = "px (the authors' frame: BFM micrometres times their predicted scale; no physical size)"
N_FLAT = 3 * bfm.BFM_FULL  # 159,645 xyz-interleaved values
TDMM_SHAPES = {
    "u": (N_FLAT, 1),
    "w_shp": (N_FLAT, N_IDENTITY),
    "w_exp": (N_FLAT, N_EXPRESSION),
    "param_mean": (102,),
    "param_std": (102,),
}
VOICE_EMBEDDING_SHAPES = {
    "model.0.weight": (256, 64, 3),
    "model.3.weight": (384, 256, 3),
    "model.6.weight": (576, 384, 3),
    "model.9.weight": (864, 576, 3),
    "model.12.weight": (64, 864, 3),
    "model.12.bias": (64,),
}
BATCHNORM_LAYERS = {1: 256, 4: 384, 7: 576, 10: 864}
BATCHNORM_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
HEADS = {
    "classifier_scale.1": ("scale", 1),
    "classifier_shape.1": ("identity", N_IDENTITY),
    "classifier_exp.1": ("expression", N_EXPRESSION),
}
WEIGHTS_SOURCE = (
    "the authors' pretrained zip linked from the README of "
    "github.com/choyingw/Cross-Modal-Perceptionist (pretrained_models/, train.configs/)"
)
WEIGHTS_LICENCE = (
    "The authors publish these weights for research through their repository's links, "
    "without a licence that allows redistribution; the face model is derived from the Basel "
    "Face Model 2009 (academic use only). This bundle is for local research use: never publish "
    "it or its face_model.npz."
)
# What the issue's facts lack to rebuild the authors' knowledge-distillation pair faithfully.
KD_MISSING = (
    "the KD pair (generator_<step>.pth, image3D_<step>.pth) cannot be imported: the facts available to "
    "this project give neither network's architecture: for the voice-to-image generator, its layer list "
    "(kinds, channels, kernels, strides, normalisation, activations), state-dict keys and output image "
    "size/range; for the image-to-3D student, its backbone (layer list and keys), input resolution and "
    "normalisation, how the generated image is resized/normalised before it, and its output layout "
    "(which of its outputs are pose, shape, expression, scale and how they are de-normalised). "
    "See docs/paper.md"
)


class CmpFileError(ExportError):
    """An authors' file is missing, unreadable, or not of the documented keys and shapes."""


# ---------------------------------------------------------------------- reading the authors' files
def _state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A flat state dict (a ``state_dict`` entry is unwrapped, a ``module.`` prefix dropped)."""
    try:
        obj = read_torch_file(path, what, hint=f" (from {WEIGHTS_SOURCE})")
    except (FileNotFoundError, ValueError) as exc:
        raise CmpFileError(str(exc)) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CmpFileError(f"{path}: {what} is not a state dict of tensors (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _take(sd: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: str | Path) -> torch.Tensor:
    if key not in sd:
        raise CmpFileError(f"{path}: no {key!r} (keys: {sorted(sd)[:12]}...)")
    t = sd[key]
    if tuple(t.shape) != tuple(shape):
        raise CmpFileError(f"{path}: {key!r} has shape {tuple(t.shape)}, expected {shape}")
    return t.detach().float()


def read_3dmm(path: str | Path) -> dict[str, np.ndarray]:
    """``2D-to-3D-pretrained.tar`` -> ``{u, w_shp, w_exp, param_mean, param_std}`` as float32 arrays."""
    sd = _state_dict(path, "3DMM file 2D-to-3D-pretrained.tar")
    return {k: _take(sd, k, shape, path).numpy() for k, shape in TDMM_SHAPES.items()}


def read_voice_embedding(path: str | Path) -> dict[str, torch.Tensor]:
    """``voice_embedding.pth`` -> the state dict of :class:`training.models.VoiceEmbedNet` (``layers.N``)."""
    sd = _state_dict(path, "voice embedding voice_embedding.pth")
    out = {
        k.replace("model.", "layers.", 1): _take(sd, k, s, path) for k, s in VOICE_EMBEDDING_SHAPES.items()
    }
    for i, ch in BATCHNORM_LAYERS.items():
        for name in BATCHNORM_KEYS:
            key = f"model.{i}.{name}"
            t = _take(sd, key, () if name == "num_batches_tracked" else (ch,), path)
            out[f"layers.{i}.{name}"] = t.long() if name == "num_batches_tracked" else t
    return out


def read_supervised_head(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``supervised_64`` head -> the state dict of :class:`training.models.SupervisedHead`."""
    sd = _state_dict(path, "supervised head (supervised_64/...pth)")
    out = {}
    for key, (name, n) in HEADS.items():
        out[f"{name}.weight"] = _take(sd, f"{key}.weight", (n, 64), path)
        out[f"{name}.bias"] = _take(sd, f"{key}.bias", (n,), path)
    return out


# ---------------------------------------------------------------------- face models
def default_reference() -> Path | None:
    """The shared assets' bfm-reference folder when present (tests, CI)."""
    assets = shared_assets_dir()
    ref = assets / "bfm-reference" if assets is not None else None
    return ref if ref is not None and ref.is_dir() else None


def face_model(
    tdmm: dict[str, np.ndarray], reference: str | Path, layout: int = bfm.BFM_FULL, source: str = ""
) -> FaceModel:
    """The BFM face model of ``layout`` from the 3DMM arrays (53,215 vertices, xyz interleaved), whitening
    folded in (weights = ``p[1:51]``); the no-neck layout is cut out with the reference's ``indices.npy``."""
    ref = bfm.read_reference(reference)
    u, w_shp, w_exp = (
        np.asarray(tdmm[k], np.float32).reshape(3 * bfm.BFM_FULL, -1) for k in ("u", "w_shp", "w_exp")
    )
    if layout == bfm.BFM_NONECK:
        if "indices" not in ref:
            raise CmpFileError(f"{reference}: the no-neck layout needs indices.npy")
        rows = (3 * ref["indices"][:, None] + np.arange(3)).reshape(-1)  # its xyz-interleaved rows
        u, w_shp, w_exp = u[rows], w_shp[rows], w_exp[rows]
    stats = {"mean": tdmm["param_mean"], "std": tdmm["param_std"]}
    sizes = {"n_identity": N_IDENTITY, "n_expression": N_EXPRESSION}
    return bfm.from_arrays(u, w_shp, w_exp, None, None, ref, stats, source=source, **sizes)


def build_face_models(
    tdmm_path: str | Path, reference: str | Path, out_dir: str | Path | None = None
) -> dict[str, Path]:
    """Write ``bfm-53215.npz`` and ``bfm-38365.npz`` (the cache by default); returns name -> path."""
    tdmm = read_3dmm(tdmm_path)
    out = {}
    for name in BFM_NAMES:
        model = face_model(
            tdmm,
            reference,
            int(name.split("-")[1]),
            source=f"{Path(tdmm_path).name} (Cross-Modal Perceptionist 3DMM data) + {reference}",
        )
        path = bfm_cache_path(name) if out_dir is None else Path(out_dir) / f"{name}.npz"
        out[name] = model.save(path)
    return out


# ---------------------------------------------------------------------- the supervised model
def supervised_module(
    voice_embedding: dict[str, torch.Tensor], head: dict[str, torch.Tensor]
) -> VoiceToParams:
    """features (B, T, 64) -> ``[s, p[1:51]]``: the authors' scale de-normalisation, the weights as
    predicted (the face model holds their whitening)."""
    encoder = VoiceEmbedNet()
    encoder.load_state_dict(voice_embedding, strict=True)
    sup = SupervisedHead(encoder.embed_dim, N_IDENTITY, N_EXPRESSION)
    sup.load_state_dict(head, strict=True)
    mean = torch.zeros(1 + N_IDENTITY + N_EXPRESSION)
    std = torch.ones(1 + N_IDENTITY + N_EXPRESSION)
    mean[0], std[0] = CMP_SCALE_MEAN, CMP_SCALE_STD
    return VoiceToParams(encoder, sup, mean, std).eval()


def load_cmp_supervised(voice_embedding: str | Path, head: str | Path) -> LoadedModel:
    """The authors' supervised model as a LoadedModel for :func:`export.to_onnx.export_graph`."""
    module = supervised_module(read_voice_embedding(voice_embedding), read_supervised_head(head))
    card = {
        "stage": "supervised (the authors' release)",
        "data": {
            "name": "VoxCeleb-3D",
            "kind": "authors' release",
            "synthetic": False,
            "summary": "Trained by the authors on VoxCeleb-3D (VoxCeleb1 voices of the F-Z identities "
            "paired with 3DMM fits of their VGGFace images).",
        },
    }
    return LoadedModel(
        name="supervised",
        framework="supervised",
        encoder="voiceembednet",
        module=module,
        face_model_id="bfm-53215",
        n_identity=N_IDENTITY,
        n_expression=N_EXPRESSION,
        card=card,
        checkpoint=str(voice_embedding),
    )


def export_cmp_bundle(
    voice_embedding: str | Path,
    head: str | Path,
    tdmm_path: str | Path,
    out_dir: str | Path,
    *,
    reference: str | Path | None = None,
    check: bool = True,
    assets: Path | None = None,
) -> Path:
    """The authors' supervised model -> a local-only bundle folder (ONNX graph, face_model.npz, bundle.json,
    model card); replaced if present."""
    import shutil
    import tempfile

    reference = reference or default_reference()
    if reference is None:
        raise CmpFileError(
            "the BFM topology (tri.mat, keypoints_sim.npy, indices.npy, tri.pkl) is needed: "
            f"pass --cmp-reference train.configs (from {WEIGHTS_SOURCE})"
        )
    model = load_cmp_supervised(voice_embedding, head)
    fm = face_model(
        read_3dmm(tdmm_path), reference, source=f"{Path(tdmm_path).name} + {Path(reference).name}"
    )
    fm.metadata["units"] = PREDICTED_UNITS
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        graph = export_graph(model, stage / "supervised.onnx")
        parity = check_parity(model, graph, fm, assets).as_dict() if check else {}
        fm = save_predicted_modes(fm, stage / "face_model.npz")
        sources = {"voice_embedding": voice_embedding, "supervised_head": head, "3dmm": tdmm_path}
        manifest = _manifest(
            model,
            fm,
            parity,
            {k: {"file": Path(p).name, "sha256": file_sha256(p)} for k, p in sources.items()},
        )
        finish_bundle(stage, manifest, card=_card(manifest))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(stage), str(out))
    return out


def _manifest(model: LoadedModel, fm: FaceModel, parity: dict, sources: dict) -> dict[str, Any]:
    return {
        "name": "Cross-Modal Perceptionist (the authors' supervised model)",
        "description": (
            "The supervised model released by Wu, Hsu and Neumann (CVPR 2022), converted to ONNX "
            "without retraining: VoiceEmbedNet + linear heads -> BFM 2009 (40 shape + 10 "
            "expression). Vertices are in the authors' frame (their scale, BFM orientation)."
        ),
        "models": {
            "supervised": {
                "file": "supervised.onnx",
                "framework": "supervised",
                "encoder": "voiceembednet",
                "input_name": ENCODER_INPUTS["voiceembednet"],
                "input_shape": "(batch, time, 64)",
                "output_name": "params",
                "n_params": fm.n_params,
                "checkpoint": Path(model.checkpoint).name,
                "parity": parity,
            }
        },
        "default_model": "supervised",
        "face_model": face_model_entry(fm, "bfm-53215", "face_model.npz"),
        "front_end": front_end_config(),
        "training_data": training_data_entry(
            model.card["data"]["summary"],
            synthetic=False,
            random_weights=False,
            dataset="VoxCeleb-3D",
            kind="authors' release",
        ),
        "weights": {"source": WEIGHTS_SOURCE, "files": sources, "licence": WEIGHTS_LICENCE},
        "local_only": True,
        "local_only_reason": WEIGHTS_LICENCE,
        "limitations": (
            "Research reproduction of the paper's model; do not use it to infer or judge anyone's "
            "appearance. " + WEIGHTS_LICENCE
        ),
    }


def _card(manifest: dict[str, Any]) -> str:
    """The standard model card with the weights' origin and licence (not MIT) in place of ours."""
    card = model_card(manifest).replace("license: mit", "license: other", 1)
    w = manifest["weights"]
    files = "\n".join(f"- {k}: `{v['file']}` (sha256 `{v['sha256']}`)" for k, v in w["files"].items())
    section = (
        f"## Where the weights come from\n\nConverted from {w['source']}:\n\n{files}\n\n"
        f"**Licence.** {w['licence']}\n\n## Models\n"
    )
    return card.replace("## Models\n", section, 1)


# ---------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.cmp", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("facemodel", help="build bfm-53215.npz and bfm-38365.npz from 2D-to-3D-pretrained.tar")
    f.add_argument("--cmp-3dmm", required=True, help="the authors' pretrained_models/2D-to-3D-pretrained.tar")
    f.add_argument(
        "--reference",
        help="train.configs/ (or a bfm-reference folder): tri.mat, "
        "keypoints_sim.npy, indices.npy, tri.pkl (default: the shared assets' bfm-reference)",
    )
    f.add_argument(
        "--out-dir",
        help="where to write the two files (default: the voice2mesh cache, where "
        "--face-model bfm-53215 / bfm-38365 finds them)",
    )
    args = p.parse_args(argv)
    try:
        reference = args.reference or default_reference()
        if reference is None:
            raise CmpFileError("--reference train.configs is required (no shared assets found)")
        for name, path in build_face_models(args.cmp_3dmm, reference, args.out_dir).items():
            print(f"wrote {name}: {path}")
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
