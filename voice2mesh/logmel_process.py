"""A helper process for the log mel: the part of the work that threads cannot do in parallel.

Two threads of one process scale poorly on the log mel (numpy's FFT releases the GIL, the many
short calls around it take turns with it: 1.2-1.7x, not 2x), and no thread can run beside the VAD
at all (its ~1,000 WebRTC C calls hold the GIL). A second *process* has its own interpreter. It
serves two callers in voice2mesh.features:

- ``log_mel`` of a long signal: the helper computes the first half of the frames, the caller the rest;
- ``features_from_audio``: the helper computes the recording's log mel while the caller runs the
  VAD; afterwards the caller lowers the helper's row limit and computes the rows above it.

How: ``python -m voice2mesh.logmel_process IN OUT CTRL`` is started with ``subprocess`` (not
multiprocessing, whose spawn would re-run the caller's main script). IN holds the int16 samples,
OUT the float32 rows, CTRL two int64 counters (rows done, row limit); one line on the helper's
stdin / stdout carries each request and its answer. Frames depend only on their own samples
(quirks 2-3 of voice2mesh.features), so the rows equal those of :func:`voice2mesh.features.log_mel`.

Opt-in (:func:`enable`; ``voice2mesh.inference.Predictor`` turns it on). The process starts in the
background (~0.1 s). Calls made before it is ready, while another call is using it, for signals
longer than its blocks, from a forked child, or after it failed use the threads instead; nothing
waits for it longer than ``REPLY_TIMEOUT_S``, and a wait that ends without its answer retires it.
POSIX only (the answer is awaited with ``select`` on a pipe).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import threading
import warnings
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path
from typing import Any

import numpy as np

MAX_SAMPLES = 16000 * 65    # int16 samples the input block holds (the 60 s audio limit at 16 kHz)
MAX_ROWS = 6600             # log-mel rows the output block holds (10 ms hop)
N_MELS_MAX = 128
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 10.0      # a helper that has not answered by then is given up (the caller does the work)

_lock = threading.Lock()
_helper: _Helper | None = None


def enable(on: bool = True) -> None:
    """Start the helper in the background (``on``) or stop it; idempotent; a no-op off POSIX."""
    global _helper
    with _lock:
        if on and _helper is not None and not _helper.owned():
            _helper = None  # a forked child: the helper answers the parent; this process starts its own
        if on and _helper is None and os.name == "posix":
            try:
                _helper = _Helper()
            except (OSError, ValueError, subprocess.SubprocessError) as e:  # no /dev/shm, no interpreter...
                warnings.warn(f"voice2mesh: the log-mel helper process could not start ({e}); "
                              "computing in this process", RuntimeWarning, stacklevel=2)
        elif not on and _helper is not None:
            _helper.close()
            _helper = None


def wait_ready(timeout: float = 5.0) -> bool:
    """Wait (up to ``timeout`` s) until an enabled helper is ready; False if it is off or broken."""
    helper = _helper
    return helper is not None and helper.wait_ready(timeout)


def ready() -> _Helper | None:
    """The running helper, or None when it is off, still starting, or broken."""
    helper = _helper
    return helper if helper is not None and helper.is_ready() else None


class _Helper:
    """The process, its pipes and its three shared-memory blocks (samples, rows, counters)."""

    def __init__(self) -> None:
        self._pid = os.getpid()  # a forked child must not talk to its parent's helper
        self._blocks: list[shared_memory.SharedMemory] = []
        try:
            for size in (MAX_SAMPLES * 2, MAX_ROWS * N_MELS_MAX * 4, 16):  # samples, rows, counters
                self._blocks.append(shared_memory.SharedMemory(create=True, size=size))
            package_root = str(Path(__file__).resolve().parent.parent)  # the child imports this voice2mesh
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p))
            self._process = subprocess.Popen(
                [sys.executable, "-m", "voice2mesh.logmel_process", *(b.name for b in self._blocks)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0)
        except BaseException:
            self._free_blocks()
            raise
        self._in, self._out, self._ctrl = self._blocks
        self._counters = np.ndarray((2,), np.int64, buffer=self._ctrl.buf)  # rows done, row limit
        self._busy = threading.Lock()
        self._ready = threading.Event()
        self._broken = False
        self._configs: dict[Any, bytes] = {}
        threading.Thread(target=self._wait_ready, name="voice2mesh-logmel-start", daemon=True).start()
        atexit.register(self.close)

    def _wait_ready(self) -> None:
        if self._read_line(START_TIMEOUT_S) == b"ready":
            self._ready.set()
        else:
            self._broken = True

    def _read_line(self, timeout: float) -> bytes | None:
        """One reply line, or None on timeout / a closed pipe."""
        out = self._process.stdout
        try:
            if not select.select([out], [], [], timeout)[0]:
                return None
            line = out.readline()
        except (OSError, ValueError):
            return None
        return line.strip() if line else None

    def wait_ready(self, timeout: float) -> bool:
        self._ready.wait(timeout)
        return self.is_ready()

    def owned(self) -> bool:
        return os.getpid() == self._pid

    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._broken and self.owned()

    def start(self, x: np.ndarray, rows: int, config: Any) -> Job | None:
        """Start the log mel of the first ``rows`` frames (whole frames) of ``x`` (int16) in the helper;
        None when it cannot take this call (busy, broken, the data too large)."""
        if (not self.is_ready() or len(x) > MAX_SAMPLES or rows > MAX_ROWS
                or config.n_mels > N_MELS_MAX or not self._busy.acquire(blocking=False)):
            return None
        try:
            np.ndarray((len(x),), np.int16, buffer=self._in.buf)[:] = x
            self._counters[:] = (0, rows)
            self._process.stdin.write(b"%d %d %s\n" % (len(x), rows, self._config_line(config)))
        except (OSError, ValueError, TypeError):
            self._broken = True
            self._busy.release()
            return None
        return Job(self, rows, config.n_mels)

    def _config_line(self, config: Any) -> bytes:
        line = self._configs.get(config)
        if line is None:
            line = self._configs[config] = json.dumps(dataclasses.asdict(config)).encode()
        return line

    def close(self) -> None:
        """Stop the process and free the shared blocks (also at exit; not from a forked child)."""
        self._broken = True
        if not self.owned():
            return
        try:
            self._process.stdin.close()
            self._process.wait(timeout=2.0)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()
        self._free_blocks()

    def _free_blocks(self) -> None:
        self._counters = None  # a view of the last block: it must go before the block can close
        for block in self._blocks:
            with contextlib.suppress(OSError):
                block.unlink()
            with contextlib.suppress(BufferError):  # a caller still holds a view: the memory goes with it
                block.close()
        self._blocks = []


class Job:
    """One request in flight: the helper computes rows 0, 1, ... in blocks and publishes its progress;
    the caller may lower the row limit (it takes the rows above it) and then waits for the rest."""

    def __init__(self, helper: _Helper, rows: int, n_mels: int) -> None:
        self._helper, self.rows, self._n_mels = helper, rows, n_mels
        self._open = True

    def progress(self) -> int:
        """Rows done so far (a hint: read without a lock)."""
        return int(self._helper._counters[0])

    def limit(self, rows: int) -> None:
        """Ask the helper to stop at ``rows`` (it finishes the block it is in, which may go past it)."""
        self.rows = min(self.rows, rows)
        self._helper._counters[1] = self.rows

    def finish(self, into: np.ndarray | None = None) -> np.ndarray | None:
        """Wait for the helper and return rows ``0 .. limit-1`` ((limit, n_mels) float32; copied into
        ``into`` when given), or None if it failed (then the caller computes them)."""
        if not self._open:
            return None
        self._open = False
        helper = self._helper
        answered = False
        try:
            reply = helper._read_line(REPLY_TIMEOUT_S)
            answered = reply is not None  # an error line leaves the helper usable
            if reply is None or not reply.startswith(b"done ") or int(reply.split()[1]) < self.rows:
                return None
            rows = np.ndarray((self.rows, self._n_mels), np.float32, buffer=helper._out.buf)
            if into is None:
                return rows.copy()
            into[...] = rows
            return into
        finally:
            if not answered:  # timed out or interrupted: its answer may come later, out of step
                helper._broken = True
            helper._busy.release()

    def cancel(self) -> None:
        """Stop the helper as soon as it can and wait for it (the rows are not needed); a no-op once
        finished (the counters may already belong to another caller's job)."""
        if self._open:
            self.limit(0)
            self.finish()


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open the caller's block without registering it with this process's resource tracker (which
    would delete it when the helper exits: the caller owns and unlinks it)."""
    block = shared_memory.SharedMemory(name=name)
    resource_tracker.unregister(block._name, "shared_memory")  # noqa: SLF001 - Python < 3.13: no track=False
    return block


def _serve(in_name: str, out_name: str, ctrl_name: str) -> None:
    """The helper's loop: ``N ROWS CONFIG_JSON`` → log-mel rows 0, 1, ... of the N samples in blocks,
    up to the row limit in the control block (which the caller may lower) → ``done ROWS_DONE``."""
    from voice2mesh import features

    blocks = [_attach(in_name), _attach(out_name), _attach(ctrl_name)]
    counters = np.ndarray((2,), np.int64, buffer=blocks[2].buf)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b"ready\n")
    stdout.flush()
    configs: dict[bytes, features.FrontEndConfig] = {}
    for line in stdin:
        try:
            n, rows, config_json = line.split(b" ", 2)
            config = configs.get(config_json)
            if config is None:
                config = configs[config_json] = features.FrontEndConfig(**json.loads(config_json))
            x = np.ndarray((int(n),), np.int16, buffer=blocks[0].buf)
            out = np.ndarray((int(rows), config.n_mels), np.float32, buffer=blocks[1].buf)
            done = features.log_mel_rows_up_to(x, out, config, counters)
            stdout.write(b"done %d\n" % done)
        except Exception as e:  # noqa: BLE001 - reported to the caller, who then computes the rows itself
            stdout.write(b"error %s\n" % str(e).encode(errors="replace").replace(b"\n", b" "))
        stdout.flush()
    for block in blocks:
        block.close()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], sys.argv[3])
