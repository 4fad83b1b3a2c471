"""Benchmark of the REST backfill (issue 11). Prints figures; asserts nothing.

    python bench/bench_backfill.py            # page timings in Chromium, then the REST rate
    python bench/bench_backfill.py page       # only the page timings
    python bench/bench_backfill.py rest       # only the REST backfill rate and weight

Everything runs on 127.0.0.1 against the built-in market (``CRYPTO_FEED=demo``, seed 1),
which serves the WebSocket stream and Binance's REST endpoints on one port and simulates the
past: 24 h of 1-minute klines and 60 min of trades before "now" (the app's defaults).

page
    For each view - 1m bars over 24 h, 1 s bars over 15 min - a fresh working directory
    (empty database), ``streamlit run app.py`` started (``tests/browser.StreamlitServer``),
    Debian's Chromium (Playwright; launched before ``streamlit run``, as a user's browser is
    already open - its launch time is printed apart) opening ``/?tf=...&lookback=...`` as
    soon as the server answers, and the page polled every 100 ms until the live strip
    shows a z-score (not
    "—"), its z chart is drawn (Plotly's ``_fullLayout``) and its caption counts the bars
    the view should have (>= 1,400 one-minute bars for the day, >= 800 one-second bars for
    15 min). The time is measured from the ``streamlit run`` launch (process start, imports,
    collector and market start, REST backfill, first render - all of it). Settings for the
    page: ``BENCH_CRYPTO_<NAME>`` (see ``page_settings``). Each view is timed twice: with a
    new browser profile (nothing cached: a browser's very first visit), and with a profile
    that visited the page before on the same port (Streamlit's scripts, which it serves as
    immutable, and Plotly's in the browser's cache: every start after the first on a
    desk's machine; the filling visit is not printed). Also printed: what Streamlit's
    server runs on (``server_stack``), and from the browser's resource timing how long
    Streamlit's scripts took to fetch (the first request to the last response of the
    ``/static/`` files the document loads) and when the document's load event came.
rest
    A collector on the demo feed in this process with the defaults (60 min of trades,
    24 h of klines); the Backfiller's own clock from its start to the end of the initial
    backfill; trades stored per second; requests and request weight, also per minute.
    The demo announces 120,000 weight/min, so this is the client and SQLite speed. Against
    Binance (2,400/min on futures, of which the client uses 80 %) the same weight takes
    ``weight / 1,920`` minutes: the line "at Binance's limit" says how long.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import (CHROMIUM, CHROMIUM_ARGS, StreamlitServer, demo_env,  # noqa: E402
                           free_port, server_stack)

LIVE_STRIP_JS = """() => {
  const metric = Array.from(document.querySelectorAll('[data-testid="stMetric"]'))
      .find(m => m.innerText.trim().startsWith('z-score'));
  const z = metric ? metric.innerText.trim().split('\\n').pop() : null;
  const plot = document.querySelector('.st-key-live_z .js-plotly-plot');
  const captions = Array.from(document.querySelectorAll('[data-testid="stCaptionContainer"]'))
      .map(c => c.innerText);
  const bars = captions.map(t => (t.match(/(\\d[\\d,]*) bars/) || [null, null])[1])
      .filter(b => b !== null).map(b => parseInt(b.replace(/,/g, ''), 10));
  return {z: z, drawn: !!(plot && plot._fullLayout), bars: bars.length ? bars[0] : 0};
}"""


# The scripts of Streamlit's page: every /static/ file requested before the document's
# load event (the lazy chunks it imports later, Plotly's among them, are left out).
SCRIPTS_JS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const files = performance.getEntriesByType('resource')
      .filter(r => r.name.includes('/static/') && r.startTime < nav.loadEventEnd);
  return {files: files.length, fetch_ms: Math.max(...files.map(r => r.responseEnd))
          - Math.min(...files.map(r => r.startTime)), load_ms: nav.loadEventEnd};
}"""


def page_settings() -> dict:
    """``BENCH_CRYPTO_X=v`` in this environment -> ``CRYPTO_X=v`` for the page, e.g.
    ``BENCH_CRYPTO_BACKFILL=0`` to time the page without the trade backfill."""
    return {name[len("BENCH_"):]: value for name, value in os.environ.items()
            if name.startswith("BENCH_CRYPTO_")}


def page_timing(tf: str, lookback: str, min_bars: int, timeout: float,
                profile: str | None = None, port: int | None = None) -> dict:
    """Seconds from ``streamlit run`` to the live strip's z-score over a full view.

    ``profile``: a Chromium user-data directory kept between runs (with ``port``, the same
    origin each time), so the browser has Streamlit's and Plotly's scripts in its cache
    from an earlier visit; None: a new profile, nothing cached."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir, sync_playwright() as playwright:
        # The browser is already open, as a user's is; its launch is printed apart.
        launch_started = time.perf_counter()
        viewport = {"width": 1400, "height": 1000}
        if profile is None:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=viewport)
        else:
            browser = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, viewport=viewport)
            page = browser.pages[0] if browser.pages else browser.new_page()
        browser_s = time.perf_counter() - launch_started
        started = time.perf_counter()
        server = StreamlitServer(demo_env(workdir, **page_settings()), workdir, port=port)
        try:
            healthy = server.wait_healthy()
            query = f"?tf={tf}&lookback={lookback.replace(' ', '+')}"
            page.goto(server.url + query, wait_until="commit")
            state, first_z = {}, None
            deadline = started + timeout
            while time.perf_counter() < deadline:
                state = page.evaluate(LIVE_STRIP_JS)
                has_z = state["z"] not in (None, "—") and state["drawn"]
                if has_z and first_z is None:
                    first_z = time.perf_counter() - started
                if has_z and state["bars"] >= min_bars:
                    break
                time.sleep(0.1)
            full = time.perf_counter() - started
            scripts = page.evaluate(SCRIPTS_JS)
        finally:
            browser.close()
            server.stop()
    return {"view": f"{tf} over {lookback}", "healthy_s": healthy, "browser_s": browser_s,
            "first_z_s": first_z,
            "full_s": full if state.get("bars", 0) >= min_bars else None,
            "bars": state.get("bars"), "z": state.get("z"), "scripts": scripts["files"],
            "scripts_s": scripts["fetch_ms"] / 1000, "document_s": scripts["load_ms"] / 1000}


def print_page_timing(result: dict, browser: str = "new browser profile") -> None:
    first = "—" if result["first_z_s"] is None else f"{result['first_z_s']:.1f} s"
    full = "not reached" if result["full_s"] is None else f"{result['full_s']:.1f} s"
    print(f"page {result['view']} ({browser}): (Chromium launched beforehand in "
          f"{result['browser_s']:.1f} s) server healthy {result['healthy_s']:.1f} s, "
          f"first z-score {first}, full view ({result['bars']} bars, z "
          f"{result['z']}) {full} after `streamlit run`; Streamlit's {result['scripts']} "
          f"scripts fetched in {result['scripts_s']:.2f} s, document loaded "
          f"{result['document_s']:.2f} s after the browser asked for it", flush=True)


def rest_rate() -> dict:
    import collector
    from config import Settings

    with tempfile.TemporaryDirectory() as workdir:
        feed = collector.Collector(Settings(feed="demo", demo_seed=1,
                                            db_path=os.path.join(workdir, "demo.db"))).start()
        try:
            while feed.health()["backfill"]["state"] not in ("repairing", "done", "failed"):
                time.sleep(0.2)
            backfill = feed.health()["backfill"]
        finally:
            feed.stop()
    seconds = backfill["initial_done_s"]
    return {"seconds": seconds, "rows": backfill["backfilled"],
            "rows_per_s": backfill["backfilled"] / seconds, "requests": backfill["requests"],
            "weight": backfill["weight"], "weight_per_min": backfill["weight"] / seconds * 60,
            "klines": sum(p["klines"] for p in backfill["symbols"].values()),
            "binance_minutes": backfill["weight"] / (2400 * 0.8)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=("all", "page", "rest"), default="all")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.part in ("all", "page"):
        if not os.path.exists(CHROMIUM):
            raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
        print(f"Streamlit's server (uvicorn) runs on {server_stack()}", flush=True)
        for tf, lookback, min_bars in (("1m", "24 h", 1400), ("1s", "15 min", 800)):
            print_page_timing(page_timing(tf, lookback, min_bars, args.timeout))
            with tempfile.TemporaryDirectory() as profile:
                port = free_port()
                page_timing(tf, lookback, min_bars, args.timeout, profile, port)  # fills it
                print_page_timing(page_timing(tf, lookback, min_bars, args.timeout, profile,
                                              port), "browser cache from an earlier visit")
    if args.part in ("all", "rest"):
        r = rest_rate()
        print(f"rest: {r['rows']:,} trades + {r['klines']:,} klines in {r['seconds']:.1f} s = "
              f"{r['rows_per_s']:,.0f} trades/s stored; {r['requests']} requests, weight "
              f"{r['weight']:,} ({r['weight_per_min']:,.0f}/min at the demo's speed); at "
              f"Binance's futures limit (80 % of 2,400/min) the same weight takes "
              f"{r['binance_minutes']:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
