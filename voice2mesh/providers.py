"""ONNX Runtime sessions: the provider they really run on, and the default thread count.

onnxruntime-gpu offers CUDA even without a usable GPU and then silently runs on the CPU, so the
provider reported is the one the created session reads back; after one such fallback, ``device="auto"``
asks for the CPU only, for the rest of the process.
"""

from __future__ import annotations

import os

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")
_cuda_failed = False  # a session asked for CUDA ran on the CPU: "auto" stops asking (and logging why)


class DeviceError(RuntimeError):
    """A device was requested that this machine cannot provide."""


def default_threads() -> int:
    """Intra-op threads when none are asked for: the usable CPUs, at most 2 (the networks are small)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(2, usable or 1))


def requested_providers(device: str = "auto") -> list[str]:
    """Providers to ask ONNX Runtime for, in priority order, for ``device`` in auto/cpu/cuda."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return [CPU]
    if CUDA in ort.get_available_providers() and (device == "cuda" or not _cuda_failed):
        return [CUDA, CPU]
    if device == "cuda":
        raise DeviceError(
            f"device='cuda' requested but this onnxruntime build offers only {ort.get_available_providers()}"
        )
    return [CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """All graph optimisations, sequential execution, ``threads`` intra-op threads (0: ONNX Runtime's
    default; None: :func:`default_threads`) that do not spin, errors-only logging."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    threads = default_threads() if threads is None else threads
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    # idle workers sleep instead of spinning: a spinning worker takes a core from the front end of the
    # next request, which runs while the session is idle (docs/runtime.md, "Threads")
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def create_session(
    model_path: str, device: str = "auto", threads: int | None = None
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession and the provider it really runs on (``session.get_providers()[0]``), which
    is CUDA only when the created session runs on it; ``device='cuda'`` raises DeviceError otherwise."""
    providers = requested_providers(device)
    session = ort.InferenceSession(model_path, session_options(threads), providers=providers)
    used = session.get_providers()[0]
    if used != CUDA and device != "cpu" and CUDA in ort.get_available_providers():
        global _cuda_failed
        _cuda_failed = True
    if device == "cuda" and used != CUDA:
        raise DeviceError(
            f"device='cuda' requested but ONNX Runtime could not start CUDA for {model_path} "
            f"and runs on {used} (no usable GPU or CUDA libraries)"
        )
    return session, used
