"""Per-session result folders and the latest result of each session, with bounded disk use.

A session id (Gradio's ``session_hash``, chosen by the client) never becomes a path: its folder
name is a hash. Each request gets a fresh run folder; a session keeps only its ``runs_kept`` newest
runs, idle sessions are removed after ``ttl_s`` and a session's folder goes when it ends.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path
from typing import Generic, Protocol, TypeVar


class HasRunDir(Protocol):
    """A stored result: anything that knows the run folder its files live in."""

    run_dir: Path


R = TypeVar("R", bound=HasRunDir)


class SessionStore(Generic[R]):
    """Per-session folders under one root, and the latest result of each session (thread-safe)."""

    def __init__(self, root: Path, runs_kept: int = 2, ttl_s: float = 7200.0) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_kept = max(1, int(runs_kept))
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}
        self._latest: dict[str, R] = {}
        self._counter = 0

    @staticmethod
    def key(session_id: str | None) -> str:
        """Folder name of a session: a hash, since session ids come from the client."""
        raw = (session_id or "anonymous").encode("utf-8", "replace")
        return hashlib.sha256(raw).hexdigest()[:24]

    def session_dir(self, session_id: str | None) -> Path:
        return self.root / self.key(session_id)

    def new_run_dir(self, session_id: str | None) -> Path:
        """A fresh folder for one request; older runs beyond ``runs_kept - 1`` are removed."""
        key = self.key(session_id)
        with self._lock:
            self._counter += 1
            run = self.root / key / f"run-{time.time_ns():x}-{self._counter}"
            run.mkdir(parents=True)
            self._last_used[key] = time.monotonic()
            runs = sorted((p for p in (self.root / key).iterdir() if p.is_dir()),
                          key=lambda p: p.stat().st_mtime_ns)
            for old in runs[: max(0, len(runs) - self.runs_kept)]:
                if old != run:
                    shutil.rmtree(old, ignore_errors=True)
        return run

    def remember(self, session_id: str | None, result: R) -> None:
        """Keep ``result`` as the session's latest (what later requests of the session refer to)."""
        with self._lock:
            self._latest[self.key(session_id)] = result

    def latest(self, session_id: str | None) -> R | None:
        """The session's latest result, or None (none yet, or its folder is gone)."""
        key = self.key(session_id)
        with self._lock:
            result = self._latest.get(key)
            if result is not None:
                self._last_used[key] = time.monotonic()
        if result is not None and not result.run_dir.is_dir():
            return None
        return result

    def end(self, session_id: str | None) -> None:
        """Remove a session's folder and memory (the app calls this when a browser tab closes)."""
        key = self.key(session_id)
        with self._lock:
            self._latest.pop(key, None)
            self._last_used.pop(key, None)
            shutil.rmtree(self.root / key, ignore_errors=True)

    def sweep(self, now: float | None = None) -> int:
        """Remove sessions idle longer than the TTL (API clients never close a tab); returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > self.ttl_s]
            for key in stale:
                self._latest.pop(key, None)
                self._last_used.pop(key, None)
                shutil.rmtree(self.root / key, ignore_errors=True)
        return len(stale)

    def clear(self) -> None:
        """Remove every session and the root folder itself (server shutdown)."""
        with self._lock:
            self._latest.clear()
            self._last_used.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def n_files(self) -> int:
        return sum(1 for p in self.root.rglob("*") if p.is_file())
