"""Benchmark: writing one face mesh (ICT FaceKit topology) as GLB, PLY and OBJ, medians in one run.

The headline is the OBJ writer against the PLY writer (binary, trimesh) in the same run, the
cases taking turns repeat by repeat:
``OBJ / PLY`` ratios of the medians, plain and with vertex colours. Each call is timed twice: wall
time, and the CPU time of the writing thread (``time.thread_time``: user + system, file writes
included), which is what the writer costs; on a shared, loaded machine wall time also counts the
waits for a free core, and those hit longer calls more often. For reference, the OBJ text trimesh writes
(``trimesh.exchange.obj``) is timed too. Every call writes a new file to disk, as the app does.

    .venv/bin/python benchmarks/bench_meshio.py [--repeats 50] [--json OUT]

Falls back to the BFM mean face when the ICT model cannot be built from the shared assets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

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
    cases = {
        "GLB": ("a.glb", lambda path: meshio.write_mesh(path, face, tri)),
        "GLB + heatmap colours": (
            "b.glb",
            lambda path: meshio.write_mesh(path, face, tri, meshio.heatmap_colors(face, model.mean)),
        ),
        "PLY": ("c.ply", lambda path: meshio.write_mesh(path, face, tri)),
        "OBJ": ("d.obj", lambda path: meshio.write_mesh(path, face, tri)),
        "PLY + colours": ("e.ply", lambda path: meshio.write_mesh(path, face, tri, colors)),
        "OBJ + colours": ("f.obj", lambda path: meshio.write_mesh(path, face, tri, colors)),
        "OBJ by trimesh (reference)": ("g.obj", lambda path: _trimesh_obj(path, face, tri)),
    }
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):  # round robin: every case sees the same machine load
            round_dir = Path(tmp) / str(i)  # a new file each time, as in the app (no overwriting)
            round_dir.mkdir()
            for name, (file, write) in cases.items():
                t0, c0 = time.perf_counter(), time.thread_time()
                write(round_dir / file)
                if i:  # round 0 warms up (imports, the OBJ face lines of the topology)
                    wall[name].append(1000.0 * (time.perf_counter() - t0))
                    cpu[name].append(1000.0 * (time.thread_time() - c0))
            sizes = {p.name: p.stat().st_size for p in round_dir.iterdir()}
            shutil.rmtree(round_dir)
    medians = {
        kind: {name: statistics.median(ts) for name, ts in times.items()}
        for kind, times in (("wall", wall), ("cpu", cpu))
    }
    pairs = {
        "OBJ / PLY": ("OBJ", "PLY"),
        "OBJ / PLY (colours)": ("OBJ + colours", "PLY + colours"),
        "trimesh OBJ / our OBJ": ("OBJ by trimesh (reference)", "OBJ"),
    }
    ratios = {kind: {k: m[a] / m[b] for k, (a, b) in pairs.items()} for kind, m in medians.items()}
    print(
        f"writing one {model.name} face ({len(face)} vertices, {len(tri)} triangles) to disk; "
        f"median of {args.repeats} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'case':<30s} {'wall ms':>9s} {'CPU ms':>8s}")
    for name in cases:
        print(f"{name:<30s} {medians['wall'][name]:9.2f} {medians['cpu'][name]:8.2f}")
    for name in pairs:
        print(f"{name:<30s} {ratios['wall'][name]:8.2f}x {ratios['cpu'][name]:7.2f}x")
    print("file sizes: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in sorted(sizes.items())))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "median_ms": medians,
                    "ratios": ratios,
                    "repeats": args.repeats,
                    "load_average": os.getloadavg()[0],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
