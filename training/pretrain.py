"""Pretraining: VoiceEmbedNet as a speaker classifier (cross-entropy) on the training speakers.

``python -m training.train pretrain --config X.yaml [--out RUN_DIR] [--resume] [--keep-every N]``.
Checkpoints hold the model, optimizer, scheduler, epoch and RNG states (``--resume``); the final
``pretrain.pt`` carries a model card, also written as ``model_card.md`` / ``model_card.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.checkpoints import load_checkpoint, save_checkpoint
from training.config import TrainConfig, config_to_dict, load_config
from training.data import DataError, FeatureBank, random_crop, tile_frames
from training.embeddings import data_summary, prepare_data, shared_bank
from training.modelcard import build_card, write_card
from training.models import PretrainNet
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


def run_pretrain(
    cfg: TrainConfig,
    out: str | Path,
    device: str = "auto",
    resume: bool = False,
    stop_after: int = 0,
    keep_every: int = 0,
) -> Path:
    """Speaker-classifier pretraining of VoiceEmbedNet; returns the path of the final checkpoint.

    ``stop_after`` > 0 ends after that many epochs of this call (a time-boxed job; continue with
    ``resume``): the final checkpoint is then not written and ``last.pt`` is returned.
    ``keep_every`` > 0 also keeps ``epoch-NNN.pt`` every that many epochs: encoder snapshots to choose
    the amount of pretraining on validation speakers (train a head on each, compare validation ARE).
    """
    if keep_every < 0:
        raise ValueError(f"--keep-every must be >= 0, got {keep_every}")
    out, dev, d = start_run(out, "pretrain", config_to_dict(cfg), device, cfg.seed, cfg.threads, resume)
    data = prepare_data(cfg.data, cfg.seed)
    speakers = data.speakers_of("train")
    if len(speakers) < 2:
        raise DataError(f"{data.root}: pretraining needs >= 2 training speakers, found {len(speakers)}")
    spk_label = {s: i for i, s in enumerate(speakers)}
    train_mask = data.utt_splits == "train"
    bank = shared_bank(data, train_mask, cfg.data.augment_copies, cfg.augment, cfg.seed, d, out)
    utt_spk = data.utt_speakers[train_mask]
    labels = np.array([spk_label[s] for s in utt_spk], dtype=np.int64)
    # Hold out each speaker's last utterance (when it has >= 3) to measure classification accuracy.
    last = {s: i for i, s in enumerate(utt_spk)}
    counts = {s: int((utt_spk == s).sum()) for s in speakers}
    held = np.array([last[s] == i and counts[s] >= 3 for i, s in enumerate(utt_spk)])
    fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)

    oc = cfg.pretrain
    model = PretrainNet(len(speakers), cfg.model.classifier_scale).to(dev)
    opt = make_optimizer(model.parameters(), oc)
    sched = make_scheduler(opt, oc)
    start_epoch, best = 0, -1.0
    last_path = out / "last.pt"
    if resume and last_path.is_file():
        ck = load_checkpoint(last_path)
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        set_rng_state(ck["rng"])
        start_epoch, best = ck["epoch"] + 1, ck.get("best", -1.0)
    net = distributed(model, d)
    logger = RunLogger(out, d.main)
    t0 = time.time()
    for epoch in range(start_epoch, oc.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch * 101 + d.rank)
        rng = np.random.default_rng([cfg.seed, epoch, d.rank, 1])
        net.train()
        total, n_seen = 0.0, 0
        for batch in progress(
            shard_batches(len(fit_idx), oc.batch_size, cfg.seed, epoch, d),
            d.main,
            f"pretrain {epoch + 1}/{oc.epochs}",
        ):
            items = fit_idx[batch]
            x = np.stack(
                [
                    random_crop(
                        bank.get(i, int(rng.integers(0, bank.n_variants[i]))), cfg.data.train_frames, rng
                    )
                    for i in items
                ]
            )
            y = torch.from_numpy(labels[items]).to(dev)
            loss = F.cross_entropy(net(torch.from_numpy(x).to(dev)), y)
            optimizer_step(loss, opt, net, oc.grad_clip)
            total += float(loss.detach()) * len(items)
            n_seen += len(items)
        sched.step()
        # held-out speaker accuracy on train-length windows (a cheap monitor; 1000 frames cost 5x more)
        acc = pretrain_accuracy(model, bank, held_idx, labels, cfg.data.train_frames, dev)
        row = {
            "stage": "pretrain",
            "epoch": epoch + 1,
            "train_loss": total / max(n_seen, 1),
            "heldout_acc": acc,
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 2),
        }
        stopping = bool(stop_after) and epoch + 1 - start_epoch >= stop_after
        if d.main:
            logger.log(row)
            payload = {
                "stage": "pretrain",
                "config": config_to_dict(cfg),
                "state_dict": model.state_dict(),
                "encoder": "voiceembednet",
                "speakers": list(speakers),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "best": max(best, acc),
                "rng": rng_state(),
                "face_model": data.face_model,
            }
            if checkpoint_due(epoch + 1, cfg.checkpoint_every, oc.epochs, stopping):
                save_checkpoint(last_path, payload)
            if keep_every > 0 and (epoch + 1) % keep_every == 0:
                save_checkpoint(out / f"epoch-{epoch + 1:03d}.pt", payload)
            best = max(best, acc)
        barrier(d)
        if stopping and epoch + 1 < oc.epochs:
            logger.close()
            return last_path
    logger.close()
    final = out / "pretrain.pt"
    if d.main:
        card = build_card(
            name=cfg.name,
            stage="pretrain",
            encoder="voiceembednet",
            face_model=data.face_model,
            data=data_summary(data),
            config=config_to_dict(cfg),
            metrics={"heldout_speaker_accuracy": best},
            training={
                "epochs": oc.epochs,
                "seconds": round(time.time() - t0, 1),
                "world_size": d.world,
                "device": str(dev),
            },
        )
        ck = load_checkpoint(last_path)
        ck["model_card"] = card
        save_checkpoint(final, ck)
        write_card(card, out)
    barrier(d)
    return final


@torch.no_grad()
def pretrain_accuracy(
    model: PretrainNet,
    bank: FeatureBank,
    idx: np.ndarray,
    labels: np.ndarray,
    n_frames: int,
    device: torch.device,
) -> float:
    """Speaker-classification accuracy on the held-out utterances ``idx`` (NaN when there are none)."""
    if len(idx) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for s in range(0, len(idx), 64):
        items = idx[s : s + 64]
        x = torch.from_numpy(np.stack([tile_frames(bank.get(i), n_frames) for i in items])).to(device)
        correct += int((model(x).argmax(1).cpu().numpy() == labels[items]).sum())
    return correct / len(idx)


def main(argv: Sequence[str] | None = None, prog: str = "python -m training.train pretrain") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    add_run_arguments(parser, "YAML file or a name in training/configs/")
    parser.add_argument(
        "--keep-every",
        type=int,
        default=0,
        metavar="N",
        help="also keep RUN_DIR/epoch-NNN.pt every N epochs (encoder snapshots for "
        "choosing the amount of pretraining on validation speakers)",
    )

    def train(args: argparse.Namespace) -> Path:
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-pretrain"
        return run_pretrain(cfg, out, args.device, args.resume, args.stop_after, args.keep_every)

    return run_command(parser, argv, train)


if __name__ == "__main__":
    raise SystemExit(main())
