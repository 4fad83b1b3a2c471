"""Screenshots of every tab for the README: docs/screenshots/<tab>.png and dashboard.png.

    python bench/screenshots.py                         # ~4 min: z windows full, 90 s of z
    python bench/screenshots.py --min-wait 30 --after-z 0   # quicker
    python bench/screenshots.py --only pairs            # pairs.png alone, ~1-2 min

Starts ``streamlit run app.py`` on the built-in simulated market (``CRYPTO_FEED=demo``,
seed 1, SQLite files in a temporary directory, port on 127.0.0.1), opens it in Debian's
Chromium (Playwright, 1400x1000 viewport), waits at least ``--min-wait`` seconds and until
the live strip shows a numeric z-score (at the default 60-bar window z needs 120 bars of
1 s, i.e. two minutes), then ``--after-z`` seconds more so that the z chart has a line,
then opens each tab and saves the viewport with the tab bar at the top (below Streamlit's
fixed header; short tabs scroll less far). ``dashboard.png`` (the README's main image) is
the top of the page on the "Spread & z-score" tab: live strip, z chart and the spread
chart. Statistics and Correlation get their on-request tests run first so that their
results show; the Paper tab gets a closed and an open position (through the REST API). A PNG over ``--max-kb`` is re-encoded with a 256-colour palette (Pillow).
Prints what it saved.

``pairs.png`` (the Pairs tab) needs hours of history of many symbols, so it gets its own
page: six hours of the built-in market's planted universe (``market.universe_symbols()``:
BTC/ETH, three cointegrated groups of three, six noise symbols; 1 trade/s per symbol, seed
1, ending now) are written to a SQLite file through ``database.import_ticks``, and a second
``streamlit run app.py`` shows that file with its feed pointed at a closed 127.0.0.1 port
(the sidebar says the feed is reconnecting). At 1400x1700 (the table and the watchlist) it
runs the screen at its defaults (1m bars, 24 h lookback, all pairs), pins the best pair and
saves the view from the tab bar down.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
import database  # noqa: E402
import market  # noqa: E402
import uploads  # noqa: E402
from tests.browser import (CHROMIUM, CHROMIUM_ARGS, OPEN_PANEL_JS,  # noqa: E402
                           StreamlitServer, demo_env)
TABS = {"Prices": "prices", "Spread & z-score": "spread-z-score", "Statistics": "statistics",
        "Correlation": "correlation", "Backtest": "backtest", "Paper": "paper",
        "Alerts": "alerts", "Data": "data", "Health": "health"}
# A tab is drawn when these texts are in its panel and its Plotly charts have a layout.
READY_TEXT = {"Prices": "", "Spread & z-score": "β over time",
              "Statistics": "Per-minute statistics", "Correlation": "min trades per minute",
              "Backtest": "Run backtest on the latest data", "Paper": "History (",
              "Alerts": "History (",
              "Data": "Upload OHLC CSV", "Health": "Trade-id gaps"}
# Buttons that run on-request analytics, and a text that shows their result.
ON_REQUEST = {"Statistics": ("Run ADF on the spread and Engle–Granger on the pair",
                             "click again for newer data"),
              "Correlation": ("Run cointegration screen (Engle–Granger, Benjamini–Hochberg)",
                              "Engle–Granger p-values")}

TAB_READY_JS = """([name, text]) => {
  const panel = (""" + OPEN_PANEL_JS + """)(name);
  if (!panel || !panel.innerText.includes(text)) return false;
  const charts = Array.from(panel.querySelectorAll('.js-plotly-plot'));
  return charts.every(c => c._fullLayout) && (charts.length > 0 || text !== '');
}"""
# The tab bar to the top of the view, below Streamlit's fixed header.
SCROLL_BELOW_HEADER_JS = """e => {
  e.scrollIntoView({block: 'start'});
  let box = e.parentElement;
  while (box && box.scrollHeight <= box.clientHeight) box = box.parentElement;
  const header = document.querySelector('[data-testid="stHeader"]');
  (box || document.scrollingElement).scrollBy(0, -((header ? header.offsetHeight : 60) + 10));
}"""
Z_NUMERIC_JS = """() => { for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
    if (m.innerText.startsWith('z-score'))
      return /^-?\\d+\\.\\d\\d$/.test(m.querySelector('[data-testid="stMetricValue"]')
                                      .innerText.trim());
  return false; }"""


def save_png(data: bytes, path: Path, max_kb: int) -> str:
    """Write ``data``; over ``max_kb`` it is re-encoded with a 256-colour palette."""
    note = ""
    if len(data) > max_kb * 1024:
        from PIL import Image

        image = Image.open(io.BytesIO(data)).convert("RGB")
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            buffer, format="PNG", optimize=True)
        note = f" (palette; was {len(data) / 1024:.0f} KB)"
        data = buffer.getvalue()
    path.write_bytes(data)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return f"{shown}: {len(data) / 1024:.0f} KB{note}"


def paper_positions(url: str) -> None:
    """Through the REST API: one paper round trip (closed after 20 s) and one open
    position, so the Paper tab shows live P&L and a history."""
    def post(path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(url + path.lstrip("/"), method="POST",
                                         data=json.dumps(body or {}).encode())
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as error:
            raise SystemExit(f"POST {path}: {error.code} {error.read().decode()}") from None

    order = {"y": "ETHUSDT", "x": "BTCUSDT", "notional": 10_000, "fee_bps": 5,
             "slippage_bps": 1}
    first = post("/api/paper/positions", {**order, "side": "short"})
    time.sleep(20)
    post(f"/api/paper/positions/{first['id']}/close")
    post("/api/paper/positions", {**order, "side": "long", "stop_z": 4})
    time.sleep(5)


def open_tab(page, name: str, timeout_s: float) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    page.wait_for_function(TAB_READY_JS, arg=[name, READY_TEXT[name]],
                           timeout=timeout_s * 1000, polling=200)


PAIRS_HOURS = 6  # of planted-universe history behind pairs.png


def write_universe(db_path: str) -> int:
    """``PAIRS_HOURS`` of the planted universe, ending now, into a SQLite file; the trades."""
    symbols = [s.upper() for s in market.universe_symbols()]
    start = (int(time.time() * 1000) // 60_000) * 60_000 - PAIRS_HOURS * 3_600_000
    simulated = market.SimulatedMarket(symbols, seed=1, start_ms=start, speed=0,
                                       rates={s: 1.0 for s in symbols})
    trades = simulated.generate(PAIRS_HOURS * 3600)
    trades = trades[trades["status"] == "MARKET"]
    columns = ["symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker"]
    rows = uploads.to_trade_tuples(trades[columns].astype({"symbol": str}), received_ms=1)
    conn = database.connect(db_path)
    try:
        database.import_ticks(conn, rows)
    finally:
        conn.close()
    return len(rows)


def pairs_screenshot(playwright, out: Path, max_kb: int) -> None:
    """pairs.png: the Pairs tab on the planted universe (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="screenshot_pairs_") as workdir:
        db_path = str(Path(workdir) / "universe.db")
        print(f"{write_universe(db_path):,} trades written")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        env = demo_env(workdir, CRYPTO_FEED="binance-futures", CRYPTO_DB_PATH=db_path,
                       BINANCE_WS_URL=f"ws://127.0.0.1:{closed_port}",
                       CRYPTO_SYMBOLS=",".join(market.universe_symbols()))
        with StreamlitServer(env, workdir) as server:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            page.goto(server.url)
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            page.get_by_role("tab", name="Pairs", exact=True).click()
            page.get_by_role("button", name="Run the screen").click()
            page.get_by_text("pairs tested").wait_for(timeout=300_000)
            page.get_by_role("button", name="Pin to watchlist").click()
            page.get_by_text("Watchlist (1 pinned").wait_for(timeout=120_000)
            page.wait_for_timeout(2500)  # the table's canvas and sparklines settle
            page.locator('[data-testid="stTabs"] [role="tablist"]').evaluate(
                SCROLL_BELOW_HEADER_JS)
            page.wait_for_timeout(300)
            print(save_png(page.screenshot(type="png", full_page=False), out / "pairs.png",
                           max_kb))
            print(f"exception elements on the page: "
                  f"{page.locator('[data-testid=stException]').count()}")
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-wait", type=float, default=90.0,
                        help="seconds of data before the first screenshot")
    parser.add_argument("--max-wait", type=float, default=240.0,
                        help="give up waiting for a numeric z-score after this many seconds")
    parser.add_argument("--after-z", type=float, default=90.0,
                        help="seconds to wait once z is numeric, so that the z chart has a "
                             "line worth looking at")
    parser.add_argument("--max-kb", type=int, default=300)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", choices=("tabs", "pairs"), default=None,
                        help="only the live demo's tabs, or only pairs.png (default: both)")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    if args.only != "pairs":
        tab_screenshots(args)
    if args.only != "tabs":
        with sync_playwright() as playwright:
            pairs_screenshot(playwright, args.out, args.max_kb)
    return 0


def tab_screenshots(args: argparse.Namespace) -> None:
    """Every tab of ``TABS`` and dashboard.png on the live demo (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="screenshots_") as workdir:
        with StreamlitServer(demo_env(workdir), workdir) as server:
            url = server.url
            started = time.monotonic()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                                     args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.wait_for_selector(".js-plotly-plot", timeout=60_000)
                page.wait_for_timeout(max(0.0, args.min_wait - (time.monotonic() - started))
                                      * 1000)
                page.wait_for_function(Z_NUMERIC_JS, polling=500, timeout=max(
                    1.0, args.max_wait - (time.monotonic() - started)) * 1000)
                page.wait_for_timeout(args.after_z * 1000)
                print(f"data for {time.monotonic() - started:.0f} s; z is numeric")
                for name, slug in TABS.items():
                    if name == "Paper":
                        paper_positions(url)
                    open_tab(page, name, 60)
                    if name in ON_REQUEST:
                        button, result = ON_REQUEST[name]
                        page.get_by_role("button", name=button).click()
                        page.wait_for_function(
                            "([name, text]) => (" + OPEN_PANEL_JS + ")(name)"
                            ".innerText.includes(text)", arg=[name, result], timeout=60_000)
                    page.wait_for_timeout(1500)  # fonts and Plotly transitions settle
                    page.locator('[data-testid="stTabs"] [role="tablist"]').evaluate(
                        SCROLL_BELOW_HEADER_JS)
                    page.wait_for_timeout(300)
                    print(save_png(page.screenshot(type="png"), args.out / f"{slug}.png",
                                   args.max_kb))
                    if name == "Spread & z-score":
                        page.locator('[data-testid="stMainBlockContainer"]').evaluate(
                            "e => e.scrollIntoView({block: 'start'})")
                        page.wait_for_timeout(300)
                        print(save_png(page.screenshot(type="png"),
                                       args.out / "dashboard.png", args.max_kb))
                errors = page.locator('[data-testid="stException"]').count()
                print(f"exception elements on the page: {errors}")
                browser.close()


if __name__ == "__main__":
    sys.exit(main())
