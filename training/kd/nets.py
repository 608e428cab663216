"""Networks of the KD framework: the generator, the face embedding net (discriminator), the image regressor
used as the ICT teacher and as the student, and the export graph voice -> generator -> student -> params.

Image convention everywhere: float (B, 3, H, W), RGB, values in [-1, 1] (``to_unit_range``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.models import l2_normalise


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return images_uint8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to ``size`` x ``size`` (no-op when it already is; sizes are static: export-safe)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class Generator(nn.Module):
    """Voice embedding (B, D) -> face (B, 3, S, S), S = 4 * 2**(len(channels) - 1).

    ConvTranspose D->c0 (k4 s1: 1x1 -> 4x4), then c_i -> c_{i+1} (k4 s2 p1: doubling), ReLU after each,
    then a 1x1 conv to RGB and tanh (images live in [-1, 1]). The paper's channels: 1024, 512, 256, 128, 64.
    Training adds ``noise_std`` * N(0, 1) to the embedding and re-normalises it to unit length.
    """

    def __init__(
        self,
        embed_dim: int = 64,
        channels: tuple[int, ...] = (1024, 512, 256, 128, 64),
        noise_std: float = 0.05,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ConvTranspose2d(embed_dim, channels[0], 4, 1, 0), nn.ReLU(inplace=True)]
        for a, b in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(channels[-1], 3, 1, 1, 0))
        self.layers = nn.Sequential(*layers)
        self.noise_std = noise_std
        self.image_size = 4 * 2 ** (len(channels) - 1)

    def forward(self, embedding: torch.Tensor, noise: bool = False) -> torch.Tensor:
        if noise and self.noise_std > 0:
            embedding = l2_normalise(embedding + self.noise_std * torch.randn_like(embedding))
        return torch.tanh(self.layers(embedding[:, :, None, None]))


class FaceEmbedNet(nn.Module):
    """Face (B, 3, S, S) -> embedding (B, embed_dim); heads: real/fake logit and identity log-probabilities.

    1x1 conv to c0, then k4 s2 p1 convs through ``channels`` (LeakyReLU 0.2), then a conv over the remaining
    spatial extent to ``embed_dim`` (Wen et al.'s FaceEmbedNet shape).
    """

    def __init__(
        self,
        n_identities: int,
        image_size: int = 64,
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        embed_dim: int = 64,
        id_feature_dim: int = 0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 1, 1, 0), nn.LeakyReLU(0.2, inplace=True)]
        for a, b in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        rest = image_size // 2 ** (len(channels) - 1)
        if rest < 1:
            raise ValueError(f"image size {image_size} too small for {len(channels)} face-embedding layers")
        layers.append(nn.Conv2d(channels[-1], embed_dim, rest, 1, 0))
        self.layers = nn.Sequential(*layers)
        self.real_fake = nn.Linear(embed_dim, 1)
        self.identity = nn.Linear(id_feature_dim or embed_dim, n_identities)
        self.external_identity = id_feature_dim > 0

    def forward(
        self, images: torch.Tensor, id_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(real/fake logits (B,), identity log-probabilities (B, n_identities)); with
        ``id_feature_dim`` > 0 the identity classifier reads ``id_features`` instead of the embedding."""
        e = F.leaky_relu(self.layers(images).flatten(1), 0.2)
        ident = self.identity(id_features if self.external_identity else e)
        return self.real_fake(e)[:, 0], F.log_softmax(ident, dim=1)


class RegressorOutput(NamedTuple):
    """What a teacher or student returns: un-whitened parameters, two feature levels for PKT and the
    network's own output (whitened, as its last layer emits it: what the distillation MSE compares)."""

    params: torch.Tensor  # (B, P)
    intermediate: torch.Tensor  # (B, C, h, w) feature map
    pooled: torch.Tensor  # (B, F) globally pooled features
    raw: torch.Tensor  # (B, R) the last layer's output


class ImageRegressor(nn.Module):
    """A small CNN image -> face parameters (the ICT teacher and the KD student).

    Four stages (conv3x3 s2 + conv3x3 s1, BatchNorm + ReLU) of width w, 2w, 4w, 8w; global average pooling;
    a linear layer to whitened parameters, de-whitened with the training statistics (buffers).
    Input: (B, 3, H, W) in [-1, 1], resized to ``input_size``.
    ``frame_scale``: image-frame units (px of the input) per face-model unit, for ``image_frame_vertices``.
    """

    frame_scale: float = 1.0

    def __init__(
        self,
        n_params: int,
        input_size: int = 64,
        width: int = 32,
        param_mean: torch.Tensor | None = None,
        param_std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.n_params = n_params
        self.width = width
        chans = (width, 2 * width, 4 * width, 8 * width)
        stages, prev = [], 3
        for c in chans:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, c, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                )
            )
            prev = c
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(prev, n_params)
        mean = (
            torch.zeros(n_params) if param_mean is None else torch.as_tensor(param_mean, dtype=torch.float32)
        )
        std = torch.ones(n_params) if param_std is None else torch.as_tensor(param_std, dtype=torch.float32)
        self.register_buffer("param_mean", mean.reshape(1, -1).clone())
        self.register_buffer("param_std", std.reshape(1, -1).clone())

    def forward_features(self, images: torch.Tensor) -> RegressorOutput:
        x = resize(images, self.input_size)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        pooled = x.mean(dim=(2, 3))
        raw = self.head(pooled)
        return RegressorOutput(raw * self.param_std + self.param_mean, feats[2], pooled, raw)

    def image_frame_vertices(self, out: RegressorOutput, vertices: torch.Tensor) -> torch.Tensor:
        """Flat vertices (B, N*3) decoded from ``out.params`` -> the same in input-image px (frontal)."""
        return vertices * self.frame_scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).params


class KDInference(nn.Module):
    """The exported KD graph: features (B, T, 64) -> VoiceEmbedNet -> generator -> student -> params."""

    def __init__(self, encoder: nn.Module, generator: Generator, student: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.student = student

    def faces(self, features: torch.Tensor) -> torch.Tensor:
        """The generated faces (B, 3, S, S) in [-1, 1] (no noise at inference)."""
        return self.generator(self.encoder(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.student(self.faces(features))
