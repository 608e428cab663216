"""Training CLI: ``python -m training.train pretrain|supervised --config X.yaml [--out RUN_DIR] [--resume]``.

- ``pretrain``: VoiceEmbedNet as a speaker classifier (cross-entropy) on the training speakers.
- ``supervised``: the frozen encoder (a pretrain checkpoint or GE2E) + SupervisedHead on whitened
  targets; loss = param_weight * L2(whitened params) + vertex_weight * L2(vertices) / prior variance.

Runs on CPU or CUDA (``--device``), single process or ``torchrun --nproc_per_node N`` (DDP: gloo on CPU,
nccl on CUDA). Checkpoints hold the model, optimizer, scheduler, epoch and RNG states (``--resume``),
and a model card is written next to each (``model_card.md`` / ``model_card.json``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.config import TrainConfig, apply_overrides, config_from_dict, config_to_dict, load_config
from training.data import (
    DataError,
    FeatureBank,
    VoiceFaceData,
    build_feature_bank,
    load_dataset,
    load_waveform,
    random_crop,
    tile_frames,
)
from training.modelcard import build_card, write_card
from training.models import (
    PretrainNet,
    SupervisedHead,
    VoiceEmbedNet,
    VoiceToParams,
    build_encoder,
    freeze,
)
from training.torchfile import read_torch_file

STAGES = ("pretrain", "supervised")
STD_FLOOR = 1e-6


# ---------------------------------------------------------------------------------------------------
# environment
@dataclass
class Dist:
    """Process-group facts (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available). Never hard-codes ``.cuda()``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device; use cpu or auto")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; accepted: cpu, cuda, auto")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


# ---------------------------------------------------------------------------------------------------
# optimisation
def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch LR factor: linear warm-up, then cosine to 0, step decay, or constant."""
    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "cosine":
            span = max(1, cfg.epochs - cfg.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
        if cfg.schedule == "step":
            return cfg.gamma ** (epoch // max(1, cfg.step_size))
        if cfg.schedule == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {cfg.schedule!r}; accepted: cosine, step, constant")

    factor(0)  # validate the schedule name now
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def shard_batches(n: int, batch_size: int, seed: int, epoch: int, d: Dist) -> list[np.ndarray]:
    """The epoch's shuffled indices, this rank's equal share, cut into batches (same count on every rank)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    per_rank = len(perm) // d.world
    mine = perm[d.rank * per_rank:(d.rank + 1) * per_rank] if d.world > 1 else perm
    bs = max(1, batch_size // d.world)
    return [mine[i:i + bs] for i in range(0, len(mine), bs)]


class RunLogger:
    """CSV + TensorBoard logs of one run (main process only)."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.csv_path = out / "log.csv"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        for k, v in row.items():
            if isinstance(v, int | float) and k != "epoch":
                self.tb.add_scalar(f"{row.get('stage', 'train')}/{k}", v, row["epoch"])
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, disable=not sys.stderr.isatty())


# ---------------------------------------------------------------------------------------------------
# data preparation
def prepare_data(cfg: TrainConfig) -> VoiceFaceData:
    if not cfg.data.path:
        raise DataError("config data.path is empty: give the dataset (e.g. --set data.path=data/synthvox)")
    data = load_dataset(cfg.data.kind, cfg.data.path, cfg.data.face_model)
    data = data.limit_per_speaker(cfg.data.max_utterances_per_speaker)
    return data.with_val_split(cfg.data.val_fraction, cfg.seed)


def data_summary(data: VoiceFaceData) -> dict[str, Any]:
    return {"name": data.name, "kind": data.kind, "path": str(data.root), "synthetic": data.synthetic,
            "face_model": data.face_model, "n_train_speakers": len(data.speakers_of("train")),
            "n_val_speakers": len(data.speakers_of("val")),
            "n_train_utterances": int((data.utt_splits == "train").sum()),
            "meta": {k: v for k, v in data.meta.items() if isinstance(v, str | int | float | bool)}}


def cache_dir_for(out: Path) -> Path:
    """Feature/embedding caches live next to the run (``RUN_DIR/../cache``, shared by sibling runs)."""
    return out.parent / "cache"


def shared_bank(data: VoiceFaceData, cfg: TrainConfig, mask: np.ndarray, copies: int, d: Dist,
                out: Path) -> FeatureBank:
    """Rank 0 builds the feature cache, the others wait and read it."""
    if d.main:
        bank = build_feature_bank(data, cache_dir_for(out), mask, copies, cfg.augment, cfg.seed)
    barrier(d)
    if not d.main:
        bank = build_feature_bank(data, cache_dir_for(out), mask, copies, cfg.augment, cfg.seed,
                                  progress=False)
    return bank


# ---------------------------------------------------------------------------------------------------
# checkpoints
def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint; FileNotFoundError, or RuntimeError when the file is not readable."""
    try:
        return read_torch_file(path, "checkpoint")
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _restore(path: Path, state_key: str, module: nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Load a ``last.pt`` into ``module`` (its ``state_key`` entry), the optimiser, the scheduler and
    the random generators; returns the checkpoint, for the loop's own counters."""
    ck = load_checkpoint(path)
    module.load_state_dict(ck[state_key])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    return ck


def _optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, net: nn.Module, grad_clip: float) -> None:
    """Backward, gradient-norm clipping when ``grad_clip > 0``, one optimiser step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------------
# pretraining
def run_pretrain(cfg: TrainConfig, out: Path, device: torch.device, d: Dist, resume: bool = False,
                 stop_after: int = 0, keep_every: int = 0) -> Path:
    """Speaker-classifier pretraining of VoiceEmbedNet; returns the path of the final checkpoint.

    ``keep_every`` > 0 also keeps ``epoch-NNN.pt`` every that many epochs: encoder snapshots to choose
    the amount of pretraining on validation speakers (train a head on each, compare validation ARE).
    """
    data = prepare_data(cfg)
    speakers = data.speakers_of("train")
    if len(speakers) < 2:
        raise DataError(f"{data.root}: pretraining needs >= 2 training speakers, found {len(speakers)}")
    spk_label = {s: i for i, s in enumerate(speakers)}
    train_mask = data.utt_splits == "train"
    bank = shared_bank(data, cfg, train_mask, cfg.data.augment_copies, d, out)
    utt_spk = data.utt_speakers[train_mask]
    labels = np.array([spk_label[s] for s in utt_spk], dtype=np.int64)
    # Hold out each speaker's last utterance (when it has >= 3) to measure classification accuracy.
    last = {s: i for i, s in enumerate(utt_spk)}
    counts = {s: int((utt_spk == s).sum()) for s in speakers}
    held = np.array([last[s] == i and counts[s] >= 3 for i, s in enumerate(utt_spk)])
    fit_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)

    oc = cfg.pretrain
    model = PretrainNet(len(speakers), cfg.model.classifier_scale).to(device)
    opt = make_optimizer(model.parameters(), oc)
    sched = make_scheduler(opt, oc)
    start_epoch, best = 0, -1.0
    last_path = out / "last.pt"
    if resume and last_path.is_file():
        ck = _restore(last_path, "state_dict", model, opt, sched)
        start_epoch, best = ck["epoch"] + 1, ck.get("best", -1.0)
    net = nn.parallel.DistributedDataParallel(model) if d.world > 1 else model
    logger = RunLogger(out, d.main)
    t0 = time.time()
    for epoch in range(start_epoch, oc.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch * 101 + d.rank)
        rng = np.random.default_rng([cfg.seed, epoch, d.rank, 1])
        net.train()
        total, n_seen = 0.0, 0
        for batch in _progress(shard_batches(len(fit_idx), oc.batch_size, cfg.seed, epoch, d), d.main,
                               f"pretrain {epoch + 1}/{oc.epochs}"):
            items = fit_idx[batch]
            x = np.stack([random_crop(bank.get(i, int(rng.integers(0, bank.n_variants[i]))),
                                      cfg.data.train_frames, rng) for i in items])
            y = torch.from_numpy(labels[items]).to(device)
            loss = F.cross_entropy(net(torch.from_numpy(x).to(device)), y)
            _optimizer_step(loss, opt, net, oc.grad_clip)
            total += float(loss.detach()) * len(items)
            n_seen += len(items)
        sched.step()
        # held-out speaker accuracy on train-length windows (a cheap monitor; 1000 frames cost 5x more)
        acc = pretrain_accuracy(model, bank, held_idx, labels, cfg.data.train_frames, device)
        row = {"stage": "pretrain", "epoch": epoch + 1, "train_loss": total / max(n_seen, 1),
               "heldout_acc": acc, "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        if d.main:
            logger.log(row)
            payload = {"stage": "pretrain", "config": config_to_dict(cfg), "state_dict": model.state_dict(),
                       "encoder": "voiceembednet", "speakers": list(speakers), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "epoch": epoch, "best": max(best, acc),
                       "rng": rng_state(), "face_model": data.face_model}
            stopping = bool(stop_after) and epoch + 1 - start_epoch >= stop_after
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == oc.epochs or stopping:
                save_checkpoint(last_path, payload)
            if keep_every > 0 and (epoch + 1) % keep_every == 0:
                save_checkpoint(out / f"epoch-{epoch + 1:03d}.pt", payload)
            best = max(best, acc)
        barrier(d)
        if stop_after and epoch + 1 - start_epoch >= stop_after and epoch + 1 < oc.epochs:
            logger.close()
            return last_path
    logger.close()
    final = out / "pretrain.pt"
    if d.main:
        card = build_card(name=cfg.name, stage="pretrain", encoder="voiceembednet",
                          face_model=data.face_model,
                          data=data_summary(data), config=config_to_dict(cfg),
                          metrics={"heldout_speaker_accuracy": best},
                          training={"epochs": oc.epochs, "seconds": round(time.time() - t0, 1),
                                    "world_size": d.world, "device": str(device)})
        ck = load_checkpoint(last_path)
        ck["model_card"] = card
        save_checkpoint(final, ck)
        write_card(card, out)
    barrier(d)
    return final


@torch.no_grad()
def pretrain_accuracy(model: PretrainNet, bank: FeatureBank, idx: np.ndarray, labels: np.ndarray,
                      n_frames: int, device: torch.device) -> float:
    if len(idx) == 0:
        return float("nan")
    model.eval()
    correct = 0
    for s in range(0, len(idx), 64):
        items = idx[s:s + 64]
        x = torch.from_numpy(np.stack([tile_frames(bank.get(i), n_frames) for i in items])).to(device)
        correct += int((model(x).argmax(1).cpu().numpy() == labels[items]).sum())
    return correct / len(idx)


# ---------------------------------------------------------------------------------------------------
# supervised
def load_encoder(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, str]:
    """The frozen encoder of the supervised stage and a digest naming its weights (for caches)."""
    if cfg.model.encoder == "voiceembednet":
        if not cfg.model.encoder_checkpoint:
            raise ValueError("model.encoder_checkpoint is empty: the supervised stage needs a pretrained "
                             "VoiceEmbedNet (run `python -m training.train pretrain` first)")
        ck = load_checkpoint(cfg.model.encoder_checkpoint)
        enc = VoiceEmbedNet()
        state = ck["state_dict"]
        enc.load_state_dict({k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")})
        digest = file_digest(cfg.model.encoder_checkpoint)
    else:
        enc = build_encoder(cfg.model.encoder, pretrained=True)
        digest = "ge2e-resemblyzer-0.1.4"
    return freeze(enc).to(device), digest


@torch.no_grad()
def embed_voiceembednet(encoder: nn.Module, bank: FeatureBank, n_frames: int, device: torch.device,
                        batch: int = 64) -> list[np.ndarray]:
    """(variants, D) embeddings of every utterance of the bank (features tiled to ``n_frames``)."""
    items = [(u, v) for u in range(len(bank.utt_ids)) for v in range(int(bank.n_variants[u]))]
    embs = np.zeros((len(items), encoder.embed_dim), dtype=np.float32)
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        x = np.stack([tile_frames(bank.get(u, v), n_frames) for u, v in chunk])
        embs[s:s + len(chunk)] = encoder(torch.from_numpy(x).to(device)).cpu().numpy()
    out, k = [], 0
    for u in range(len(bank.utt_ids)):
        out.append(embs[k:k + int(bank.n_variants[u])])
        k += int(bank.n_variants[u])
    return out


@torch.no_grad()
def embed_ge2e(encoder: nn.Module, data: VoiceFaceData, idx: np.ndarray, copies: int, cfg: TrainConfig,
               device: torch.device, progress: bool) -> list[np.ndarray]:
    """GE2E embeddings (clean + augmented variants) straight from the waveform."""
    from training.augment import augment
    from voice2mesh.ge2e import ge2e_input

    out = []
    for i in _progress(idx, progress, "GE2E embeddings"):
        samples = load_waveform(data.utt_paths[i])
        rng = np.random.default_rng([cfg.seed, int(i), 7])
        waves = [samples] + [augment(samples, cfg.augment, rng) for _ in range(copies)]
        embs = []
        for w in waves:
            try:
                mels = ge2e_input(w)
            except ValueError:
                mels = ge2e_input(samples)  # an augmentation VAD could not read: use the clean input
            embs.append(encoder(torch.from_numpy(mels)[None].to(device))[0].cpu().numpy())
        out.append(np.stack(embs))
    return out


def embedding_bank(cfg: TrainConfig, data: VoiceFaceData, mask: np.ndarray, copies: int,
                   encoder: nn.Module, digest: str, out: Path, device: torch.device,
                   d: Dist) -> list[np.ndarray]:
    """Per-utterance (variants, D) embeddings of the frozen encoder, cached next to the run."""
    idx = np.flatnonzero(mask)
    h = hashlib.sha1(f"{digest}|{copies}|{cfg.seed}|{cfg.data.eval_frames}|{cfg.augment!r}".encode())
    for i in idx:
        h.update(f"{data.utt_ids[i]}|{data.utt_paths[i]}\n".encode())
    path = cache_dir_for(out) / f"embeddings-{cfg.model.encoder}-{h.hexdigest()[:16]}.npz"
    if d.main and not path.is_file():
        if cfg.model.encoder == "ge2e":
            embs = embed_ge2e(encoder, data, idx, copies, cfg, device, d.main)
        else:
            bank = build_feature_bank(data, cache_dir_for(out), mask, copies, cfg.augment, cfg.seed)
            embs = embed_voiceembednet(encoder, bank, cfg.data.eval_frames, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        counts = np.array([len(e) for e in embs])
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, counts=counts, data=np.concatenate(embs))
        tmp.replace(path)
    barrier(d)
    with np.load(path) as z:
        counts, flat = z["counts"], z["data"]
    return np.split(flat, np.cumsum(counts)[:-1])


class VertexLoss(nn.Module):
    """Mean squared vertex error divided by the training targets' mean per-coordinate vertex variance.

    ``v = s * (mean + B_id c_id + B_ex c_ex) = A q`` with ``A = [mean, B_id, B_ex]`` and
    ``q = [s, s c_id, s c_ex]``, so ``|v1 - v2|^2 = (q1 - q2)^T (A^T A) (q1 - q2)``: the exact vertex
    loss through a (1+K+E)^2 Gram matrix computed once, instead of decoding every vertex each step.
    """

    def __init__(self, face_model, n_identity: int, n_expression: int, train_params: np.ndarray) -> None:
        super().__init__()
        fm = face_model
        a = np.concatenate([fm.mean.reshape(1, -1), fm.identity_basis[:n_identity].reshape(n_identity, -1),
                            fm.expression_basis[:n_expression].reshape(n_expression, -1)]).astype(np.float64)
        self.n_coords = a.shape[1]
        self.register_buffer("gram", torch.from_numpy((a @ a.T / self.n_coords).astype(np.float32)))
        v = fm.vertices_from_params(train_params).reshape(len(train_params), -1)
        self.norm = float(v.var(axis=0).mean()) + 1e-12

    @staticmethod
    def lifted(params: torch.Tensor) -> torch.Tensor:
        return torch.cat([params[:, :1], params[:, :1] * params[:, 1:]], dim=1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = self.lifted(pred) - self.lifted(target)
        return ((d @ self.gram) * d).sum(dim=1).mean() / self.norm


def whitening(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training-set mean and std of the target parameters (std floored so constant columns stay finite)."""
    std = np.maximum(params.std(axis=0), STD_FLOOR)
    return params.mean(axis=0).astype(np.float32), std.astype(np.float32)


def supervised_loss(head_out: torch.Tensor, target_w: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    vloss: VertexLoss | None, cfg: TrainConfig) -> torch.Tensor:
    loss = cfg.loss.param_weight * ((head_out - target_w) ** 2).mean()
    if vloss is not None and cfg.loss.vertex_weight > 0:
        loss = loss + cfg.loss.vertex_weight * vloss(head_out * std + mean, target_w * std + mean)
    return loss


def run_supervised(cfg: TrainConfig, out: Path, device: torch.device, d: Dist, resume: bool = False,
                   stop_after: int = 0) -> Path:
    """Supervised head on the frozen encoder; returns the path of the final checkpoint (``model.pt``)."""
    from voice2mesh.facemodel import load_face_model

    data = prepare_data(cfg)
    if data.params is None:
        raise DataError(f"{data.root}: the supervised stage needs parameter targets (this data has meshes "
                        "only; fit them with training.data.fit_params_to_meshes)")
    n_params = data.params.shape[1]
    k, e = cfg.model.n_identity, cfg.model.n_expression
    if n_params != 1 + k + e:
        raise DataError(f"{data.root}: targets have {n_params} params, config expects 1 + {k} + {e}")
    encoder, digest = load_encoder(cfg, device)
    train_mask, val_mask = data.utt_splits == "train", data.utt_splits == "val"
    copies = cfg.data.augment_copies
    train_emb = embedding_bank(cfg, data, train_mask, copies, encoder, digest, out, device, d)
    val_emb = embedding_bank(cfg, data, val_mask, 0, encoder, digest, out, device, d)
    spk_idx = data.utt_speaker_index()
    train_targets = data.params[spk_idx[train_mask]]
    val_targets = data.params[spk_idx[val_mask]]
    train_speaker_params = data.params[np.unique(spk_idx[train_mask])]
    mean_np, std_np = whitening(train_speaker_params)
    mean, std = torch.from_numpy(mean_np).to(device), torch.from_numpy(std_np).to(device)
    vloss = None
    face_model = None
    if cfg.loss.vertex_weight > 0:
        face_model = load_face_model(data.face_model).set_prediction_size(k, e)
        vloss = VertexLoss(face_model, k, e, train_speaker_params).to(device)
    tw = torch.from_numpy((train_targets - mean_np) / std_np).to(device)
    vw = torch.from_numpy((val_targets - mean_np) / std_np).to(device)
    val_x = torch.from_numpy(np.stack([v[0] for v in val_emb])).to(device) if len(val_emb) else None

    oc = cfg.supervised
    head = SupervisedHead(encoder.embed_dim, k, e, cfg.model.dropout).to(device)
    opt = make_optimizer(head.parameters(), oc)
    sched = make_scheduler(opt, oc)
    start_epoch, best, best_epoch = 0, float("inf"), -1
    last_path, best_path = out / "last.pt", out / "best_head.pt"
    if resume and last_path.is_file():
        ck = _restore(last_path, "head_state_dict", head, opt, sched)
        start_epoch, best, best_epoch = ck["epoch"] + 1, ck["best"], ck["best_epoch"]
    net = nn.parallel.DistributedDataParallel(head) if d.world > 1 else head
    logger = RunLogger(out, d.main)
    t0 = time.time()
    for epoch in range(start_epoch, oc.epochs):
        torch.manual_seed(cfg.seed * 100003 + epoch * 101 + d.rank)
        rng = np.random.default_rng([cfg.seed, epoch, d.rank, 2])
        net.train()
        total, n_seen = 0.0, 0
        for batch in _progress(shard_batches(len(train_emb), oc.batch_size, cfg.seed, epoch, d), d.main,
                               f"supervised {epoch + 1}/{oc.epochs}"):
            x = np.stack([train_emb[i][rng.integers(0, len(train_emb[i]))] for i in batch])
            loss = supervised_loss(net(torch.from_numpy(x).to(device)), tw[batch], mean, std, vloss, cfg)
            _optimizer_step(loss, opt, net, oc.grad_clip)
            total += float(loss.detach()) * len(batch)
            n_seen += len(batch)
        sched.step()
        head.eval()
        with torch.no_grad():
            val = float(supervised_loss(head(val_x), vw, mean, std, vloss, cfg)) if val_x is not None else \
                total / max(n_seen, 1)
        row = {"stage": "supervised", "epoch": epoch + 1, "train_loss": total / max(n_seen, 1),
               "val_loss": val, "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        if d.main:
            logger.log(row)
            if val < best:
                best, best_epoch = val, epoch + 1
                save_checkpoint(best_path, {"head_state_dict": head.state_dict(), "epoch": epoch})
            stopping = bool(stop_after) and epoch + 1 - start_epoch >= stop_after
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == oc.epochs or stopping:
                save_checkpoint(last_path, {
                    "stage": "supervised", "config": config_to_dict(cfg),
                    "head_state_dict": head.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                    "best": best, "best_epoch": best_epoch, "rng": rng_state(),
                    "param_mean": mean_np, "param_std": std_np})
        barrier(d)
        if stop_after and epoch + 1 - start_epoch >= stop_after and epoch + 1 < oc.epochs:
            logger.close()
            return last_path
    logger.close()
    final = out / "model.pt"
    if d.main:
        head.load_state_dict(load_checkpoint(best_path)["head_state_dict"])
        model = VoiceToParams(encoder.cpu(), head.cpu().eval(), torch.from_numpy(mean_np),
                              torch.from_numpy(std_np))
        metrics = {"best_val_loss": best, "best_epoch": best_epoch}
        if val_x is not None and len(val_emb):
            try:
                metrics.update(quick_val_metrics(model, val_x.cpu(), data, val_mask, face_model, k, e))
            except (ValueError, FileNotFoundError) as exc:  # e.g. a face model without shape bases here
                metrics["val_metrics_unavailable"] = str(exc)
        card = build_card(name=cfg.name, stage="supervised", encoder=cfg.model.encoder,
                          face_model=data.face_model, data=data_summary(data), config=config_to_dict(cfg),
                          metrics=metrics,
                          training={"epochs": oc.epochs, "seconds": round(time.time() - t0, 1),
                                    "world_size": d.world, "device": str(device),
                                    "encoder_weights": digest})
        save_checkpoint(final, {
            "stage": "supervised", "config": config_to_dict(cfg), "state_dict": model.state_dict(),
            "param_mean": mean_np, "param_std": std_np, "face_model": data.face_model,
            "encoder": cfg.model.encoder, "n_identity": k, "n_expression": e, "model_card": card,
            "input": "features (batch, time, 64)" if cfg.model.encoder == "voiceembednet"
            else "mels (batch, partials, 160, 40)"})
        write_card(card, out)
    barrier(d)
    return final


def quick_val_metrics(model: VoiceToParams, val_x: torch.Tensor, data: VoiceFaceData, val_mask: np.ndarray,
                      face_model, k: int, e: int) -> dict[str, float]:
    """Validation ARE/ER/... of the final model (speaker-averaged) for the model card."""
    from voice2mesh.facemodel import load_face_model
    from voice2mesh.metrics import aggregate_by_speaker, ratio_errors

    fm = face_model or load_face_model(data.face_model).set_prediction_size(k, e)
    with torch.no_grad():
        pred = model.from_embedding(val_x).numpy()
    spk = data.utt_speakers[val_mask]
    target = data.params[data.utt_speaker_index()[val_mask]]
    errs = ratio_errors(fm.vertices_from_params(pred), fm.vertices_from_params(target), fm)
    return {f"val_{k_}": v for k_, v in aggregate_by_speaker(errs, spk).items()}


def load_voice_to_params(path: str | Path) -> tuple[VoiceToParams, dict[str, Any]]:
    """A trained ``model.pt`` as an eval-mode VoiceToParams (CPU) and its checkpoint dict."""
    from training.models import build_voice_to_params

    ck = load_checkpoint(path)
    if ck.get("stage") != "supervised" or "state_dict" not in ck:
        raise ValueError(f"{path}: not a supervised model checkpoint (stage={ck.get('stage')!r}); "
                         "pass the model.pt a `training.train supervised` run wrote")
    cfg = config_from_dict(ck["config"])
    model = build_voice_to_params(ck["encoder"], ck["n_identity"], ck["n_expression"], cfg.model.dropout,
                                  torch.from_numpy(ck["param_mean"]), torch.from_numpy(ck["param_std"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck


# ---------------------------------------------------------------------------------------------------
# CLI
def run(stage: str, cfg: TrainConfig, out: str | Path, device: str = "auto", resume: bool = False,
        stop_after: int = 0, keep_every: int = 0) -> Path:
    """One stage of training (what the CLI calls); returns the final checkpoint path.

    ``stop_after`` > 0 ends the process after that many epochs of this call (a time-boxed job; continue
    with ``resume``); the final checkpoint is then not written and ``last.pt`` is returned.
    ``keep_every`` > 0 (pretrain only) keeps ``epoch-NNN.pt`` snapshots every that many epochs.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; accepted: {', '.join(STAGES)}")
    if keep_every and stage != "pretrain":
        raise ValueError("--keep-every applies to the pretrain stage only")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    d = init_distributed(dev)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + d.rank)
    out = Path(out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in ("log.csv", "tensorboard"):
                p = out / stale
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        import yaml

        (out / f"{stage}_config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    barrier(d)
    if stage == "pretrain":
        return run_pretrain(cfg, out, dev, d, resume, stop_after, keep_every)
    return run_supervised(cfg, out, dev, d, resume, stop_after)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", required=True, help="YAML file or a name in training/configs/")
    parser.add_argument("--out", default=None, help="run folder (default runs/<config name>-<stage>)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--stop-after", type=int, default=0, metavar="N",
                        help="stop after N epochs of this call (time-boxed jobs; continue with --resume)")
    parser.add_argument("--keep-every", type=int, default=0, metavar="N",
                        help="pretrain: also keep RUN_DIR/epoch-NNN.pt every N epochs (encoder snapshots "
                        "for choosing the amount of pretraining on validation speakers)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set data.path=data/synthvox (repeatable)")
    args = parser.parse_args(argv)
    try:
        cfg = apply_overrides(load_config(args.config), args.overrides)
        out = Path(args.out) if args.out else Path("runs") / f"{cfg.name}-{args.stage}"
        if args.keep_every < 0:
            raise ValueError(f"--keep-every must be >= 0, got {args.keep_every}")
        path = run(args.stage, cfg, out, args.device, args.resume, args.stop_after, args.keep_every)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
