"""PyTorch models of the supervised framework: VoiceEmbedNet, the speaker classifier, the supervised head.

Paper: Wu, Hsu, Neumann, "Cross-Modal Perceptionist" (CVPR 2022), Sec. 3.1 and the supplementary material:
the voice encoder is the VoiceEmbedNet of Wen et al. ("Reconstructing faces from voices", NeurIPS 2019),
pretrained as a speaker classifier and kept frozen; the supervised head is dropout 0.2 + linear layers
to the 3DMM parameters (scale, 40 identity, 10 expression), trained on whitened targets.

`VoiceToParams` is the graph `export/` turns into ONNX: features (batch, time, 64) -> params (batch, 1+K+E),
un-whitened. No data-dependent Python control flow in any forward.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from training.encoders import ge2e

# Paper numbers (VoiceEmbedNet of Wen et al. 2019, as used by Wu et al. 2022): input 64 log-mel channels,
# conv channels 256, 384, 576, 864, embedding 64; every conv kernel 3, stride 2, padding 1.
N_MELS = 64
VOICE_CHANNELS = (256, 384, 576, 864)
EMBED_DIM = 64
CONV_KERNEL, CONV_STRIDE, CONV_PADDING = 3, 2, 1
# Paper Sec. 3.1: dropout 0.2 before the parameter heads; 1 scale + 40 identity + 10 expression weights.
HEAD_DROPOUT = 0.2
N_IDENTITY = 40
N_EXPRESSION = 10
# resemblyzer's GE2E speaker encoder: 256-d embeddings from 160-frame partials of 40 mels.
GE2E_DIM = 256
ENCODERS = ("voiceembednet", "ge2e")


def l2_normalise(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit-length rows (export-friendly: no data-dependent branches)."""
    return x / torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True) + eps)


class VoiceEmbedNet(nn.Module):
    """Conv1d 64->256->384->576->864->64, BN+ReLU after each but the last, mean over time, L2 norm.

    Input: features (B, T, 64) (CMVN-normalised log-mel, the ONNX contract); output: (B, 64), unit length.
    """

    def __init__(
        self,
        in_channels: int = N_MELS,
        channels: tuple[int, ...] = VOICE_CHANNELS,
        embed_dim: int = EMBED_DIM,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [
                nn.Conv1d(prev, ch, CONV_KERNEL, CONV_STRIDE, CONV_PADDING, bias=False),
                nn.BatchNorm1d(ch, affine=True),
                nn.ReLU(inplace=True),
            ]
            prev = ch
        layers.append(nn.Conv1d(prev, embed_dim, CONV_KERNEL, CONV_STRIDE, CONV_PADDING, bias=True))
        self.layers = nn.Sequential(*layers)
        self.embed_dim = embed_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layers(features.transpose(1, 2))  # (B, 64, T) -> (B, D, T/32)
        return l2_normalise(x.mean(dim=2))


class VoiceEmbedNet2d(nn.Module):
    """The same function as a :class:`VoiceEmbedNet`, computed with (1 x k) Conv2d layers: the export form.

    ONNX Runtime's CPU convolutions are faster in 2-D (its NCHWc kernels) than in 1-D (docs/runtime.md).
    Weights are shared with ``net``.
    """

    def __init__(self, net: VoiceEmbedNet) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in net.layers:
            if isinstance(layer, nn.Conv1d):
                conv = nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    (1, layer.kernel_size[0]),
                    (1, layer.stride[0]),
                    (0, layer.padding[0]),
                    bias=layer.bias is not None,
                )
                conv.weight = nn.Parameter(layer.weight.detach().unsqueeze(2), requires_grad=False)
                if layer.bias is not None:
                    conv.bias = layer.bias
                layers.append(conv)
            elif isinstance(layer, nn.BatchNorm1d):
                norm = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine)
                norm.load_state_dict(layer.state_dict())
                layers.append(norm)
            else:
                layers.append(layer)
        self.layers = nn.Sequential(*layers)
        self.embed_dim = net.embed_dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layers(features.transpose(1, 2).unsqueeze(2))  # (B, 64, 1, T) -> (B, D, 1, T/32)
        return l2_normalise(x.mean(dim=(2, 3)))


def export_form(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (eval mode) with every VoiceEmbedNet inside replaced by its 2-D form."""
    if isinstance(module, VoiceEmbedNet):
        return VoiceEmbedNet2d(module).eval()
    out = copy.deepcopy(module).eval()
    for child in list(out.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, VoiceEmbedNet):
                setattr(child, attr, VoiceEmbedNet2d(sub).eval())
    return out


class GE2EPooled(nn.Module):
    """The frozen GE2E encoder over partials: mels (B, P, 160, 40) -> mean over partials -> L2 norm.

    ``pretrained`` loads the weights shipped in ``resemblyzer``; otherwise they come from a checkpoint.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.encoder = ge2e.load_pretrained() if pretrained else ge2e.GE2EEncoder().freeze()
        self.embed_dim = GE2E_DIM

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return self.encoder(mels)


def build_encoder(name: str, pretrained: bool = True) -> nn.Module:
    """``voiceembednet`` or ``ge2e``."""
    if name == "voiceembednet":
        return VoiceEmbedNet()
    if name == "ge2e":
        return GE2EPooled(pretrained)
    raise ValueError(f"unknown encoder {name!r}; accepted: {', '.join(ENCODERS)}")


class SpeakerClassifier(nn.Module):
    """Pretraining head: cosine-softmax speaker classifier on the unit-length embedding.

    The embedding is L2-normalised, so plain logits would be bounded to [-|w|, |w|]; a fixed scale
    (``scale``) lets cross-entropy reach confident predictions.
    """

    def __init__(self, embed_dim: int, n_speakers: int, scale: float = 16.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_speakers, embed_dim) * 0.01)
        self.scale = scale

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * embedding @ l2_normalise(self.weight).t()


class PretrainNet(nn.Module):
    """VoiceEmbedNet + speaker classifier (cross-entropy pretraining)."""

    def __init__(self, n_speakers: int, scale: float = 16.0) -> None:
        super().__init__()
        self.encoder = VoiceEmbedNet()
        self.classifier = SpeakerClassifier(self.encoder.embed_dim, n_speakers, scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(features))


class SupervisedHead(nn.Module):
    """Dropout 0.2 + linear heads for scale (1), identity (K) and expression (E); outputs whitened params."""

    def __init__(
        self,
        embed_dim: int,
        n_identity: int = N_IDENTITY,
        n_expression: int = N_EXPRESSION,
        dropout: float = HEAD_DROPOUT,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.scale = nn.Linear(embed_dim, 1)
        self.identity = nn.Linear(embed_dim, n_identity)
        self.expression = nn.Linear(embed_dim, n_expression)
        self.n_params = 1 + n_identity + n_expression

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        x = self.dropout(embedding)
        return torch.cat([self.scale(x), self.identity(x), self.expression(x)], dim=1)


class VoiceToParams(nn.Module):
    """Frozen encoder + supervised head + de-whitening: the exported graph (un-whitened params out)."""

    def __init__(
        self, encoder: nn.Module, head: SupervisedHead, param_mean: torch.Tensor, param_std: torch.Tensor
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.register_buffer("param_mean", torch.as_tensor(param_mean, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("param_std", torch.as_tensor(param_std, dtype=torch.float32).reshape(1, -1))

    def dewhiten(self, whitened: torch.Tensor) -> torch.Tensor:
        return whitened * self.param_std + self.param_mean

    def whiten(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self.param_mean) / self.param_std

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.dewhiten(self.head(embedding))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.from_embedding(self.encoder(inputs))


def build_voice_to_params(
    encoder_name: str,
    n_identity: int,
    n_expression: int,
    dropout: float,
    param_mean: torch.Tensor,
    param_std: torch.Tensor,
    pretrained: bool = False,
) -> VoiceToParams:
    """A fresh VoiceToParams (weights to be loaded from a checkpoint, or ``pretrained`` GE2E)."""
    encoder = build_encoder(encoder_name, pretrained)
    head = SupervisedHead(encoder.embed_dim, n_identity, n_expression, dropout)
    return VoiceToParams(encoder, head, param_mean, param_std)


def vertices_torch(
    params: torch.Tensor, mean: torch.Tensor, identity_basis: torch.Tensor, expression_basis: torch.Tensor
) -> torch.Tensor:
    """Torch twin of ``FaceModel.vertices_from_params`` for the vertex loss: (B, 1+K+E) -> (B, N*3).

    ``identity_basis`` (K, N*3), ``expression_basis`` (E, N*3), ``mean`` (N*3,), flattened.
    """
    k = identity_basis.shape[0]
    shape = mean + params[:, 1 : 1 + k] @ identity_basis + params[:, 1 + k :] @ expression_basis
    return params[:, :1] * shape


class MeshDecoder(nn.Module):
    """Params (B, 1+K+E) -> flat vertices (B, N*3) of a FaceModel set to predict K identity and E
    expression weights (``vertices_torch`` with the model's bases as buffers)."""

    def __init__(self, face_model) -> None:
        super().__init__()
        k, e = face_model.n_identity, face_model.n_expression

        def buffer(x) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

        self.register_buffer("mean", buffer(face_model.mean.reshape(-1)))
        self.register_buffer("ident", buffer(face_model.identity_basis[:k].reshape(k, -1)))
        self.register_buffer("expr", buffer(face_model.expression_basis[:e].reshape(e, -1)))

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        return vertices_torch(params, self.mean, self.ident, self.expr)


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm statistics and dropout fixed)."""
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module
