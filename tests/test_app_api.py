"""The web app through its API: a real server (app.py in a subprocess) and gradio_client.

Expected values come from the library called in this process on the same files (Predictor,
voice2mesh.audio, voice2mesh.metrics), never from the app's own output.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
trimesh = pytest.importorskip("trimesh")

from gradio_client import Client, handle_file  # noqa: E402

from tests.app_server import AppServer, make_app_bundle, running_app, start_app, synthesise  # noqa: E402
from voice2mesh import meshio, metrics  # noqa: E402
from voice2mesh.audio import AudioError  # noqa: E402
from voice2mesh.bundle import load_bundle  # noqa: E402
from voice2mesh.inference import Predictor  # noqa: E402

N_OUT = 8  # outputs of /predict: 2 viewers, summary, readouts, plot, timings, JSON, readout details
N_DOWNLOADS = 6  # outputs of /downloads: GLB, OBJ, PLY of the first model, then of the second
MODEL_A, MODEL_B = "supervised", "supervised-ge2e"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng (Debian package) is needed to make test voices")
    try:
        return make_app_bundle(tmp_path_factory.mktemp("bundle") / "bundle")
    except Exception as exc:  # the ICT face model needs the shared assets (or its cache)
        pytest.skip(f"cannot make the test bundle: {exc}")


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory) -> AppServer:
    srv = start_app(bundle, tmp_path_factory.mktemp("app"), ["--no-examples"])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Client:
    c = Client(server.url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def voice(tmp_path_factory) -> Path:
    return synthesise(
        tmp_path_factory.mktemp("voice") / "voice.wav",
        "Hello, this is a short test of the voice to mesh web application, spoken slowly.",
    )


@pytest.fixture(scope="module")
def local(bundle) -> dict[str, Predictor]:
    """The same models run in this process: the independent reference for what the server returns."""
    b = load_bundle(bundle)
    return {name: Predictor(b, model=name) for name in b.models}


def predict(client: Client, audio: Path, model: str = MODEL_A, heatmap: bool = False) -> tuple:
    out = client.predict(handle_file(str(audio)), model, heatmap, api_name="/predict")
    assert len(out) == N_OUT
    return out


def downloads(client: Client) -> tuple:
    out = client.predict(api_name="/downloads")
    assert len(out) == N_DOWNLOADS
    return out


def session_files(server: AppServer, before: set[Path]) -> list[str]:
    """Suffixes of the files the server wrote into its session folders since ``before``."""
    return sorted(
        p.name.split(".", 1)[1] if "-heatmap" not in p.name else "heatmap.glb"
        for p in server.session_root.rglob("*")
        if p.is_file() and p not in before and ".trash" not in p.parts
    )


def glb_vertices(path: str) -> np.ndarray:
    mesh = trimesh.load(path, force="mesh", process=False)
    return np.asarray(mesh.vertices)


# --------------------------------------------------------------------------- round trips


def test_predict_round_trip(client, voice, local):
    out = predict(client, voice, MODEL_A)
    ref = local[MODEL_A].predict(voice)
    fm = local[MODEL_A].face_model
    glb = trimesh.load(out[0], force="mesh", process=False)
    assert len(glb.vertices) == fm.n_vertices
    assert len(glb.faces) == len(fm.triangles)
    np.testing.assert_allclose(glb.vertices, ref.vertices, atol=1e-3)  # GLB stores float32
    assert out[1] is None  # no second model asked for
    table = out[3]
    assert len(table["data"]) == 1 + len(metrics.RATIO_NAMES)
    result = out[6]
    assert [m["model"] for m in result["models"]] == [MODEL_A]
    reads = result["models"][0]["readouts"]
    for k in metrics.RATIO_NAMES:
        assert reads["ratios"][k] == pytest.approx(ref.readouts["ratios"][k], rel=1e-5)
        assert 0.0 <= reads["percentiles"][k] <= 100.0
    assert set(result["models"][0]["timings_ms"]) >= {"onnx", "features", "write meshes"}
    assert result["models"][0]["provider"].endswith("ExecutionProvider")
    files = downloads(client)
    assert [Path(f).suffix for f in files[:3]] == [".glb", ".obj", ".ply"]
    assert files[3:] == (None, None, None)
    for f in files:
        if f is not None:
            np.testing.assert_allclose(meshio.read_vertices(f), ref.vertices, atol=1e-3)


def test_meshes_written_only_when_asked(server, voice):
    """/predict writes the viewer's GLB only; OBJ and PLY appear when /downloads asks for them."""
    c = Client(server.url, verbose=False)
    try:
        before = set(server.session_root.rglob("*")) if server.session_root.is_dir() else set()
        predict(c, voice, MODEL_A)
        assert session_files(server, before) == ["glb"]
        downloads(c)
        assert session_files(server, before) == ["glb", "obj", "ply"]
        c.predict(True, api_name="/view")
        assert session_files(server, before) == ["glb", "heatmap.glb", "obj", "ply"]
    finally:
        c.close()


def test_both_models_side_by_side(client, voice, local):
    out = predict(client, voice, "both")
    a, b = glb_vertices(out[0]), glb_vertices(out[1])
    ref_a, ref_b = local[MODEL_A].predict(voice).vertices, local[MODEL_B].predict(voice).vertices
    np.testing.assert_allclose(a, ref_a, atol=1e-3)
    np.testing.assert_allclose(b, ref_b, atol=1e-3)
    assert all(downloads(client)), "both models offer GLB, OBJ and PLY"
    agreement = out[6]["agreement"]
    expected = metrics.ratio_errors(ref_a[None], ref_b[None], local[MODEL_A].face_model)["ARE"][0]
    assert agreement["ARE"] == pytest.approx(float(expected), rel=1e-4, abs=1e-7)
    assert agreement["ARE"] > 0  # two different random models do not agree exactly
    # the page's comparison: each model's ratio and their difference, then distances etc. per model
    table = out[3]
    assert len(table["headers"]) == 4 and table["headers"][3] == "difference"
    rows = {r[0].split()[0]: r for r in table["data"]}
    ratios = [metrics.ratios(v[None], local[MODEL_A].face_model) for v in (ref_a, ref_b)]
    for k in metrics.RATIO_NAMES:
        ra, rb = (float(r[k][0]) for r in ratios)
        assert rows[k][1:3] == [pytest.approx(ra, abs=2e-4), pytest.approx(rb, abs=2e-4)]
        assert rows[k][3] == pytest.approx(abs(ra - rb), abs=2e-4)
    assert rows["ARE"][3] == pytest.approx(float(expected), abs=1e-4)
    details = out[7]
    assert len(details["data"]) == 2 * (1 + len(metrics.RATIO_NAMES))
    assert [r[0] for r in details["data"][2:4]] == [f"ER · {m['label']}" for m in out[6]["models"]]


def test_heatmap_view_switches_colours(client, voice):
    out = predict(client, voice, MODEL_A, heatmap=False)
    plain = trimesh.load(out[0], force="mesh", process=False)
    heat_path, second = client.predict(True, api_name="/view")
    assert second is None
    heat = trimesh.load(heat_path, force="mesh", process=False)
    np.testing.assert_allclose(heat.vertices, plain.vertices, atol=1e-6)
    colors = np.asarray(heat.visual.vertex_colors)[:, :3]
    assert len(np.unique(colors, axis=0)) > 10, "the heatmap colours vertices by their distance"
    back, _ = client.predict(False, api_name="/view")
    assert Path(back).name == Path(out[0]).name


def test_compare_with_scan(client, voice, tmp_path):
    predict(client, voice, MODEL_A)
    obj = downloads(client)[1]
    same = client.predict(handle_file(obj), api_name="/compare")
    row = dict(zip(same["headers"], same["data"][0], strict=True))
    assert row["ARE"] == pytest.approx(0.0, abs=1e-6)
    assert row["RMSE (mm)"] == pytest.approx(0.0, abs=1e-3)
    # A scan whose nose is pushed forward 5 mm: a nose region error, about 5 mm at most.
    v = meshio.read_vertices(obj)
    mesh = trimesh.load(obj, force="mesh", process=False)
    moved = v.copy()
    nose = v[:, 2] > np.percentile(v[:, 2], 99)
    moved[nose, 2] += 5.0
    scan = tmp_path / "scan.ply"
    meshio.write_mesh(scan, moved, np.asarray(mesh.faces))
    diff = client.predict(handle_file(str(scan)), api_name="/compare")
    row = dict(zip(diff["headers"], diff["data"][0], strict=True))
    assert 0.0 < row["RMSE (mm)"] < 5.0


def test_compare_rejects_wrong_topology(client, voice, tmp_path):
    predict(client, voice, MODEL_A)
    small = tmp_path / "small.obj"
    meshio.write_mesh(small, np.random.default_rng(0).normal(size=(10, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(Exception, match=r"10 vertices.*11248|has 10 vertices"):
        client.predict(handle_file(str(small)), api_name="/compare")


def test_info_endpoint_describes_the_bundle(client, bundle):
    info = client.predict(api_name="/info")
    manifest = json.loads((bundle / "bundle.json").read_text())
    # flags from bundle.json: a random-weights bundle is never presented as a real model
    assert info["random_weights"] is True and info["synthetic"] is False and info["demonstration"] is True
    assert info["n_vertices"] == manifest["face_model"]["n_vertices"]
    assert [m["value"] for m in info["models"]] == [MODEL_A, MODEL_B, "both"]
    assert info["limits"]["max_seconds"] == 60.0


# --------------------------------------------------------------------------- bad input


def test_empty_and_non_audio_files_are_errors(client, server, voice, tmp_path):
    """The quick part of the corpus test below: messages for people, and the server keeps serving."""
    empty, text = tmp_path / "empty.wav", tmp_path / "notes.wav"
    empty.write_bytes(b"")
    text.write_text("not a recording\n" * 50)
    with pytest.raises(Exception, match=r"empty\.wav: the file is empty"):
        predict(client, empty)
    with pytest.raises(Exception, match=r"notes\.wav: not a readable audio file") as info:
        predict(client, text)
    assert str(server.temp_dir) not in str(info.value)
    assert predict(client, voice)[0] is not None


@pytest.mark.slow
def test_bad_input_corpus_through_the_api(client, server, voice, local, tmp_path):
    """The audio issue's corpus: every bad file answered with its AudioError's message, good ones work."""
    corpus = pytest.importorskip("tests.audio_corpus")
    if not corpus.tools_available():
        pytest.skip("ffmpeg/ffprobe/sox (Debian packages) are needed for the corpus")
    try:
        cases = corpus.make_bad_input_corpus(tmp_path / "corpus")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    n_errors = 0
    for name, (path, expected) in cases.items():
        try:  # the library's own verdict on this file, in this process
            local[MODEL_A].prepare(path)
            message = None
        except AudioError as exc:
            message = str(exc).replace(str(path), path.name)  # the app shows file names, not server paths
            assert expected != "ok" and isinstance(exc, expected), f"{name}: the corpus expects {expected}"
        t0 = time.perf_counter()
        if message is None:
            assert expected == "ok", f"{name}: the library accepted it, the corpus expects {expected}"
            assert predict(client, path, MODEL_A)[0] is not None, name
        else:
            n_errors += 1
            with pytest.raises(Exception) as info:
                predict(client, path, MODEL_A)
            shown = str(info.value)
            assert "Traceback" not in shown and str(server.temp_dir) not in shown, name
            assert message in shown, f"{name}: the app said {shown!r}, the library says {message!r}"
        assert time.perf_counter() - t0 < 30, f"{name} took too long"
        assert server.alive(), f"the server died on {name}"
    assert n_errors >= 7
    assert predict(client, voice, MODEL_A)[0] is not None  # still serving


def test_too_long_recording_rejected_on_the_server(client, tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    sr = 8000
    t = np.arange(61 * sr) / sr
    wav = tmp_path / "long.wav"
    sf.write(
        wav,
        (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32),
        sr,
        subtype="PCM_16",
    )
    with pytest.raises(Exception, match=r"too long"):
        predict(client, wav, MODEL_A)


def test_upload_over_the_size_limit_rejected(client, server, voice, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(b"RIFF" + bytes(21 * 2**20))
    with pytest.raises(Exception):  # noqa: B017 - Gradio refuses the upload itself (max_file_size)
        predict(client, big, MODEL_A)
    assert server.alive()
    assert predict(client, voice, MODEL_A)[0] is not None


def test_unknown_model_is_an_error(client, voice):
    with pytest.raises(Exception):  # noqa: B017 - Gradio validates Radio choices
        predict(client, voice, "no-such-model")


# --------------------------------------------------------------------------- load and housekeeping


@pytest.mark.slow
def test_twenty_concurrent_requests(server, voice, local):
    """Twenty visitors (sessions) ask at once: the queue serves them all, each gets its own face."""
    ref = local[MODEL_A].predict(voice).vertices
    clients = [Client(server.url, verbose=False) for _ in range(20)]
    try:
        jobs = [c.submit(handle_file(str(voice)), MODEL_A, False, api_name="/predict") for c in clients]
        results = [job.result(timeout=300) for job in jobs]
    finally:
        for c in clients:
            c.close()
    assert len(results) == 20
    for out in results:
        np.testing.assert_allclose(glb_vertices(out[0]), ref, atol=1e-3)


def test_session_folder_removed_when_the_client_leaves(server, voice):
    c = Client(server.url, verbose=False)

    def sessions() -> set[str]:
        root = server.session_root
        return {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()

    before = sessions()
    predict(c, voice, MODEL_A)
    mine = sessions() - before
    assert len(mine) == 1, "one folder for the new session"
    c.close()  # ends the heartbeat: the server runs its unload handler
    folder = server.session_root / mine.pop()
    deadline = time.time() + 20
    while folder.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not folder.exists()


@pytest.mark.slow
def test_temp_files_do_not_grow(server, voice):
    c = Client(server.url, verbose=False)
    try:
        for _ in range(5):
            predict(c, voice, MODEL_A)
        n_before = len(server.files())
        for _ in range(45):
            predict(c, voice, MODEL_A)
        n_after = len(server.files())
    finally:
        c.close()
    assert n_after <= n_before, f"{n_before} files after 5 requests, {n_after} after 50"


# --------------------------------------------------------------------------- the Space


def test_build_space(tmp_path, bundle):
    from scripts.build_space import SpaceBuildError, build_space, check_space, requirement_names

    out = build_space(tmp_path / "space", bundle=bundle, hub_repo="someone/voice2mesh-bundle")
    meta = check_space(out)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["preload_from_hub"] == ["someone/voice2mesh-bundle"]
    assert (out / "voice2mesh" / "service.py").is_file() and (out / "models/default/bundle.json").is_file()
    names = requirement_names((out / "requirements.txt").read_text())
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names and "torch" not in names
    load_bundle(out / "models" / "default")  # the copied bundle still passes its sha256 checks
    with open(out / "requirements.txt", "a") as f:
        f.write("onnxruntime==1.20.0\n")
    with pytest.raises(SpaceBuildError, match="onnxruntime"):
        check_space(out)


@pytest.mark.slow
def test_built_space_serves(tmp_path, bundle, voice):
    """The assembled Space runs on its own files (its bundle in models/default, no flags)."""
    from scripts.build_space import build_space

    out = build_space(tmp_path / "space", bundle=bundle)
    with running_app(None, tmp_path / "run", ["--no-examples"], app_file=out / "app.py") as srv:
        c = Client(srv.url, verbose=False)
        try:
            result = predict(c, voice, MODEL_A)
        finally:
            c.close()
    assert glb_vertices(result[0]).shape[0] == result[6]["models"][0]["n_vertices"]
    assert not srv.session_root.exists(), "the server removes its session folders when it stops"


def test_no_file_served_from_outside_the_cache(server, bundle):
    import urllib.error
    import urllib.request

    for outside in (bundle / "bundle.json", Path(__file__), Path("/etc/hostname")):
        url = f"{server.url}gradio_api/file={outside}"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=10)
        assert info.value.code in (403, 404), outside
