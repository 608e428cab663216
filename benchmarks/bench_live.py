"""Benchmark: server time of one live update against the seconds of speech heard so far (1 s, 10 s, 60 s).

One live update (``voice2mesh.live.LiveStreams.update``, what the app's ``/live_update`` event runs
per microphone chunk): append a 0.5 s chunk at 48 kHz (what browsers record) through the stream's
resampler, write the buffer as a 16 kHz WAV, and run the service's one-shot path on it with the
bundle's first model (check audio, VAD, features, ONNX Runtime, mesh decoding, readouts, viewer GLB +
OBJ + PLY as the app asks). Before
each timed update the stream is filled, untimed, to the length being measured; the lengths take turns.
Speech: the shared assets' real voices (concatenated and repeated, as benchmarks/bench_predict.py does),
else an espeak-ng voice repeated. Reported: medians per length, the stages of the one-shot run, and the
ratio of each length's update time to the shortest one (the work per update is capped by the audio limit).

    .venv/bin/python benchmarks/bench_live.py [--bundle models/default] [--repeats 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voice2mesh.live import LiveStreams  # noqa: E402
from voice2mesh.paths import shared_assets_dir  # noqa: E402
from voice2mesh.service import DOWNLOAD_KINDS, Voice2MeshService  # noqa: E402

LENGTHS_S = (1.25, 10.0, 60.0)  # heard; the first is the shortest with 1 s of speech after VAD
CHUNK_S = 0.5
BROWSER_RATE = 48000
STAGES = ("check audio", "vad", "features", "onnx", "decode_mesh", "readouts", "write meshes")


def speech(seconds: float, work: Path) -> tuple[np.ndarray, str]:
    """``seconds`` of speech at 48 kHz int16 and where it came from."""
    assets = shared_assets_dir()
    wavs = sorted((assets / "voices").glob("*.wav")) if assets is not None else []
    if wavs:
        x16 = np.concatenate([sf.read(p, dtype="float32")[0] for p in wavs])
        source = f"{len(wavs)} real voices of the shared assets, repeated"
        rate = 16000
    else:
        from tests.app_server import synthesise

        path = synthesise(
            work / "voice.wav",
            "The face forms while I speak to the server, and it settles "
            "as it hears more of my voice, second after second.",
        )
        x16, rate = sf.read(path, dtype="float32")
        source = "an espeak-ng voice, repeated"
    x = soxr.resample(x16, rate, BROWSER_RATE, quality="HQ")
    need = int(seconds * BROWSER_RATE)
    x = np.tile(x, need // len(x) + 1)[:need]
    return (np.clip(x, -1, 1) * 32767).astype(np.int16), source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: models/default)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    service = Voice2MeshService.from_bundle(args.bundle, work_dir=work / "sessions")
    live = LiveStreams(service)
    voice, source = speech(max(LENGTHS_S), work)
    chunk = int(CHUNK_S * BROWSER_RATE)
    kinds = ("glb", *DOWNLOAD_KINDS)
    model = next(iter(service.models))  # one model: the bundle's first
    times: dict[float, list[float]] = {s: [] for s in LENGTHS_S}
    stages: dict[float, dict[str, list[float]]] = {s: {k: [] for k in STAGES} for s in LENGTHS_S}
    speech_s: dict[float, float] = {}
    for i in range(args.repeats + 1):  # the first round warms up and is not counted
        for seconds in LENGTHS_S:
            end = int(seconds * BROWSER_RATE)
            stream = live.start("bench")
            stream.add(BROWSER_RATE, voice[: end - chunk])  # untimed: the speech heard before this update
            t0 = time.perf_counter()
            update = live.update("bench", (BROWSER_RATE, voice[end - chunk : end]), model, kinds)
            elapsed = (time.perf_counter() - t0) * 1e3
            if update.result is None:
                raise SystemExit(f"no face at {seconds} s: {update.message}")
            if i == 0:
                continue
            times[seconds].append(elapsed)
            face = update.result.faces[0]
            speech_s[seconds] = face.speech_s
            merged = {**update.result.timings_ms, **face.timings_ms}
            for k in STAGES:
                stages[seconds][k].append(merged.get(k, 0.0))
    service.close()
    med = {s: statistics.median(v) for s, v in times.items()}
    load = os.getloadavg()[0]
    print(
        f"bundle {service.info.source_name}, model {model}; speech: {source}; {args.repeats} updates per "
        f"length, medians; load average {load:.1f}; {os.cpu_count()} CPUs"
    )
    header = [
        "heard (s)",
        "speech after VAD (s)",
        "update (ms)",
        "vs shortest",
        *(f"{k} (ms)" for k in STAGES),
        "other (ms)",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    rows = []
    for s in LENGTHS_S:
        st = {k: statistics.median(v) for k, v in stages[s].items()}
        other = med[s] - sum(st.values())
        rows.append(
            {
                "heard_s": s,
                "speech_s": speech_s[s],
                "update_ms": med[s],
                "ratio_vs_1s": med[s] / med[LENGTHS_S[0]],
                "stages_ms": st,
                "other_ms": other,
            }
        )
        print(
            f"| {s:g} | {speech_s[s]:.1f} | {med[s]:.1f} | {med[s] / med[LENGTHS_S[0]]:.2f}x | "
            + " | ".join(f"{st[k]:.1f}" for k in STAGES)
            + f" | {other:.1f} |"
        )
    print("other: buffering and resampling the chunk, writing the WAV, the service's bookkeeping")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "bundle": service.info.source_name,
                    "model": model,
                    "speech": source,
                    "load_average": load,
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
