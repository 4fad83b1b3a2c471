"""The server side of ``streamlit run app.py``: the REST API's routes and the lifespan that
starts the services, with nothing heavier than Streamlit imported at server start.

``streamlit run`` imports app.py to find ``app = st.App(...)`` and starts listening only
after that import. Importing the project there (pandas, the API and every module it reads
through: ~0.6 s on the benchmark machine) kept the browser from fetching even
Streamlit's own scripts for that long. So app.py's server import stops at Streamlit and
this module, and ``lifespan`` does the rest in a thread while the browser loads its
scripts:

1. ``api`` is imported (it imports ``services`` and the modules the page reads through),
2. the services start (``services.start``: collector, alert evaluator, paper monitor), so
   recording, alerts and the API run with no browser tab open, exactly as before,
3. ``page`` (the page's code, with ``visualizations``: Plotly) is imported, so the first
   page run finds it loaded.

A page run that comes first starts the services itself (``page.start_services``; starting
is idempotent) and waits for any import in progress (Python's import lock). ``/api/...``
requests go to ``api.routes()``, built at the first request, which waits until the
services have started (at most ``API_WAIT_S``): no answer reports a collector that is
about to start as missing.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route, Router

log = logging.getLogger("server")

API_WAIT_S = 30.0
_SERVICES_STARTED = threading.Event()  # set when the start is over, failed or not


def _start_services() -> None:
    try:
        import api  # noqa: F401  (the import is the point: see the module docstring)
        import services
        from config import ConfigError, Settings

        try:
            services.start(Settings.from_env())
        except ConfigError as exc:  # the page shows the same error; the API answers 503
            log.error("services not started: configuration error: %s", exc)
    finally:
        _SERVICES_STARTED.set()
    import page  # noqa: F401


@contextlib.asynccontextmanager
async def lifespan(app):
    """Start the services in a thread when the server starts; stop them when it stops."""
    starter = threading.Thread(target=_start_services, name="services-start", daemon=True)
    starter.start()
    yield
    await run_in_threadpool(starter.join)
    import services

    services.stop_all()


def _api_router() -> Router:
    if not _SERVICES_STARTED.wait(API_WAIT_S):
        log.warning("services still starting after %.0f s: the API answers anyway", API_WAIT_S)
    import api

    return Router(routes=api.routes(), default=api.unknown_endpoint)


class _ApiRoutes:
    """ASGI app of every ``/api/...`` path: ``api.routes()``, built at the first request."""

    def __init__(self) -> None:
        self._router: Router | None = None

    async def __call__(self, scope, receive, send) -> None:
        if self._router is None:
            self._router = await run_in_threadpool(_api_router)
        await self._router(scope, receive, send)


ROUTES = [Route("/api/{path:path}", _ApiRoutes())]
