"""Paper trading and the chart-type switch in a real browser (issue 14).

``streamlit run app.py`` on the built-in market (tests/browser.py) and Debian's Chromium:
open a long spread from the Paper tab, see it fill and its live P&L, close it, see it in the
history, and read the same position through the REST API of the same server; switch the
y price chart to a line. The URL sets a 10-bar window (page_state restores it), so the hedge
exists after ten seconds of 1 s bars.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from browser import CHROMIUM, OPEN_PANEL_JS, browser, server, wait_for  # noqa: F401
from helpers import wait_until

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
PlaywrightTimeout = sync_api.TimeoutError


@pytest.fixture
def page(server, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    yield tab
    context.close()


PANEL_TEXT_JS = """([name, text]) => {
  const panel = (""" + OPEN_PANEL_JS + """)(name);
  return !!panel && panel.innerText.includes(text);
}"""


def api(server, path: str):
    with urllib.request.urlopen(f"{server.url.rstrip('/')}{path}", timeout=30) as reply:
        return json.loads(reply.read())


def test_open_and_close_a_paper_position(server, page, tmp_path):
    shot = tmp_path / "paper.png"
    page.goto(f"{server.url}?window=10&tab=Paper")
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    wait_for(page, shot, "the Paper tab's form", PANEL_TEXT_JS, ["Paper", "Open long spread"],
             timeout_s=60)
    # the hedge needs 10 bars of both legs: retry the click until the order is placed
    for _ in range(30):
        if api(server, "/api/paper/positions"):  # placed, even if its message was missed
            break
        try:  # a rerun can redraw the form under the pointer: try again
            page.get_by_role("button", name="Open long spread (buy y, sell β·x)").click(
                timeout=10_000)
            page.wait_for_function(
                """() => /position \\d+: long|not ready yet/.test(document.body.innerText)""",
                timeout=10_000)
        except PlaywrightTimeout:
            continue
        if "placed" in page.inner_text("body"):
            break
        page.wait_for_timeout(1000)
    wait_for(page, shot, "the open-positions table", PANEL_TEXT_JS,
             ["Paper", "unrealised P&L"], timeout_s=30)
    # the monitor fills the entry at the next trade of each leg
    assert wait_until(lambda: api(server, "/api/paper/positions?status=open")[0]["status"]
                      == "open", 30)
    wait_for(page, shot, "a number as unrealised P&L", """() => {
        for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
          if (m.innerText.startsWith('unrealised P&L'))
            return /\\d/.test(m.querySelector('[data-testid="stMetricValue"]').innerText);
        return false; }""", timeout_s=30)
    positions = api(server, "/api/paper/positions?status=open")
    assert len(positions) == 1 and positions[0]["status"] == "open"
    assert positions[0]["side"] == "long" and positions[0]["y_symbol"] == "ETHUSDT"

    page.get_by_role("button", name="Close position").click()
    wait_for(page, shot, "the position in the history", PANEL_TEXT_JS,
             ["Paper", "History (1 closed"], timeout_s=30)
    closed = api(server, "/api/paper/positions?status=closed")
    assert closed[0]["status"] == "closed" and closed[0]["close_reason"] == "manual"
    assert closed[0]["pnl"] == pytest.approx(closed[0]["gross_pnl"] - closed[0]["fees"],
                                             rel=1e-9)
    assert closed[0]["entry_ts_y"] >= closed[0]["requested_ms"]
    page.screenshot(path=str(tmp_path / "paper-done.png"))
    assert page.locator('[data-testid="stException"]').count() == 0


def test_switch_the_price_chart_to_a_line(server, page, tmp_path):
    shot = tmp_path / "line.png"
    page.goto(f"{server.url}?tab=Prices")
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    # A refresh can leave the old chart element beside the new one for a moment: any
    # drawn y chart with that first trace counts.
    drawn_as = """type => Array.from(document.querySelectorAll(
        '.st-key-candles_y .js-plotly-plot')).some(el => el._fullData && el._fullData.length
        && el._fullData[0].type === type)"""
    wait_for(page, shot, "the y candles", drawn_as, "candlestick", timeout_s=90)
    page.locator(".st-key-chart_style_y").get_by_text("line", exact=True).click()
    wait_for(page, shot, "the y chart drawn as a line", drawn_as, "scatter", timeout_s=60)
    buttons = page.evaluate("""() => Array.from(document.querySelector(
        '.st-key-candles_y .js-plotly-plot').querySelectorAll('.rangeselector .button text'))
        .map(t => t.textContent)""")
    assert buttons == ["15m", "1h", "6h", "24h", "all"]
