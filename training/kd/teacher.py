"""Teachers: frozen ``image -> parameters`` models behind one interface, and the ICT teacher trained here.

Interface (``load_teacher``): an ``nn.Module`` with ``input_size`` and ``n_params`` attributes, whose
``forward_features(images)`` returns ``RegressorOutput(params, intermediate, pooled)`` for images
(B, 3, H, W) in [-1, 1] (resized to ``input_size`` inside) and whose ``forward`` returns the params
(B, 1+K+E) of ``face_model``. Two kinds:

1. ``ict``: an ImageRegressor trained here on renders of random ICT faces (random identity and expression
   from the prior, random pose, light, skin tone and background: training.render, the same renderer as the
   synthvox face images). CLI: ``python -m training.kd.teacher train --out DIR``.
2. ``ddfa``: a 3DDFA-V2-style BFM regressor (training.kd.ddfa) for users with those weights and the BFM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.kd.nets import ImageRegressor, to_unit_range
from training.models import freeze
from training.render import RenderConfig
from training.torchfile import read_torch_file

TEACHER_FORMAT = "voice2mesh-kd-teacher-1"


@dataclass
class TeacherTrainConfig:
    """The ICT teacher's data and optimisation."""

    renders: int = 12000  # training renders (random faces)
    heldout: int = 1000  # held-out renders for the accuracy report
    size: int = 64  # render size = teacher input size (px)
    width: int = 32  # first conv width
    epochs: int = 12
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    vertex_weight: float = 1.0
    face_model: str = "ict"
    n_identity: int = 40
    n_expression: int = 10
    seed: int = 0
    threads: int = 0


def render_random_faces(n: int, size: int, face_model, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` renders of random faces: (n, size, size, 3) uint8 and their (n, 1+K+E) parameters."""
    from training.synthvox.images import render_speaker_images

    rng = np.random.default_rng(seed)
    params = face_model.sample_params(n, rng).astype(np.float32)
    # render_speaker_images draws a fresh expression per image: redraw with the same rng and record it
    img_rng = np.random.default_rng([seed, 1])
    probe = np.random.default_rng([seed, 1])
    from training.synthvox.images import image_params

    rendered_params = image_params(params, face_model, 1, probe)
    images = render_speaker_images(face_model, params, 1, size, img_rng)[:, 0]
    return images, rendered_params.astype(np.float32)


def cached_renders(folder: Path, n: int, size: int, face_model, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``render_random_faces`` cached as ``folder/renders-<n>-<size>-<seed>.npz``."""
    path = Path(folder) / f"renders-{face_model.name}-{n}-{size}-{seed}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["images"], z["params"]
    images, params = render_random_faces(n, size, face_model, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, params=params)
    tmp.replace(path)
    return images, params


class MeshDecoder(nn.Module):
    """Params (B, 1+K+E) -> flat vertices (B, N*3) of a FaceModel (torch twin of vertices_from_params)."""

    def __init__(self, face_model) -> None:
        super().__init__()
        k, e = face_model.n_identity, face_model.n_expression
        self.register_buffer("mean", torch.from_numpy(face_model.mean.reshape(-1).astype(np.float32)))
        self.register_buffer(
            "ident",
            torch.from_numpy(
                np.ascontiguousarray(face_model.identity_basis[:k].reshape(k, -1), dtype=np.float32)
            ),
        )
        self.register_buffer(
            "expr",
            torch.from_numpy(
                np.ascontiguousarray(face_model.expression_basis[:e].reshape(e, -1), dtype=np.float32)
            ),
        )
        self.k = k

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        shape = self.mean + params[:, 1 : 1 + self.k] @ self.ident + params[:, 1 + self.k :] @ self.expr
        return params[:, :1] * shape


def prediction_face_model(spec: str, k: int, e: int):
    """The face model ``spec`` (a voice2mesh.facemodel spec) set to predict ``k`` identity and ``e``
    expression weights: what a teacher's or student's parameters decode with."""
    from voice2mesh.facemodel import load_face_model

    return load_face_model(spec).set_prediction_size(k, e)


@torch.no_grad()
def predict_images(model: nn.Module, images_uint8: np.ndarray, batch: int = 128) -> np.ndarray:
    """(n, P) parameters a teacher predicts for uint8 images (n, H, W, 3)."""
    model.eval()
    out = [
        model(to_unit_range(torch.from_numpy(images_uint8[s : s + batch]))).numpy()
        for s in range(0, len(images_uint8), batch)
    ]
    return np.concatenate(out).astype(np.float32)


def accuracy_report(face_model, pred: np.ndarray, target: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """ARE / ratio errors / RMSE of predictions and of a constant baseline (the training mean face)."""
    from training.evaluate import per_utterance_metrics

    def summary(p: np.ndarray) -> dict[str, float]:
        m = per_utterance_metrics(face_model, p, target)
        return {k: float(np.mean(m[k])) for k in ("ER", "FR", "CR", "MR", "ARE", "keypoint_error", "rmse")}

    model_m = summary(pred)
    base_m = summary(np.repeat(baseline[None], len(target), 0))
    ident = slice(1, 1 + face_model.n_identity)
    corr = [float(np.corrcoef(pred[:, j], target[:, j])[0, 1]) for j in range(ident.start, ident.stop)]
    return {
        "model": model_m,
        "mean_face_baseline": base_m,
        "n": int(len(target)),
        "identity_corr_first5": corr[:5],
        "identity_corr_mean": float(np.mean(corr)),
    }


def train_teacher(cfg: TeacherTrainConfig, out: str | Path, progress: bool = True) -> Path:
    """Render, train, evaluate on held-out renders, save ``out/teacher.pt`` (+ teacher_report.json)."""
    from training.train import whitening

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    fm = prediction_face_model(cfg.face_model, cfg.n_identity, cfg.n_expression)
    t0 = time.time()
    images, params = cached_renders(out / "cache", cfg.renders, cfg.size, fm, cfg.seed)
    h_images, h_params = cached_renders(out / "cache", cfg.heldout, cfg.size, fm, cfg.seed + 10_000)
    t_render = time.time() - t0
    mean, std = whitening(params)
    model = ImageRegressor(fm.n_params, cfg.size, cfg.width, torch.from_numpy(mean), torch.from_numpy(std))
    decoder = MeshDecoder(fm)
    vnorm = float(fm.vertices_from_params(params[:512]).reshape(min(512, len(params)), -1).var(0).mean())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(images) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    rng = np.random.default_rng(cfg.seed)
    std_t = torch.from_numpy(std)
    log = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(images))
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = to_unit_range(torch.from_numpy(images[idx]))
            y = torch.from_numpy(params[idx])
            pred = model(x)
            loss = (((pred - y) / std_t) ** 2).mean()
            if cfg.vertex_weight > 0:
                loss = loss + cfg.vertex_weight * ((decoder(pred) - decoder(y)) ** 2).mean() / vnorm
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        row = {
            "epoch": epoch + 1,
            "train_loss": total / steps_per_epoch,
            "seconds": round(time.time() - t0, 1),
        }
        log.append(row)
        if progress:
            print(
                f"teacher epoch {epoch + 1}/{cfg.epochs} loss {row['train_loss']:.4f} ({row['seconds']} s)",
                flush=True,
            )
    freeze(model)
    report = accuracy_report(fm, predict_images(model, h_images), h_params, mean)
    report.update(
        {
            "render_seconds": round(t_render, 1),
            "train_seconds": round(time.time() - t0 - t_render, 1),
            "config": asdict(cfg),
            "log": log,
        }
    )
    path = out / "teacher.pt"
    torch.save(
        {
            "format": TEACHER_FORMAT,
            "kind": "ict",
            "state_dict": model.state_dict(),
            "n_params": fm.n_params,
            "input_size": cfg.size,
            "width": cfg.width,
            "face_model": cfg.face_model,
            "n_identity": fm.n_identity,
            "n_expression": fm.n_expression,
            "param_mean": mean,
            "param_std": std,
            "report": report,
            "config": asdict(cfg),
        },
        path,
    )
    (out / "teacher_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return path


def load_ict_teacher(path: str | Path) -> tuple[ImageRegressor, dict[str, Any]]:
    """A frozen ICT teacher from ``teacher.pt`` and its checkpoint dict.

    Its image frame (``image_frame_vertices``): px of its ``input_size`` renders, whose field of view is
    ``RenderConfig.field_mm`` high at the face centre, so face-model mm * input_size / field_mm (frontal,
    no pose: the equivalent of the BFM teacher's 120-px frame)."""
    ck = read_torch_file(path, "teacher checkpoint",
                         hint=" (train one with `python -m training.kd.teacher train --out DIR`)")
    if not isinstance(ck, dict) or ck.get("format") != TEACHER_FORMAT:
        raise ValueError(f"{path}: not a KD teacher checkpoint (expected format {TEACHER_FORMAT!r})")
    model = ImageRegressor(ck["n_params"], ck["input_size"], ck["width"])
    model.load_state_dict(ck["state_dict"])
    model.frame_scale = ck["input_size"] / RenderConfig().field_mm
    return freeze(model), ck


def load_teacher(kind: str, checkpoint: str, param_stats: str = "") -> tuple[nn.Module, dict[str, Any]]:
    """Any teacher behind the common interface (frozen): ``ict`` or ``ddfa``. Returns (module, info)
    where info holds ``face_model``, ``n_identity``, ``n_expression`` (and the checkpoint dict)."""
    if kind == "ict":
        model, ck = load_ict_teacher(checkpoint)
        return model, {
            "face_model": ck["face_model"],
            "n_identity": ck["n_identity"],
            "n_expression": ck["n_expression"],
            "checkpoint": ck,
        }
    if kind == "ddfa":
        from training.kd.ddfa import load_ddfa_teacher

        model = load_ddfa_teacher(checkpoint, param_stats)
        return model, {"face_model": "bfm", "n_identity": model.n_shape, "n_expression": model.n_expression}
    raise ValueError(f"unknown teacher kind {kind!r}; accepted: ict, ddfa")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.kd.teacher",
        description="Train or evaluate the ICT image -> parameters teacher.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="render random ICT faces and train the teacher")
    tr.add_argument("--out", required=True, help="folder for teacher.pt, teacher_report.json, cache/")
    for f, v in asdict(TeacherTrainConfig()).items():
        if f != "out":
            tr.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    ev = sub.add_parser("evaluate", help="accuracy of a teacher on fresh held-out renders")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--n", type=int, default=500)
    ev.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "train":
            cfg = TeacherTrainConfig(**{f: getattr(args, f) for f in asdict(TeacherTrainConfig())})
            path = train_teacher(cfg, args.out)
            print(json.dumps(json.loads((Path(args.out) / "teacher_report.json").read_text())["model"]))
            print(f"wrote {path}")
        else:
            model, ck = load_ict_teacher(args.checkpoint)
            fm = prediction_face_model(ck["face_model"], ck["n_identity"], ck["n_expression"])
            images, params = render_random_faces(args.n, ck["input_size"], fm, args.seed)
            report = accuracy_report(fm, predict_images(model, images), params, ck["param_mean"])
            print(json.dumps(report, indent=2))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
