"""The app under hostile and careless use: bounded memory per request, clear messages, a server that
keeps serving.

Real parts only: the real app (``app.py`` in a subprocess, tests/app_server.py) driven by
gradio_client, real audio and mesh files written here. Memory is read from the server's
``/proc/PID/status`` (VmHWM: the peak resident set since the process started).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from voice2mesh import meshio
from voice2mesh.audio import AudioConfig, AudioFormatLimitError, load_audio
from voice2mesh.publictext import public_message
from voice2mesh.sessions import TRASH

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tests.app_server import AppServer, make_app_bundle, start_app, synthesise  # noqa: E402

MiB = 1 << 20
MODEL = "supervised"
# A request may grow the server's peak memory by this much at most (the bomb of the issue took +2.6 GB).
MAX_GROWTH_MB = 200
# What no visitor-facing message may show.
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b")
SERVER_PATH = re.compile(r"(?<![\w.:/])/[\w.-]+/")


# --------------------------------------------------------------------------- helpers


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process: its peak resident memory so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


def write_bomb(path: Path, rate: int = 655350, channels: int = 8, seconds: int = 59) -> Path:
    """The decompression bomb of the issue: a FLAC of constant 0.5, a few hundred KB, huge when decoded."""
    block = np.full((rate, channels), 0.5, np.float32)
    with sf.SoundFile(str(path), "w", rate, channels, format="FLAC", subtype="PCM_24") as f:
        for _ in range(seconds):
            f.write(block)
    return path


def wav_with_header_rate(path: Path, rate: int) -> Path:
    """A 16-bit mono WAV of one second of 0.5 whose header claims ``rate`` Hz."""
    sf.write(path, np.full(16000, 0.5, np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)  # fmt chunk: sample rate
    data[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)  # and byte rate
    path.write_bytes(bytes(data))
    return path


def assert_public(message: str, server: AppServer | None = None) -> None:
    """A message for people: no server folders, no process id, no exception class names."""
    assert not SERVER_PATH.search(message), message
    assert not CLASS_NAME.search(message), message
    if server is not None:
        assert str(server.temp_dir) not in message and str(server.proc.pid) not in message, message


def peak_of_subprocess(code: str) -> float:
    """Peak memory growth (MB) of running ``code`` in a fresh interpreter, after its imports."""
    script = (
        textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np, soundfile, soxr
        from voice2mesh import audio, meshio
        def hwm():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        before = hwm()
    """)
        + textwrap.dedent(code)
        + "\nprint('GROWTH', hwm() - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    return float(re.search(r"GROWTH (\S+)", out.stdout).group(1))


# --------------------------------------------------------------------------- audio, in process


def test_absurd_header_rate_gets_a_sample_rate_message(tmp_path):
    path = wav_with_header_rate(tmp_path / "fast.wav", 2**31 - 1)
    with pytest.raises(AudioFormatLimitError) as info:
        load_audio(path)
    message = str(info.value)
    assert message.startswith("fast.wav: ") and "2147483647 Hz" in message and "8000-96000 Hz" in message
    assert "silent" not in message


def test_channel_limit_from_the_header(tmp_path):
    path = tmp_path / "nine.wav"
    sf.write(path, np.full((1600, 9), 0.1, np.float32), 16000, subtype="PCM_16")
    with pytest.raises(
        AudioFormatLimitError,
        match=r"nine\.wav: the header gives 9 audio channels; "
        r"accepted: 1 to 8",
    ):
        load_audio(path)
    load_audio(path, AudioConfig(max_channels=9))  # the limit is the config's


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return write_bomb(tmp_path_factory.mktemp("bomb") / "bomb.flac")


def test_the_bomb_is_refused_before_decoding(bomb):
    assert bomb.stat().st_size < MiB  # small on disk: only the header tells what it would become
    growth = peak_of_subprocess(f"""
        try:
            audio.load_audio({str(bomb)!r})
        except audio.AudioFormatLimitError as e:
            print("REFUSED", e)
    """)
    assert growth < 20, f"refusing the bomb grew memory by {growth:.0f} MB"


def test_decoding_memory_is_bounded_at_the_limits(tmp_path):
    """The largest file the limits admit (96 kHz, 8 channels, 59 s: 45 M samples, 181 MB as float32)
    decodes within a few block sizes of memory."""
    path = tmp_path / "max.flac"
    t = np.arange(96000) / 96000
    block = np.repeat((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None], 8, axis=1)
    with sf.SoundFile(str(path), "w", 96000, 8, format="FLAC", subtype="PCM_16") as f:
        for _ in range(59):
            f.write(block)
    growth = peak_of_subprocess(f"""
        a = audio.load_audio({str(path)!r})
        assert a.original_sample_rate == 96000 and a.original_channels == 8, a
        assert abs(a.duration_s - 59.0) < 0.01, a.duration_s
    """)
    assert growth < 60, f"decoding grew memory by {growth:.0f} MB"


def test_blocks_give_the_same_samples_as_one_block(tmp_path):
    """Block-wise checks, downmix and streaming resampling equal the whole signal at once, bit for bit."""
    rng = np.random.default_rng(7)
    raw = (0.2 * rng.standard_normal((44100 * 3 + 17, 2))).astype(np.float32)
    raw[1000:1100] = 1.0  # clipped stretch: the warning must count the same
    path = tmp_path / "x.wav"
    sf.write(path, raw, 44100, subtype="FLOAT")
    whole = load_audio(path, AudioConfig(block_frames=len(raw)))
    for block_frames in (4096, 65536 + 3):
        blocks = load_audio(path, AudioConfig(block_frames=block_frames))
        np.testing.assert_array_equal(blocks.samples, whole.samples)
        assert blocks.warnings == whole.warnings


# --------------------------------------------------------------------------- meshes, in process


def _obj_text(vertices: np.ndarray) -> str:
    return "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)


def test_obj_with_millions_of_faces_reads_vertices_only(tmp_path):
    v = np.random.default_rng(0).normal(size=(3000, 3))
    path = tmp_path / "faces.obj"
    faces = "".join(
        f"f {a} {b} {c} {d}\n" for a, b, c, d in np.random.default_rng(1).integers(1, 3001, size=(20000, 4))
    )
    with open(path, "w") as fh:
        fh.write(_obj_text(v))
        for _ in range(40):  # 800,000 quads (~20 MB) that /compare never needs
            fh.write(faces)
    growth = peak_of_subprocess(f"""
        v = meshio.read_vertices({str(path)!r})
        assert v.shape == (3000, 3)
    """)
    np.testing.assert_allclose(meshio.read_vertices(path), v, atol=1e-6)
    assert growth < 40, f"reading the vertices grew memory by {growth:.0f} MB"


def test_vertex_caps_are_found_before_parsing(tmp_path):
    many = tmp_path / "many.obj"
    many.write_text("v 1 2 3\n" * 5000 + "f 1 2 3\n")
    with pytest.raises(meshio.MeshTooLargeError) as info:
        meshio.read_vertices(many, max_vertices=4000)
    assert info.value.count == 5000
    assert str(info.value) == f"{many}: 5000 vertices; accepted: at most 4000 vertices"
    claim = tmp_path / "claim.ply"
    claim.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 2147483647\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n" + bytes(120)
    )
    with pytest.raises(meshio.MeshTooLargeError, match="claim.ply: 2147483647 vertices"):
        meshio.read_vertices(claim)
    npy = tmp_path / "big.npy"
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(2_000_000, 3)).flush()
    with pytest.raises(meshio.MeshTooLargeError, match="big.npy: 2000000 vertices"):
        meshio.read_vertices(npy)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "short.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 200\nproperty float x\n"
            b"property float y\nproperty float z\nend_header\n" + bytes(120),
            "ends after 10 of the 200",
        ),
        (
            "listy.ply",
            b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar int x\nproperty float y\n"
            b"property float z\nend_header\n1 1 2 3\n",
            "is not a number type",
        ),
        (
            "faces_first.ply",
            b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
            b"element vertex 3\nproperty float x\nend_header\n",
            "first PLY element",
        ),
        ("ragged.obj", b"v 1 2 3\nv 1 2\n", "must all hold 3"),
        ("words.obj", b"v 1 two 3\n", "must all hold 3"),
        ("long.obj", b"v " + b"1 " * 5000 + b"\n", "longer than"),
        ("nan.obj", b"v 1 2 nan\nv 1 2 3\n", "NaN"),
    ],
)
def test_hostile_mesh_files_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(meshio.MeshFileError) as info:
        meshio.read_vertices(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text, text  # the file as the caller named it
    assert not CLASS_NAME.search(text), text
    assert public_message(text).startswith(f"{name}: ")  # what a visitor sees: no folders


def test_a_ply_point_cloud_reads(tmp_path):
    import trimesh

    v = np.random.default_rng(2).normal(size=(50, 3))
    path = tmp_path / "cloud.ply"
    path.write_bytes(trimesh.PointCloud(v).export(file_type="ply"))
    np.testing.assert_allclose(meshio.read_vertices(path), v, atol=1e-6)
    mesh_v, tri, _ = meshio.read_mesh(path)
    assert tri.shape == (0, 3) and mesh_v.shape == (50, 3)


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) is needed to make test voices")
    try:
        return make_app_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    except Exception as exc:  # the ICT face model needs the shared assets (or its cache)
        pytest.skip(f"cannot make the test bundle: {exc}")


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    return synthesise(
        tmp_path_factory.mktemp("voice") / "voice.wav",
        "Hello, this is a short test of the voice to mesh web application, spoken slowly.",
    )


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory) -> AppServer:
    srv = start_app(bundle, tmp_path_factory.mktemp("app"), ["--no-examples"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server, voice) -> Client:
    c = Client(server.url, verbose=False)
    c.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")  # warm, and a result to compare
    yield c
    c.close()


def still_answers(client: Client, voice: Path) -> None:
    out = client.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
    assert out[0] and Path(out[0]).is_file()


def test_bomb_through_the_server(server, client, voice, bomb):
    before = peak_rss_mb(server.proc.pid)
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(bomb)), MODEL, False, api_name="/predict")
    growth = peak_rss_mb(server.proc.pid) - before
    message = str(info.value)
    assert "bomb.flac: the header gives a sample rate of 655350 Hz; accepted: 8000-96000 Hz" in message
    assert_public(message, server)
    assert growth < MAX_GROWTH_MB, f"the bomb grew the server's peak memory by {growth:.0f} MB"
    still_answers(client, voice)


def test_hostile_meshes_through_compare(server, client, voice, tmp_path):
    n = int(client.predict(api_name="/info")["n_vertices"])
    rng = np.random.default_rng(3)
    files = {}
    # the right vertex count, buried under ~15 MB of faces the comparison never needs
    heavy = tmp_path / "heavy.obj"
    with open(heavy, "w") as fh:
        fh.write(_obj_text(rng.normal(size=(n, 3)) * 50))
        quads = "".join(f"f {a} {b} {c} {d}\n" for a, b, c, d in rng.integers(1, n + 1, size=(20000, 4)))
        while fh.tell() < 15 * MiB:
            fh.write(quads)
    files["heavy.obj"] = None  # accepted
    many = tmp_path / "many.obj"
    many.write_text("v 1 2 3\n" * (15 * MiB // 8))
    files["many.obj"] = f"many.obj has {15 * MiB // 8} vertices, but the model's topology"
    claim = tmp_path / "claim.ply"
    claim.write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 2147483647\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + bytes(1200)
    )
    files["claim.ply"] = "claim.ply has 2147483647 vertices"
    cloud = tmp_path / "cloud.ply"
    cloud.write_bytes(
        b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        b"property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
    )
    files["cloud.ply"] = "cloud.ply has 3 vertices"
    junk = tmp_path / "junk.ply"
    junk.write_bytes(os.urandom(4096))
    files["junk.ply"] = "junk.ply: not a PLY file"
    nan = tmp_path / "nan.obj"
    nan.write_text("v 1 2 nan\n" + "v 0 0 0\n" * (n - 1))
    files["nan.obj"] = "nan.obj: vertices contain NaN or infinite values"
    for name, expected in files.items():
        before = peak_rss_mb(server.proc.pid)
        if expected is None:
            table = client.predict(handle_file(str(tmp_path / name)), api_name="/compare")
            assert len(table["data"]) == 1
        else:
            with pytest.raises(AppError) as info:
                client.predict(handle_file(str(tmp_path / name)), api_name="/compare")
            assert expected in str(info.value), str(info.value)
            assert_public(str(info.value), server)
        growth = peak_rss_mb(server.proc.pid) - before
        assert growth < MAX_GROWTH_MB, f"{name} grew the server's peak memory by {growth:.0f} MB"
    still_answers(client, voice)


# --------------------------------------------------------------------------- disk, sessions, restarts

TTL_S = 4  # session TTL of the flood server: the timer sweeps every second, uploads age out as fast
UPLOAD_CAP_MB = 50  # the flood server's cap on the sum of uploads


def tree_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (files removed while counting count as gone)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def session_folders(server: AppServer) -> list[Path]:
    root = server.session_root
    return [p for p in root.iterdir() if p.is_dir() and p.name != TRASH] if root.is_dir() else []


def upload(http: httpx.Client, server: AppServer, name: str, data: bytes) -> httpx.Response:
    return http.post(server.url + "gradio_api/upload", files={"files": (name, data)})


def rest_call(
    http: httpx.Client, server: AppServer, api_name: str, data: list, session_hash: str | None = None
) -> list:
    """POST /gradio_api/call/<api_name>, then GET the answer (Gradio's REST API): the output list."""
    body = {"data": data, **({"session_hash": session_hash} if session_hash else {})}
    r = http.post(f"{server.url}gradio_api/call/{api_name}", json=body)
    r.raise_for_status()
    text = http.get(f"{server.url}gradio_api/call/{api_name}/{r.json()['event_id']}").text
    events = re.findall(r"event: (\w+)\ndata: (.*)", text)
    assert events and events[-1][0] == "complete", text[-500:]
    return json.loads(events[-1][1])


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def ttl_server(bundle, tmp_path_factory) -> AppServer:
    srv = start_app(
        bundle,
        tmp_path_factory.mktemp("ttl"),
        ["--no-examples", "--session-ttl-s", str(TTL_S), "--upload-disk-mb", str(UPLOAD_CAP_MB)],
    )
    yield srv
    srv.stop()


def wait_until(condition, timeout_s: float) -> float:
    """Seconds until ``condition()`` held (polling every 0.25 s); fails after ``timeout_s``."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.25)
    return time.monotonic() - t0


def test_rest_flood_is_bounded_and_cleared_by_the_timer(ttl_server, voice):
    """50 REST calls (each a new session that never ends): bytes stay bounded, and the timer removes
    every session's files within the TTL plus a few sweeps, with no further request."""
    srv = ttl_server
    data = voice.read_bytes()
    with httpx.Client(timeout=120) as http:
        base = tree_bytes(srv.temp_dir)
        peak = 0
        for i in range(50):
            [path] = upload(http, srv, "voice.wav", data).json()
            out = rest_call(http, srv, "predict", [file_data(path), MODEL, False])
            if i == 0:  # the answer's file can be fetched right after the answer; its URL has no pid
                assert http.get(out[0]["url"]).status_code == 200
                assert f"/{srv.proc.pid}/" not in out[0]["url"], out[0]["url"]
            peak = max(peak, tree_bytes(srv.temp_dir) - base)
        assert peak < 60 * MiB, f"the temp folder grew by {peak / MiB:.0f} MB"
        cleared = wait_until(
            lambda: not session_folders(srv) and tree_bytes(srv.temp_dir) <= base + 64 * 1024,
            timeout_s=TTL_S + 10,
        )
        assert srv.alive() and "predict" in http.get(srv.url + "gradio_api/info").text
    print(f"REST flood: peak +{peak / MiB:.1f} MB, cleared {cleared:.1f} s after the last answer")


def test_upload_flood_is_bounded(ttl_server, voice):
    """Uploads over the one limit are refused before they are stored; their sum is capped (oldest go
    first) within seconds, and all of them age out."""
    srv = ttl_server
    limit = 20 * MiB
    with httpx.Client(timeout=120) as http:
        base = tree_bytes(srv.temp_dir)
        too_big = upload(http, srv, "big.obj", os.urandom(limit + 1))
        assert too_big.status_code == 413 and "maximum allowed size" in too_big.text
        assert tree_bytes(srv.temp_dir) - base < MiB, "a refused upload was stored"
        for i in range(5):  # 95 MB in a second or two
            assert upload(http, srv, f"u{i}.bin", os.urandom(limit - MiB)).status_code == 200
        assert tree_bytes(srv.temp_dir) - base <= 5 * limit
        wait_until(lambda: tree_bytes(srv.temp_dir) - base <= UPLOAD_CAP_MB * MiB, timeout_s=TTL_S)
        wait_until(lambda: tree_bytes(srv.temp_dir) <= base + 64 * 1024, timeout_s=TTL_S + 10)
        [path] = upload(http, srv, "voice.wav", voice.read_bytes()).json()
        assert rest_call(http, srv, "predict", [file_data(path), MODEL, False])[0]["url"]


def test_gradio_client_without_close_is_cleared(ttl_server, voice):
    c = Client(ttl_server.url, verbose=False)
    c.predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
    assert session_folders(ttl_server)
    wait_until(lambda: not session_folders(ttl_server), timeout_s=TTL_S + 10)  # no close(), no request


def test_orphans_of_a_killed_server_are_removed_at_start(bundle, voice, tmp_path):
    work = tmp_path / "app"
    first = start_app(bundle, work, ["--no-examples"])
    try:
        Client(first.url, verbose=False).predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
        orphan = first.session_root
        assert orphan.is_dir() and str(first.proc.pid) not in str(orphan)  # named at random, not by pid
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        legacy = orphan.parent / str(pid_max + 1)  # the older layout: a folder named by a (dead) pid
        (legacy / "abc" / "run-1").mkdir(parents=True)
        first.proc.kill()  # SIGKILL: no shutdown handler runs
        first.proc.wait(timeout=30)
        assert orphan.is_dir()
    finally:
        first.stop()
    second = start_app(bundle, work, ["--no-examples"])
    try:
        assert not orphan.exists() and not legacy.exists()
        assert second.session_root.is_dir()
        Client(second.url, verbose=False).predict(handle_file(str(voice)), MODEL, False, api_name="/predict")
    finally:
        second.stop()


def test_a_session_hash_alone_opens_no_results(server, voice):
    """Another client with a browser's session hash (but not its visitor cookie) sees none of its
    results, and the private unload event called by its number deletes nothing."""
    session_hash = "victim-" + os.urandom(6).hex()
    with httpx.Client(timeout=120) as browser, httpx.Client(timeout=120) as other:
        assert browser.get(server.url).status_code == 200 and browser.cookies.get("voice2mesh_visitor")
        [path] = upload(browser, server, "voice.wav", voice.read_bytes()).json()
        mine = rest_call(
            browser, server, "predict", [file_data(path), MODEL, False], session_hash=session_hash
        )
        assert rest_call(browser, server, "view", [True], session_hash=session_hash)[0]["url"]
        assert rest_call(other, server, "view", [True], session_hash=session_hash) == [None, None]
        assert rest_call(other, server, "downloads", [], session_hash=session_hash) == [None] * 6
        assert all(rest_call(browser, server, "downloads", [], session_hash=session_hash)[:3])  # GLB OBJ PLY
        config = other.get(server.url + "config").json()
        ends = [d["id"] for d in config["dependencies"] if any(t[1] == "unload" for t in d["targets"])]
        assert ends
        for client, end in ((c, e) for c in (other, browser) for e in ends):  # by number: not the heartbeat
            r = client.post(
                server.url + "gradio_api/queue/join",
                json={"data": [], "fn_index": end, "session_hash": session_hash},
            )
            if r.status_code == 200:  # queued: wait for it to finish
                with client.stream(
                    "GET", f"{server.url}gradio_api/queue/data", params={"session_hash": session_hash}
                ) as stream:
                    for line in stream.iter_lines():
                        if "process_completed" in line:
                            break
        again = rest_call(browser, server, "view", [False], session_hash=session_hash)
        assert again[0]["path"] == mine[0]["path"] and browser.get(again[0]["url"]).status_code == 200


def test_unknown_event_number_is_a_clear_answer(server):
    r = httpx.post(
        server.url + "gradio_api/queue/join",
        timeout=30,
        json={"data": [], "fn_index": 9999, "session_hash": "abc"},
    )
    assert r.status_code in (400, 404, 422), (r.status_code, r.text[:300])
    assert not CLASS_NAME.search(r.text) and "Traceback" not in r.text
    assert httpx.get(server.url + "config", timeout=30).status_code == 200


# --------------------------------------------------------------------------- one sanitiser, every path


def test_public_message_cuts_paths_pids_and_class_names():
    text = (
        "could not read /srv/cache/3f2a/upload/scan.obj (AttributeError: 'PointCloud' object has no "
        "attribute 'faces') in /srv/voice2mesh-sessions/4242/ab; file:/tmp/x/voice.wav; "
        "<_io.BufferedReader object at 0x7f3a2b> numpy.linalg.LinAlgError"
    )
    out = public_message(text, pid=4242)
    assert "scan.obj" in out and "voice.wav" in out and "'faces'" in out
    assert not SERVER_PATH.search(out) and "/srv" not in out and "/tmp" not in out, out
    assert not CLASS_NAME.search(out) and "4242" not in out and "0x7f" not in out, out
    kept = "see https://huggingface.co/owner/name; OGG/Vorbis or M4A/MP4; 16/44.1 kHz; 1/2 of it"
    assert public_message(kept, pid=4242) == kept


@pytest.fixture(scope="module")
def handlers(bundle, tmp_path_factory):
    """The app's event handlers on a real service (the functions the server calls), in this process."""
    import app as app_module
    from voice2mesh.service import ServiceConfig, Voice2MeshService

    config = ServiceConfig(audio=AudioConfig(max_bytes=2 * MiB), max_scan_bytes=3 * MiB)
    service = Voice2MeshService.from_bundle(
        bundle, work_dir=tmp_path_factory.mktemp("sessions"), config=config
    )
    yield app_module.make_handlers(service), service
    service.close()


def _visitor(session: str):
    import gradio as gr

    return gr.Request(session_hash=session)


def _public_error(call, tmp_path: Path, expected: str) -> str:
    import gradio as gr

    with pytest.raises(gr.Error) as info:
        call()
    message = info.value.message
    assert expected in message, message
    assert not SERVER_PATH.search(message) and str(tmp_path) not in message, message
    assert not CLASS_NAME.search(message) and str(os.getpid()) not in message, message
    return message


def test_every_predict_error_is_public(handlers, voice, tmp_path, monkeypatch):
    h, service = handlers
    rate = 16000
    speech, _ = sf.read(voice, dtype="float32")
    cases = {"no audio": (None, "no audio")}
    deep = tmp_path / "cache" / "0123abcd" / "upload"
    deep.mkdir(parents=True)

    def wav(name: str, x: np.ndarray, sr: int = rate, subtype: str = "PCM_16") -> str:
        sf.write(deep / name, x, sr, subtype=subtype)
        return str(deep / name)

    (deep / "empty.wav").write_bytes(b"")
    (deep / "text.wav").write_text("not audio\n" * 50)
    (deep / "big.wav").write_bytes(bytes(3 * MiB))
    nan = np.full(rate, 0.1, np.float32)
    nan[7] = np.nan
    cases.update(
        {
            "gone": (str(deep / "gone.wav"), "did not arrive"),
            "empty": (str(deep / "empty.wav"), "empty.wav: the file is empty"),
            "text": (str(deep / "text.wav"), "text.wav: not a readable audio file"),
            "big": (str(deep / "big.wav"), "big.wav: 3.0 MB is too large"),
            "silent": (wav("silent.wav", np.zeros(rate)), "silent.wav: the recording is silent"),
            "long": (wav("long.wav", np.full(70 * 8000, 0.1), sr=8000), "long.wav: 70.0 s is too long"),
            "rate": (
                str(wav_with_header_rate(deep / "rate.wav", 2**31 - 1)),
                "rate.wav: the header gives a sample rate of 2147483647 Hz",
            ),
            "channels": (
                wav("nine.wav", np.full((rate, 9), 0.1)),
                "nine.wav: the header gives 9 audio channels",
            ),
            "nan": (wav("nan.wav", nan, subtype="FLOAT"), "nan.wav: 1 sample(s) are NaN or infinite"),
            "short": (wav("short.wav", speech[: rate // 3]), "short.wav"),
        }
    )
    for audio, expected in cases.values():
        _public_error(lambda a=audio: h["predict"](a, MODEL, False, _visitor("p")), tmp_path, expected)
    _public_error(lambda: h["predict"](str(voice), "nope", False, _visitor("p")), tmp_path, "unknown model")
    out = h["predict"](wav("loud.wav", np.clip(speech * 30, -1, 1)), MODEL, False, _visitor("p"))
    assert "clipped" in out[2] and not SERVER_PATH.search(out[2]) and "clipped" in out[6]["warnings"][0]

    def broken(*args, **kwargs):
        raise RuntimeError(f"failed at {deep}/model.onnx in process {os.getpid()}")

    monkeypatch.setattr(service, "run", broken)
    message = _public_error(
        lambda: h["predict"](str(voice), MODEL, False, _visitor("p")),
        tmp_path,
        "Something went wrong on the server while making the face",
    )
    assert "model.onnx" not in message


def test_every_compare_error_is_public(handlers, voice, tmp_path, monkeypatch):
    h, service = handlers
    deep = tmp_path / "cache" / "89abcdef" / "upload"
    deep.mkdir(parents=True)
    n = service.face_model.n_vertices
    _public_error(lambda: h["compare"](str(deep / "scan.obj"), _visitor("fresh")), tmp_path, "did not arrive")
    (deep / "first.obj").write_text("v 0 0 0\n" * n)
    _public_error(
        lambda: h["compare"](str(deep / "first.obj"), _visitor("fresh")),
        tmp_path,
        "make a face from a voice first",
    )
    h["predict"](str(voice), MODEL, False, _visitor("c"))
    files = {
        "scan.stl": (b"solid x", "scan.stl: unsupported scan format .stl"),
        "huge.obj": (bytes(3 * MiB + 1), "huge.obj: the scan is larger than 3 MB"),
        "junk.ply": (os.urandom(2048), "junk.ply: not a PLY file"),
        "few.obj": (b"v 0 0 0\n" * 10, "few.obj has 10 vertices, but the model's topology"),
        "many.ply": (
            b"ply\nformat ascii 1.0\nelement vertex 99999999\nproperty float x\nproperty float y\n"
            b"property float z\nend_header\n",
            "many.ply has 99999999 vertices",
        ),
        "nan.obj": (b"v nan 0 0\n" + b"v 0 0 0\n" * (n - 1), "nan.obj: vertices contain NaN"),
        "ragged.obj": (b"v 0 0\n" + b"v 0 0 0\n" * (n - 1), "ragged.obj: OBJ vertex lines must all hold"),
        "empty.obj": (b"# nothing\n", "empty.obj: no vertex"),
        "short.ply": (
            b"ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\n"
            b"property float y\nproperty float z\nend_header\n" % n + bytes(12),
            "short.ply: the file ends after 1 of the",
        ),
    }
    _public_error(lambda: h["compare"](None, _visitor("c")), tmp_path, "no scan")
    for name, (content, expected) in files.items():
        (deep / name).write_bytes(content)
        _public_error(lambda p=str(deep / name): h["compare"](p, _visitor("c")), tmp_path, expected)
    (deep / "same.obj").write_text(_obj_text(service.sessions.latest("c#").faces[0].vertices))
    table = h["compare"](str(deep / "same.obj"), _visitor("c"))
    assert len(table["data"]) == 1 and table["data"][0][1] == 0.0  # ARE of a face with itself

    def broken(*args, **kwargs):
        raise KeyError(f"{deep}/regions.npz")

    monkeypatch.setattr(service, "compare_scan", broken)
    _public_error(
        lambda: h["compare"](str(deep / "same.obj"), _visitor("c")),
        tmp_path,
        "Something went wrong on the server while comparing with the scan",
    )


# --------------------------------------------------------------------------- session store bounds


def test_least_recently_used_sessions_go_first(tmp_path):
    from voice2mesh.sessions import SessionStore

    class Result:
        def __init__(self, run_dir: Path) -> None:
            self.run_dir = run_dir

    store = SessionStore(tmp_path / "s", runs_kept=1, ttl_s=3600, max_sessions=3, max_bytes=10_000)
    dirs = {}
    for name in "abc":
        dirs[name] = store.new_run_dir(name)
        (dirs[name] / "face.glb").write_bytes(bytes(3000))
        store.remember(name, Result(dirs[name]))
        time.sleep(0.01)
    assert store.latest("a") is not None  # a was used: b is now the least recently used
    dirs["d"] = store.new_run_dir("d")  # a fourth session: b goes
    assert not dirs["b"].exists() and dirs["a"].exists() and dirs["c"].exists()
    (dirs["d"] / "face.glb").write_bytes(bytes(6000))  # 3000 + 3000 + 6000 bytes > 10,000
    store.sweep()  # the timer's sweep: the least recently used (c) goes for bytes
    assert not dirs["c"].exists() and dirs["a"].exists() and dirs["d"].exists()
    store.empty_trash()
    assert store.n_bytes() <= 10_000
    store.clear()


def test_the_timer_sweeps_without_a_request(tmp_path):
    from voice2mesh.sessions import SessionStore

    store = SessionStore(tmp_path / "s", ttl_s=0.5)
    run = store.new_run_dir("idle")
    stray = tmp_path / "s" / "left-behind"  # a folder nobody knows (an earlier store's)
    stray.mkdir()
    os.utime(stray, (time.time() - 60, time.time() - 60))
    store.start_sweeping(0.2)
    wait_until(lambda: not run.parent.exists() and not stray.exists(), timeout_s=5)
    store.clear()


def test_instance_folders_and_orphans(tmp_path):
    from voice2mesh.sessions import OWNER_FILE, instance_root, owner_alive

    parent = tmp_path / "voice2mesh-sessions"
    mine = instance_root(parent)
    owner = json.loads((mine / OWNER_FILE).read_text())
    assert owner["pid"] == os.getpid() and str(os.getpid()) not in mine.name and owner_alive(mine)
    dead = parent / "deadbeef"
    dead.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (dead / OWNER_FILE).write_text(json.dumps({"pid": child.pid, "started": 1}))
    reused = parent / "reused"  # a live pid, but another start time: the pid was reused
    reused.mkdir()
    (reused / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": -1}))
    fresh = parent / "being-created"  # no owner file yet, just made: left alone
    fresh.mkdir()
    second = instance_root(parent)
    assert mine.is_dir() and second.is_dir() and fresh.is_dir()
    assert not dead.exists() and not reused.exists()


def test_private_events_get_no_concurrency_of_their_own(handlers):
    """Every queued event is in the one compute group (the --concurrency limit), except the live
    microphone stream, whose events hold a worker between chunks and have their own group; no private
    event has a group of its own, and the events outside the queue do no work."""
    import app as app_module

    demo = app_module.build_demo(handlers[1])
    queued = [fn for fn in demo.fns.values() if fn.queue and not any(t[1] == "unload" for t in fn.targets)]
    groups = {fn.api_name: fn.concurrency_id for fn in queued}
    assert set(groups) >= {"predict", "downloads", "view", "compare", "info"}
    assert {g for name, g in groups.items() if name != "live_update"} == {app_module.COMPUTE}, groups
    assert groups.get("live_update", app_module.LIVE) == app_module.LIVE
    private = [fn for fn in queued if fn.api_visibility == "private"]
    assert all(fn.concurrency_id == app_module.COMPUTE for fn in private), [fn.name for fn in private]
    unqueued = [fn.name for fn in demo.fns.values() if not fn.queue]
    assert set(unqueued) <= {"enable_downloads", "show_second", "end", "live_start"}, unqueued


def test_the_bundle_is_shown_by_name_not_path(handlers, bundle):
    import app as app_module

    h, service = handlers
    assert h["info"]()["bundle"] == bundle.name
    about = app_module.about_markdown(service)
    assert f"`{bundle.name}`" in about and str(bundle.parent) not in about


@pytest.mark.browser
def test_a_browser_tab_keeps_its_session_and_closing_it_removes_the_files(server, voice, tmp_path):
    """In Chromium: the visitor cookie keeps the page's events on its results (heatmap toggle after the
    face, downloads), and closing the tab removes its files (Gradio's heartbeat ends, unload runs)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    from tests.test_app_browser import (
        CHROMIUM,
        CHROMIUM_ARGS,
        TIMEOUT_MS,
        assert_face_drawn,
        open_app,
        viewer_pixels,
    )

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} (Debian package chromium) is not installed")
    before = set(session_folders(server))
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page, errors = open_app(browser, server)
        assert any(c["name"] == "voice2mesh_visitor" for c in page.context.cookies())
        page.set_input_files("#voice-input input[type=file]", str(voice))
        page.locator("#voice-input").get_by_role("button", name="Clear").wait_for(timeout=TIMEOUT_MS)
        page.click("#run")
        page.locator("#readouts [role=gridcell]", has_text="ER (ear to ear)").wait_for(timeout=TIMEOUT_MS)
        playwright_api.expect(page.get_by_role("button", name="PLY").first).to_be_enabled(timeout=TIMEOUT_MS)
        page.get_by_label("Colour by distance from the average face", exact=False).check()
        time.sleep(2.0)  # the heatmap GLB is written and shown
        rgb = viewer_pixels(page, tmp_path / "heatmap.png")
        assert_face_drawn(rgb)
        assert ((rgb[..., 0] - rgb[..., 2]) > 12).mean() > 0.01, "the toggle found no result to colour"
        mine = set(session_folders(server)) - before
        assert len(mine) == 1 and not errors, (mine, errors)
        page.context.close()
        wait_until(lambda: not any(f.exists() for f in mine), timeout_s=30)
        browser.close()


def test_upload_cap_deletes_the_oldest_first(tmp_path):
    from app import cap_uploads

    files = set()
    for i in range(5):
        path = tmp_path / f"u{i}.bin"
        path.write_bytes(bytes(1000))
        files.add(str(path))
        time.sleep(0.02)  # ctime order: u0 oldest
    files.add(str(tmp_path / "gone.bin"))
    assert cap_uploads(files, 2500) == 3
    assert sorted(Path(f).name for f in files) == ["u3.bin", "u4.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u3.bin", "u4.bin"]
    assert cap_uploads(files, 2500) == 0
