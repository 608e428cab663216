"""The ICT teacher: an ImageRegressor trained on renders of random ICT faces (random identity and expression
from the prior, random pose, light, skin tone and background: training.render, the same renderer as the
synthvox face images). Loading any teacher is training.kd.teachers.

``python -m training.kd.teacher train --out DIR``;
``python -m training.kd.teacher evaluate --checkpoint T.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoints import save_checkpoint
from training.eval_metrics import mean_metrics
from training.kd.nets import ImageRegressor, to_unit_range
from training.kd.teachers import TEACHER_FORMAT, load_ict_teacher, predict_images, prediction_face_model
from training.losses import whitening
from training.models import MeshDecoder, freeze
from training.run import seed_everything, set_threads
from training.synthvox.images import image_params, render_speaker_images


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
    rng = np.random.default_rng(seed)
    params = face_model.sample_params(n, rng).astype(np.float32)
    # render_speaker_images draws a fresh expression per image: redraw with the same rng and record it
    img_rng = np.random.default_rng([seed, 1])
    probe = np.random.default_rng([seed, 1])
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
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # per process: runs may share a cache
    np.savez(tmp, images=images, params=params)
    tmp.replace(path)
    return images, params


def accuracy_report(face_model, pred: np.ndarray, target: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """ARE / ratio errors / RMSE of predictions and of a constant baseline (the training mean face)."""
    model_m = mean_metrics(face_model, pred, target)
    base_m = mean_metrics(face_model, np.repeat(baseline[None], len(target), 0), target)
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
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
    save_checkpoint(
        path,
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
    )
    (out / "teacher_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return path


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
