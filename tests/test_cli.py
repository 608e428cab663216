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
    for folder in ("a", "b"):  # the same file name in two folders: each gets its own outputs
        (tmp_path / "in" / folder).mkdir(parents=True)
        shutil.copy(clip, tmp_path / "in" / folder / clip.name)
    inputs = [str(tmp_path / "in" / f / clip.name) for f in ("a", "b")]
    out = tmp_path / "o"
    assert main(["predict", *inputs, "-o", str(out), "--bundle", str(bundle_dir), "-q"]) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.glb")) == [
        f"a/{clip.stem}.glb",
        f"b/{clip.stem}.glb",
    ]
    capsys.readouterr()
    # never overwritten silently
    before = (out / "a" / f"{clip.stem}.glb").stat().st_mtime_ns
    assert main(["predict", *inputs, "-o", str(out), "--bundle", str(bundle_dir), "-q"]) == 2
    assert f"a/{clip.stem}.glb" in capsys.readouterr().err.replace("\\", "/")
    assert (out / "a" / f"{clip.stem}.glb").stat().st_mtime_ns == before
    assert main(["predict", *inputs, "-o", str(out), "--bundle", str(bundle_dir), "-q", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["predict", str(clip), "-o", str(tmp_path / "x"), "--bundle", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_format_and_name_helpers():
    assert parse_formats("GLB, .ply") == ["glb", "ply"]
    with pytest.raises(argparse.ArgumentTypeError, match="accepted: glb,obj,ply"):
        parse_formats("stl")
    assert [p.as_posix() for p in output_stems(["a/x.wav", "b/y.mp3"])] == ["x", "y"]
    assert [p.as_posix() for p in output_stems(["a/x.wav", "b/x.mp3", "y.wav"])] == ["a/x", "b/x", "y"]
    same_folder = output_stems(["d/voice.wav", "d/voice.flac"])
    assert [p.as_posix() for p in same_folder] == ["voice.wav", "voice.flac"]
    assert [p.as_posix() for p in output_stems(["f/1/a/00001.npy", "f/2/a/00001.npy"], ["f"])] == [
        "1/a/00001",
        "2/a/00001",
    ]
    with pytest.raises(ValueError, match="given twice"):
        output_stems(["a/x.wav", "a/../a/x.wav"])
