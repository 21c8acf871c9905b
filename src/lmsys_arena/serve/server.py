"""The HTTP side: a FastAPI app with the page (GET and POST ``/``) and ``/healthz``, served by uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from lmsys_arena.serve.page import render
from lmsys_arena.serve.service import Service

try:  # at module level: FastAPI resolves the endpoints' (string) annotations in this module's globals
    from fastapi import Request
except ImportError:  # the serve extra is missing: create_app says so
    Request = None

log = logging.getLogger(__package__)  # one logger for the page, as before the split into modules

MISSING_EXTRA = "make serve needs the serve extra: .venv/bin/pip install -e '.[serve]' ({})"


def create_app(service: Service):
    """The page over ``service``: GET ``/`` (``?row_id=`` scores a row), POST ``/`` (the form), ``/healthz``."""
    try:
        from fastapi import FastAPI
        from fastapi.responses import HTMLResponse, PlainTextResponse
    except ImportError as e:
        raise ImportError(MISSING_EXTRA.format(e)) from None

    app = FastAPI(title=f"lmsys_arena serve {service.run.name}", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def page(row_id: str | None = None):
        ctx = service.handle({"action": "row", "row_id": row_id}) if row_id else {}
        return HTMLResponse(render(service, ctx))

    @app.post("/", response_class=HTMLResponse)
    async def submit(request: Request):
        form = await request.form()
        ctx = await _in_thread(service.handle, {k: str(v) for k, v in form.items()})
        return HTMLResponse(render(service, ctx))

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz():
        return "ok"

    return app


async def _in_thread(fn, *args):
    """``fn`` in the thread pool: a prediction blocks, the event loop must not."""
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the run's models, then serve the page until interrupted."""
    try:
        import uvicorn
    except ImportError as e:
        raise ImportError(MISSING_EXTRA.format(e)) from None
    service = Service(run_dir)
    app = create_app(service)
    log.info("serving %s on http://%s:%d/ (Ctrl-C stops)", service.run.name, host, port)
    uvicorn.run(app, host=host, port=port, log_config=None, log_level="info")
