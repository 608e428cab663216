"""Model bundles: validation, sha256 checks, Hub upload/download (huggingface_hub faked at its public API),
offline mode, revisions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("onnx")

from export.hub import push_to_hub, upload_plan  # noqa: E402
from tests.bundles import make_test_bundle  # noqa: E402
from tests.hub_fake import FakeHub  # noqa: E402
from voice2mesh.bundle import (  # noqa: E402
    BundleError,
    BundleIntegrityError,
    file_sha256,
    load_bundle,
)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, assets_dir) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "b", encoders=("voiceembednet", "ge2e"))


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def test_valid_bundle_loads_and_lists_every_file(bundle_dir):
    b = load_bundle(bundle_dir)
    assert sorted(b.models) == ["supervised", "supervised-ge2e"]
    assert b.model().name == "supervised"
    assert b.model("supervised-ge2e").input_name == "mels"
    on_disk = sorted(p.name for p in bundle_dir.iterdir() if p.name != "bundle.json")
    assert sorted(b.manifest["files"]) == on_disk
    for rel, sha in b.manifest["files"].items():
        assert file_sha256(bundle_dir / rel) == sha
    fm = b.load_face_model()
    assert fm.n_params == b.model().n_params
    with pytest.raises(BundleError, match="no model 'kd'"):
        b.model("kd")


def test_tampered_file_is_refused_naming_the_file(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    data = bytearray((copy / "supervised.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "supervised.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"supervised\.onnx fails its sha256 check"):
        load_bundle(copy)


def test_missing_file_and_bad_manifest_are_clear_errors(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    (copy / "README.md").unlink()
    with pytest.raises(BundleIntegrityError, match="README.md listed in bundle.json is missing"):
        load_bundle(copy)
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    manifest["format_version"] = 99
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 99 is not supported"):
        load_bundle(copy)
    (copy / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(str(tmp_path / "no" / "such" / "dir"))


def test_face_model_of_another_geometry_is_refused(bundle_dir, tmp_path):
    copy = _copy(bundle_dir, tmp_path)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["face_model"]["sha256"] = "0" * 64
    (copy / "bundle.json").write_text(json.dumps(manifest))
    b = load_bundle(copy)
    with pytest.raises(BundleIntegrityError, match="wrong faces"):
        b.load_face_model()


def test_bundled_face_model_file_is_used_and_checked(tmp_path, assets_dir):
    out = make_test_bundle(tmp_path / "embedded", embed_face_model=True, n_identity=8, n_expression=3)
    b = load_bundle(out)
    assert b.face_model.file == "face_model.npz"
    fm = b.load_face_model()
    assert (fm.n_identity, fm.n_expression, fm.identity_basis.shape[0]) == (8, 3, 8)
    assert b.model().n_params == 12


def test_dry_run_lists_files_without_network(bundle_dir):
    result = push_to_hub(bundle_dir, "user/v2m", dry_run=True, endpoint="http://127.0.0.1:9")
    assert result.dry_run
    assert [i.path for i in result.items] == sorted(
        ["README.md", "bundle.json", "supervised.onnx", "supervised-ge2e.onnx"]
    )
    assert [i.path for i in upload_plan(bundle_dir)] == [i.path for i in result.items]


def test_push_download_revision_and_offline(bundle_dir, tmp_path, monkeypatch):
    other = make_test_bundle(tmp_path / "v2", seed=7)
    cache = tmp_path / "hf-cache"
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    first = push_to_hub(bundle_dir, "user/v2m", endpoint=hub.endpoint, token="hf_test")
    first_sha = hub.repos["user/v2m"].branches["main"]
    assert first.commit_oid == first_sha and first.commit_url.endswith(first_sha)
    upload = dict(hub.calls)["upload_folder"]
    assert sorted(upload["allow_patterns"]) == [i.path for i in upload_plan(bundle_dir)]
    push_to_hub(other, "user/v2m", endpoint=hub.endpoint, token="hf_test")
    latest = load_bundle("user/v2m", endpoint=hub.endpoint, cache_dir=cache, token=False)
    assert latest.manifest["files"]["supervised.onnx"] == file_sha256(other / "supervised.onnx")
    pinned = load_bundle("user/v2m", revision=first_sha, endpoint=hub.endpoint, cache_dir=cache, token=False)
    assert pinned.manifest["files"]["supervised.onnx"] == file_sha256(bundle_dir / "supervised.onnx")
    assert pinned.source == f"user/v2m@{first_sha}"
    download = [kw for name, kw in hub.calls if name == "snapshot_download"][-1]
    assert (download["revision"], download["endpoint"], download["local_files_only"]) == (
        first_sha,
        hub.endpoint,
        False,
    )
    with pytest.raises(BundleError, match="cannot download bundle user/nothere@main"):
        load_bundle("user/nothere", endpoint=hub.endpoint, cache_dir=cache, token=False)
    # offline mode asks huggingface_hub for cached files only
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_bundle("user/v2m", cache_dir=cache)
    assert hub.calls[-1][1]["local_files_only"] is True
    assert offline.manifest["files"] == latest.manifest["files"]
    with pytest.raises(BundleError, match="not in the Hugging Face cache and offline mode"):
        load_bundle("user/v2m", cache_dir=tmp_path / "empty-cache")
    # a cached file modified on disk is refused too
    cached = offline.root / "supervised.onnx"
    target = cached.resolve()
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="supervised.onnx"):
        load_bundle("user/v2m", cache_dir=cache)
