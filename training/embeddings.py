"""Model inputs of a run, cached next to it: the run's dataset split, feature banks built once for all
processes, and the embeddings a frozen encoder gives each utterance (VoiceEmbedNet or GE2E)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.augment import augment
from training.config import AugmentConfig, DataConfig, TrainConfig
from training.data import (
    DataError,
    FeatureBank,
    VoiceFaceData,
    build_feature_bank,
    load_dataset,
    load_waveform,
    tile_frames,
)
from training.run import Dist, barrier, cache_dir_for, progress
from voice2mesh.ge2e import ge2e_input


def prepare_data(data_cfg: DataConfig, seed: int) -> VoiceFaceData:
    """The dataset a config names, limited per speaker, with a validation split of training speakers
    when the data has none."""
    if not data_cfg.path:
        raise DataError("config data.path is empty: give the dataset (e.g. --set data.path=data/synthvox)")
    data = load_dataset(data_cfg.kind, data_cfg.path, data_cfg.face_model)
    data = data.limit_per_speaker(data_cfg.max_utterances_per_speaker)
    return data.with_val_split(data_cfg.val_fraction, seed)


def data_summary(data: VoiceFaceData) -> dict[str, Any]:
    """What a model card says about the training data."""
    return {
        "name": data.name,
        "kind": data.kind,
        "path": str(data.root),
        "synthetic": data.synthetic,
        "face_model": data.face_model,
        "n_train_speakers": len(data.speakers_of("train")),
        "n_val_speakers": len(data.speakers_of("val")),
        "n_train_utterances": int((data.utt_splits == "train").sum()),
        "meta": {k: v for k, v in data.meta.items() if isinstance(v, str | int | float | bool)},
    }


def shared_bank(
    data: VoiceFaceData,
    mask: np.ndarray,
    copies: int,
    augment_cfg: AugmentConfig,
    seed: int,
    d: Dist,
    out: Path,
) -> FeatureBank:
    """The run's feature bank: rank 0 builds the cache, the other processes wait and read it."""
    if d.main:
        bank = build_feature_bank(data, cache_dir_for(out), mask, copies, augment_cfg, seed)
    barrier(d)
    if not d.main:
        bank = build_feature_bank(data, cache_dir_for(out), mask, copies, augment_cfg, seed, progress=False)
    return bank


@torch.no_grad()
def embed_voiceembednet(
    encoder: nn.Module, bank: FeatureBank, n_frames: int, device: torch.device, batch: int = 64
) -> list[np.ndarray]:
    """(variants, D) embeddings of every utterance of the bank (features tiled to ``n_frames``)."""
    items = [(u, v) for u in range(len(bank.utt_ids)) for v in range(int(bank.n_variants[u]))]
    embs = np.zeros((len(items), encoder.embed_dim), dtype=np.float32)
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        x = np.stack([tile_frames(bank.get(u, v), n_frames) for u, v in chunk])
        embs[s : s + len(chunk)] = encoder(torch.from_numpy(x).to(device)).cpu().numpy()
    out, k = [], 0
    for u in range(len(bank.utt_ids)):
        out.append(embs[k : k + int(bank.n_variants[u])])
        k += int(bank.n_variants[u])
    return out


@torch.no_grad()
def embed_ge2e(
    encoder: nn.Module,
    data: VoiceFaceData,
    idx: np.ndarray,
    copies: int,
    augment_cfg: AugmentConfig,
    seed: int,
    device: torch.device,
    show: bool,
) -> list[np.ndarray]:
    """GE2E embeddings (clean + augmented variants) straight from the waveform."""
    out = []
    for i in progress(idx, show, "GE2E embeddings"):
        samples = load_waveform(data.utt_paths[i])
        rng = np.random.default_rng([seed, int(i), 7])
        waves = [samples] + [augment(samples, augment_cfg, rng) for _ in range(copies)]
        embs = []
        for w in waves:
            try:
                mels = ge2e_input(w)
            except ValueError:
                mels = ge2e_input(samples)  # an augmentation VAD could not read: use the clean input
            embs.append(encoder(torch.from_numpy(mels)[None].to(device))[0].cpu().numpy())
        out.append(np.stack(embs))
    return out


def embedding_bank(
    cfg: TrainConfig,
    data: VoiceFaceData,
    mask: np.ndarray,
    copies: int,
    encoder: nn.Module,
    digest: str,
    out: Path,
    device: torch.device,
    d: Dist,
) -> list[np.ndarray]:
    """Per-utterance (variants, D) embeddings of the frozen encoder, cached next to the run."""
    idx = np.flatnonzero(mask)
    h = hashlib.sha1(f"{digest}|{copies}|{cfg.seed}|{cfg.data.eval_frames}|{cfg.augment!r}".encode())
    for i in idx:
        h.update(f"{data.utt_ids[i]}|{data.utt_paths[i]}\n".encode())
    path = cache_dir_for(out) / f"embeddings-{cfg.model.encoder}-{h.hexdigest()[:16]}.npz"
    if d.main and not path.is_file():
        if cfg.model.encoder == "ge2e":
            embs = embed_ge2e(encoder, data, idx, copies, cfg.augment, cfg.seed, device, d.main)
        else:
            bank = build_feature_bank(data, cache_dir_for(out), mask, copies, cfg.augment, cfg.seed)
            embs = embed_voiceembednet(encoder, bank, cfg.data.eval_frames, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        counts = np.array([len(e) for e in embs])
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # per process: runs may share a cache
        flat = np.concatenate(embs) if embs else np.zeros((0, encoder.embed_dim), np.float32)
        np.savez(tmp, counts=counts, data=flat)
        tmp.replace(path)
    barrier(d)
    with np.load(path) as z:
        counts, flat = z["counts"], z["data"]
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


@torch.no_grad()
def clean_embeddings(
    encoder: nn.Module,
    data: VoiceFaceData,
    mask: np.ndarray,
    cache_dir: Path,
    n_frames: int,
    digest: str,
    batch: int = 64,
    show: bool = False,
) -> np.ndarray:
    """(U_selected, D) VoiceEmbedNet embeddings of the clean utterances (tiled to ``n_frames``), cached
    under ``cache_dir`` by encoder digest."""
    idx = np.flatnonzero(mask)
    h = hashlib.sha1(f"{digest}|{n_frames}".encode())
    for i in idx:
        h.update(f"{data.utt_ids[i]}|{data.utt_paths[i]}\n".encode())
    path = Path(cache_dir) / f"kd-embeddings-{h.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    bank = build_feature_bank(data, cache_dir, mask, 0, progress=show)
    embs = embed_voiceembednet(encoder, bank, n_frames, torch.device("cpu"), batch)
    out = np.stack([e[0] for e in embs]) if embs else np.zeros((0, encoder.embed_dim), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out
