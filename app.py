"""voice2mesh web app (Gradio): a voice in, a 3D face out. UI only; the work is voice2mesh.service.

    python app.py [--bundle DIR | --hub-repo OWNER/NAME] [--host 0.0.0.0] [--port 7860] [--share]

Environment (what the Hugging Face Space sets): VOICE2MESH_BUNDLE, VOICE2MESH_HUB_REPO,
VOICE2MESH_HUB_REVISION, GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, VOICE2MESH_CONCURRENCY,
VOICE2MESH_QUEUE_SIZE, VOICE2MESH_MAX_SECONDS, VOICE2MESH_MAX_UPLOAD_MB. See docs/app.md.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from voice2mesh import meshio, metrics
from voice2mesh.bundle import RatioSkill, read_skill
from voice2mesh.live import LiveStreams, history_rows
from voice2mesh.publictext import public_message
from voice2mesh.service import (
    DOWNLOAD_KINDS,
    AudioConfig,
    AudioError,
    FaceResult,
    InputError,
    MiB,
    RunResult,
    ServiceConfig,
    Voice2MeshService,
    example_voices,
    viewer_kind,
)
from voice2mesh.sessions import instance_root

LOG = logging.getLogger("voice2mesh.app")
PAPER_URL = "https://arxiv.org/abs/2104.10299"
EXPECTED_ERRORS = (AudioError, InputError)
COMPUTE = "compute"  # the concurrency group of every queued event: one limit for all of them
LIVE = "live"  # live streams: a stream holds its worker between chunks, so streams get their own group
LIVE_CHUNK_S = 0.5  # the browser sends the microphone every this many seconds; each chunk is one update
VISITOR_COOKIE = "voice2mesh_visitor"  # see VisitorCookie
UPLOAD_CAP_EVERY_S = 2.0  # how often the sum of Gradio's uploads is checked against --upload-disk-mb
VIEWER_BACKGROUND = (0.93, 0.94, 0.96, 1.0)  # light grey: a face (lit, shaded) always differs from it
PLOT_TAGS = ("A", "B")  # short x-axis tags of two models in one plot (the legend names them)
N_RESULT_OUTPUTS = 8  # what a result shows on the page (result_outputs)
# Phones: the readout tables in the body font, smaller, with less padding, so that a comparison fits
# the width of the screen (gr.Dataframe draws numbers in a monospace font with two paddings a cell).
NARROW_CSS = """
@media (max-width: 640px) {
  #readouts, #readout-details { --font-mono: var(--font); --input-text-size: 12px; --size-2: 4px; }
  #readouts th, #readout-details th { font-size: 11px; }
}
"""
PLOT_ORDER = [*metrics.RATIO_NAMES, *(f"{r} {t}" for r in metrics.RATIO_NAMES for t in PLOT_TAGS)]
MEASUREMENT_LABELS = {
    "OICD": "OICD (outer eye corners, normaliser)",
    "ER": "ER (ear to ear)",
    "FR": "FR (forehead width)",
    "CR": "CR (cheek to cheek)",
    "MR": "MR (mid face)",
}


@dataclass
class ServerOptions:
    """How the server runs (flags, else environment, else these defaults)."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    concurrency: int = 2  # requests computed at once (the model is CPU/GPU bound; more only queues in ORT)
    queue_size: int = 32  # requests waiting at most; more get "queue full"
    examples: bool = True


# --------------------------------------------------------------------------- text


def about_markdown(service: Voice2MeshService) -> str:
    """The "what this is / what it is not" text, from the loaded bundle."""
    info = service.info
    if info.random_weights:
        demo_note = (
            "**This is an untrained test model (random weights).** Its faces change with the voice "
            "but mean nothing.\n\n"
        )
    elif info.synthetic:
        demo_note = (
            "**This is a demonstration model.** It was trained on synthetic voices paired with "
            "random faces, so its faces say nothing about any real speaker.\n\n"
        )
    elif info.demonstration is None:
        demo_note = (
            "**Unknown training data.** This bundle does not say whether it was trained on "
            "synthetic voices or on recordings of real people, or whether it was trained at all; "
            "treat its faces as a demonstration.\n\n"
        )
    else:
        demo_note = ""
    card = f"[model card]({info.model_card})" if info.model_card else "model card (below, *Model card*)"
    return (
        f"{demo_note}"
        "**What this is.** An open implementation of *Voice2Mesh / Cross-Modal Perceptionist* "
        f"([Wu, Hsu, Neumann, CVPR 2022]({PAPER_URL})): a network predicts the coefficients of a 3D "
        f"morphable face model ({html.escape(info.face_model)}, {info.n_vertices} vertices) from the sound "
        "of a voice. The readouts are the paper's face-shape ratios.\n\n"
        f"**Loaded model:** {html.escape(info.title)} from `{html.escape(info.source_name)}`. "
        f"Trained on: {html.escape(info.trained_on)}. See the {card}.\n\n"
        "**What it is not.** It does not recognise or identify anyone, and it makes no claim about a "
        "speaker's identity, ethnicity, age or any other personal attribute. A predicted face is a "
        "statistical guess of coarse geometry (proportions of the head), not a portrait. Audio and results "
        "stay in a temporary folder of your session and are deleted when you close the page."
    )


def summary_markdown(result: RunResult, n_triangles: int) -> str:
    """Short text under the viewers: audio, mesh size, provider, agreement of two models, warnings."""
    n_vertices = result.faces[0].vertices.shape[0]
    lines = [
        f"Audio: {result.audio_seconds:.1f} s. Mesh: {n_vertices} vertices, {n_triangles} triangles. "
        + "; ".join(
            f"**{f.label}** ran on `{f.provider}` in {f.timings_ms.get('total', 0.0):.0f} ms"
            for f in result.faces
        )
        + "."
    ]
    if result.agreement:
        a = result.agreement
        lines.append(
            f"Agreement of the two models: ARE = {a['ARE']:.4f} (mean ratio error between their "
            f"faces; ER {a['ER']:.4f}, FR {a['FR']:.4f}, CR {a['CR']:.4f}, MR {a['MR']:.4f}); "
            f"aligned RMSE {a['rmse_mm']:.2f} mm. In the plot, "
            + ", ".join(f"{t} = {html.escape(f.label)}" for t, f in zip(PLOT_TAGS, result.faces, strict=True))
            + "."
        )
    lines += [f"⚠ {html.escape(w)}" for w in result.warnings]
    return "\n\n".join(lines)


def heatmap_legend() -> str:
    """The heatmap's colour scale in words (its scale is fixed, so colours compare across faces)."""
    m = meshio.HEATMAP_MAX_MM
    return (
        f"grey-blue: as the average face · yellow {m / 4:g} mm · orange {m / 2:g} mm · dark red {m:g} mm "
        "or more away"
    )


# --------------------------------------------------------------------------- tables


Table = dict[str, list]  # what gr.Dataframe shows: {"headers": [...], "data": [[...], ...]}


def model_skills(service: Voice2MeshService) -> dict[str, dict[str, RatioSkill]]:
    """Each loaded model's measured skill per ratio (from its bundle), by model label."""
    return {m.label: read_skill(m.predictor.entry) for m in service.models.values()}


def skill_text(skill: RatioSkill | None) -> str:
    """A readout's worth, for people: the share of the baseline→oracle gap closed, and the noise."""
    if skill is None:
        return "not measured"
    gap = "gap n/a (no oracle)" if skill.gap_closed is None else f"{100 * skill.gap_closed:.0f}% of the gap"
    noise = {True: "beyond noise", False: "within noise (no skill)", None: "noise unknown"}
    return f"{gap}, {noise[skill.beyond_noise]}"


def unpredictable(skills: dict[str, dict[str, RatioSkill]]) -> dict[str, dict[str, str]]:
    """Per model label, the ratios it cannot predict and why ("no skill", "not measured")."""
    return {
        label: {
            r: "not measured" if r not in s else "no skill"
            for r in metrics.RATIO_NAMES
            if r not in s or not s[r].predictable
        }
        for label, s in skills.items()
    }


def short_labels(labels: list[str]) -> list[str]:
    """Model labels for narrow column headers: without their parenthesis ("KD (knowledge distillation)"
    → "KD"), unless that makes two of them alike."""
    short = [label.split(" (")[0] for label in labels]
    return short if len(set(short)) == len(short) else labels


def _ratio(face: FaceResult, name: str) -> float:
    return 1.0 if name == metrics.NORMALISER else float(face.readouts["ratios"][name])


def _percentile(face: FaceResult, name: str) -> float | None:
    pct = face.readouts["percentiles"].get(name)
    return None if pct is None else round(float(pct), 1)


def readouts_legend(pair: list[str]) -> str:
    """The text above the readouts: what each column means; how two models compare when ``pair`` (the
    labels of the models that "both" runs) holds two."""
    text = (
        "**Readouts**: each distance as a ratio to the outer eye-corner distance (OICD), in "
        "millimetres, and where the ratio lies among faces drawn from the model's prior (percentile; "
        "50 = typical). *Skill*: the share of the gap between the average face and the best a voice "
        "model can do (oracle) that this model closed on speakers it never heard, from its bundle's "
        'evaluation; "no skill" when it does not beat the average face beyond noise. The live plot '
        "marks those ratios."
    )
    if len(pair) < 2:
        return text
    a, b = (html.escape(s) for s in short_labels(pair))
    full = " and ".join(f"*{html.escape(label)}*" for label in pair)
    return (
        f"{text}\n\n**Two models** ({full}): each model's ratio and their *difference* |{a} − {b}|, the "
        "paper's ratio error between the two faces (their agreement: 0 = the same ratio; ARE = its mean "
        "over the four ratios). Under it, per model: distance, percentile and skill."
    )


def readouts_headers(labels: list[str]) -> list[str]:
    """Column headers of :func:`readouts_table` for models with these labels (one, or a comparison)."""
    if len(labels) == 1:
        return ["measurement", "ratio to OICD", "distance (mm)", "percentile", "skill"]
    return ["measurement", *(f"{s} ratio" for s in short_labels(labels)), "difference"]


def readouts_widths(labels: list[str]) -> list[str]:
    """Column widths of :func:`readouts_table`: automatic for one model; for a comparison, shares by the
    longest word of each header (at least a ratio's digits), so that it fits a phone's width without
    breaking a word or a number (with :data:`NARROW_CSS`)."""
    if len(labels) == 1:
        return []
    headers = readouts_headers(labels)
    longest = [max(6, *(len(w) for w in h.split())) for h in headers]
    longest[0] = max(longest[0], 12)  # the measurement names: the longest cells, wrapped
    weights = [n + 2 for n in longest]  # + a cell's padding
    return [f"{100 * w / sum(weights):.2f}%" for w in weights]


def readouts_table(result: RunResult, skills: dict[str, dict[str, RatioSkill]] | None = None) -> Table:
    """Readouts: one row per measurement. One model: its ratio to OICD, distance, percentile and measured
    skill (:func:`model_skills`; "not measured" when the bundle records none). Two models: a comparison
    narrow enough for a phone: each model's ratio and their difference (the paper's ratio error between
    the two faces, from :attr:`RunResult.agreement`; a last row gives its mean, ARE); distances,
    percentiles and skills are in :func:`readout_details`."""
    skills = skills or {}
    headers = readouts_headers([f.label for f in result.faces])
    if len(result.faces) == 1:
        face = result.faces[0]
        rows = [
            [
                MEASUREMENT_LABELS.get(name, name),
                round(_ratio(face, name), 4),
                round(float(face.readouts["distances_mm"][name]), 2),
                _percentile(face, name),
                "" if name == metrics.NORMALISER else skill_text(skills.get(face.label, {}).get(name)),
            ]
            for name in (metrics.NORMALISER, *metrics.RATIO_NAMES)
        ]
        return {"headers": headers, "data": rows}
    agreement = result.agreement or {}
    rows = [
        [
            MEASUREMENT_LABELS.get(name, name),
            *(round(_ratio(f, name), 4) for f in result.faces),
            round(agreement[name], 4) if name in agreement else None,  # none for OICD, 1 in both
        ]
        for name in (metrics.NORMALISER, *metrics.RATIO_NAMES)
    ]
    if "ARE" in agreement:
        rows.append(["ARE (mean difference)", *[None] * len(result.faces), round(agreement["ARE"], 4)])
    return {"headers": headers, "data": rows}


DETAILS_HEADERS = ["measurement · model", "distance (mm)", "percentile", "skill"]
DETAILS_WIDTHS = ["29%", "19%", "22%", "30%"]  # fits a phone (with NARROW_CSS); the skill text wraps


def readout_details(result: RunResult, skills: dict[str, dict[str, RatioSkill]] | None = None) -> Table:
    """The rest of a comparison's readouts, one row per measurement and model: distance, percentile and
    the model's measured skill on that ratio (no rows for one model: its readouts table holds them)."""
    skills = skills or {}
    if len(result.faces) < 2:
        return {"headers": DETAILS_HEADERS, "data": []}
    short = short_labels([f.label for f in result.faces])
    rows = [
        [
            f"{name} · {label}",
            round(float(face.readouts["distances_mm"][name]), 2),
            _percentile(face, name),
            "" if name == metrics.NORMALISER else skill_text(skills.get(face.label, {}).get(name)),
        ]
        for name in (metrics.NORMALISER, *metrics.RATIO_NAMES)
        for face, label in zip(result.faces, short, strict=True)
    ]
    return {"headers": DETAILS_HEADERS, "data": rows}


def plot_frame(result: RunResult) -> pd.DataFrame:
    """Long-format rows for the bar plot: percentile of each ratio in the population, per model."""
    rows = []
    for i, face in enumerate(result.faces):
        tag = "" if len(result.faces) == 1 else f" {PLOT_TAGS[i]}"
        for name in metrics.RATIO_NAMES:
            rows.append(
                {
                    "ratio": f"{name}{tag}",
                    "percentile": float(face.readouts["percentiles"][name]),
                    "model": f"{PLOT_TAGS[i]}: {face.label}" if tag else face.label,
                }
            )
    return pd.DataFrame(rows)


def timings_table(result: RunResult) -> Table:
    """Rows (model, stage, milliseconds, execution provider); shared stages under "all models"."""
    rows = [["all models", stage, round(float(ms), 2), ""] for stage, ms in result.timings_ms.items()]
    rows += [
        [face.label, stage, round(float(ms), 2), face.provider]
        for face in result.faces
        for stage, ms in face.timings_ms.items()
    ]
    return {"headers": ["model", "stage", "ms", "provider"], "data": rows}


def comparison_table(rows: list[dict[str, Any]]) -> Table:
    """The scan comparison (one row per model), rounded for display."""
    headers = ["model", "ARE", *metrics.RATIO_NAMES, "keypoint error", "RMSE (mm)"]
    regions = list(rows[0]["region_rmse_mm"]) if rows else []
    headers += [f"{k} RMSE (mm)" for k in regions]
    data = [
        [
            r["model"],
            *(
                round(v, 4)
                for v in (
                    r["ARE"],
                    *(r[k] for k in metrics.RATIO_NAMES),
                    r["keypoint_error"],
                    r["rmse_mm"],
                    *(r["region_rmse_mm"][k] for k in regions),
                )
            ),
        ]
        for r in rows
    ]
    return {"headers": headers, "data": data}


# --------------------------------------------------------------------------- handlers


def _as_gr_error(exc: Exception, what: str) -> gr.Error:
    """A person-readable gr.Error (expected bad input) or a generic one (a bug, logged with traceback)."""
    if isinstance(exc, EXPECTED_ERRORS):
        return gr.Error(
            html.escape(public_message(str(exc)), quote=False),
            title="Cannot use this input",
            print_exception=False,
        )
    LOG.exception("unexpected error while %s", what)
    return gr.Error(
        f"Something went wrong on the server while {what}. It was logged; please try another recording.",
        title="Server error",
    )


def _unknown_event(request: Any, exc: KeyError) -> Any:
    """An event number (fn_index) the app does not have is the client's mistake: 404 and a message,
    not a bare 500. Any other KeyError stays a server error."""
    from fastapi.responses import JSONResponse

    if request.url.path.endswith(("/queue/join", "/run/predict")):
        return JSONResponse(
            {"error": "unknown event (fn_index); the API is listed at /gradio_api/info"}, status_code=404
        )
    raise exc


class VisitorCookie:
    """ASGI middleware: a random, HttpOnly visitor cookie on every response to a request without one.

    A browser keeps it from the page load on and sends it with every event and heartbeat of the page;
    the app keys results by Gradio's session hash *and* this cookie (:func:`_session`), so a session
    hash alone (chosen by the client, visible to anyone it leaks to) opens no browser's results. The
    cookie does not depend on addresses, so proxies in front of the app change nothing.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or VISITOR_COOKIE.encode() + b"=" in _header(scope, b"cookie"):
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https" or _header(scope, b"x-forwarded-proto") == b"https"
        # Cross-site frames (a Space on its hub page) send only SameSite=None cookies, partitioned.
        site = "SameSite=None; Secure; Partitioned" if https else "SameSite=Lax"
        cookie = f"{VISITOR_COOKIE}={secrets.token_urlsafe(18)}; Path=/; HttpOnly; {site}".encode()

        async def send_with_cookie(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def cap_uploads(files: set[str], max_bytes: int) -> int:
    """Delete the oldest of ``files`` (Gradio's uploads) until they take at most ``max_bytes``; returns
    how many were deleted. Gone files leave the set."""
    found = []
    for path in list(files):  # a copy: Gradio adds uploads meanwhile
        try:
            st = os.stat(path)
        except FileNotFoundError:
            files.discard(path)
            continue
        found.append((st.st_ctime, st.st_size, path))
    total, deleted = sum(size for _, size, _ in found), 0
    for _, size, path in sorted(found):
        if total <= max_bytes:
            break
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        files.discard(path)
        total -= size
        deleted += 1
    return deleted


def start_upload_cap(
    demo: gr.Blocks, max_bytes: int, every_s: float = UPLOAD_CAP_EVERY_S
) -> threading.Thread:
    """Keep Gradio's uploads within ``max_bytes`` (oldest first), checked every ``every_s`` seconds on a
    daemon thread: Gradio limits each upload (``max_file_size``) and deletes old ones, not their sum."""

    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                deleted = cap_uploads(demo.upload_file_set, max_bytes)
            except Exception:  # noqa: BLE001 - the cap must outlive one bad file
                LOG.exception("upload cap failed")
                continue
            if deleted:
                LOG.warning("uploads above %d MB: deleted the %d oldest", max_bytes // MiB, deleted)

    thread = threading.Thread(target=loop, name="upload-cap", daemon=True)
    thread.start()
    return thread


def _header(scope: dict, name: bytes) -> bytes:
    return b";".join(v for k, v in scope.get("headers", []) if k.lower() == name)


def _session(request: gr.Request | None) -> str | None:
    """The key of a visitor's results: Gradio's session hash and the visitor cookie (a browser's; API
    clients that keep no cookies are keyed by the session hash alone, as Gradio keys them)."""
    session_hash = getattr(request, "session_hash", None) if request is not None else None
    if session_hash is None:
        return None
    cookies = getattr(request, "cookies", None) or {}
    return f"{session_hash}#{cookies.get(VISITOR_COOKIE, '')}"


def _via_heartbeat(request: gr.Request | None) -> bool:
    """Whether an unload event comes from Gradio itself (a closed heartbeat), not from a client calling
    the event by its number."""
    url = getattr(getattr(request, "request", None), "url", None)
    return url is not None and "/heartbeat/" in str(getattr(url, "path", ""))


def _paths(files: list[Path | None]) -> list[str | None]:
    return [None if f is None else str(f) for f in files]


def result_outputs(service: Voice2MeshService, result: RunResult, heatmap: bool) -> tuple:
    """What the page shows for a result (:data:`N_RESULT_OUTPUTS` values): 2 viewer GLBs (the second None
    for one model), summary, readouts table, plot frame, timings table, JSON (plain values, so API
    clients get files and numbers), and the readout details of two models (no rows for one; the page
    hides them: :func:`make_handlers`' ``show_second``)."""
    shown = [f.files[viewer_kind(heatmap)] for f in result.faces]
    viewers = _paths((shown + [None, None])[:2])
    summary = summary_markdown(result, len(service.face_model.triangles))
    skills = model_skills(service)
    return (
        *viewers,
        summary,
        readouts_table(result, skills),
        plot_frame(result),
        timings_table(result),
        result.summary(),
        readout_details(result, skills),
    )


def live_frame(rows: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The live plot's data; None (an empty plot) while there is none: Gradio's plot keeps the column
    types of the first data it gets, and an empty frame's types draw no lines afterwards."""
    return pd.DataFrame(rows) if rows else None


def unpredictable_markdown(service: Voice2MeshService) -> str:
    """Under the live plot: which ratios each model cannot predict (they are marked in the plot)."""
    parts = []
    for label, marks in unpredictable(model_skills(service)).items():
        by_mark: dict[str, list[str]] = {}
        for ratio, mark in marks.items():
            by_mark.setdefault(mark, []).append(ratio)
        text = "; ".join(f"{', '.join(r)}: {m}" for m, r in by_mark.items()) or "none (all four have skill)"
        parts.append(f"**{html.escape(label)}**: {text}")
    return "Ratios the model cannot predict (marked in the plot): " + " · ".join(parts) + "."


def make_live_handlers(service: Voice2MeshService, live: LiveStreams) -> dict[str, Any]:
    """The live microphone mode's events: start a stream, one update per chunk, end."""
    marks = unpredictable(model_skills(service))  # ratios marked in the live plot

    def live_start(request: gr.Request):
        """A new recording: an empty stream for the session, an empty plot."""
        live.start(_session(request))
        return live_frame([]), "Listening…"

    def live_update(chunk: tuple[int, Any] | None, model: str | None, heatmap: bool, request: gr.Request):
        """One chunk: the face from all the speech so far (outputs of /predict, the 6 downloads, the 16 kHz
        WAV it was predicted from, the live plot, a status line); no new face while there is too little
        speech yet."""
        kinds = (viewer_kind(bool(heatmap)), *DOWNLOAD_KINDS)
        try:
            update = live.update(_session(request), chunk, model, kinds)
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "making the face from the microphone") from exc
        plot = live_frame(history_rows(update.history, marks))
        points = len(update.history) // max(1, len({p.model for p in update.history}))
        status = f"Heard {update.heard_s:.1f} s; {points} faces so far." + (
            f" {html.escape(public_message(update.message))}" if update.message else ""
        )
        if update.result is None:
            return (*[gr.skip()] * (N_RESULT_OUTPUTS + 2 * len(DOWNLOAD_KINDS) + 1), plot, status)
        downloads = [service.mesh_files(_session(request), kind) for kind in DOWNLOAD_KINDS]
        files = [by_kind[i] for i in range(2) for by_kind in downloads]
        buttons = [
            gr.DownloadButton(value=None if f is None else str(f), interactive=f is not None) for f in files
        ]
        heard = live.heard_wav(_session(request))
        return (
            *result_outputs(service, update.result, bool(heatmap)),
            *buttons,
            gr.DownloadButton(value=str(heard) if heard else None, interactive=heard is not None),
            plot,
            status,
        )

    def end(request: gr.Request) -> None:
        if _via_heartbeat(request):
            live.end(_session(request))

    return {"live_start": live_start, "live_update": live_update, "end": end}


def make_handlers(service: Voice2MeshService) -> dict[str, Any]:
    """The functions the UI events call (plain functions: tests may call them too)."""

    def predict(audio: str | None, model: str | None, heatmap: bool, request: gr.Request):
        """Voice → face(s): 2 viewer GLBs (the second None for one model), summary, readouts table,
        plot frame, timings table, JSON (plain values, so API clients get files and numbers)."""
        try:
            result = service.run(audio, model, _session(request), kinds=[viewer_kind(bool(heatmap))])
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "making the face") from exc
        return result_outputs(service, result, bool(heatmap))

    def api_predict(audio: str | None, model: str | None, heatmap: bool, request: gr.Request):
        """The documented API (``/api/predict``): voice → the viewer GLB of each face (the second None for
        one model; heatmap colours when asked) and one JSON object (readouts, agreement, providers,
        timings; no server paths). ``model``: supervised, kd, both or a bundle model name."""
        try:
            result = service.run(audio, model or None, _session(request), kinds=[viewer_kind(bool(heatmap))])
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "making the face") from exc
        meshes = _paths(([f.files[viewer_kind(bool(heatmap))] for f in result.faces] + [None, None])[:2])
        return (*meshes, {**result.summary(), "heatmap": bool(heatmap)})

    def downloads(request: gr.Request):
        """GLB, OBJ and PLY of each face of the session's latest run (written now, when first asked)."""
        try:
            by_kind = {kind: service.mesh_files(_session(request), kind) for kind in DOWNLOAD_KINDS}
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "writing the mesh files") from exc
        return _paths([by_kind[kind][i] for i in range(2) for kind in DOWNLOAD_KINDS])

    def enable_downloads(*files: str | None):
        """Download buttons are enabled only when they hold a file."""
        return [gr.DownloadButton(interactive=bool(f)) for f in files]

    def view(heatmap: bool, request: gr.Request):
        """Switch the viewers between plain and heatmap colours (no recomputation)."""
        try:
            return tuple(_paths(service.mesh_files(_session(request), viewer_kind(bool(heatmap)))))
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "colouring the face") from exc

    def compare(scan: str | None, request: gr.Request) -> Table:
        """The paper's metrics between an uploaded scan and the latest prediction(s)."""
        try:
            return comparison_table(service.compare_scan(scan, _session(request)))
        except Exception as exc:  # noqa: BLE001
            raise _as_gr_error(exc, "comparing with the scan") from exc

    def show_second(model: str | None):
        """Second viewer and the readout details only for "both"; viewer titles name the model they
        show; the readouts' column widths fit the comparison of two models, or are automatic for one."""
        try:
            shown = service.resolve_choice(model)
        except InputError:
            shown = service.resolve_choice(None)
        second = shown[1].label if len(shown) > 1 else "Second model"
        return (
            gr.Model3D(label=shown[0].label),
            gr.Model3D(label=second),
            gr.Column(visible=len(shown) > 1),
            gr.Dataframe(column_widths=readouts_widths([m.label for m in shown])),
            gr.Dataframe(visible=len(shown) > 1),
        )

    def info() -> dict:
        """What is loaded: bundle, models, face model, limits."""
        i = service.info
        return {
            "bundle": i.source_name,
            "title": i.title,
            "trained_on": i.trained_on,
            "synthetic": i.synthetic,
            "random_weights": i.random_weights,
            "demonstration": i.demonstration,
            "model_card": i.model_card,
            "face_model": i.face_model,
            "n_vertices": i.n_vertices,
            "models": [{"value": v, "label": lbl} for lbl, v in service.choices()],
            "limits": {
                "max_seconds": service.config.audio.max_duration_s,
                "min_speech_seconds": service.config.audio.min_speech_s,
                "max_upload_mb": service.config.max_upload_bytes / MiB,
            },
        }

    def end(request: gr.Request) -> None:
        """A tab closed or a client left: its results go (only when Gradio's heartbeat says so)."""
        if _via_heartbeat(request):
            service.end_session(_session(request))

    return {
        "predict": predict,
        "api_predict": api_predict,
        "downloads": downloads,
        "enable_downloads": enable_downloads,
        "view": view,
        "compare": compare,
        "show_second": show_second,
        "info": info,
        "end": end,
    }


# --------------------------------------------------------------------------- layout


def api_components(service: Voice2MeshService) -> dict[str, Any]:
    """The hidden components of the documented endpoint ``/api/predict``: its named parameters (audio,
    ``model`` as free text so any name gets the service's own error listing the choices, ``heatmap``)
    and its outputs (two meshes, one JSON object). Never shown; the page has its own event."""
    with gr.Column(visible=False):
        audio = gr.Audio(type="filepath", format=None, label="audio")
        model = gr.Textbox(value=service.default_choice, label="model")
        heatmap = gr.Checkbox(value=False, label="heatmap")
        call = gr.Button("api")
        outputs = [gr.File(label="mesh_a"), gr.File(label="mesh_b"), gr.JSON(label="result")]
    return {"call": call, "inputs": [audio, model, heatmap], "outputs": outputs}


def build_demo(service: Voice2MeshService, examples: list[Path] | None = None) -> gr.Blocks:
    """The Blocks app for one loaded service (no server started).

    Every queued event shares one concurrency group (:data:`COMPUTE`), so ``--concurrency`` bounds all
    work at once, whichever events are called. Gradio's own cache (uploads) is swept on the same
    timer and age as the session files.
    """
    h = make_handlers(service)
    lh = make_live_handlers(service, LiveStreams(service))
    choices = service.choices()
    shown = service.resolve_choice(None)  # the default choice: both models side by side when there are two
    cfg = service.config
    delete_cache = (max(1, int(cfg.sweep_interval_s)), max(1, int(cfg.session_ttl_s)))
    with gr.Blocks(title="voice2mesh: a 3D face from a voice", delete_cache=delete_cache) as demo:
        gr.Markdown("# voice2mesh: a 3D face from a voice")
        with gr.Accordion("What this is, and what it is not", open=service.info.demonstration is not False):
            gr.Markdown(about_markdown(service))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                audio = gr.Audio(
                    sources=["upload", "microphone"],
                    type="filepath",
                    format=None,
                    label="Your voice",
                    elem_id="voice-input",
                )
                gr.Markdown(
                    f"Accepted: {service.limits_text()}; wav, flac, ogg/opus, mp3, webm, m4a.",
                    elem_id="limits",
                )
                model = gr.Radio(
                    choices=choices, value=service.default_choice, label="Model", visible=len(choices) > 1
                )
                heatmap = gr.Checkbox(
                    value=False,
                    label="Colour by distance from the average face (heatmap)",
                    info=heatmap_legend(),
                    elem_id="heatmap",
                )
                run = gr.Button("Make a face", variant="primary", elem_id="run")
                with gr.Group():
                    live_audio = gr.Audio(
                        sources=["microphone"],
                        streaming=True,
                        type="numpy",
                        label="Live: speak and watch the face form",
                        elem_id="live-input",
                    )
                    heard = gr.DownloadButton(
                        "WAV heard (16 kHz)", interactive=False, size="sm", elem_id="live-heard"
                    )
                    live_status = gr.Markdown(
                        "Record here to see the face change while you speak.", elem_id="live-status"
                    )
                if examples:
                    gr.Examples(
                        examples=[[str(p)] for p in examples],
                        inputs=[audio],
                        label="Synthetic example voices (espeak-ng, no real person)",
                    )
            with gr.Column(scale=2):
                with gr.Row():
                    with gr.Column():
                        view_a = gr.Model3D(
                            label=shown[0].label,
                            height=420,
                            clear_color=VIEWER_BACKGROUND,
                            elem_id="viewer-a",
                        )
                        with gr.Row():
                            dl_a = [
                                gr.DownloadButton(ext.upper(), interactive=False, size="sm", min_width=60)
                                for ext in ("glb", "obj", "ply")
                            ]
                    with gr.Column(visible=len(shown) > 1) as col_b:
                        view_b = gr.Model3D(
                            label=shown[1].label if len(shown) > 1 else "Second model",
                            height=420,
                            clear_color=VIEWER_BACKGROUND,
                            elem_id="viewer-b",
                        )
                        with gr.Row():
                            dl_b = [
                                gr.DownloadButton(ext.upper(), interactive=False, size="sm", min_width=60)
                                for ext in ("glb", "obj", "ply")
                            ]
                summary = gr.Markdown(label="summary", elem_id="summary")
                pair = [m.label for m in list(service.models.values())[:2]]  # the models "both" runs
                gr.Markdown(readouts_legend(pair), elem_id="readouts-legend")
                readouts = gr.Dataframe(
                    value=pd.DataFrame(columns=readouts_headers([m.label for m in shown])),
                    label="readouts",
                    show_label=False,
                    interactive=False,
                    wrap=True,
                    column_widths=readouts_widths([m.label for m in shown]),
                    elem_id="readouts",
                )
                details = gr.Dataframe(
                    value=pd.DataFrame(columns=DETAILS_HEADERS),
                    label="Per model: distance, percentile, skill",
                    interactive=False,
                    wrap=True,
                    column_widths=DETAILS_WIDTHS,
                    max_height=720,
                    visible=len(shown) > 1,
                    elem_id="readout-details",
                )
                plot = gr.BarPlot(
                    x="ratio",
                    y="percentile",
                    color="model",
                    y_lim=[0, 100],
                    sort=PLOT_ORDER,
                    label="percentiles",
                    title="Percentile of each ratio in the population",
                    height=260,
                    elem_id="percentiles",
                )
                live_plot = gr.LinePlot(
                    x="speech_s",
                    y="percentile",
                    color="ratio",
                    y_lim=[0, 100],
                    x_title="speech heard (s)",
                    label="live",
                    title="Live: percentile of each ratio against seconds of speech",
                    height=280,
                    elem_id="live-plot",
                )
                gr.Markdown(unpredictable_markdown(service), elem_id="live-marks")
                with gr.Accordion("Timings and all numbers", open=False):
                    timings = gr.Dataframe(label="timings", interactive=False)
                    result_json = gr.JSON(label="result")
        with gr.Accordion("Compare with your own scan", open=False):
            gr.Markdown(
                "Upload a face mesh (OBJ or PLY) in the model's topology "
                f"({service.info.face_model}, {service.info.n_vertices} vertices, millimetres, "
                "vertex for vertex) to get the "
                "paper's point, line and region errors against the latest prediction."
            )
            scan = gr.File(label="Your scan (.obj / .ply)", file_types=[".obj", ".ply"], type="filepath")
            compare = gr.Button("Compare")
            gr.Markdown(
                "Ratio errors and ARE are unitless, the keypoint error is normalised by the scan's "
                "size (as in the paper), RMSE is in millimetres after a similarity alignment."
            )
            comparison = gr.Dataframe(label="errors", interactive=False)
        if service.info.card_markdown:
            with gr.Accordion("Model card", open=False):
                gr.Markdown(service.info.card_markdown)
        api_io = api_components(service)

        # The face first (viewer GLB, tables); the download files right after, in their own event.
        dl = [*dl_a, *dl_b]
        shown = [view_a, view_b, summary, readouts, plot, timings, result_json, details]
        run.click(
            h["predict"], [audio, model, heatmap], shown, api_name="predict", concurrency_id=COMPUTE
        ).success(
            h["downloads"], None, dl, api_name="downloads", show_progress="hidden", concurrency_id=COMPUTE
        ).success(h["enable_downloads"], dl, dl, queue=False, api_visibility="private")
        heatmap.change(
            h["view"],
            [heatmap],
            [view_a, view_b],
            api_name="view",
            show_progress="hidden",
            concurrency_id=COMPUTE,
        )
        model.change(
            h["show_second"],
            [model],
            [view_a, view_b, col_b, readouts, details],
            api_visibility="private",
            queue=False,
        )
        compare.click(h["compare"], [scan], [comparison], api_name="compare", concurrency_id=COMPUTE)
        gr.api(h["info"], api_name="info", concurrency_id=COMPUTE)
        api_io["call"].click(
            h["api_predict"],
            api_io["inputs"],
            api_io["outputs"],
            api_name="api/predict",
            concurrency_id=COMPUTE,
        )
        live_audio.start_recording(
            lh["live_start"], None, [live_plot, live_status], api_name="live_start", queue=False
        )
        live_out = [*shown, *dl, heard, live_plot, live_status]
        live_audio.stream(
            lh["live_update"],
            [live_audio, model, heatmap],
            live_out,
            api_name="live_update",
            stream_every=LIVE_CHUNK_S,
            time_limit=int(cfg.audio.max_duration_s) + 10,
            concurrency_id=LIVE,
            show_progress="hidden",
        )
        demo.unload(h["end"])
        demo.unload(lh["end"])
    return demo


# --------------------------------------------------------------------------- command line


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"error: ${name}={value!r} is not a whole number") from None


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        raise SystemExit(f"error: ${name}={value!r} is not a number") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description="voice2mesh web app: a voice in, a 3D face out.")
    p.add_argument(
        "--bundle",
        default=env("VOICE2MESH_BUNDLE"),
        help="bundle folder (or Hub repo id); env VOICE2MESH_BUNDLE; default models/default",
    )
    p.add_argument(
        "--hub-repo",
        default=env("VOICE2MESH_HUB_REPO"),
        help="Hugging Face Hub repo of the bundle, used when --bundle is not given; env VOICE2MESH_HUB_REPO",
    )
    p.add_argument(
        "--revision",
        default=env("VOICE2MESH_HUB_REVISION"),
        help="Hub branch, tag or commit; env VOICE2MESH_HUB_REVISION",
    )
    p.add_argument(
        "--host",
        default=env("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="interface to listen on (0.0.0.0 for all); env GRADIO_SERVER_NAME",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env_int("GRADIO_SERVER_PORT", 7860),
        help="port; env GRADIO_SERVER_PORT (default 7860)",
    )
    p.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    p.add_argument(
        "--concurrency",
        type=int,
        default=_env_int("VOICE2MESH_CONCURRENCY", 2),
        help="requests computed at once; env VOICE2MESH_CONCURRENCY (default 2)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=_env_int("VOICE2MESH_QUEUE_SIZE", 32),
        help="requests waiting at most; env VOICE2MESH_QUEUE_SIZE (default 32)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=_env_float("VOICE2MESH_MAX_SECONDS", 60.0),
        help="longest accepted recording, enforced on the server; env VOICE2MESH_MAX_SECONDS",
    )
    p.add_argument(
        "--max-upload-mb",
        type=int,
        default=_env_int("VOICE2MESH_MAX_UPLOAD_MB", 20),
        help="largest accepted upload (voice or scan; Gradio refuses larger ones before storing "
        "them); env VOICE2MESH_MAX_UPLOAD_MB (default 20)",
    )
    p.add_argument(
        "--session-ttl-s",
        type=float,
        default=_env_float("VOICE2MESH_SESSION_TTL_S", 900.0),
        help="results and uploads idle this long are deleted (by a timer); "
        "env VOICE2MESH_SESSION_TTL_S (default 900)",
    )
    p.add_argument(
        "--session-disk-mb",
        type=int,
        default=_env_int("VOICE2MESH_SESSION_DISK_MB", 512),
        help="session files kept at most (least recently used sessions go first); "
        "env VOICE2MESH_SESSION_DISK_MB (default 512)",
    )
    p.add_argument(
        "--upload-disk-mb",
        type=int,
        default=_env_int("VOICE2MESH_UPLOAD_DISK_MB", 1024),
        help="uploads kept at most (oldest deleted first); env VOICE2MESH_UPLOAD_DISK_MB (default 1024)",
    )
    p.add_argument("--no-examples", action="store_true", help="do not show the example voices")
    return p.parse_args(argv)


def service_config(args: argparse.Namespace) -> ServiceConfig:
    upload = int(args.max_upload_mb) * MiB  # one limit for voices and scans (and Gradio's max_file_size)
    audio = replace(AudioConfig(), max_duration_s=float(args.max_seconds), max_bytes=upload)
    return ServiceConfig(
        audio=audio,
        max_scan_bytes=upload,
        session_ttl_s=float(args.session_ttl_s),
        max_session_bytes=int(args.session_disk_mb) * MiB,
    )


def session_root() -> Path:
    """This process's folder for session files, inside Gradio's cache (the only place files are served
    from), named at random with an owner file; folders of dead server processes are removed first."""
    from gradio.utils import get_upload_folder

    return instance_root(Path(get_upload_folder()) / "voice2mesh-sessions")


def load_service(args: argparse.Namespace) -> Voice2MeshService:
    """The service for the bundle the flags / environment name (a clear error when it cannot load)."""
    from voice2mesh.bundle import BundleError

    source = args.bundle or args.hub_repo  # None → the default bundle (models/default)
    try:
        return Voice2MeshService.from_bundle(
            source,
            args.revision if source == args.hub_repo else None,
            work_dir=session_root(),
            config=service_config(args),
        )
    except BundleError as exc:
        raise SystemExit(f"error: cannot load the model bundle: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    opts = ServerOptions(
        host=args.host,
        port=args.port,
        share=args.share,
        concurrency=args.concurrency,
        queue_size=args.queue_size,
        examples=not args.no_examples,
    )
    service = load_service(args)
    examples: list[Path] = []
    if opts.examples:
        examples = example_voices()
    demo = build_demo(service, examples)
    demo.queue(default_concurrency_limit=opts.concurrency, max_size=opts.queue_size)
    LOG.info("bundle %s: models %s", service.info.source, ", ".join(service.models))
    start_upload_cap(demo, int(args.upload_disk_mb) * MiB)
    try:
        demo.launch(
            server_name=opts.host,
            server_port=opts.port,
            share=opts.share,
            max_file_size=service.config.max_upload_bytes,
            app_kwargs={
                "exception_handlers": {KeyError: _unknown_event},
                "middleware": [Middleware(VisitorCookie)],
            },
            allowed_paths=[],
            show_error=False,
            css=NARROW_CSS,
            footer_links=["api", "gradio"],
        )
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
