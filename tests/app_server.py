"""Start the real app (``app.py``) in a subprocess on a free port, for the API and browser tests.

Used by tests/test_app_api.py, tests/test_app_browser.py and benchmarks/bench_app.py. Every server
gets its own Gradio cache folder (``GRADIO_TEMP_DIR``), so tests can count the files it keeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from voice2mesh.sessions import OWNER_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    """A running app process."""

    url: str
    proc: subprocess.Popen
    temp_dir: Path  # the server's Gradio cache (uploads, examples, session folders)
    log_path: Path
    ready_s: float  # process start → first answered HTTP request

    @property
    def session_root(self) -> Path:
        """Where this process keeps its per-session result folders (see app.session_root): the folder
        whose owner file names this process (a path that does not exist when there is none)."""
        parent = self.temp_dir / "voice2mesh-sessions"
        for owner in parent.glob(f"*/{OWNER_FILE}"):
            try:
                if json.loads(owner.read_text()).get("pid") == self.proc.pid:
                    return owner.parent
            except (OSError, ValueError):
                continue
        return parent / f"none-for-{self.proc.pid}"

    def files(self) -> list[Path]:
        """Every file in the server's Gradio cache."""
        return sorted(p for p in self.temp_dir.rglob("*") if p.is_file())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "config", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_app(
    bundle: str | Path | None,
    work_dir: str | Path,
    args: Sequence[str] = (),
    app_file: str | Path = REPO_ROOT / "app.py",
    env: dict[str, str] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> AppServer:
    """Start ``python app.py --bundle BUNDLE`` on a free port and wait until it answers HTTP.

    ``bundle=None`` leaves the choice to the app (its default bundle, models/default beside app.py).
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    temp_dir = work / "gradio-cache"
    temp_dir.mkdir(exist_ok=True)
    port = free_port()
    full_env = dict(os.environ)
    full_env.update(
        {
            "GRADIO_TEMP_DIR": str(temp_dir),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_HEARTBEAT_INTERVAL": "0.5",  # closed sessions are noticed within a second
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": full_env.get("OMP_NUM_THREADS", "1"),
        }
    )
    full_env.update(env or {})
    for name in ("VOICE2MESH_BUNDLE", "VOICE2MESH_HUB_REPO", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        if name not in (env or {}):
            full_env.pop(name, None)
    log_path = work / f"app-{port}.log"
    cmd = [
        sys.executable,
        str(app_file),
        *(["--bundle", str(bundle)] if bundle else []),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=str(Path(app_file).parent), env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}/"
    server = AppServer(url=url, proc=proc, temp_dir=temp_dir, log_path=log_path, ready_s=0.0)
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the app exited with code {proc.returncode} before answering:\n{server.log()}"
            )
        if _answers(url):
            server.ready_s = time.perf_counter() - t0
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"the app did not answer within {timeout_s:.0f} s:\n{server.log()}")


@contextlib.contextmanager
def running_app(
    bundle: str | Path | None, work_dir: str | Path, args: Sequence[str] = (), **kwargs
) -> Iterator[AppServer]:
    """``start_app`` as a context manager that always stops the process."""
    server = start_app(bundle, work_dir, args, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def make_app_bundle(out_dir: str | Path) -> Path:
    """The random-weights test bundle with two models (log-mel and GE2E), so "both" can be tested."""
    from tests.bundles import make_test_bundle

    return make_test_bundle(out_dir, encoders=("voiceembednet", "ge2e"))


def synthesise(path: str | Path, text: str, variant: str = "m3") -> Path:
    """A speech WAV made with espeak-ng (the project's one espeak-ng caller, training.synthvox.espeak)."""
    import soundfile as sf

    from training.synthvox.espeak import synthesize

    samples, sr = synthesize(text, variant, pitch=50, speed=150)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sr, subtype="PCM_16")
    return path
