"""Benchmark: writing one face mesh (ICT FaceKit topology) as GLB, with and without heatmap colours.

Prints the median of repeated runs for GLB, with OBJ and PLY and the heatmap colours measured in
the same run for comparison (the "baseline" column is plain GLB without colours).

    .venv/bin/python benchmarks/bench_meshio.py [--repeats 20]

Falls back to the BFM mean face when the ICT model cannot be built from the shared assets.
"""

from __future__ import annotations

import argparse
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
    return model, face


def _median_time(fn, repeats: int) -> float:
    return median_seconds(fn, repeats, warmup=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)

    model, face = _face()
    tri = model.triangles
    colors = meshio.heatmap_colors(face, model.mean)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cases = [
            ("GLB, no colours (baseline)", lambda: meshio.write_mesh(out / "a.glb", face, tri)),
            ("GLB + heatmap colours", lambda: meshio.write_mesh(out / "b.glb", face, tri, colors)),
            ("GLB + computing the heatmap", lambda: meshio.write_mesh(
                out / "c.glb", face, tri, meshio.heatmap_colors(face, model.mean))),
            ("heatmap_colors only", lambda: meshio.heatmap_colors(face, model.mean)),
            ("PLY (binary) + colours", lambda: meshio.write_mesh(out / "d.ply", face, tri, colors)),
            ("OBJ + colours", lambda: meshio.write_mesh(out / "e.obj", face, tri, colors)),
        ]
        for name, fn in cases:
            rows.append((name, _median_time(fn, args.repeats)))
        sizes = {p.suffix: p.stat().st_size for p in out.iterdir()}
    base = rows[0][1]
    print(f"writing one {model.name} face ({len(face)} vertices, {len(tri)} triangles); "
          f"median of {args.repeats} runs")
    print(f"{'case':<32s} {'ms':>9s} {'vs baseline':>12s}")
    for name, t in rows:
        print(f"{name:<32s} {1000 * t:9.2f} {t / base:11.2f}x")
    print("file sizes: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
