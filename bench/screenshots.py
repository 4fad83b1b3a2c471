"""Screenshots of every tab for the README: docs/screenshots/<tab>.png and dashboard.png.

    python bench/screenshots.py                         # ~4 min: z windows full, 90 s of z
    python bench/screenshots.py --min-wait 30 --after-z 0   # quicker

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
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
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
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
