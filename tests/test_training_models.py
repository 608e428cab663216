"""VoiceEmbedNet matches the paper's layer list; heads, whitening and the vertex twin behave."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import assert_close  # noqa: E402
from training import models  # noqa: E402

pytestmark = pytest.mark.torch

# The paper's VoiceEmbedNet (Wu et al. 2022 / Wen et al. 2019), written out independently of the code.
PAPER_CHANNELS = [64, 256, 384, 576, 864, 64]


def test_voiceembednet_layers_match_the_paper():
    net = models.VoiceEmbedNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert [c.in_channels for c in convs] == PAPER_CHANNELS[:-1]
    assert [c.out_channels for c in convs] == PAPER_CHANNELS[1:]
    assert all(c.kernel_size == (3,) and c.stride == (2,) and c.padding == (1,) for c in convs)
    assert [c.bias is not None for c in convs] == [False] * 4 + [True]
    assert [b.num_features for b in bns] == PAPER_CHANNELS[1:-1]
    # order: conv, BN, ReLU x4, then the last conv alone
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Conv1d", "BatchNorm1d", "ReLU"] * 4 + ["Conv1d"]
    expected = sum(a * b * 3 for a, b in zip(PAPER_CHANNELS[:-1], PAPER_CHANNELS[1:], strict=True))
    expected += 64 + 2 * sum(PAPER_CHANNELS[1:-1])  # last bias + BN affine
    assert sum(p.numel() for p in net.parameters()) == expected == 2_670_720


@pytest.mark.parametrize("frames", [37, 300, 1000])
def test_voiceembednet_embeds_any_length_to_unit_vectors(frames):
    net = models.VoiceEmbedNet().eval()
    x = torch.randn(3, frames, 64)
    emb = net(x)
    assert emb.shape == (3, 64)
    assert_close(emb.norm(dim=1).detach().numpy(), np.ones(3), atol=1e-5)
    # (batch, time, 64) contract: a batch of one gives the same embedding as inside a batch (eval mode)
    assert_close(net(x[1:2]).detach().numpy(), emb[1:2].detach().numpy(), atol=1e-5)


def test_speaker_classifier_and_head_shapes():
    pre = models.PretrainNet(n_speakers=7)
    logits = pre(torch.randn(4, 200, 64))
    assert logits.shape == (4, 7)
    assert float(logits.detach().abs().max()) <= pre.classifier.scale + 1e-4  # cosine logits: bounded
    head = models.SupervisedHead(64, 40, 10)
    assert head.dropout.p == 0.2
    assert head(torch.randn(5, 64)).shape == (5, 51)


def test_voice_to_params_dewhitens_and_round_trips():
    torch.manual_seed(0)
    mean, std = torch.randn(51), torch.rand(51) + 0.5
    model = models.build_voice_to_params("voiceembednet", 40, 10, 0.2, mean, std).eval()
    x = torch.randn(2, 400, 64)
    with torch.no_grad():
        white = model.head(model.encoder(x))
        out = model(x)
    assert_close(out.numpy(), (white * std + mean).numpy(), atol=1e-5)
    assert_close(model.whiten(out).numpy(), white.numpy(), atol=1e-4)
    assert_close(model.dewhiten(model.whiten(out)).numpy(), out.numpy(), atol=1e-5)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="voiceembednet, ge2e"):
        models.build_encoder("wav2vec")


def test_vertices_torch_matches_the_face_model(assets_dir):
    from voice2mesh.facemodel import load_face_model

    fm = load_face_model("ict")
    params = fm.sample_params(3, np.random.default_rng(0))
    k, e = fm.n_identity, fm.n_expression
    v = models.vertices_torch(
        torch.from_numpy(params),
        torch.from_numpy(fm.mean.reshape(-1)),
        torch.from_numpy(fm.identity_basis[:k].reshape(k, -1)),
        torch.from_numpy(fm.expression_basis[:e].reshape(e, -1)),
    )
    assert_close(v.numpy().reshape(3, -1, 3), fm.vertices_from_params(params), atol=1e-3)


def test_vertex_loss_through_the_gram_matrix_equals_decoded_vertices(assets_dir):
    from training.losses import VertexLoss
    from voice2mesh.facemodel import load_face_model

    fm = load_face_model("ict")
    rng = np.random.default_rng(1)
    p, q = fm.sample_params(4, rng), fm.sample_params(4, rng)
    loss = VertexLoss(fm, fm.n_identity, fm.n_expression, fm.sample_params(50, rng))
    direct = np.mean((fm.vertices_from_params(p).astype(np.float64) - fm.vertices_from_params(q)) ** 2)
    got = float(loss(torch.from_numpy(p), torch.from_numpy(q))) * loss.norm
    assert got == pytest.approx(direct, rel=1e-3)


@pytest.mark.parametrize("frames", [1000, 37])
def test_export_form_computes_the_same_function_in_2d(frames):
    torch.manual_seed(1)
    model = models.build_voice_to_params("voiceembednet", 40, 10, 0.2, torch.zeros(51), torch.ones(51)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    twin = models.export_form(model)
    assert not any(isinstance(m, (torch.nn.Conv1d, models.VoiceEmbedNet)) for m in twin.modules())
    assert any(isinstance(m, models.VoiceEmbedNet) for m in model.modules())  # the original is untouched
    x = torch.randn(3, frames, 64)
    with torch.no_grad():
        assert_close(twin(x).numpy(), model(x).numpy(), atol=1e-5)
