"""Per-session result folders and the latest result of each session, with bounded disk use.

A session id (Gradio's ``session_hash``, chosen by the client) never becomes a path: its folder
name is a hash. Each request gets a fresh run folder; a session keeps only its ``runs_kept`` newest
runs and its folder goes when it ends. Nothing grows without bound:

- sessions idle for ``ttl_s`` are removed by a timer (:meth:`SessionStore.start_sweeping`), not by
  the next request, so API clients that never end their session (REST calls, a gradio_client
  without ``close()``) lose their files within ``ttl_s`` plus one sweep interval;
- at most ``max_sessions`` sessions and ``max_bytes`` of session files are kept: past either, the
  least recently used sessions are removed first (never the one being written);
- each server process keeps its sessions in its own folder (:func:`instance_root`), named at random
  and owned through an ``owner.json`` (process id and start time); at start-up, folders whose owner
  is gone (a crash, SIGKILL) are removed.

Removing a folder of mesh files takes milliseconds (freeing the blocks), so a request never waits
for it: a folder to remove is renamed into ``root/.trash`` (instant) and deleted by a background
thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Generic, Protocol, TypeVar

LOG = logging.getLogger(__name__)
OWNER_FILE = "owner.json"
TRASH = ".trash"  # under the root: folders waiting to be deleted
UNOWNED_GRACE_S = 60.0  # a folder without an owner file this old is an orphan (not one being created)


class HasRunDir(Protocol):
    """A stored result: anything that knows the run folder its files live in."""

    run_dir: Path


R = TypeVar("R", bound=HasRunDir)


class SessionStore(Generic[R]):
    """Per-session folders under one root, and the latest result of each session (thread-safe)."""

    def __init__(
        self,
        root: Path,
        runs_kept: int = 2,
        ttl_s: float = 7200.0,
        *,
        max_sessions: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.runs_kept = max(1, int(runs_kept))
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._last_used: dict[str, float] = {}  # insertion order is not use order: see _evict_locked
        self._latest: dict[str, R] = {}
        self._counter = 0
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.trash = self.root / TRASH
        self._to_empty = threading.Event()
        self._emptier: threading.Thread | None = None

    @staticmethod
    def key(session_id: str | None) -> str:
        """Folder name of a session: a hash, since session ids come from the client."""
        raw = (session_id or "anonymous").encode("utf-8", "replace")
        return hashlib.sha256(raw).hexdigest()[:24]

    def session_dir(self, session_id: str | None) -> Path:
        return self.root / self.key(session_id)

    def new_run_dir(self, session_id: str | None) -> Path:
        """A fresh folder for one request; older runs beyond ``runs_kept - 1`` are removed, and the least
        recently used other sessions beyond ``max_sessions`` / ``max_bytes``."""
        key = self.key(session_id)
        with self._lock:
            self._counter += 1
            # names sort in creation order (modification times change when files are added later)
            run = self.root / key / f"run-{time.time_ns():016x}-{self._counter:08d}"
            run.mkdir(parents=True)
            self._last_used[key] = time.monotonic()
            runs = sorted(p for p in (self.root / key).iterdir() if p.is_dir())
            for old in runs[: max(0, len(runs) - self.runs_kept)]:
                if old != run:
                    self._discard(old)
            self._evict_locked(keep=key)
        return run

    def remember(self, session_id: str | None, result: R) -> None:
        """Keep ``result`` as the session's latest (what later requests of the session refer to)."""
        with self._lock:
            key = self.key(session_id)
            self._latest[key] = result
            self._last_used[key] = time.monotonic()

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
        with self._lock:
            self._drop_locked(self.key(session_id))

    def sweep(self, now: float | None = None) -> int:
        """Remove sessions idle longer than the TTL, and session folders nobody knows (left behind)
        older than the TTL; returns how many sessions were removed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > self.ttl_s]
            for key in stale:
                self._drop_locked(key)
            cutoff = time.time() - self.ttl_s - (now - time.monotonic())
            for folder in self._session_folders():
                if folder.name not in self._last_used and _mtime(folder) < cutoff:
                    self._discard(folder)
            self._evict_locked(keep=None)
        return len(stale)

    def start_sweeping(self, interval_s: float) -> None:
        """Run :meth:`sweep` every ``interval_s`` seconds on a daemon thread (until :meth:`clear`)."""
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001 - the sweeper must outlive one bad folder
                    LOG.exception("session sweep failed")

        self._sweeper = threading.Thread(target=loop, name="session-sweeper", daemon=True)
        self._sweeper.start()

    def clear(self) -> None:
        """Stop the sweeper; remove every session and the root folder itself (server shutdown)."""
        self._stop.set()
        with self._lock:
            self._latest.clear()
            self._last_used.clear()
            shutil.rmtree(self.root, ignore_errors=True)

    def n_bytes(self) -> int:
        """Bytes of all session files (those waiting in the trash included)."""
        return sum(_folder_bytes(f) for f in _subfolders(self.root))

    def empty_trash(self) -> None:
        """Delete what was discarded (the background thread calls this; tests may too)."""
        if self.trash.is_dir():
            for item in list(self.trash.iterdir()):
                shutil.rmtree(item, ignore_errors=True)

    # ----------------------------------------------------------------- internals (lock held)
    def _drop_locked(self, key: str) -> None:
        self._latest.pop(key, None)
        self._last_used.pop(key, None)
        self._discard(self.root / key)

    def _session_folders(self) -> list[Path]:
        return [f for f in _subfolders(self.root) if f.name != TRASH]

    def _discard(self, folder: Path) -> None:
        """Move ``folder`` out of sight at once; the background thread deletes it."""
        self.trash.mkdir(exist_ok=True)
        try:
            folder.rename(self.trash / uuid.uuid4().hex)
        except FileNotFoundError:
            return
        if self._emptier is None:
            self._emptier = threading.Thread(target=self._empty_forever, name="session-trash", daemon=True)
            self._emptier.start()
        self._to_empty.set()

    def _empty_forever(self) -> None:
        while True:
            self._to_empty.wait()
            self._to_empty.clear()
            self.empty_trash()

    def _evict_locked(self, keep: str | None) -> None:
        """Least recently used sessions first, until within ``max_sessions`` and ``max_bytes``."""
        if self.max_sessions is None and self.max_bytes is None:
            return
        order = [k for k in sorted(self._last_used, key=self._last_used.__getitem__) if k != keep]
        if self.max_sessions is not None:
            while order and len(self._last_used) > self.max_sessions:
                self._drop_locked(order.pop(0))
        if self.max_bytes is not None:
            sizes = {f.name: _folder_bytes(f) for f in self._session_folders()}
            total = sum(sizes.values())
            while order and total > self.max_bytes:
                key = order.pop(0)
                total -= sizes.get(key, 0)
                self._drop_locked(key)


def _subfolders(root: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


# --------------------------------------------------------------------------- one folder per process


def _process_start(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/PID/stat), None where unknown: with the
    pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    now_started = _process_start(pid)
    return started is None or now_started is None or now_started == started


def owner_alive(folder: Path) -> bool:
    """Whether the process that owns an instance folder (its ``owner.json``) still runs."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        return _alive(int(owner["pid"]), owner.get("started"))
    except (OSError, ValueError, KeyError, TypeError):
        if folder.name.isdigit():  # an older layout: folders named by process id
            return _alive(int(folder.name), None)
        return time.time() - _mtime(folder) < UNOWNED_GRACE_S


def remove_orphans(parent: Path) -> list[Path]:
    """Remove the instance folders under ``parent`` whose owner process is gone; returns them."""
    removed = []
    for folder in _subfolders(parent):
        if not owner_alive(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def instance_root(parent: str | Path) -> Path:
    """A new folder under ``parent`` for this process's sessions (a random name, not the pid, with an
    ``owner.json``), after removing the folders of processes that are gone."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for folder in remove_orphans(parent):
        LOG.info("removed the session folder %s of a server process that is gone", folder.name)
    root = parent / uuid.uuid4().hex[:16]
    root.mkdir()
    pid = os.getpid()
    (root / OWNER_FILE).write_text(json.dumps({"pid": pid, "started": _process_start(pid)}))
    return root
