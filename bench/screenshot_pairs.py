"""Screenshot of the Pairs tab for the README: docs/screenshots/pairs.png.

    python bench/screenshot_pairs.py            # ~1-2 min
    python bench/screenshot_pairs.py --out /tmp/shots

Six hours of the built-in market's planted universe (``market.universe_symbols()``: BTC/ETH,
three cointegrated groups of three, six noise symbols; 1 trade/s per symbol, seed 1, ending
now) are written to a SQLite file in a temporary directory through ``database.import_ticks``.
``streamlit run app.py`` then shows that file with its feed pointed at a closed 127.0.0.1
port, so the screen sees a fixed history (the sidebar says the feed is reconnecting). In
Debian's Chromium (Playwright, 1400x1700: the table and the watchlist) the script opens
the Pairs tab, runs the screen at its defaults (1m bars, 24 h lookback, all pairs), pins
the best pair, and saves the view from the tab bar down (``bench/screenshots.py``'s
palette re-encoding above ``--max-kb``).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import database  # noqa: E402
import market  # noqa: E402
import uploads  # noqa: E402
from screenshots import OUT, SCROLL_BELOW_HEADER_JS, save_png  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS, StreamlitServer, demo_env  # noqa: E402

HOURS = 6


def write_universe(db_path: str) -> int:
    symbols = [s.upper() for s in market.universe_symbols()]
    start = (int(time.time() * 1000) // 60_000) * 60_000 - HOURS * 3_600_000
    simulated = market.SimulatedMarket(symbols, seed=1, start_ms=start, speed=0,
                                       rates={s: 1.0 for s in symbols})
    trades = simulated.generate(HOURS * 3600)
    trades = trades[trades["status"] == "MARKET"]
    columns = ["symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker"]
    rows = uploads.to_trade_tuples(trades[columns].astype({"symbol": str}), received_ms=1)
    conn = database.connect(db_path)
    try:
        database.import_ticks(conn, rows)
    finally:
        conn.close()
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-kb", type=int, default=300)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshot_pairs_") as workdir:
        db_path = str(Path(workdir) / "universe.db")
        print(f"{write_universe(db_path):,} trades written")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        env = demo_env(workdir, CRYPTO_FEED="binance-futures", CRYPTO_DB_PATH=db_path,
                       BINANCE_WS_URL=f"ws://127.0.0.1:{closed_port}",
                       CRYPTO_SYMBOLS=",".join(market.universe_symbols()))
        with StreamlitServer(env, workdir) as server, sync_playwright() as playwright:
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
            print(save_png(page.screenshot(type="png", full_page=False),
                           args.out / "pairs.png", args.max_kb))
            print(f"exception elements on the page: "
                  f"{page.locator('[data-testid=stException]').count()}")
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
