"""Reliability benchmark: the decompression bomb, a REST flood, 40 clients at once (loopback only).

    python benchmarks/bench_reliability.py [--calls 150] [--clients 40] [--ttl 60] [--json OUT]

- bomb: peak memory growth (VmHWM from /proc) and seconds of decoding the bomb of the issue (a 413 KB
  FLAC: 655,350 Hz, 8 channels, 59 s) and of the largest file the limits admit (96 kHz, 8 channels,
  59 s), each in a fresh interpreter. Baseline in the same run: decoding the whole file at once and
  converting it with whole-signal numpy operations (how ``load_audio`` worked before it read headers
  and blocks). Then the bomb through the real server: the server's peak memory growth.
- REST flood: ``--calls`` calls of Gradio's REST API (upload, ``POST /gradio_api/call/predict``, GET
  the answer), each a new session that never ends, against a server with ``--session-ttl-s TTL``;
  bytes under the server's temp folder and session folders before, at the peak, after the last
  call, and the seconds until the timer has removed them (no request after the flood).
- concurrency: ``--clients`` gradio_client sessions submit /predict at once to a server with the
  default limits (2 at a time, 32 waiting): answers, "queue is full" refusals, other failures,
  latency p50 / p95 of the answers. Twice: with gradio_client's own HTTP timeouts (httpx's 5 s for
  uploads; clients that give up count as failures), and with clients that wait up to 120 s per HTTP
  call (as a browser does).

Uses the random-weights test bundle (the model's compute is tiny: the app's own costs).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from benchmarks.bench_app import percentile  # noqa: E402
from tests.app_server import make_app_bundle, running_app, synthesise  # noqa: E402
from tests.test_reliability import (  # noqa: E402
    file_data,
    peak_rss_mb,
    rest_call,
    session_folders,
    tree_bytes,
    upload,
    write_bomb,
)

MiB = 1 << 20
MODEL = "supervised"
TEXT = "This is a benchmark sentence for the voice to mesh application, about five seconds of speech."

# Decoding in a fresh interpreter: the new path, and the baseline (the whole file, whole-signal ops).
DECODE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np, soundfile as sf, soxr
    from voice2mesh.audio import AudioError, load_audio
    def hwm():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    path, mode = sys.argv[1], sys.argv[2]
    before, t0 = hwm(), time.perf_counter()
    if mode == "blocks":
        try:
            outcome = f"{load_audio(path).duration_s:.1f} s decoded"
        except AudioError as exc:
            outcome = "refused: " + str(exc)[:90]
    else:
        raw, rate = sf.read(path, dtype="float32", always_2d=True)
        assert np.isfinite(raw).all()
        clipped = np.count_nonzero(np.abs(raw) >= 0.99)
        mono = raw.mean(axis=1, dtype=np.float32)
        mono = soxr.resample(mono, rate, 16000, quality="HQ")
        outcome = f"{mono.size / 16000:.1f} s decoded"
    print(hwm() - before, time.perf_counter() - t0, outcome, sep="\\t")
""")


def decode_cost(path: Path, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", DECODE, str(path), mode],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
        check=True,
    )
    growth, seconds, outcome = out.stdout.strip().split("\t")
    return {
        "peak_growth_mb": round(float(growth), 1),
        "seconds": round(float(seconds), 2),
        "outcome": outcome,
    }


def bench_decoding(work: Path) -> dict:
    import numpy as np
    import soundfile as sf

    bomb = write_bomb(work / "bomb.flac")
    largest = work / "largest.flac"
    t = np.arange(96000) / 96000
    block = np.repeat((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None], 8, axis=1)
    with sf.SoundFile(str(largest), "w", 96000, 8, format="FLAC", subtype="PCM_16") as f:
        for _ in range(59):
            f.write(block)
    out = {}
    for name, path in (("bomb_655350Hz_8ch_59s", bomb), ("largest_admitted_96kHz_8ch_59s", largest)):
        out[name] = {
            "file_kb": round(path.stat().st_size / 1024),
            "whole_file_baseline": decode_cost(path, "whole"),
            "header_then_blocks": decode_cost(path, "blocks"),
        }
    return out


def bench_bomb_on_server(bundle: Path, voice: Path, work: Path) -> dict:
    bomb = write_bomb(work / "bomb.flac")
    with running_app(bundle, work / "srv-bomb", ["--no-examples"]) as srv:
        client = Client(srv.url, verbose=False)
        client.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
        before = peak_rss_mb(srv.proc.pid)
        t0 = time.perf_counter()
        try:
            client.predict(handle_file(str(bomb)), MODEL, False, api_name="/predict")
            message = "accepted"
        except Exception as exc:  # noqa: BLE001 - the refusal is what is measured
            message = str(exc)
        seconds = time.perf_counter() - t0
        growth = peak_rss_mb(srv.proc.pid) - before
        client.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")  # still serving
        client.close()
    return {
        "server_peak_growth_mb": round(growth, 1),
        "round_trip_s": round(seconds, 2),
        "message": message[:200],
    }


def bench_rest_flood(bundle: Path, voice: Path, work: Path, calls: int, ttl: float) -> dict:
    data = voice.read_bytes()
    with (
        running_app(bundle, work / "srv-flood", ["--no-examples", "--session-ttl-s", str(ttl)]) as srv,
        httpx.Client(timeout=120) as http,
    ):
        base_bytes = tree_bytes(srv.temp_dir)
        peak_bytes, peak_sessions = 0, 0
        t0 = time.perf_counter()
        for i in range(calls):
            [path] = upload(http, srv, "voice.wav", data).json()
            rest_call(http, srv, "predict", [file_data(path), MODEL, False])
            if i % 10 == 9 or i == calls - 1:
                peak_bytes = max(peak_bytes, tree_bytes(srv.temp_dir) - base_bytes)
                peak_sessions = max(peak_sessions, len(session_folders(srv)))
        flood_s = time.perf_counter() - t0
        after_bytes, after_sessions = tree_bytes(srv.temp_dir) - base_bytes, len(session_folders(srv))
        t1 = time.perf_counter()
        while session_folders(srv) or tree_bytes(srv.temp_dir) > base_bytes + 64 * 1024:
            if time.perf_counter() - t1 > ttl + 120:
                break
            time.sleep(0.5)
        clear_s = time.perf_counter() - t1
        left = tree_bytes(srv.temp_dir) - base_bytes
    return {
        "calls": calls,
        "ttl_s": ttl,
        "flood_s": round(flood_s, 1),
        "peak_mb": round(peak_bytes / MiB, 1),
        "peak_session_folders": peak_sessions,
        "after_last_call_mb": round(after_bytes / MiB, 1),
        "session_folders_after": after_sessions,
        "seconds_to_clear_after_last_call": round(clear_s, 1),
        "left_mb": round(left / MiB, 2),
    }


def bench_concurrency(bundle: Path, voice: Path, work: Path, n: int, http_timeout_s: float | None) -> dict:
    """``n`` clients submit at once; ``http_timeout_s`` None keeps gradio_client's own timeouts."""
    kwargs = {} if http_timeout_s is None else {"httpx_kwargs": {"timeout": http_timeout_s}}
    with running_app(bundle, work / "srv-conc", ["--no-examples"]) as srv:
        clients = [Client(srv.url, verbose=False, **kwargs) for _ in range(n)]
        clients[0].predict(handle_file(str(voice)), MODEL, False, api_name="/predict")  # warm
        latencies, queue_full, failures = [], 0, []
        lock = threading.Lock()
        start = threading.Barrier(n)

        def one(c: Client) -> None:
            nonlocal queue_full
            start.wait()
            t0 = time.perf_counter()
            try:
                c.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
                with lock:
                    latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - refusals are counted
                with lock:
                    if "queue is full" in str(exc).lower():
                        queue_full += 1
                    else:
                        failures.append(str(exc)[:120])

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - t0
        for c in clients:
            c.close()
        alive = srv.alive()
    return {
        "clients": n,
        "http_timeout_s": http_timeout_s or "gradio_client default",
        "answers": len(latencies),
        "queue_full": queue_full,
        "other_failures": len(failures),
        "failure_examples": failures[:3],
        "p50_s": round(percentile(latencies, 50), 2) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 2) if latencies else None,
        "wall_s": round(wall, 1),
        "server_alive": alive,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=150, help="REST calls of the flood (at most 500)")
    p.add_argument("--clients", type=int, default=40, help="clients submitting at once (at most 100)")
    p.add_argument("--ttl", type=float, default=60.0, help="session TTL of the flood server, seconds")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    calls, clients = min(args.calls, 500), min(args.clients, 100)
    load = Path("/proc/loadavg").read_text().split()[0]
    results = {"machine": f"{platform.machine()}, Python {platform.python_version()}, load average {load}"}
    with tempfile.TemporaryDirectory(prefix="bench-reliability-") as tmp:
        work = Path(tmp)
        bundle = make_app_bundle(work / "bundle")
        voice = synthesise(work / "voice.wav", TEXT)
        results["decoding"] = bench_decoding(work)
        print(json.dumps(results["decoding"], indent=1), flush=True)
        results["bomb_on_server"] = bench_bomb_on_server(bundle, voice, work)
        print(json.dumps(results["bomb_on_server"], indent=1), flush=True)
        results["rest_flood"] = bench_rest_flood(bundle, voice, work, calls, args.ttl)
        print(json.dumps(results["rest_flood"], indent=1), flush=True)
        results["concurrency"] = [
            bench_concurrency(bundle, voice, work, clients, timeout) for timeout in (None, 120.0)
        ]
        print(json.dumps(results["concurrency"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
