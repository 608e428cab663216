"""ONNX Runtime execution providers: use CUDA only when a GPU is really usable.

onnxruntime-gpu lists ``CUDAExecutionProvider`` whether or not the machine has a GPU (or a driver), so
the list is not proof. We ask the CUDA driver itself (``libcuda`` → ``cuInit`` → ``cuDeviceGetCount``)
and, after creating a session, read back the providers it really uses.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass

import onnxruntime as ort

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """A device was requested that this machine cannot provide."""


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver, a GPU, or with CUDA hidden)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except AttributeError:
            return 0
    return 0


def cuda_usable() -> bool:
    """A CUDA GPU is present and this onnxruntime build has the CUDA provider."""
    return CUDA in ort.get_available_providers() and cuda_device_count() > 0


def requested_providers(device: str = "auto") -> list[str]:
    """Providers to ask ONNX Runtime for, in priority order, for ``device`` in auto/cpu/cuda."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return [CPU]
    if cuda_usable():
        return [CUDA, CPU]
    if device == "cuda":
        have = ort.get_available_providers()
        raise DeviceError(
            f"device='cuda' requested but no usable CUDA GPU: driver reports "
            f"{cuda_device_count()} device(s), onnxruntime offers {have}"
        )
    return [CPU]


@dataclass(frozen=True)
class SessionConfig:
    """Thread and optimisation settings of an ONNX Runtime session."""

    intra_op_threads: int | None = None  # None or 0: ONNX Runtime's default (one per physical core)
    inter_op_threads: int = 1
    optimization: str = "all"  # "basic" | "extended" | "all"
    # Worker threads spin-wait for the next operator within a run (ONNX Runtime's default) and stop when the
    # run ends ("session.force_spinning_stop"): left spinning after a run they took the CPU from whatever ran
    # next (an earlier benchmark: 11.3 ms vs 3.6 ms median on a busy machine), and inside predict from the
    # next clip's front end; spinning only inside runs makes the network 0.1 ms faster (1.82 vs 1.95 ms).
    allow_spinning: bool = True
    stop_spinning_after_run: bool = True


def session_options(config: SessionConfig) -> ort.SessionOptions:
    levels = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[config.optimization]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if config.intra_op_threads:
        so.intra_op_num_threads = int(config.intra_op_threads)
    so.inter_op_num_threads = int(config.inter_op_threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
    if config.stop_spinning_after_run:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


def create_session(
    model_path: str, device: str = "auto", config: SessionConfig | None = None
) -> tuple[ort.InferenceSession, str]:
    """An InferenceSession and the provider it really runs on (``session.get_providers()[0]``)."""
    providers = requested_providers(device)
    session = ort.InferenceSession(
        model_path, session_options(config or SessionConfig()), providers=providers
    )
    used = session.get_providers()[0]
    if device == "cuda" and used != CUDA:
        raise DeviceError(f"device='cuda' requested but ONNX Runtime fell back to {used} for {model_path}")
    return session, used
