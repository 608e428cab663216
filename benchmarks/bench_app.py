"""Web app benchmark: API round trip, 20-way concurrency, cold start, runtime venv size.

    python benchmarks/bench_app.py [--bundle DIR] [--requests 30] [--starts 3] [--json OUT]

- round trip: ``gradio_client`` → /predict → GLB, OBJ, PLY and readouts back on the client
  (upload, queue, prediction, mesh files, download), sequential requests; p50 / p95.
  Baseline in the same run: ``Voice2MeshService.run`` in this process on the same file (the work
  without HTTP, queue and transfers); the ratio is the price of serving it.
- concurrency: 20 clients (sessions) submit at once; wall time and requests per second, against
  the sequential rate measured above.
- cold start: process start → first HTTP answer (median of ``--starts`` runs), which includes
  loading the bundle, ONNX Runtime sessions, warm-up and Gradio.
- runtime venv: size of ``.venv-app`` (``make venv-app``, requirements.txt only) and whether torch
  is in it.

Uses the random-weights test bundle unless ``--bundle`` is given (timings of the tiny test graphs:
the app's own overhead, not a trained model's compute).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.app_server import make_app_bundle, running_app, start_app, synthesise  # noqa: E402

TEXT = "This is a benchmark sentence for the voice to mesh application, about five seconds of speech."


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def bench_in_process(bundle: Path, voice: Path, n: int, work: Path) -> list[float]:
    """Baseline: the same work without the server (check, predict, write GLB/OBJ/PLY, readouts)."""
    from voice2mesh.service import Voice2MeshService

    service = Voice2MeshService.from_bundle(bundle, work_dir=work / "inproc")
    service.run(voice, "supervised", "warm")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        service.run(voice, "supervised", "bench")
        times.append((time.perf_counter() - t0) * 1e3)
    service.close()
    return times


def bench_round_trip(url: str, voice: Path, n: int) -> list[float]:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    try:
        client.predict(handle_file(str(voice)), "supervised", False, api_name="/predict")  # warm
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            out = client.predict(handle_file(str(voice)), "supervised", False, api_name="/predict")
            times.append((time.perf_counter() - t0) * 1e3)
            assert out[0] and out[12]["models"][0]["readouts"]
    finally:
        client.close()
    return times


def bench_concurrency(url: str, voice: Path, n: int = 20) -> float:
    """Wall seconds for ``n`` sessions submitting one request each at the same moment."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(n)]
    try:
        t0 = time.perf_counter()
        jobs = [c.submit(handle_file(str(voice)), "supervised", False, api_name="/predict") for c in clients]
        results = [j.result(timeout=600) for j in jobs]
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            c.close()
    assert all(r[0] for r in results)
    return wall


def bench_cold_start(bundle: Path, work: Path, runs: int) -> list[float]:
    times = []
    for i in range(runs):
        srv = start_app(bundle, work / f"cold{i}", ["--no-examples"])
        times.append(srv.ready_s)
        srv.stop()
    return times


def venv_size(path: Path = REPO_ROOT / ".venv-app") -> dict:
    if not path.is_dir():
        return {"path": str(path), "exists": False, "note": "run `make venv-app` first"}
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True).stdout
    site = next(path.glob("lib/python*/site-packages"), None)
    torch = bool(site and (site / "torch").exists())
    biggest = []
    if site:
        sizes = subprocess.run(["du", "-sm", *map(str, site.iterdir())], capture_output=True,
                               text=True).stdout
        rows = [(int(line.split("\t")[0]), Path(line.split("\t")[1]).name) for line in sizes.splitlines()]
        biggest = sorted(rows, reverse=True)[:6]
    return {"path": str(path), "exists": True, "size_mb": int(out.split()[0]), "has_torch": torch,
            "largest_mb": biggest}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="bundle folder (default: a fresh random-weights test bundle)")
    p.add_argument("--requests", type=int, default=30, help="sequential round trips (default 30)")
    p.add_argument("--starts", type=int, default=3, help="cold starts to time (default 3)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    try:
        bundle = args.bundle or make_app_bundle(tmp / "bundle")
        voice = synthesise(tmp / "voice.wav", TEXT)
        base = bench_in_process(bundle, voice, args.requests, tmp)
        with running_app(bundle, tmp / "server", ["--no-examples"]) as srv:
            rt = bench_round_trip(srv.url, voice, args.requests)
            wall = bench_concurrency(srv.url, voice, 20)
        cold = bench_cold_start(bundle, tmp, args.starts)
        seq_rate = 1000.0 / statistics.median(rt)
        res = {
            "machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs",
            "bundle": str(args.bundle or "random-weights test bundle"),
            "in_process_ms": {"p50": statistics.median(base), "p95": percentile(base, 95)},
            "round_trip_ms": {"p50": statistics.median(rt), "p95": percentile(rt, 95), "n": len(rt)},
            "serving_overhead_x": statistics.median(rt) / statistics.median(base),
            "concurrency_20": {"wall_s": wall, "requests_per_s": 20 / wall,
                               "vs_sequential_x": (20 / wall) / seq_rate},
            "cold_start_s": {"median": statistics.median(cold), "runs": cold},
            "venv_app": venv_size(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=2))
    print(f"\nround trip p50 {res['round_trip_ms']['p50']:.0f} ms, p95 {res['round_trip_ms']['p95']:.0f} ms "
          f"(in-process {res['in_process_ms']['p50']:.0f} ms, x{res['serving_overhead_x']:.1f}); "
          f"20 at once: {wall:.1f} s = {20 / wall:.1f} req/s; "
          f"cold start {res['cold_start_s']['median']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
