"""The knowledge-distillation framework (training.kd): PKT, nets, teachers, image data, configs, export, and a
tiny end-to-end run (generate -> pretrain -> teacher -> KD -> evaluate -> figure)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.config import ConfigError
from training.data import DataError
from training.kd import ddfa
from training.kd.config import PAPER, KDConfig, apply_kd_overrides, kd_config_from_dict, load_kd_config
from training.kd.data import load_identity_images, read_image_folders, read_voices_and_faces
from training.kd.nets import (
    FaceEmbedNet,
    Generator,
    ImageRegressor,
    KDInference,
    RegressorOutput,
    resize,
    to_unit_range,
)
from training.kd.pkt import pkt_loss, similarity_probabilities
from training.kd.train import triplet_indices
from training.models import VoiceEmbedNet, l2_normalise


# ----------------------------------------------------------------------------------------------- PKT
def test_pkt_2x2_by_hand():
    # first (m): orthogonal rows -> cosines [[1, 0], [0, 1]] -> kernel [[1, 1/2], [1/2, 1]]
    #            -> rows / 1.5 -> [[2/3, 1/3], [1/3, 2/3]]
    # second (t): parallel rows (different lengths) -> cosines all 1 -> kernel all 1 -> rows [1/2, 1/2]
    # loss = mean of 4 entries t log(t/m) = (2 * 0.5 log(0.5 / (2/3)) + 2 * 0.5 log(0.5 / (1/3))) / 4
    #      = (log(3/4) + log(3/2)) / 4 = log(9/8) / 4
    first = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    second = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    assert float(pkt_loss(first, second)) == pytest.approx(math.log(9 / 8) / 4, abs=1e-6)
    # swapped: t = [[2/3, 1/3], [1/3, 2/3]], m = 1/2 everywhere
    # loss = (2 * (2/3) log(4/3) + 2 * (1/3) log(2/3)) / 4
    swapped = (2 * (2 / 3) * math.log(4 / 3) + 2 * (1 / 3) * math.log(2 / 3)) / 4
    assert float(pkt_loss(second, first)) == pytest.approx(swapped, abs=1e-6)


def test_pkt_3x3_by_hand_with_the_diagonal_and_different_widths():
    # first: directions at 0, 60 and 120 degrees (scaled rows: only directions count)
    # cosines: (0,1) 1/2, (0,2) -1/2, (1,2) 1/2 -> kernel [[1, 3/4, 1/4], [3/4, 1, 3/4], [1/4, 3/4, 1]]
    # row sums 2, 5/2, 2 -> m = [[1/2, 3/8, 1/8], [3/10, 2/5, 3/10], [1/8, 3/8, 1/2]]
    first = torch.tensor([[1.0, 0.0], [1.5, 1.5 * math.sqrt(3.0)], [-2.0, 2.0 * math.sqrt(3.0)]])
    m = [[1 / 2, 3 / 8, 1 / 8], [3 / 10, 2 / 5, 3 / 10], [1 / 8, 3 / 8, 1 / 2]]
    # second (3-d features): rows e1, e2, e1 -> cosines (0,1) 0, (0,2) 1, (1,2) 0
    # kernel [[1, 1/2, 1], [1/2, 1, 1/2], [1, 1/2, 1]], row sums 5/2, 2, 5/2
    # -> t = [[2/5, 1/5, 2/5], [1/4, 1/2, 1/4], [2/5, 1/5, 2/5]]
    second = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [7.0, 0.0, 0.0]])
    t = [[2 / 5, 1 / 5, 2 / 5], [1 / 4, 1 / 2, 1 / 4], [2 / 5, 1 / 5, 2 / 5]]
    eps = 1e-7
    by_hand = sum(t[i][j] * math.log((t[i][j] + eps) / (m[i][j] + eps)) for i in range(3) for j in range(3))
    by_hand /= 9
    assert float(pkt_loss(first, second)) == pytest.approx(by_hand, rel=1e-5)


def test_pkt_similarity_rows_sum_to_one_and_gradients_reach_both_arguments():
    torch.manual_seed(0)
    p = similarity_probabilities(torch.randn(6, 4))
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, rtol=1e-6)
    t = torch.randn(16, 32)
    assert float(pkt_loss(3.0 * t, t)) == pytest.approx(0.0, abs=1e-6)  # scale-invariant kernel
    teacher = torch.randn(16, 8, 2, 2, requires_grad=True)  # a feature map, flattened inside
    student = torch.randn(16, 32, requires_grad=True)
    loss = pkt_loss(teacher, student)
    assert float(loss.detach()) > 1e-4
    loss.backward()
    for x in (teacher, student):
        assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="same batch"):
        pkt_loss(torch.randn(4, 3), torch.randn(5, 3))


def test_pkt_training_pulls_student_geometry_towards_teacher():
    torch.manual_seed(1)
    teacher = torch.randn(32, 16)
    s = torch.randn(32, 16, requires_grad=True)
    opt = torch.optim.Adam([s], lr=0.05)
    first = float(pkt_loss(teacher, s).detach())
    for _ in range(200):
        opt.zero_grad()
        loss = pkt_loss(teacher, s)
        loss.backward()
        opt.step()
    assert float(pkt_loss(teacher, s).detach()) < 0.1 * first


def test_generator_has_the_paper_layers_and_makes_64px_faces():
    g = Generator()
    convs = [m for m in g.layers if isinstance(m, torch.nn.ConvTranspose2d | torch.nn.Conv2d)]
    shapes = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]) for m in convs]
    assert shapes == [
        (64, 1024, 4, 1, 0),
        (1024, 512, 4, 2, 1),
        (512, 256, 4, 2, 1),
        (256, 128, 4, 2, 1),
        (128, 64, 4, 2, 1),
        (64, 3, 1, 1, 0),
    ]
    e = l2_normalise(torch.randn(2, 64))
    with torch.no_grad():
        img = g(e)
        assert img.shape == (2, 3, 64, 64) and float(img.abs().max()) <= 1.0
        assert torch.equal(img, g(e))  # no noise at inference
        assert not torch.equal(img, g(e, noise=True))  # 0.05 N(0, 1) noise in training
    assert g.noise_std == PAPER["noise_std"] == 0.05


def test_face_embed_net_heads():
    d = FaceEmbedNet(n_identities=5, image_size=64)
    rf, logp = d(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert rf.shape == (3,) and logp.shape == (3, 5)
    np.testing.assert_allclose(logp.exp().sum(1).detach().numpy(), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="too small"):
        FaceEmbedNet(3, image_size=8, channels=(4, 4, 4, 4, 4, 4))
    # identity classifier on external (teacher) features: gradients reach those features
    d2 = FaceEmbedNet(n_identities=4, image_size=64, id_feature_dim=10)
    feats = torch.randn(3, 10, requires_grad=True)
    _, logp2 = d2(torch.zeros(3, 3, 64, 64), feats)
    assert logp2.shape == (3, 4)
    logp2[:, 0].sum().backward()
    assert float(feats.grad.abs().sum()) > 0


def test_regressor_dewhitens_and_resizes_inputs():
    mean, std = torch.arange(5.0), torch.full((5,), 2.0)
    r = ImageRegressor(5, input_size=48, width=4, param_mean=mean, param_std=std).eval()
    torch.nn.init.zeros_(r.head.weight)
    torch.nn.init.zeros_(r.head.bias)
    out = r.forward_features(torch.zeros(2, 3, 64, 64))
    torch.testing.assert_close(out.params, mean.expand(2, 5))
    assert out.intermediate.shape == (2, 16, 6, 6) and out.pooled.shape == (2, 32)


def test_to_unit_range():
    x = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8)
    y = to_unit_range(x)
    assert y.shape == (1, 3, 1, 1)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))


def test_triplet_indices_pick_same_and_other_speakers():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pos, neg = triplet_indices(labels, np.random.default_rng(0))
    assert np.all(labels[pos] == labels) and np.all(pos != np.arange(6))
    assert np.all(labels[neg] != labels)


# -------------------------------------------------------------------------------------------- 3DDFA
def test_ddfa_loads_a_renamed_random_state_dict_and_uses_the_62d_statistics(tmp_path, assets_dir):
    stats = assets_dir / "bfm-reference" / "param_mean_std_62d_120x120.pkl"
    mean, std = ddfa.read_param_stats(stats)
    assert mean.shape == (62,) and std.shape == (62,)
    torch.manual_seed(0)
    src = ddfa.MobileNetV1(62)
    # other key names and a DataParallel-style prefix: loading goes by order and shape
    renamed = {f"module.layer{i:03d}": v for i, v in enumerate(src.state_dict().values())}
    path = tmp_path / "mb1_120x120.pth"
    torch.save(renamed, path)
    teacher = ddfa.load_ddfa_teacher(path, stats)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        p62, inter, pooled = teacher.params62(x)
        expect = src.eval()(((resize(x, 120).flip(1) * 127.5 + 127.5) - 127.5) / 128.0)
    torch.testing.assert_close(p62, expect * torch.from_numpy(std) + torch.from_numpy(mean))
    out = teacher.forward_features(x)
    assert out.params.shape == (2, 51) and torch.all(out.params[:, 0] == 1)
    torch.testing.assert_close(out.params[:, 1:], p62[:, 12:])
    pose, shp, exp = teacher.split(p62)
    assert pose.shape == (2, 3, 4) and shp.shape == (2, 40) and exp.shape == (2, 10)
    assert inter.shape[1] == 512 and pooled.shape == (2, 1024)


def test_ddfa_rejects_wrong_shapes_with_the_tensor_name(tmp_path, assets_dir):
    stats = assets_dir / "bfm-reference" / "param_mean_std_62d_120x120.pkl"
    state = dict(ddfa.MobileNetV1(62).state_dict())
    last = list(state)[-2]  # fc.weight
    state[last] = torch.zeros(99, 1024)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"fc\.weight.*\(99, 1024\)"):
        ddfa.load_ddfa_teacher(path, stats)
    bad_stats = tmp_path / "stats.pkl"
    bad_stats.write_bytes(pickle.dumps({"mean": np.zeros(10)}))
    with pytest.raises(ValueError, match="'mean' and 'std'"):
        ddfa.read_param_stats(bad_stats)
    with pytest.raises(FileNotFoundError, match="3DDFA-V2-style weights"):
        ddfa.load_ddfa_teacher(tmp_path / "missing.pth", stats)


# --------------------------------------------------------------------------------------------- data
def _png(path: Path, value: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def test_vggface_folders_and_voxceleb_layout(tmp_path):
    root = tmp_path / "Voxceleb-3D"
    (root / "vox1_meta.csv").parent.mkdir(parents=True)
    (root / "vox1_meta.csv").write_text(
        "VoxCeleb1 ID,VGGFace1 ID\nid10001,Fiona_X\nid10002,Adam_Y\nid10003,Zed_Z\n"
    )
    rng = np.random.default_rng(0)
    for vid in ("id10001", "id10002", "id10003"):
        for u in range(2):
            f = root / "fbank" / vid / "vidA" / f"{u:05d}.npy"
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, rng.normal(size=(50, 64)).astype(np.float32))
    _png(root / "vggface" / "Fiona_X" / "a.png", 10)
    _png(root / "vggface" / "Fiona_X" / "b.jpg", 20)
    _png(root / "vggface" / "Adam_Y" / "a.png", 30)
    (root / "vggface" / "Empty").mkdir()
    data, folders = read_voices_and_faces("voxceleb3d", root)
    assert folders.identities == ["Adam_Y", "Fiona_X"] and folders.count() == 3
    assert sorted(data.speaker_ids) == ["Adam_Y", "Fiona_X"]  # Zed has no face images
    assert set(data.utt_splits[data.utt_speakers == "Adam_Y"]) == {"val"}  # A-E: validation
    assert set(data.utt_splits[data.utt_speakers == "Fiona_X"]) == {"train"}
    images, labels = load_identity_images(folders, ["Fiona_X", "Adam_Y"], 16)
    assert images.shape == (3, 16, 16, 3) and labels.tolist() == [0, 0, 1]
    assert images[2, 0, 0, 0] == 30
    assert len(read_image_folders(root / "vggface", max_per_identity=1).files["Fiona_X"]) == 1


def test_image_data_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="face image folder not found"):
        read_image_folders(tmp_path / "nope")
    (tmp_path / "faces" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no identity folder with images"):
        read_image_folders(tmp_path / "faces")
    (tmp_path / "faces" / "a" / "x.png").write_bytes(b"not a png")
    folders = read_image_folders(tmp_path / "faces")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        load_identity_images(folders, ["a"], 8)


# ------------------------------------------------------------------------------------------- config
def test_configs_load_and_paper_numbers_are_the_defaults():
    cfg = KDConfig()
    assert cfg.generator.channels == (1024, 512, 256, 128, 64)
    assert (cfg.loss.mse_weight, cfg.loss.pkt_weight, cfg.loss.triplet_weight, cfg.loss.triplet_margin) == (
        0.5,
        1e4,
        1.5,
        1.0,
    )
    assert (cfg.optim.lr, cfg.optim.betas, cfg.optim.batch_size) == (2e-4, (0.5, 0.999), 64)
    for name in ("paper", "synthvox", "tiny"):
        c = load_kd_config(name)
        assert c.name.startswith("kd")
    c = apply_kd_overrides(load_kd_config("tiny"), ["optim.steps=3", "generator.channels=[8, 4]"])
    assert c.optim.steps == 3 and c.generator.channels == (8, 4)
    with pytest.raises(ConfigError, match="unknown key"):
        kd_config_from_dict({"loss": {"pkt": 1}})
    with pytest.raises(ConfigError, match="channels"):
        kd_config_from_dict({"generator": {"channels": [8, -1]}})
    with pytest.raises(ConfigError, match="teacher.kind"):
        kd_config_from_dict({"teacher": {"kind": "deca"}})
    with pytest.raises(ConfigError, match="student.batchnorm"):
        kd_config_from_dict({"student": {"batchnorm": "sync"}})
    assert (KDConfig().student.init, KDConfig().student.batchnorm) == ("random", "train")  # the paper
    synthvox = load_kd_config("synthvox")  # the CPU recipe: its switches as docs/kd.md's ablation chose them
    assert (synthvox.student.init, synthvox.student.batchnorm) == ("random", "train")
    assert (synthvox.loss.triplet_weight, synthvox.optim.ema_decay, synthvox.optim.steps) == (0.0, 0.98, 200)


def _teacher_with_statistics() -> ImageRegressor:
    """A frozen random regressor whose BatchNorm running statistics are far from the identity (as after
    training), so batch statistics and running statistics give clearly different outputs."""
    from training.models import freeze

    torch.manual_seed(0)
    t = ImageRegressor(7, input_size=32, width=4)
    for m in t.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return freeze(t)


def test_weight_average_follows_its_definition():
    """a <- d * a + (1 - d) * w for every parameter; buffers are copied from the live net."""
    from types import SimpleNamespace

    from training.kd.train import KDTrainer

    torch.manual_seed(0)
    live_g, live_s = Generator(8, (8, 4)), _teacher_with_statistics()
    for p in live_s.parameters():
        p.requires_grad_(True)
    cfg = kd_config_from_dict({"optim": {"ema_decay": 0.75}})
    obj = SimpleNamespace(cfg=cfg, generator=live_g, student=live_s)
    KDTrainer.reset_ema(obj)
    start = [p.detach().clone() for p in obj.ema["generator"].parameters()]
    with torch.no_grad():
        for p in live_g.parameters():
            p.add_(1.0)
        for m in live_s.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(2.0)
    KDTrainer.update_ema(obj)
    for a, a0, w in zip(obj.ema["generator"].parameters(), start, live_g.parameters(), strict=True):
        torch.testing.assert_close(a, 0.75 * a0 + 0.25 * w.detach())
    bn_avg = next(m for m in obj.ema["student"].modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn_live = next(m for m in live_s.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.testing.assert_close(bn_avg.running_mean, bn_live.running_mean)
    assert not any(p.requires_grad for p in obj.ema["student"].parameters())
    with pytest.raises(ConfigError, match="ema_decay"):
        kd_config_from_dict({"optim": {"ema_decay": 1.0}})


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_student_batchnorm_frozen_is_the_teacher_at_step_0_and_keeps_its_statistics(batchnorm):
    from training.kd.train import build_student

    teacher = _teacher_with_statistics()
    cfg = kd_config_from_dict({"student": {"init": "teacher", "batchnorm": batchnorm}})
    student = build_student(cfg, teacher)
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        t_out = teacher(x)
    s_out = student(x)  # training mode
    bn = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    (s_out**2).mean().backward()
    opt.step()
    student(x)
    if batchnorm == "frozen":
        torch.testing.assert_close(s_out.detach(), t_out)  # the same function as the frozen teacher
        torch.testing.assert_close(bn.running_mean, before)  # statistics untouched by training batches
        pairs = zip(student.parameters(), teacher.parameters(), strict=True)
        assert any(float((a - b).abs().max()) > 0 for a, b in pairs)  # while the weights do train
    else:
        assert float((s_out.detach() - t_out).abs().max()) > 1e-3  # batch statistics: another function
        assert float((bn.running_mean - before).abs().max()) > 0


def test_paper_student_is_a_fresh_network_of_the_teachers_architecture_in_training_mode():
    from training.kd.train import build_student

    teacher = _teacher_with_statistics()
    student = build_student(KDConfig(), teacher)  # the paper's default: init random, BatchNorm train
    assert type(student) is ImageRegressor and student.width == teacher.width
    s_state, t_state = student.state_dict(), teacher.state_dict()
    assert [(k, v.shape) for k, v in s_state.items()] == [(k, v.shape) for k, v in t_state.items()]
    torch.testing.assert_close(s_state["param_mean"], t_state["param_mean"])  # the teacher's whitening
    assert float((s_state["stages.0.0.weight"] - t_state["stages.0.0.weight"]).abs().max()) > 1e-3
    bns = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training for m in bns) and all(float(m.running_var.min()) == 1.0 for m in bns)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    big = build_student(KDConfig(), ddfa.DDFATeacher(np.zeros(62), np.ones(62)))
    assert type(big) is ddfa.DDFATeacher and big.training


def test_distillation_reaches_the_images_through_both_networks_with_the_teacher_frozen():
    from types import SimpleNamespace

    from training.kd.train import KDTrainer, build_student

    torch.manual_seed(0)
    teacher = _teacher_with_statistics()
    cfg = KDConfig()
    obj = SimpleNamespace(cfg=cfg, teacher=teacher, student=build_student(cfg, teacher))
    images = (torch.rand(8, 3, 32, 32) * 2 - 1).requires_grad_(True)
    t_out = teacher.forward_features(images)
    terms, s_out = KDTrainer.distill(obj, images, t_out)
    torch.testing.assert_close(terms["mse"], ((t_out.raw - s_out.raw) ** 2).mean())
    expected = pkt_loss(t_out.pooled, s_out.pooled) + pkt_loss(t_out.intermediate, s_out.intermediate)
    torch.testing.assert_close(terms["pkt"], expected)
    # through the teacher alone: the student's side detached, the images still get a gradient
    g_teacher = torch.autograd.grad(pkt_loss(t_out.pooled, s_out.pooled.detach()), images, retain_graph=True)
    assert float(g_teacher[0].abs().sum()) > 0
    (terms["mse"] + terms["pkt"]).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in obj.student.parameters())


def test_triplet_units_are_the_teachers_image_frame(tmp_path):
    from training.kd.teachers import TEACHER_FORMAT, load_ict_teacher
    from training.render import RenderConfig

    # ICT teacher: px of its input renders (64 px over a field of view RenderConfig.field_mm high)
    r = ImageRegressor(51, input_size=64, width=4)
    torch.save(
        {
            "format": TEACHER_FORMAT,
            "kind": "ict",
            "state_dict": r.state_dict(),
            "n_params": 51,
            "input_size": 64,
            "width": 4,
        },
        tmp_path / "teacher.pt",
    )
    teacher, _ = load_ict_teacher(tmp_path / "teacher.pt")
    assert RenderConfig().field_mm == 220.0
    out = teacher.forward_features(torch.zeros(1, 3, 64, 64))
    v = torch.tensor([[110.0, -22.0, 0.0]])  # mm
    torch.testing.assert_close(teacher.image_frame_vertices(out, v), torch.tensor([[32.0, -6.4, 0.0]]))
    # 3DDFA teacher: v' = sR v + t with the pose of its own 62 outputs; here raw 0 -> the mean pose
    mean = np.zeros(62)
    mean[:12] = [2, 0, 0, 5, 0, 2, 0, 6, 0, 0, 2, 7]  # s = 2, R = I, t = (5, 6, 7)
    big = ddfa.DDFATeacher(mean, np.ones(62))
    fake = RegressorOutput(torch.zeros(1, 51), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 62))
    got = big.image_frame_vertices(fake, torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.0, 0.5]]))
    torch.testing.assert_close(got, torch.tensor([[7.0, 10.0, 13.0, 3.0, 6.0, 8.0]]))


# ------------------------------------------------------------------------------------------- export
def test_kd_checkpoint_exports_as_one_onnx_graph(tmp_path):
    import onnxruntime as ort

    from training.checkpoints import kd_model_from_checkpoint, load_kd_model

    torch.manual_seed(0)
    module = KDInference(VoiceEmbedNet(), Generator(64, (16, 8, 8, 8, 4)), ImageRegressor(51, 64, 4)).eval()
    ck = {
        "framework": "kd",
        "stage": "kd",
        "config": {},
        "state_dict": module.state_dict(),
        "generator_arch": {"embed_dim": 64, "channels": [16, 8, 8, 8, 4], "noise_std": 0.05},
        "student_arch": {"n_params": 51, "input_size": 64, "width": 4},
    }
    path = tmp_path / "model.pt"
    torch.save(ck, path)
    rebuilt, _ = load_kd_model(path)
    x = torch.randn(2, 300, 64)
    with torch.no_grad():
        ref = module(x).numpy()
    np.testing.assert_allclose(rebuilt(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    onnx_path = tmp_path / "kd.onnx"
    with torch.no_grad():
        torch.onnx.export(
            rebuilt,
            (x,),
            str(onnx_path),
            input_names=["features"],
            output_names=["params"],
            dynamic_axes={"features": {0: "batch", 1: "time"}, "params": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["features"]
    for shape in ((2, 300, 64), (1, 1000, 64)):
        xi = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        got = sess.run(["params"], {"features": xi})[0]
        with torch.no_grad():
            np.testing.assert_allclose(got, module(torch.from_numpy(xi)).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not a KD checkpoint"):
        kd_model_from_checkpoint({"stage": "supervised"})


# ------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_kd_end_to_end(tmp_path, assets_dir, artifacts_dir):
    from training.config import apply_overrides, load_config
    from training.eval_metrics import per_utterance_metrics
    from training.kd.evaluate import predict_kd_or_none
    from training.kd.teacher import TeacherTrainConfig, train_teacher
    from training.kd.train import run_kd
    from training.pretrain import run_pretrain
    from training.synthvox.config import SynthVoxConfig
    from training.synthvox.generate import generate

    data_dir = generate(
        tmp_path / "sv",
        SynthVoxConfig(speakers=8, utterances=2, images=3, workers=1, val_fraction=0.25, test_fraction=0.25),
    )
    cfg = apply_overrides(
        load_config("tiny"), [f"data.path={data_dir}", "data.augment_copies=0", "pretrain.epochs=1"]
    )
    pre = run_pretrain(cfg, tmp_path / "runs" / "pre", "cpu")
    teacher = train_teacher(
        TeacherTrainConfig(renders=64, heldout=16, epochs=1, width=4, batch_size=16),
        tmp_path / "teacher",
        progress=False,
    )
    kd_cfg = apply_kd_overrides(
        load_kd_config("tiny"),
        [
            f"data.path={data_dir}",
            f"data.encoder_checkpoint={pre}",
            f"teacher.checkpoint={teacher}",
            "optim.d_warmup_steps=2",
            "optim.eval_every=2",
            "discriminator.identity_features=teacher",
        ],
    )
    model = run_kd(kd_cfg, tmp_path / "runs" / "kd", "cpu", progress=False)
    card = (tmp_path / "runs" / "kd" / "model_card.md").read_text()
    assert "the KD losses use no 3D targets" in card and "logged every 2 steps" in card  # the exact claim
    log = (tmp_path / "runs" / "kd" / "log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 3 and "pkt" in log[0] and "triplet" in log[0]
    # validation monitoring: mean ARE of the 2 validation speakers at steps 2, 4 and 6 (positive, finite)
    import csv

    rows = list(csv.DictReader((tmp_path / "runs" / "kd" / "log.csv").open()))
    vals = [float(r["val_are"]) for r in rows]
    assert all(np.isfinite(v) and 0 < v < 1 for v in vals)
    assert float(rows[0]["val_are_baseline"]) > 0
    assert np.asarray(Image.open(tmp_path / "runs" / "kd" / "val_faces.png")).shape[0] == 64
    # resume: two more steps from last.pt continue the step count
    more = apply_kd_overrides(kd_cfg, ["optim.steps=8", "optim.ema_decay=0.9"])  # EMA starts at resume
    run_kd(more, tmp_path / "runs" / "kd", "cpu", resume=True, progress=False)
    assert len((tmp_path / "runs" / "kd" / "log.csv").read_text().strip().splitlines()) == 1 + 4
    # the cascade baseline beside model.pt: the same generator read by the frozen teacher
    from training.checkpoints import load_kd_model
    from training.kd.teachers import load_ict_teacher

    cascade, _ = load_kd_model(tmp_path / "runs" / "kd" / "cascade.pt")
    frozen, _ = load_ict_teacher(teacher)
    x = torch.randn(2, 40, 64)
    with torch.no_grad():
        torch.testing.assert_close(cascade(x), frozen(cascade.faces(x)))

    from training.data import load_dataset

    data = load_dataset("synthvox", data_dir)
    mask = data.utt_splits == "test"
    eval_dir = tmp_path / "eval"
    params = predict_kd_or_none(model, data, mask, eval_dir / "cache")
    assert params is not None and params.shape == (int(mask.sum()), 51) and np.isfinite(params).all()
    assert predict_kd_or_none(pre, data, mask, eval_dir / "cache") is None  # not KD: evaluate's own path
    target = data.params[data.utt_speaker_index()[mask]]
    m = per_utterance_metrics(load_face_model_for(data), params, target)
    assert np.isfinite(m["ARE"]).all()
    # the linear ceiling of the route (training.kd.ceiling): every row scored, the baseline closes 0 %
    from training.kd.ceiling import format_ceiling, route_ceiling

    ceiling = route_ceiling(kd_cfg, tmp_path / "ceiling-cache")
    assert len(ceiling["mean_are"]) == 5 and all(np.isfinite(v) for v in ceiling["mean_are"].values())
    g = ceiling["gap_closed"]["mean-face baseline"]
    assert g == 0.0 or np.isnan(g)  # nan when the tiny world's oracle is not better than the mean face
    assert "KD ceiling" in format_ceiling(ceiling)
    fig = eval_dir / "kd_faces_kd.png"
    assert fig.is_file()
    img = np.asarray(Image.open(fig))
    assert img.shape[0] > 128 and img.std() > 5  # a real picture, not a blank sheet
    Image.open(fig).save(artifacts_dir / "kd_faces_tiny.png")


def load_face_model_for(data):
    from voice2mesh.facemodel import load_face_model

    return load_face_model(data.face_model).set_prediction_size(40, 10)


def test_training_evaluate_prints_kd_rows(tmp_path):
    """training.evaluate hands KD checkpoints to training.kd.evaluate (the hook in predict_checkpoint)."""
    import inspect

    import training.evaluate as ev

    assert "predict_kd_or_none" in inspect.getsource(ev.predict_checkpoint)
    from training.kd.evaluate import predict_kd_or_none

    assert predict_kd_or_none(tmp_path / "missing.pt", None, np.zeros(0, bool), tmp_path) is None


# -------------------------------------------------------------------------------- paper.yaml end to end
def _random_bfm_noneck(path: Path, reference: Path, stats: Path) -> Path:
    """A BFM face model of 3DDFA-V2's no-neck layout: the real mean face and topology of the reference
    folder, random 40 + 10 bases (the real ones are not distributable), 3DDFA's whitening folded in."""
    from export import cmp
    from voice2mesh.facemodel import bfm

    rng = np.random.default_rng(0)
    u = np.load(reference / "u_shp.npy") + np.load(reference / "u_exp.npy")
    n = u.size
    with open(stats, "rb") as f:
        st = pickle.load(f)
    bases = {"w_shp": rng.normal(0, 1.0, (n, 40)), "w_exp": rng.normal(0, 1.0, (n, 10))}
    tdmm = {"u": u, **bases, "param_mean": st["mean"], "param_std": st["std"]}
    fm = cmp.face_model(tdmm, reference, bfm.BFM_NONECK)
    fm.save(path)
    return path


@pytest.fixture(scope="module")
def paper_kd_run(tmp_path_factory, assets_dir):
    """paper.yaml as it is (ddfa teacher on BFM) on the released Voxceleb-3D layout plus VGGFace photos in
    vggface/<Name>/, with only the paths and a tiny size set; run once for the tests below. The
    release's own BFM (bfm-53215, built from its 3DMM file) goes to a private face-model cache."""
    from export import cmp
    from tests.released_layout import IDENTITIES, write_release
    from training.kd.train import run_kd
    from training.models import VoiceEmbedNet

    tmp_path = tmp_path_factory.mktemp("paper_kd")
    ref = assets_dir / "bfm-reference"
    stats = ref / "param_mean_std_62d_120x120.pkl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
        paths = write_release(tmp_path / "release")  # the paper's download layout (tests/released_layout.py)
        assert cmp.main(["facemodel", "--cmp-3dmm", str(paths["tdmm"]), "--reference", str(ref)]) == 0
        root = paths["root"]  # vox1_meta.csv (tab-separated), fbank/, 3D/<Name>/
        for k, name in enumerate(IDENTITIES.values()):  # + the VGGFace photos KD trains on (its own download)
            for u in range(2):
                _png(root / "vggface" / name / f"{u:08d}.jpg", 40 + 20 * k + 10 * u, size=64)
        enc = tmp_path / "pretrain.pt"
        torch.save({"state_dict": {f"encoder.{k}": v for k, v in VoiceEmbedNet().state_dict().items()}}, enc)
        weights = tmp_path / "mb1_120x120.pth"
        torch.save(ddfa.MobileNetV1(62).state_dict(), weights)
        face_model = _random_bfm_noneck(tmp_path / "bfm-38365.npz", ref, stats)
        cfg = load_kd_config(
            "paper",
            [
                f"data.path={root}",
                f"data.encoder_checkpoint={enc}",
                "data.eval_frames=100",
                f"teacher.checkpoint={weights}",
                f"teacher.param_stats={stats}",
                f"teacher.face_model={face_model}",
                "generator.channels=[16,8,8,8,4]",
                "discriminator.channels=[4,8,8,8,16]",
                "optim.steps=2",
                "optim.batch_size=4",
                "optim.log_every=1",
            ],
        )
        model = run_kd(cfg, tmp_path / "runs" / "kd", "cpu", progress=False)
        yield {"tmp": tmp_path, "root": root, "cfg": cfg, "model": model, "weights": weights, "stats": stats}


@pytest.mark.slow
def test_paper_yaml_runs_end_to_end_on_the_released_layout_with_the_ddfa_teacher(paper_kd_run):
    """The 3DDFA-V2-style teacher loads its BFM, training runs, model.pt and cascade.pt rebuild as one
    graph with a student of the teacher's architecture."""
    from training.checkpoints import load_kd_model
    from training.kd.teachers import load_teacher

    tmp_path, cfg, model = paper_kd_run["tmp"], paper_kd_run["cfg"], paper_kd_run["model"]
    with pytest.raises(FileNotFoundError, match="missing"):  # a face model that is not there is named
        load_teacher(
            "ddfa", str(paper_kd_run["weights"]), str(paper_kd_run["stats"]), str(tmp_path / "missing.npz")
        )
    paper = load_kd_config("paper")
    assert (cfg.loss, cfg.student, cfg.optim.lr, cfg.teacher.kind) == (
        paper.loss,
        paper.student,
        paper.optim.lr,
        "ddfa",
    )
    assert (paper.loss.triplet_weight, paper.student.init, paper.student.batchnorm) == (
        1.5,
        "random",
        "train",
    )
    rows = (tmp_path / "runs" / "kd" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 2 and "triplet" in rows[0]
    x = torch.randn(2, 50, 64)
    for name in ("model.pt", "cascade.pt"):
        module, ck = load_kd_model(model.parent / name)
        assert ck["student_arch"]["kind"] == "ddfa" and isinstance(module.student, ddfa.DDFATeacher)
        with torch.no_grad():
            out = module(x)
        assert out.shape == (2, 51) and torch.isfinite(out).all() and torch.all(out[:, 0] == 1)


@pytest.mark.slow
def test_training_evaluate_prints_table1_with_the_cascade_on_the_released_layout(
    paper_kd_run, capsys, monkeypatch
):
    """training.evaluate --data VOXCELEB3D_ROOT --face-model bfm-53215 with the paper.yaml run's model.pt and
    cascade.pt: Table 1 has the mean-face baseline, the cascade baseline and the KD row, every ratio
    finite, scored against the A-E identities' .xyz full fits."""
    from tests.released_layout import IDENTITIES
    from training.evaluate import main as evaluate_main

    tmp_path, root, model = paper_kd_run["tmp"], paper_kd_run["root"], paper_kd_run["model"]
    monkeypatch.setenv("VOICE2MESH_CACHE", str(tmp_path / "cache"))
    capsys.readouterr()
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            [
                "--data",
                str(root),
                "--face-model",
                "bfm-53215",
                "--checkpoints",
                str(model.parent / "model.pt"),
                str(model.parent / "cascade.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())[0]
    assert result["targets"] == "full-fit .xyz point clouds" and result["cascade"] == "run"
    assert (result["n_identities"], result["n_predictions"]) == (3, 9)
    kinds = [r["kind"] for r in result["rows"]]
    a_to_e = {n for n in IDENTITIES.values() if n[0] in "ABCDE" and (root / "3D" / n).is_dir()}
    assert all(set(r["per_identity"]) == a_to_e for r in result["rows"])  # one .xyz target each
    assert kinds == ["baseline", "cascade", "model"], kinds
    for r in result["rows"]:
        assert r["name"] in table
        values = [r["values"][c] for c in ("ER", "FR", "CR", "MR", "ARE")]
        assert np.isfinite(values).all() and min(values) > 0, (r["name"], values)
    assert "cascade baseline (kd)" in table and "kd/model.pt" in table
    assert "Cascade baseline: not" not in table
