"""The app under hostile and careless use: bounded memory per request, clear messages, a server that
keeps serving.

Real parts only: the real app (``app.py`` in a subprocess, tests/app_server.py) driven by
gradio_client, real audio and mesh files written here. Memory is read from the server's
``/proc/PID/status`` (VmHWM: the peak resident set since the process started).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice2mesh import meshio
from voice2mesh.audio import AudioConfig, AudioFormatLimitError, _finish, load_audio

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
    data[24:28] = struct.pack("<I", rate)                      # fmt chunk: sample rate
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
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np, soundfile, soxr
        from voice2mesh import audio, meshio
        def hwm():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        before = hwm()
    """) + textwrap.dedent(code) + "\nprint('GROWTH', hwm() - before)\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
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
    with pytest.raises(AudioFormatLimitError, match=r"nine\.wav: the header gives 9 audio channels; "
                                                    r"accepted: 1 to 8"):
        load_audio(path)
    load_audio(path, AudioConfig(max_channels=9))  # the limit is the config's


def test_the_bomb_is_refused_before_decoding(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.flac")
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
    whole = _finish(raw, 44100, "x.wav", AudioConfig(block_frames=len(raw)))
    for block_frames in (4096, 65536 + 3):
        blocks = _finish(raw, 44100, "x.wav", AudioConfig(block_frames=block_frames))
        np.testing.assert_array_equal(blocks.samples, whole.samples)
        assert blocks.warnings == whole.warnings


# --------------------------------------------------------------------------- meshes, in process


def _obj_text(vertices: np.ndarray) -> str:
    return "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)


def test_obj_with_millions_of_faces_reads_vertices_only(tmp_path):
    v = np.random.default_rng(0).normal(size=(3000, 3))
    path = tmp_path / "faces.obj"
    faces = "".join(f"f {a} {b} {c} {d}\n" for a, b, c, d in
                    np.random.default_rng(1).integers(1, 3001, size=(20000, 4)))
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
    assert str(info.value) == "many.obj: 5000 vertices; accepted: at most 4000 vertices"
    claim = tmp_path / "claim.ply"
    claim.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 2147483647\n"
                      b"property float x\nproperty float y\nproperty float z\nend_header\n" + bytes(120))
    with pytest.raises(meshio.MeshTooLargeError, match="claim.ply: 2147483647 vertices"):
        meshio.read_vertices(claim)
    npy = tmp_path / "big.npy"
    np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(2_000_000, 3)).flush()
    with pytest.raises(meshio.MeshTooLargeError, match="big.npy: 2000000 vertices"):
        meshio.read_vertices(npy)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("short.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 200\nproperty float x\n"
                  b"property float y\nproperty float z\nend_header\n" + bytes(120),
     "ends after 10 of the 200"),
    ("listy.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list uchar int x\nproperty float y\n"
                  b"property float z\nend_header\n1 1 2 3\n", "is not a number type"),
    ("faces_first.ply", b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int vertex_indices\n"
                        b"element vertex 3\nproperty float x\nend_header\n", "first PLY element"),
    ("ragged.obj", b"v 1 2 3\nv 1 2\n", "must all hold 3"),
    ("words.obj", b"v 1 two 3\n", "must all hold 3"),
    ("long.obj", b"v " + b"1 " * 5000 + b"\n", "longer than"),
    ("nan.obj", b"v 1 2 nan\nv 1 2 3\n", "NaN"),
])
def test_hostile_mesh_files_give_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(meshio.MeshFileError) as info:
        meshio.read_vertices(path)
    text = str(info.value)
    assert text.startswith(f"{name}: ") and message in text, text
    assert str(tmp_path) not in text and not CLASS_NAME.search(text), text


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
    return synthesise(tmp_path_factory.mktemp("voice") / "voice.wav",
                      "Hello, this is a short test of the voice to mesh web application, spoken slowly.")


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


def test_bomb_through_the_server(server, client, voice, tmp_path):
    bomb = write_bomb(tmp_path / "bomb.flac")
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
    claim.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 2147483647\nproperty float x\n"
                      b"property float y\nproperty float z\nend_header\n" + bytes(1200))
    files["claim.ply"] = "claim.ply has 2147483647 vertices"
    cloud = tmp_path / "cloud.ply"
    cloud.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                      b"property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
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
