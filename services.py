"""The process's background services: collector, alert evaluator, paper-trading monitor.

One place starts them, so the server (``server.lifespan``, when ``streamlit run app.py``
starts) and the page (``page.start_services``, a fallback for AppTest, which has no server)
start the same things the same way. Every start is idempotent per process.

Collection can be paused from the page or the API (``pause_collection`` /
``resume_collection``): the collector is stopped (its queue is written and committed) and
is not restarted by a page rerun until it is resumed; the evaluator and the paper monitor
keep running on the stored data. The pause flag lives in ``sys`` like the collector's own
registry, because Streamlit re-imports changed modules.
"""

from __future__ import annotations

import sys
import threading

import alerts
import collector
import paper
from config import Settings

# Share of wall time the REST backfill may spend on trades older than its newest 15
# minutes while the page's process runs it (``Settings.backfill_pace`` unset): a page
# opened during the backfill keeps the CPU and the GIL (bench/bench_backfill.py page).
PAGE_BACKFILL_PACE = 0.33

_PROCESS = sys.__dict__.setdefault("_pairs_dashboard_services", {
    "lock": threading.RLock(), "paused": False, "last_feed": None})
_PROCESS.setdefault("page_served", threading.Event())  # also in a registry made before it


def start(settings: Settings) -> collector.Collector:
    """Start the collector (unless paused), the alert evaluator and the paper monitor.

    Returns the running collector, or, while collection is paused, the stopped one (its
    ``health()`` and ``db_path`` still answer). Idempotent: a running service is kept as it
    is, even when ``settings`` differ.
    """
    with _PROCESS["lock"]:
        feed = collector.running_collector()
        if feed is None and _PROCESS["paused"] and _PROCESS["last_feed"] is not None:
            feed = _PROCESS["last_feed"]
        elif feed is None:
            feed = _start_collector(settings)
        _PROCESS["last_feed"] = feed
        alerts.start_evaluator(db_path)
        paper.start_monitor(db_path)
        return feed


def page_served() -> None:
    """A page run is over (``page.main`` calls this after each): from now on the REST trade
    backfill takes the CPU without delaying a browser's first view. At server start it
    waits for this (at most ``Backfiller.trades_after_s``): the browser is loading
    Streamlit's scripts and Plotly's from this Python process, and the page's first run
    needs the GIL."""
    _PROCESS["page_served"].set()


def current_feed() -> collector.Collector | None:
    """The running collector, or the paused one, or None before ``start``."""
    return collector.running_collector() or _PROCESS["last_feed"]


def db_path() -> str | None:
    """The collector's database (also while paused); None before ``start``."""
    feed = current_feed()
    return feed.db_path if feed is not None else None


def collection_paused() -> bool:
    return bool(_PROCESS["paused"])


def pause_collection() -> dict:
    """Stop recording trades (the page and the API keep serving stored data).

    The collector writes what it has queued and stops; returns its final health.
    """
    with _PROCESS["lock"]:
        _PROCESS["paused"] = True
        feed = collector.running_collector()
        if feed is None:
            last = _PROCESS["last_feed"]
            return last.health() if last is not None else {}
        _PROCESS["last_feed"] = feed
        return feed.stop()


def resume_collection() -> collector.Collector:
    """Record again: a new collector with the paused one's settings (symbols included)."""
    with _PROCESS["lock"]:
        _PROCESS["paused"] = False
        running = collector.running_collector()
        if running is not None:
            return running
        last = _PROCESS["last_feed"]
        feed = _start_collector(last.settings if last is not None else Settings.from_env())
        _PROCESS["last_feed"] = feed
        return feed


def _start_collector(settings: Settings) -> collector.Collector:
    """The collector as the page's process runs it: its trade backfill paced
    (``PAGE_BACKFILL_PACE`` unless the settings say) and waiting for the first page run."""
    if settings.backfill_pace is None:
        settings = settings.with_changes(backfill_pace=PAGE_BACKFILL_PACE)
    return collector.start(settings, trades_after=_PROCESS["page_served"])


def stop_all(timeout: float = 5.0) -> None:
    """Stop every service (server shutdown, tests)."""
    with _PROCESS["lock"]:
        paper.stop_monitor(timeout)
        alerts.stop_evaluator(timeout)
        collector.stop(timeout)
        _PROCESS["paused"] = False
        _PROCESS["last_feed"] = None
