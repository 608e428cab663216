"""The committed default bundle (models/default) and example voices, float16 weight storage, and the
bit-for-bit rebuild of the bundle (scripts/build_default_bundle.py at test size)."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from voice2mesh.bundle import DEFAULT_BUNDLE_DIR, MANIFEST_NAME, BundleIntegrityError, load_bundle
from voice2mesh.inference import Predictor
from voice2mesh.paths import REPO_ROOT
from voice2mesh.service import EXAMPLES_DIR, example_voices

BUNDLE_LIMIT_BYTES = 20_000_000
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_default_bundle.py"


def _build_module():
    spec = importlib.util.spec_from_file_location("build_default_bundle", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _sha256s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------ the committed bundle
def test_committed_bundle_is_exactly_the_files_its_manifest_names():
    bundle = load_bundle(DEFAULT_BUNDLE_DIR)  # raises on any sha256 mismatch
    on_disk = {
        p.relative_to(DEFAULT_BUNDLE_DIR).as_posix() for p in DEFAULT_BUNDLE_DIR.rglob("*") if p.is_file()
    }
    assert on_disk == set(bundle.manifest["files"]) | {MANIFEST_NAME}
    tracked = subprocess.run(
        ["git", "ls-files", "models/default"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if tracked.returncode == 0 and tracked.stdout.strip():  # a git checkout: committed == manifest
        assert {Path(p).relative_to("models/default").as_posix() for p in tracked.stdout.split()} == on_disk
    total = sum(p.stat().st_size for p in DEFAULT_BUNDLE_DIR.rglob("*") if p.is_file())
    assert total <= BUNDLE_LIMIT_BYTES, f"models/default is {total / 1e6:.2f} MB"


def test_committed_bundle_holds_supervised_and_kd_on_the_papers_encoder():
    bundle = load_bundle(DEFAULT_BUNDLE_DIR)
    models = {name: (m.framework, m.encoder, m.input_name) for name, m in bundle.models.items()}
    assert models == {
        "supervised": ("supervised", "voiceembednet", "features"),
        "kd": ("kd", "voiceembednet", "features"),
    }
    assert bundle.face_model.file, "the face model must be inside the bundle (no assets, no download)"
    assert bundle.manifest["training_data"]["synthetic"] is True
    limits = _build_module()
    for name, entry in bundle.manifest["models"].items():
        graph = onnx.load(str(DEFAULT_BUNDLE_DIR / entry["file"]))
        halves = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
        assert halves, f"{name}: weights are not stored as float16"
        parity = entry["half_parity"]
        assert 0 < parity["params_max_abs"] <= limits.HALF_PARAMS_ATOL
        assert parity["vertices_max_rel"] <= limits.HALF_VERTICES_RTOL
    held_out = bundle.manifest["evaluation"]["held_out"]
    assert "gap closed" in held_out["markdown"].lower()


def test_a_changed_byte_in_the_committed_bundle_is_refused(tmp_path):
    copy = tmp_path / "default"
    shutil.copytree(DEFAULT_BUNDLE_DIR, copy)
    graph = copy / "kd.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="kd.onnx"):
        load_bundle(copy)


def test_committed_examples_are_short_synthetic_16k_mono_and_both_models_predict():
    paths = example_voices()
    assert [p.name for p in paths] == sorted(p.name for p in EXAMPLES_DIR.iterdir())
    assert len(paths) >= 3 and sum(p.stat().st_size for p in paths) < 1_000_000
    for name in ("supervised", "kd"):
        predictor = Predictor.from_bundle(DEFAULT_BUNDLE_DIR, model=name, device="cpu", warmup=False)
        params = []
        for path in paths:
            info = sf.info(path)
            assert (info.samplerate, info.channels) == (16_000, 1) and 2.0 < info.duration < 12.0
            pred = predictor.predict(path)
            assert np.isfinite(pred.params).all() and pred.vertices.shape[1] == 3
            params.append(pred.params)
        assert np.ptp(np.stack(params), axis=0).max() > 1e-3, f"{name}: same face for every voice"


# ------------------------------------------------------------------------ float16 weight storage
def test_half_weights_halve_the_file_and_keep_outputs_within_the_stated_limit(tmp_path, assets_dir):
    from export.half import half_weights_file, run_graph
    from export.to_onnx import clip_inputs, export_graph, random_init_model

    full = export_graph(random_init_model("voiceembednet"), tmp_path / "full.onnx")
    half = half_weights_file(full, tmp_path / "half.onnx")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    _, inputs = clip_inputs("voiceembednet", assets_dir)
    a, b = run_graph(full, inputs), run_graph(half, inputs)
    diff = float(np.abs(a - b).max())
    assert 0 < diff <= _build_module().HALF_PARAMS_ATOL  # rounded weights, yet the same function
    proto = onnx.load(str(half))
    assert [i.name for i in proto.graph.input] == ["features"]
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# ------------------------------------------------------------------------ bit-for-bit rebuild
@pytest.mark.slow
def test_tiny_build_twice_gives_identical_files(tmp_path, assets_dir):
    if shutil.which("espeak-ng") is None:
        pytest.skip("the build needs espeak-ng (sudo apt-get install espeak-ng)")
    outs = []
    for i in (1, 2):  # different work folders: no local path may reach the bundle
        out = tmp_path / f"bundle{i}"
        run = subprocess.run(
            [
                sys.executable,
                str(BUILD_SCRIPT),
                "--tiny",
                "--out",
                str(out),
                "--work",
                str(tmp_path / f"work{i}"),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        outs.append(_sha256s(out))
    assert outs[0] == outs[1]
    assert set(outs[0]) == {"README.md", "bundle.json", "face_model.npz", "kd.onnx", "supervised.onnx"}
    load_bundle(tmp_path / "bundle1")


def test_the_app_service_runs_supervised_and_kd_side_by_side_by_default(tmp_path, monkeypatch):
    from voice2mesh.inference import Predictor
    from voice2mesh.service import BOTH, Voice2MeshService

    service = Voice2MeshService.from_bundle(DEFAULT_BUNDLE_DIR, work_dir=tmp_path)
    prepares = []
    prepare = Predictor.prepare
    monkeypatch.setattr(Predictor, "prepare", lambda self, src: prepares.append(src) or prepare(self, src))
    try:
        assert service.default_choice == BOTH
        result = service.run(example_voices()[0], None, "visitor")  # no model named: the default
        assert [f.model for f in result.faces] == ["supervised", "kd"]
        assert result.agreement and np.isfinite(result.agreement["ARE"])
        assert len(prepares) == 1  # both models read one front end's features: computed once
        for face in result.faces:  # ... and each face is its model's own prediction of the voice
            alone = service.models[face.model].predictor.predict(example_voices()[0])
            np.testing.assert_allclose(face.vertices, alone.vertices, rtol=0, atol=1e-4)
    finally:
        service.close()
