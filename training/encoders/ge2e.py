"""The pretrained GE2E speaker encoder (weights shipped in the ``resemblyzer`` wheel) as a torch module.

Architecture from Wan et al., "Generalized End-to-End Loss for Speaker Verification" (ICASSP 2018)
with the sizes documented in Resemblyzer 0.1.4's ``hparams``: a 3-layer LSTM (40 -> 256), the last
layer's final hidden state through Linear(256, 256) + ReLU, L2-normalised per partial utterance.
An utterance embedding is the L2-normalised mean of its partial embeddings.

Inputs come from :mod:`voice2mesh.ge2e` (the numpy front end): ``(B, P, 160, 40)`` mel partials.
The weights are read from the installed package's folder without importing the package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voice2mesh.ge2e import DEFAULT_CONFIG, GE2EFrontEndConfig, ge2e_input

PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
LICENCE = "Apache-2.0 (Resemblyzer 0.1.4, Resemble AI / Corentin Jemine)"


@dataclass(frozen=True)
class GE2EConfig:
    """Sizes of the GE2E network (Resemblyzer 0.1.4 ``hparams``: model_* and mel_n_channels)."""

    n_mels: int = 40
    hidden_size: int = 256
    embedding_size: int = 256
    num_layers: int = 3


def pretrained_weights_path() -> Path:
    """Where the installed ``resemblyzer`` package keeps ``pretrained.pt`` (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the GE2E encoder needs the pretrained weights shipped in the 'resemblyzer' package, which is "
            "not installed; install it without its pinned dependencies: "
            "`pip install --no-deps resemblyzer==0.1.4`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    folders = list(spec.submodule_search_locations)
    raise FileNotFoundError(
        f"the 'resemblyzer' package at {folders} holds no {WEIGHTS_FILE}; "
        "reinstall it (`pip install --no-deps --force-reinstall resemblyzer==0.1.4`)"
    )


class GE2EEncoder(nn.Module):
    """GE2E speaker encoder: ``(B, P, 160, 40)`` mel partials -> ``(B, 256)`` unit-norm embeddings."""

    def __init__(self, config: GE2EConfig = GE2EConfig()) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(config.n_mels, config.hidden_size, config.num_layers, batch_first=True)
        self.linear = nn.Linear(config.hidden_size, config.embedding_size)

    @property
    def embedding_size(self) -> int:
        """Width of the output embedding."""
        return self.config.embedding_size

    def embed_partials(self, mels: torch.Tensor) -> torch.Tensor:
        """``(N, T, 40)`` -> ``(N, 256)`` unit-norm embeddings of each partial utterance."""
        _, (hidden, _) = self.lstm(mels)
        return F.normalize(F.relu(self.linear(hidden[-1])), dim=-1, eps=1e-12)

    def forward(self, mels: torch.Tensor, partial_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, P, T, 40)`` -> ``(B, 256)``: L2-normalised mean of the partial embeddings.

        ``partial_mask`` (B, P) bool marks real partials when utterances with different partial
        counts are padded into one batch; padded partials are left out of the mean.
        """
        if not torch.jit.is_tracing() and (mels.dim() != 4 or mels.shape[-1] != self.config.n_mels):
            raise ValueError(
                "GE2EEncoder expects mels of shape (batch, partials, frames, "
                f"{self.config.n_mels}), got {tuple(mels.shape)}"
            )
        b, p = mels.shape[0], mels.shape[1]
        partial = self.embed_partials(mels.reshape(b * p, mels.shape[2], mels.shape[3])).reshape(b, p, -1)
        if partial_mask is None:
            pooled = partial.mean(dim=1)
        else:
            weights = partial_mask.to(partial.dtype).unsqueeze(-1)
            pooled = (partial * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1, eps=1e-12)

    def freeze(self) -> GE2EEncoder:
        """No gradients, eval mode kept by :meth:`train` (the encoder is used frozen)."""
        for param in self.parameters():
            param.requires_grad_(False)
        self._frozen = True
        return self.eval()

    def train(self, mode: bool = True) -> GE2EEncoder:
        """Like ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        return super().train(False if getattr(self, "_frozen", False) else mode)

    @torch.no_grad()
    def embed_samples(
        self, samples: np.ndarray, front_end: GE2EFrontEndConfig = DEFAULT_CONFIG
    ) -> np.ndarray:
        """Raw float32 16 kHz samples -> (256,) embedding, through :func:`voice2mesh.ge2e.ge2e_input`."""
        mels = torch.from_numpy(ge2e_input(samples, front_end))[None]
        device = next(self.parameters()).device
        return self(mels.to(device))[0].cpu().numpy()


def pad_partials(items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch utterances with different partial counts: ``(B, P_max, 160, 40)`` mels and ``(B, P_max)`` mask.

    Feed both to :meth:`GE2EEncoder.forward`; padded partials are zeros and left out of the mean.
    """
    if not items:
        raise ValueError("pad_partials: no utterances given")
    shapes = {tuple(m.shape[1:]) for m in items}
    if len(shapes) != 1 or any(m.ndim != 3 for m in items):
        raise ValueError(f"pad_partials: expected (P, frames, mels) arrays of one shape, got {shapes}")
    p_max = max(len(m) for m in items)
    mels = np.zeros((len(items), p_max, *items[0].shape[1:]), np.float32)
    mask = np.zeros((len(items), p_max), bool)
    for i, m in enumerate(items):  # per utterance, not per frame
        mels[i, : len(m)] = m
        mask[i, : len(m)] = True
    return torch.from_numpy(mels), torch.from_numpy(mask)


def load_pretrained(path: str | Path | None = None, frozen: bool = True) -> GE2EEncoder:
    """The GE2E encoder with the weights shipped in ``resemblyzer`` (or from ``path``); frozen by default."""
    path = Path(path) if path is not None else pretrained_weights_path()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"could not read GE2E weights from {path}: {exc}") from exc
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f"{path} is not a GE2E checkpoint (expected a dict with 'model_state')")
    model = GE2EEncoder()
    wanted = set(model.state_dict())
    # The checkpoint also holds the GE2E loss's similarity weight/bias; the encoder does not use them.
    missing = wanted - set(state)
    if missing:
        raise RuntimeError(f"{path} lacks GE2E encoder weights: {sorted(missing)}")
    model.load_state_dict({k: state[k] for k in wanted})
    return model.freeze() if frozen else model
