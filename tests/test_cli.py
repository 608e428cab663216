"""``python -m voice2mesh predict``: real files written and read back, a bad file among good ones."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import trimesh

from tests.bundles import make_test_bundle
from voice2mesh.__main__ import main, output_stems, parse_formats


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, assets_dir) -> Path:
    return make_test_bundle(tmp_path_factory.mktemp("bundle") / "b")


def test_predict_writes_every_format_and_json(bundle_dir, assets_dir, tmp_path, capsys):
    clips = sorted((assets_dir / "voices").glob("*.wav"))[:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(clips[0]),
            str(bad),
            str(clips[1]),
            "-o",
            str(out),
            "--format",
            "glb,obj,ply",
            "--json",
            "--bundle",
            str(bundle_dir),
            "-q",
        ]
    )
    assert code == 1  # one input failed, the others were processed
    err = capsys.readouterr().err
    assert "broken.wav" in err and "2 of 3 file(s) done, 1 failed" in err
    assert not list(out.glob("broken.*"))
    from voice2mesh.facemodel import load_face_model

    fm = load_face_model("ict")
    for clip in clips:
        for ext in ("glb", "obj", "ply"):
            mesh = trimesh.load(out / f"{clip.stem}.{ext}", force="mesh", process=False)
            assert mesh.vertices.shape == (fm.n_vertices, 3), ext
            assert len(mesh.faces) == len(fm.triangles), ext
        data = json.loads((out / f"{clip.stem}.json").read_text())
        assert set(data["readouts"]) >= {"ratios", "distances_mm", "percentiles"}
        assert data["provider"] == "CPUExecutionProvider"
        assert data["meshes"] == [f"{clip.stem}.glb", f"{clip.stem}.obj", f"{clip.stem}.ply"]
        assert len(data["params"]) == fm.n_params
    # the OBJ holds the predicted vertices (not the mean face)
    obj = trimesh.load(out / f"{clips[0].stem}.obj", force="mesh", process=False)
    assert abs(obj.vertices - fm.mean).max() > 1e-3


def test_all_good_inputs_exit_zero_and_bad_bundle_exits_two(bundle_dir, assets_dir, tmp_path, capsys):
    clip = sorted((assets_dir / "voices").glob("*.wav"))[0]
    copy = tmp_path / "same-name" / clip.name
    copy.parent.mkdir()
    shutil.copy(clip, copy)
    code = main(
        ["predict", str(clip), str(copy), "-o", str(tmp_path / "o"), "--bundle", str(bundle_dir), "-q"]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"{clip.stem}-2.glb", f"{clip.stem}.glb"]
    capsys.readouterr()
    assert main(["predict", str(clip), "-o", str(tmp_path / "x"), "--bundle", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_format_and_name_helpers():
    assert parse_formats("GLB, .ply") == ["glb", "ply"]
    with pytest.raises(argparse.ArgumentTypeError, match="accepted: glb,obj,ply"):
        parse_formats("stl")
    assert output_stems(["a/x.wav", "b/x.mp3", "y.wav"]) == ["x", "x-2", "y"]
