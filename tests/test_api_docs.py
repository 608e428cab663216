"""The documented API (``/api/predict``) against the app that ``make app`` starts (``python app.py`` on
the committed default bundle): the ``gradio_client`` examples of README.md, docs/app.md and the Space's
README run verbatim (only the server address and the voice file are substituted), named parameters,
aliases and errors."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio_client")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from tests.app_server import REPO_ROOT, AppServer, start_app  # noqa: E402
from voice2mesh.bundle import load_bundle  # noqa: E402
from voice2mesh.inference import Predictor  # noqa: E402
from voice2mesh.meshio import read_vertices  # noqa: E402

LOCAL_URL = '"http://127.0.0.1:7860/"'
DOCS = {
    REPO_ROOT / "README.md": LOCAL_URL,
    REPO_ROOT / "docs" / "app.md": LOCAL_URL,
    REPO_ROOT / "space" / "README.md": '"OWNER/SPACE"',
}  # doc → the server address in its example
DOC_VOICE = '"voice.wav"'
VOICE = REPO_ROOT / "examples" / "synthetic-low-voice.flac"
DEFAULT = REPO_ROOT / "models" / "default"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> AppServer:
    srv = start_app(None, tmp_path_factory.mktemp("app"))  # no --bundle: models/default, as `make app`
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local() -> dict[str, Predictor]:
    """The default bundle's models run in this process: the reference for what the server returns."""
    b = load_bundle(DEFAULT)
    return {m: Predictor(b, model=m) for m in b.models}


def api_examples(doc: Path) -> list[str]:
    """The ``gradio_client`` examples (```python blocks that call /api/predict) of a doc."""
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    return [b for b in blocks if "/api/predict" in b]


@pytest.mark.parametrize("doc", list(DOCS), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_documented_example_runs_verbatim(doc, server, local):
    (code,) = api_examples(doc)
    url = DOCS[doc]
    assert code.count(url) == 1 and code.count(DOC_VOICE) == 1, "the example's server and voice file"
    code = code.replace(url, repr(server.url)).replace(DOC_VOICE, repr(str(VOICE)))
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{doc.name} example", "exec"), namespace)  # noqa: S102 - the doc's own code
    out = printed.getvalue()
    result = namespace["result"]
    assert [f["model"] for f in result["models"]] == ["supervised", "kd"]
    for face, mesh in zip(result["models"], (namespace["mesh_a"], namespace["mesh_b"]), strict=True):
        expected = local[face["model"]].predict(VOICE)
        np.testing.assert_allclose(read_vertices(mesh), expected.vertices, rtol=0, atol=1e-3)
        for ratio, value in expected.readouts["ratios"].items():
            assert face["readouts"]["ratios"][ratio] == pytest.approx(value, abs=1e-6)
            assert f"'{ratio}': {face['readouts']['ratios'][ratio]}" in out
        assert face["label"] in out
    assert result["agreement"]["ARE"] >= 0 and "agreement" in out
    assert "/tmp" not in str(result) and str(REPO_ROOT) not in str(result), "no server paths in the JSON"
    if "errors" in namespace:  # docs/app.md compares the face with its own OBJ: zero error
        row = namespace["errors"]["data"][0]
        assert row[0] == result["models"][0]["label"] and row[1] == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def client(server) -> Client:
    c = Client(server.url, verbose=False)
    yield c
    c.close()


@pytest.mark.parametrize(
    "model, expected", [("supervised", ["supervised"]), ("kd", ["kd"]), ("both", ["supervised", "kd"])]
)
def test_model_aliases_and_heatmap(client, local, model, expected):
    mesh_a, mesh_b, result = client.predict(
        handle_file(str(VOICE)), model=model, heatmap=True, api_name="/api/predict"
    )
    assert [f["model"] for f in result["models"]] == expected and result["heatmap"] is True
    assert (mesh_b is None) == (len(expected) == 1)
    np.testing.assert_allclose(
        read_vertices(mesh_a), local[expected[0]].predict(VOICE).vertices, rtol=0, atol=1e-3
    )


def test_unknown_model_lists_the_choices(client, server):
    with pytest.raises(AppError) as info:
        client.predict(handle_file(str(VOICE)), model="no-such-model", api_name="/api/predict")
    message = str(info.value)
    assert "'no-such-model'" in message and "supervised, kd, both" in message, message
    assert str(REPO_ROOT) not in message and "Error" not in message.split(":", 1)[-1]
    assert server.alive()
