"""A Gradio server with per-request timings, for benchmarks/bench_app.py (not a product entry point).

    python benchmarks/app_timing_server.py --timing-log FILE (--app-root DIR | --trivial) [--without MOD]
        -- then app.py's own flags (--bundle, --host, --port, ...)

``--app-root DIR`` serves ``DIR/app.py`` exactly as ``python app.py`` would (its ``main``), with that
checkout's own ``voice2mesh`` first on ``sys.path``; ``--trivial`` serves the floor: one event that
takes the same audio upload and returns a small file. ``--without xxhash`` makes that import fail
(the environment before it was a requirement).

Timings are appended to ``FILE`` as JSON lines, in seconds of ``time.perf_counter`` (the same
monotonic clock in every process):
- ``{"kind": "http", "method", "path", "start", "end"}`` per HTTP request (upload, queue join, files),
  from the request's arrival to its last response byte (the queue's event stream is left out);
- ``{"kind": "event", "fn", "start", "end", "preprocess", "handler", "postprocess"}`` per processed
  event (Gradio's ``process_api``: preprocess, the handler, postprocess).
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_LOG_LOCK = threading.Lock()
_EVENT: contextvars.ContextVar[dict | None] = contextvars.ContextVar("bench_event", default=None)


def _write(log: Path, record: dict[str, Any]) -> None:
    with _LOG_LOCK, open(log, "a") as f:
        f.write(json.dumps(record) + "\n")


def instrument(log: Path) -> None:
    """Wrap Gradio's ASGI app and its event processing with timers (before any app is built)."""
    from fastapi import FastAPI
    from gradio import blocks, routes

    async def timed_call(self, scope, receive, send):
        path = scope.get("path", "")
        if scope.get("type") != "http" or path.endswith("/queue/data") or path.endswith("/heartbeat"):
            return await FastAPI.__call__(self, scope, receive, send)
        start = time.perf_counter()

        async def timed_send(message):
            await send(message)
            if message.get("type") == "http.response.body" and not message.get("more_body", False):
                _write(
                    log,
                    {
                        "kind": "http",
                        "method": scope.get("method"),
                        "path": path,
                        "start": start,
                        "end": time.perf_counter(),
                    },
                )

        return await FastAPI.__call__(self, scope, receive, timed_send)

    routes.App.__call__ = timed_call

    def stage(name: str, original):
        async def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await original(self, *args, **kwargs)
            finally:
                record = _EVENT.get()
                if record is not None:
                    record[name] = record.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    blocks.Blocks.preprocess_data = stage("preprocess", blocks.Blocks.preprocess_data)
    blocks.Blocks.call_function = stage("handler", blocks.Blocks.call_function)
    blocks.Blocks.postprocess_data = stage("postprocess", blocks.Blocks.postprocess_data)
    process_api = blocks.Blocks.process_api

    async def timed_process_api(self, block_fn, *args, **kwargs):
        record: dict[str, Any] = {"kind": "event", "start": time.perf_counter()}
        token = _EVENT.set(record)
        try:
            return await process_api(self, block_fn, *args, **kwargs)
        finally:
            _EVENT.reset(token)
            fn = block_fn if not isinstance(block_fn, int) else self.fns[block_fn]
            record.update(end=time.perf_counter(), fn=getattr(fn, "api_name", None) or str(fn))
            _write(log, record)

    blocks.Blocks.process_api = timed_process_api


def serve_trivial(argv: list[str]) -> int:
    """The floor: the same audio upload in, a small file out; queue settings as the app's defaults."""
    import gradio as gr

    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    args, _ = p.parse_known_args(argv)
    out_dir = Path(tempfile.mkdtemp(prefix="trivial-"))

    def answer(audio: str | None) -> str:
        path = out_dir / f"answer-{time.time_ns()}.txt"
        path.write_text(f"received {Path(audio).stat().st_size if audio else 0} bytes\n")
        return str(path)

    with gr.Blocks() as demo:
        audio = gr.Audio(type="filepath", format=None)
        result = gr.File()
        gr.Button("go").click(answer, [audio], [result], api_name="predict")
    demo.queue(default_concurrency_limit=2, max_size=32)
    demo.launch(server_name=args.host, server_port=args.port, show_error=False)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timing-log", type=Path, required=True)
    p.add_argument("--app-root", type=Path)
    p.add_argument("--trivial", action="store_true")
    p.add_argument("--without", action="append", default=[], help="a module whose import must fail")
    args, rest = p.parse_known_args()
    for name in args.without:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` now raises ImportError
    instrument(args.timing_log)
    if args.trivial:
        return serve_trivial(rest)
    root = args.app_root.resolve()
    os.chdir(root)
    sys.path.insert(0, str(root))
    import app  # the checkout's own app.py and, through it, its own voice2mesh

    return app.main(rest)


if __name__ == "__main__":
    sys.exit(main())
