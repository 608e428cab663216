#!/usr/bin/env bash
# One short check for a CUDA machine (docs/runtime.md, "On a GPU"):
#   1. which execution providers onnxruntime really offers, and which one a session really uses;
#   2. predict timings on CUDA (benchmarks/bench_predict.py --device cuda) next to CPU;
#   3. the tiny training config on CUDA (pretrain + supervised), proving device handling.
# Usage: scripts/gpu_check.sh [OUT_DIR]   (PYTHON=... to choose the interpreter; default .venv/bin/python)
# Every step runs even when an earlier one fails; the summary at the end lists what passed.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
OUT="${1:-${OUT:-/tmp/voice2mesh-gpu-check}}"
mkdir -p "$OUT"
declare -a RESULTS=()
step() {  # step NAME TIMEOUT_S CMD...
  local name="$1" limit="$2"; shift 2
  echo "=== $name: $*"
  local t0=$(date +%s)
  if timeout "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1; then RESULTS+=("PASS $name ($(( $(date +%s) - t0 )) s)")
  else RESULTS+=("FAIL $name (exit $?, see $OUT/$name.log)"); fi
}

step gpu 20 bash -c 'nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv'
step providers 120 "$PY" - <<'PY'
import onnxruntime as ort
from voice2mesh import providers
from voice2mesh.inference import Predictor
print("onnxruntime", ort.__version__, "available:", ort.get_available_providers())
print("CUDA devices (driver):", providers.cuda_device_count(), "usable:", providers.cuda_usable())
for device in ("auto", "cuda", "cpu"):
    try:
        p = Predictor.from_bundle(None, device=device)
        print(f"device={device}: session providers {p.session.get_providers()} -> reported {p.provider}")
    except Exception as exc:  # report and go on
        print(f"device={device}: {type(exc).__name__}: {exc}")
PY
step bench_cuda 300 "$PY" benchmarks/bench_predict.py --repeats 30 --device cuda --json "$OUT/bench_cuda.json"
step bench_cpu 300 "$PY" benchmarks/bench_predict.py --repeats 30 --device cpu --json "$OUT/bench_cpu.json"
step synthvox_tiny 300 "$PY" -m training.synthvox generate "$OUT/synthvox-tiny" --speakers 8 --utterances 3 \
  --images 0 --overwrite
step train_pretrain_cuda 300 "$PY" -m training.train pretrain --config tiny --out "$OUT/run-tiny-pretrain" --device cuda \
  --set data.path="$OUT/synthvox-tiny"
step train_supervised_cuda 300 "$PY" -m training.train supervised --config tiny --out "$OUT/run-tiny" \
  --device cuda --set data.path="$OUT/synthvox-tiny" --set model.encoder_checkpoint="$OUT/run-tiny-pretrain/pretrain.pt"
step export_tiny 300 "$PY" -m export.to_onnx --all "$OUT/run-tiny" --out "$OUT/bundle-tiny"

echo "=== summary"
printf '%s\n' "${RESULTS[@]}" | tee "$OUT/summary.txt"
