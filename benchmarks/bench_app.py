"""Web app benchmark: server time per /predict by stage, round trip against a trivial app, throughput.

    python benchmarks/bench_app.py [--bundle DIR] [--before DIR] [--requests 40] [--per-client 3]
                                   [--json OUT]

Servers (each a real ``app.py`` process behind ``benchmarks/app_timing_server.py``):
- ``after``: this checkout's app; ``before`` (with ``--before DIR``): another checkout's app.py on
  the same bundle and voice, started without ``xxhash`` (which that code did not require);
- ``floor``: a trivial Gradio app that takes the same audio upload and returns a small file.

Measured, on a 10 s voice and the bundle's default model (``--model both``: every model of the bundle):
1. Sequential ``gradio_client`` round trips (upload, queue, prediction, answer, file downloads),
   the servers taking turns request by request; p50 / p95, and p50 against the floor's p50.
2. Server time per request by stage, from the server's own timers: HTTP upload, queue join, wait in
   the queue, Gradio preprocess, the handler (with the service's own stages from the answer's JSON),
   Gradio postprocess; "span" = upload received → response ready.
3. Throughput: 20 clients (sessions), each sending ``--per-client`` requests one after another,
   all at once: requests per second.

Without ``--bundle``: ``models/default`` when present, else a random-weights VoiceEmbedNet bundle
made with ``python -m export.to_onnx --random-init`` (the real architecture, so the real compute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.app_server import AppServer, start_app, synthesise  # noqa: E402

TIMING_SERVER = REPO_ROOT / "benchmarks" / "app_timing_server.py"
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
TEXT = (
    "This is a benchmark recording for the voice to mesh application. It lasts about ten seconds, "
    "spoken at a steady pace, like a typical visitor."
)
MODEL_STAGES = ("decode", "vad", "features", "onnx", "decode_mesh", "readouts")
SHARED_STAGES = ("decode", "vad", "features")  # computed once per request for models of one front end


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def make_bundle(out: Path) -> Path:
    """A random-weights VoiceEmbedNet bundle (real architecture) via the export CLI (needs torch)."""
    cmd = [
        sys.executable,
        "-m",
        "export.to_onnx",
        "--random-init",
        "--encoder",
        "voiceembednet",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True, text=True)
    return out


def start(name: str, work: Path, bundle: Path, extra: list[str]) -> tuple[AppServer, Path]:
    log = work / f"{name}-timings.jsonl"
    args = ["--timing-log", str(log), *extra, "--no-examples"]
    server = start_app(
        None if "--trivial" in extra else bundle,
        work / name,
        args,
        app_file=TIMING_SERVER,
        env={"PYTHONPATH": ""},
    )
    return server, log


def read_log(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def answer_json(out: Any) -> dict | None:
    """The result JSON among /predict's outputs (the dict with the models' answers), if any."""
    outputs = out if isinstance(out, (list, tuple)) else []
    return next((o for o in outputs if isinstance(o, dict) and "models" in o), None)


def predict_args(voice: Path, model: str | None) -> tuple:
    """/predict inputs: the app's (audio, model, heatmap off), or the floor's (audio) when model is None."""
    from gradio_client import handle_file

    return (handle_file(str(voice)),) if model is None else (handle_file(str(voice)), model, False)


def round_trips(
    clients: dict[str, Any], voice: Path, model: str, n: int
) -> tuple[dict[str, list[float]], dict]:
    """``n`` sequential requests per server, servers taking turns; (ms per server, answers' JSON)."""

    times: dict[str, list[float]] = {name: [] for name in clients}
    answers: dict[str, list[dict]] = {name: [] for name in clients}
    names = list(clients)
    for i in range(n):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            args = predict_args(voice, None if name == "floor" else model)
            t0 = time.perf_counter()
            out = clients[name].predict(*args, api_name="/predict")
            times[name].append((time.perf_counter() - t0) * 1e3)
            if (js := answer_json(out)) is not None:
                answers[name].append(js)
    return times, answers


def server_stages(log: list[dict[str, Any]], answers: list[dict], n: int) -> dict[str, Any]:
    """Median ms per stage over the last ``n`` requests of a sequential run (records in order)."""
    uploads = [r for r in log if r["kind"] == "http" and r["path"].endswith("/upload")][-n:]
    joins = [r for r in log if r["kind"] == "http" and r["path"].endswith("/queue/join")][-n:]
    events = [r for r in log if r["kind"] == "event" and r["fn"] == "predict"][-n:]
    if not (len(uploads) == len(joins) == len(events) == n):
        return {"error": f"{len(uploads)} uploads, {len(joins)} joins, {len(events)} events for {n} requests"}
    rows: dict[str, list[float]] = {}

    def add(key: str, seconds: float) -> None:
        rows.setdefault(key, []).append(seconds * 1e3)

    for up, join, ev in zip(uploads, joins, events, strict=True):
        add("upload (HTTP)", up["end"] - up["start"])
        add("queue join (HTTP)", join["end"] - join["start"])
        add("queue wait", ev["start"] - join["end"])
        add("preprocess (Gradio)", ev.get("preprocess", 0.0))
        add("handler", ev.get("handler", 0.0))
        add("postprocess (Gradio)", ev.get("postprocess", 0.0))
        add(
            "server stages, sum",
            (up["end"] - up["start"]) + (join["end"] - join["start"]) + (ev["end"] - join["end"]),
        )
        add("span: upload received -> response ready", ev["end"] - up["start"])
    for js in answers[-n:]:
        models = [m["timings_ms"] for m in js["models"]]
        for key, ms in js.get("timings_ms", {}).items():
            rows.setdefault(f"  handler: {key}", []).append(ms)
        for key in (*MODEL_STAGES, "write meshes"):
            times = [m[key] for m in models if key in m]
            if times:  # the front end runs once for models that share it; the rest once per model
                total = times[0] if key in SHARED_STAGES else sum(times)
                rows.setdefault(f"  handler: {key}", []).append(total)
    out = {k: statistics.median(v) for k, v in rows.items()}
    inner = sum(v for k, v in out.items() if k.startswith("  handler:"))
    out["  handler: rest (tables, summary, Gradio call)"] = out["handler"] - inner
    return out


def throughput(url: str, voice: Path, model: str | None, clients: int, per_client: int) -> dict[str, float]:
    """``clients`` sessions at once, each sending ``per_client`` requests in a row; requests per second."""
    from gradio_client import Client

    pool = [Client(url, verbose=False) for _ in range(clients)]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def work(c: Any) -> None:
        start.wait()
        try:
            for _ in range(per_client):
                c.predict(*predict_args(voice, model), api_name="/predict")
        except BaseException as exc:  # noqa: BLE001 - counted and reported
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in pool]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for c in pool:
        c.close()
    done = clients * per_client - len(errors)
    return {
        "requests": clients * per_client,
        "failed": len(errors),
        "wall_s": wall,
        "requests_per_s": done / wall,
    }


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, help="bundle folder (default: models/default, else random-init)")
    p.add_argument("--before", type=Path, help="another checkout whose app.py to measure in the same run")
    p.add_argument("--requests", type=int, default=40, help="sequential requests per server (default 40)")
    p.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    p.add_argument("--per-client", type=int, default=3, help="requests per concurrent client (default 3)")
    p.add_argument("--model", help="model choice sent (default: the bundle's default model; e.g. both)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
    servers: dict[str, tuple[AppServer, Path]] = {}
    try:
        bundle = args.bundle or (
            DEFAULT_BUNDLE if (DEFAULT_BUNDLE / "bundle.json").is_file() else make_bundle(tmp / "bundle")
        )
        voice = synthesise(tmp / "voice.wav", TEXT)
        import soundfile as sf

        voice_s = sf.info(str(voice)).duration
        if args.before:
            servers["before"] = start(
                "before", tmp, bundle, ["--app-root", str(args.before.resolve()), "--without", "xxhash"]
            )
        servers["after"] = start("after", tmp, bundle, ["--app-root", str(REPO_ROOT)])
        servers["floor"] = start("floor", tmp, bundle, ["--trivial"])
        clients = {name: Client(srv.url, verbose=False) for name, (srv, _) in servers.items()}
        model = args.model or json.loads((bundle / "bundle.json").read_text())["default_model"]
        round_trips(clients, voice, model, 3)  # warm-up: first requests of each server
        rt, answers = round_trips(clients, voice, model, args.requests)
        for c in clients.values():
            c.close()
        floor_p50 = statistics.median(rt["floor"])
        res: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end of the round trips",
            "bundle": str(
                args.bundle
                or (
                    DEFAULT_BUNDLE
                    if bundle == DEFAULT_BUNDLE
                    else "random-init VoiceEmbedNet (export.to_onnx --random-init)"
                )
            ),
            "voice_s": round(voice_s, 2),
            "model": model,
            "requests": args.requests,
            "servers": {},
        }
        for name, (_, log) in servers.items():
            entry: dict[str, Any] = {
                "round_trip_ms": {"p50": statistics.median(rt[name]), "p95": percentile(rt[name], 95)},
                "vs_floor_p50_x": statistics.median(rt[name]) / floor_p50,
            }
            if name != "floor":
                entry["server_ms"] = server_stages(read_log(log), answers[name], args.requests)
            res["servers"][name] = entry
        for name, (srv, _) in servers.items():
            res["servers"][name]["throughput"] = throughput(
                srv.url, voice, None if name == "floor" else model, args.clients, args.per_client
            )
    finally:
        for srv, _ in servers.values():
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=2))
    print_table(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


def print_table(res: dict[str, Any]) -> None:
    names = [n for n in ("before", "after") if n in res["servers"]]
    s = res["servers"]
    print(
        f"\n{res['machine']}; bundle: {res['bundle']}, model {res['model']}; voice {res['voice_s']} s; "
        f"{res['requests']} sequential requests per server (medians, ms)"
    )
    print(f"{'':46s}" + "".join(f"{n:>10s}" for n in names))
    keys = list(dict.fromkeys(k for n in names for k in s[n]["server_ms"]))
    for k in keys:
        print(f"{k:46s}" + "".join(f"{s[n]['server_ms'].get(k, float('nan')):10.2f}" for n in names))
    print(
        f"{'round trip p50 (floor ' + format(s['floor']['round_trip_ms']['p50'], '.1f') + ' ms)':46s}"
        + "".join(f"{s[n]['round_trip_ms']['p50']:10.1f}" for n in names)
    )
    print(f"{'round trip p50 / floor p50':46s}" + "".join(f"{s[n]['vs_floor_p50_x']:10.2f}" for n in names))
    print(f"{'round trip p95':46s}" + "".join(f"{s[n]['round_trip_ms']['p95']:10.1f}" for n in names))
    t = s["floor"]["throughput"]
    print(
        f"{'throughput, requests/s (floor ' + format(t['requests_per_s'], '.1f') + ')':46s}"
        + "".join(f"{s[n]['throughput']['requests_per_s']:10.1f}" for n in names)
    )


if __name__ == "__main__":
    sys.exit(main())
