"""Supervised stage: the frozen encoder (a pretrain checkpoint or GE2E) + SupervisedHead on whitened targets.

``python -m training.train supervised --config X.yaml [--out RUN_DIR] [--resume]``.
Loss = param_weight * L2(whitened params) + vertex_weight * L2(vertices) / prior variance
(training.losses). The head with the best validation loss becomes ``model.pt`` (with its model card).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.checkpoints import load_checkpoint, load_encoder, save_checkpoint
from training.config import TrainConfig, config_to_dict, load_config
from training.data import DataError, VoiceFaceData
from training.embeddings import data_summary, embedding_bank, prepare_data
from training.encoders import ge2e
from training.eval_metrics import aggregate_by_speaker
from training.losses import VertexLoss, supervised_loss, whitening
from training.modelcard import build_card, write_card
from training.models import SupervisedHead, VoiceToParams
from training.run import (
    RunLogger,
    add_run_arguments,
    barrier,
    checkpoint_due,
    distributed,
    make_optimizer,
    make_scheduler,
    optimizer_step,
    progress,
    rng_state,
    run_command,
    set_rng_state,
    shard_batches,
    start_run,
)
from voice2mesh.facemodel import load_face_model
from voice2mesh.metrics import ratio_errors


def run_supervised(
    cfg: TrainConfig, out: str | Path, device: str = "auto", resume: bool = False, stop_after: int = 0
) -> Path:
    """Supervised head on the frozen encoder; returns the path of the final checkpoint (``model.pt``).

    ``stop_after`` > 0 ends after that many epochs of this call (continue with ``resume``); ``last.pt``
    is then returned.
    """
    out, dev, d = start_run(out, "supervised", config_to_dict(cfg), device, cfg.seed, cfg.threads, resume)
    data = prepare_data(cfg.data, cfg.seed)
    if data.params is None:
        raise DataError(
            f"{data.root}: the supervised stage needs parameter targets (this data has meshes "
            "only; fit them with training.data.fit_params_to_meshes)"
        )
    n_params = data.params.shape[1]
    k, e = cfg.model.n_identity, cfg.model.n_expression
    if n_params != 1 + k + e:
        raise DataError(f"{data.root}: targets have {n_params} params, config expects 1 + {k} + {e}")
    encoder, digest = load_encoder(cfg.model.encoder, cfg.model.encoder_checkpoint)
    encoder = encoder.to(dev)
    train_mask, val_mask = data.utt_splits == "train", data.utt_splits == "val"

    train_emb = embedding_bank(cfg, data, train_mask, cfg.data.augment_copies, encoder, digest, out, dev, d)
    val_emb = embedding_bank(cfg, data, val_mask, 0, encoder, digest, out, dev, d)
    spk_idx = data.utt_speaker_index()
    train_targets = data.params[spk_idx[train_mask]]
    val_targets = data.params[spk_idx[val_mask]]
    train_speaker_params = data.params[np.unique(spk_idx[train_mask])]
    mean_np, std_np = whitening(train_speaker_params)
    mean, std = torch.from_numpy(mean_np).to(dev), torch.from_numpy(std_np).to(dev)
    vloss = None
    face_model = None
    if cfg.loss.vertex_weight > 0:
        face_model = load_face_model(data.face_model).set_prediction_size(k, e)
        vloss = VertexLoss(face_model, k, e, train_speaker_params).to(dev)
    tw = torch.from_numpy((train_targets - mean_np) / std_np).to(dev)
    vw = torch.from_numpy((val_targets - mean_np) / std_np).to(dev)
    val_x = torch.from_numpy(np.stack([v[0] for v in val_emb])).to(dev) if len(val_emb) else None

    def loss_of(head_out: torch.Tensor, target_w: torch.Tensor) -> torch.Tensor:
        return supervised_loss(
            head_out, target_w, mean, std, vloss, cfg.loss.param_weight, cfg.loss.vertex_weight
        )

    oc = cfg.supervised
    head = SupervisedHead(encoder.embed_dim, k, e, cfg.model.dropout).to(dev)
    opt = make_optimizer(head.parameters(), oc)
    sched = make_scheduler(opt, oc)
    start_epoch, best, best_epoch = 0, float("inf"), -1
    last_path, best_path = out / "last.pt", out / "best_head.pt"
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        head.load_state_dict(ck["head_state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        start_epoch, best, best_epoch = ck["epoch"] + 1, ck["best"], ck["best_epoch"]
    net = distributed(head, d)
    logger = RunLogger(out, d.main)
    t0 = time.time()
    for epoch in range(start_epoch, oc.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch * 101 + d.rank)
        rng = np.random.default_rng([cfg.seed, epoch, d.rank, 2])
        net.train()
        total, n_seen = 0.0, 0
        for batch in progress(
            shard_batches(len(train_emb), oc.batch_size, cfg.seed, epoch, d),
            d.main,
            f"supervised {epoch + 1}/{oc.epochs}",
        ):
            x = np.stack([train_emb[i][rng.integers(0, len(train_emb[i]))] for i in batch])
            loss = loss_of(net(torch.from_numpy(x).to(dev)), tw[batch])
            optimizer_step(loss, opt, net, oc.grad_clip)
            total += float(loss.detach()) * len(batch)
            n_seen += len(batch)
        sched.step()
        head.eval()
        with torch.no_grad():
            val = float(loss_of(head(val_x), vw)) if val_x is not None else total / max(n_seen, 1)
        row = {
            "stage": "supervised",
            "epoch": epoch + 1,
            "train_loss": total / max(n_seen, 1),
            "val_loss": val,
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 2),
        }
        stopping = bool(stop_after) and epoch + 1 - start_epoch >= stop_after
        if d.main:
            logger.log(row)
            if val < best:
                best, best_epoch = val, epoch + 1
                save_checkpoint(best_path, {"head_state_dict": head.state_dict(), "epoch": epoch})
            if checkpoint_due(epoch + 1, cfg.checkpoint_every, oc.epochs, stopping):
                save_checkpoint(
                    last_path,
                    {
                        "stage": "supervised",
                        "config": config_to_dict(cfg),
                        "head_state_dict": head.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch,
                        "best": best,
                        "best_epoch": best_epoch,
                        "rng": rng_state(),
                        "param_mean": mean_np,
                        "param_std": std_np,
                    },
                )
        barrier(d)
        if stopping and epoch + 1 < oc.epochs:
            logger.close()
            return last_path
    logger.close()
    final = out / "model.pt"
    if d.main:
        head.load_state_dict(load_checkpoint(best_path)["head_state_dict"])
        model = VoiceToParams(
            encoder.cpu(), head.cpu().eval(), torch.from_numpy(mean_np), torch.from_numpy(std_np)
        )
        metrics = {"best_val_loss": best, "best_epoch": best_epoch}
        if val_x is not None and len(val_emb):
            try:
                metrics.update(validation_metrics(model, val_x.cpu(), data, val_mask, face_model, k, e))
            except (ValueError, FileNotFoundError) as exc:  # e.g. a face model without shape bases here
                metrics["val_metrics_unavailable"] = str(exc)
        card = build_card(
            name=cfg.name,
            stage="supervised",
            encoder=cfg.model.encoder,
            face_model=data.face_model,
            data=data_summary(data),
            config=config_to_dict(cfg),
            metrics=metrics,
            training={
                "epochs": oc.epochs,
                "seconds": round(time.time() - t0, 1),
                "world_size": d.world,
                "device": str(dev),
                "encoder_weights": digest,
                **({"encoder_weights_licence": ge2e.LICENCE} if cfg.model.encoder == "ge2e" else {}),
            },
        )
        save_checkpoint(
            final,
            {
                "stage": "supervised",
                "config": config_to_dict(cfg),
                "state_dict": model.state_dict(),
                "param_mean": mean_np,
                "param_std": std_np,
                "face_model": data.face_model,
                "encoder": cfg.model.encoder,
                "n_identity": k,
                "n_expression": e,
                "model_card": card,
                "input": "features (batch, time, 64)"
                if cfg.model.encoder == "voiceembednet"
                else "mels (batch, partials, 160, 40)",
            },
        )
        write_card(card, out)
    barrier(d)
    return final


def validation_metrics(
    model: VoiceToParams,
    val_x: torch.Tensor,
    data: VoiceFaceData,
    val_mask: np.ndarray,
    face_model,
    k: int,
    e: int,
) -> dict[str, float]:
    """Validation ratio errors (ER, FR, CR, MR, ARE) of the final model, speaker-averaged, for the card."""
    fm = face_model or load_face_model(data.face_model).set_prediction_size(k, e)
    with torch.no_grad():
        pred = model.from_embedding(val_x).numpy()
    target = data.params[data.utt_speaker_index()[val_mask]]
    errs = ratio_errors(fm.vertices_from_params(pred), fm.vertices_from_params(target), fm)
    return {f"val_{name}": v for name, v in aggregate_by_speaker(errs, data.utt_speakers[val_mask]).items()}


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.train supervised") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_run_arguments(parser, "YAML file or a name in training/configs/")

    def train(args: argparse.Namespace) -> Path:
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-supervised"
        return run_supervised(cfg, out, args.device, args.resume, args.stop_after)

    return run_command(parser, argv, train)


if __name__ == "__main__":
    raise SystemExit(main())
