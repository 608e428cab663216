"""Benchmark: writing one face mesh (ICT FaceKit topology) as GLB, PLY and OBJ, medians in one run.

The headline is the OBJ writer against the PLY writer (binary, trimesh) in the same run, the
cases taking turns repeat by repeat:
``OBJ / PLY`` ratios, plain and with vertex colours. For reference, the OBJ text trimesh writes
(``trimesh.exchange.obj``) is timed too. Every case writes the file to disk.

    .venv/bin/python benchmarks/bench_meshio.py [--repeats 50] [--json OUT]

Falls back to the BFM mean face when the ICT model cannot be built from the shared assets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks.timing import median_seconds  # noqa: E402
from voice2mesh import meshio  # noqa: E402


def _face():
    from voice2mesh.facemodel import load_face_model

    try:
        model = load_face_model("ict")
    except Exception as exc:  # noqa: BLE001 - fall back to the BFM mean face
        print(f"(ICT face model unavailable: {exc}; using the BFM mean face)")
        model = load_face_model("bfm-53215")
    face = model.vertices_from_params(model.sample_params(1, np.random.default_rng(0)))[0]
    return model, np.asarray(face, dtype=np.float64)


def _trimesh_obj(path: Path, v: np.ndarray, tri: np.ndarray) -> None:
    import trimesh

    mesh = trimesh.Trimesh(vertices=v, faces=tri, process=False)
    path.write_text(mesh.export(file_type="obj", include_normals=False, include_texture=False, header=None))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the medians (ms) here")
    args = parser.parse_args(argv)

    model, face = _face()
    tri = np.asarray(model.triangles)
    colors = meshio.heatmap_colors(face, model.mean)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cases = {
            "GLB": lambda: meshio.write_mesh(out / "a.glb", face, tri),
            "GLB + heatmap colours": lambda: meshio.write_mesh(
                out / "b.glb", face, tri, meshio.heatmap_colors(face, model.mean)),
            "PLY": lambda: meshio.write_mesh(out / "c.ply", face, tri),
            "OBJ": lambda: meshio.write_mesh(out / "d.obj", face, tri),
            "PLY + colours": lambda: meshio.write_mesh(out / "e.ply", face, tri, colors),
            "OBJ + colours": lambda: meshio.write_mesh(out / "f.obj", face, tri, colors),
            "OBJ by trimesh (reference)": lambda: _trimesh_obj(out / "g.obj", face, tri),
        }
        for fn in cases.values():
            fn()  # warm-up (imports, the OBJ face lines of the topology)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):  # round robin: every case sees the same machine load
            for name, fn in cases.items():
                times[name].append(1000.0 * median_seconds(fn, 1))
        rows = {name: statistics.median(ts) for name, ts in times.items()}
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
    ratios = {"OBJ / PLY": rows["OBJ"] / rows["PLY"],
              "OBJ / PLY (colours)": rows["OBJ + colours"] / rows["PLY + colours"],
              "trimesh OBJ / our OBJ": rows["OBJ by trimesh (reference)"] / rows["OBJ"]}
    print(f"writing one {model.name} face ({len(face)} vertices, {len(tri)} triangles) to disk; "
          f"median of {args.repeats} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':<30s} {'ms':>8s}")
    for name, ms in rows.items():
        print(f"{name:<30s} {ms:8.2f}")
    for name, r in ratios.items():
        print(f"{name:<30s} {r:7.2f}x")
    print("file sizes: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())))
    if args.json:
        args.json.write_text(json.dumps({"ms": rows, "ratios": ratios, "repeats": args.repeats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
