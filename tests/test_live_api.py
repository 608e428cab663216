"""The live endpoint (/live_update) driven over HTTP the way the browser drives it.

gradio_client 2 cannot send a streaming input: it does not know the server's ``process_streaming``
message (KeyError). The protocol is plain HTTP, so this test speaks it with httpx (what docs/app.md
describes for API users): upload each chunk, join the queue once with the first, send the others to
``POST /gradio_api/stream/{event_id}``, read the answers from the session's event stream
(``GET /gradio_api/queue/data``), and close with ``POST /gradio_api/stream/{event_id}/close``.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.app_server import AppServer, make_app_bundle, start_app, synthesise

httpx = pytest.importorskip("httpx")
TIMEOUT_S = 120.0
OUTPUTS = 8 + 6 + 3  # /predict's outputs, the 6 downloads, the WAV heard, the live plot, the status


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_app_bundle(tmp_path_factory.mktemp("bundle") / "bundle")


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory) -> AppServer:
    srv = start_app(bundle, tmp_path_factory.mktemp("app"), ["--no-examples"])
    yield srv
    srv.stop()


class LiveClient:
    """One session streaming chunks to the app's /live_update event over HTTP."""

    def __init__(self, url: str) -> None:
        self.api = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=TIMEOUT_S)
        self.reader_http = httpx.Client(timeout=TIMEOUT_S)  # the event stream, read on its own thread
        config = self.http.get(url.rstrip("/") + "/config").json()
        self.fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "live_update")
        self.session = secrets.token_hex(8)
        self.messages: queue.Queue[dict] = queue.Queue()
        self.event_id: str | None = None
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        url, params = f"{self.api}/queue/data", {"session_hash": self.session}
        with contextlib.suppress(httpx.HTTPError), self.reader_http.stream("GET", url, params=params) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    self.messages.put(msg)
                    if msg.get("msg") == "close_stream":
                        return

    def _payload(self, chunk: Path, model: str) -> dict:
        path = self.http.post(f"{self.api}/upload", files={"files": chunk.open("rb")}).json()[0]
        data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, model, False]
        return {
            "data": data,
            "fn_index": self.fn_index,
            "session_hash": self.session,
            "event_data": None,
            "trigger_id": None,
        }

    def send(self, chunk: Path, model: str = "supervised") -> dict:
        """Send one chunk; the answer the server streamed back for it."""
        payload = self._payload(chunk, model)
        if self.event_id is None:
            self.event_id = self.http.post(f"{self.api}/queue/join", json=payload).json()["event_id"]
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        else:
            assert self.http.post(f"{self.api}/stream/{self.event_id}", json=payload).status_code == 200
        while True:
            msg = self.messages.get(timeout=TIMEOUT_S)
            if msg.get("msg") in ("process_streaming", "process_completed"):
                assert msg.get("success", True), msg
                return msg["output"]

    def close(self) -> None:
        if self.event_id is not None:
            self.http.post(f"{self.api}/stream/{self.event_id}/close")
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.http.close()
        self.reader_http.close()


def test_streaming_chunks_over_http(server, bundle, tmp_path):
    from voice2mesh.inference import Predictor

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) is needed to make test voices")
    wav = synthesise(
        tmp_path / "voice.wav",
        "The face forms while I speak to the server, chunk by chunk, one second at a time.",
    )
    x, rate = sf.read(wav, dtype="int16")
    paths = []
    for i, start in enumerate(range(0, len(x), rate)):  # one-second chunks at the voice's own rate
        paths.append(tmp_path / f"chunk{i}.wav")
        sf.write(paths[-1], x[start : start + rate], rate, subtype="PCM_16")
    client = LiveClient(server.url)
    try:
        outputs = [client.send(p)["data"] for p in paths]
    finally:
        client.close()
    assert all(len(o) == OUTPUTS for o in outputs)
    statuses = [o[-1] for o in outputs]
    assert "of speech" in statuses[0] and "0 faces so far" in statuses[0]  # 1 s: too little speech yet
    faces = [o[6] for o in outputs if o[6] is not None and "models" in o[6]]
    assert len(faces) >= 3
    final = outputs[-1]
    assert f"{len(faces)} faces so far" in final[-1]
    heard = tmp_path / "heard.wav"
    button = final[-3]  # a DownloadButton update: {"__type__": "update", "value": FileData, ...}
    assert button.get("interactive") is True
    heard.write_bytes(httpx.get(button["value"]["url"], timeout=TIMEOUT_S).content)
    pcm, sr = sf.read(heard, dtype="int16")
    assert sr == 16000 and abs(len(pcm) / sr - len(x) / rate) < 0.05  # all of it, less the resampler's tail
    one_shot = Predictor.from_bundle(bundle, model="supervised").predict(str(heard))
    assert final[6]["models"][0]["readouts"]["ratios"] == pytest.approx(one_shot.readouts["ratios"], abs=0)
    plot = final[-2]
    assert len(plot["data"]) == 4 * len(faces)  # one point per face and ratio
    assert np.all(np.diff([row[0] for row in plot["data"][::4]]) >= 0)  # seconds of speech grow
