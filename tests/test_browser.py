"""The page in a real browser: ``streamlit run app.py`` + Debian's Chromium via Playwright.

One Streamlit server for the module (its own process group, killed at teardown) on the
built-in simulated market (``CRYPTO_FEED=demo``, ``CRYPTO_DEMO_SEED=1``) with both SQLite
files in a temporary directory. Each test opens its own page, i.e. its own Streamlit session.

What AppTest cannot show and these tests do:
- every tab renders in a browser without an exception element or a traceback, and the
  server logs none either;
- fragment timers really tick: the live strip's z-score changes by itself;
- a box dragged on a chart keeps the zoom across refreshes (Streamlit 1.67 remounts a chart
  whose data changed, see ``app.chart``), read from Plotly's ``_fullLayout`` in the DOM;
- the view lives in the URL: a link opens it, a change is written back, a reload restores it;
- charts are linked: a slow box drag on one price chart zooms every price chart to the same
  window, the Spread tab's charts follow, and the browser reports no error (``_hoverlayer``).

The z-score needs ``window + z_window`` bars (``analytics.pair_signals``); at the default 60-bar
window that is two minutes of 1 s bars, so the z test sets the sidebar window to 10 (20 bars);
while it warms up the strip shows "—" and an info "z-score: needs 20 bars, has N".
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from browser import CHROMIUM, OPEN_PANEL_JS, browser, server, wait_for  # noqa: F401

SIMULATED_LABEL = "Built-in simulated market — not real prices"
TABS = ("Prices", "Spread & z-score", "Statistics", "Correlation", "Pairs", "Backtest",
        "Alerts", "Data", "Health")
# What each tab draws when it works (app.py): element keys (class st-key-<key>) with a
# Plotly chart inside, and texts.
TAB_CONTENT = {
    "Prices": {"charts": ["candles_y", "candles_x", "overlay"], "texts": []},
    "Spread & z-score": {"charts": ["spread", "zscore", "beta"],
                         "texts": ["β over time", "bands at ±2σ"]},
    "Statistics": {"charts": [], "texts": ["half-life (bars)", "Stationarity and cointegration",
                                           "Per-minute statistics"]},
    "Correlation": {"charts": ["correlation"], "texts": ["min trades per minute"]},
    "Pairs": {"charts": [], "texts": ["Pair screen", "Run the screen", "Watchlist"]},
    "Backtest": {"charts": [], "texts": ["Run backtest on the latest data"]},
    "Alerts": {"charts": [], "texts": ["Create alert", "History ("]},
    "Data": {"charts": [], "texts": ["Export the chosen range", "Upload OHLC CSV", "Bars CSV"]},
    "Health": {"charts": [], "texts": ["Trade-id gaps", "received", "queue high water"]},
}
REFRESH_S = 2  # the sidebar's default "refresh every (s)"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api")


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture
def page(server, browser, tmp_path):
    """A new session on the page, charts drawn; screenshots go to tmp_path."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.goto(server.url)
    tab.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    wait_for(tab, tmp_path / "start.png", "the first Plotly chart",
             "() => document.querySelector('.js-plotly-plot') !== null", timeout_s=60)
    yield tab
    context.close()


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def snap(page, path: Path) -> str:
    page.screenshot(path=str(path))
    return str(path)


def assert_no_error(page, shot: Path, where: str) -> None:
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, (
        f"{where}: exception element: {exceptions.first.inner_text()[:800]} "
        f"(screenshot {snap(page, shot)})")
    body = page.inner_text("body")
    assert "Traceback" not in body, (
        f"{where}: traceback on the page (screenshot {snap(page, shot)})")


def metric_value(page, label: str) -> str | None:
    return page.evaluate(
        """label => { for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
             const l = m.querySelector('[data-testid="stMetricLabel"]');
             if (l && l.innerText.trim() === label)
               return m.querySelector('[data-testid="stMetricValue"]').innerText.trim(); }
           return null; }""", label)



TAB_READY_JS = """([name, charts, texts]) => {
  const panel = (""" + OPEN_PANEL_JS + """)(name);
  if (!panel) return false;
  if (panel.querySelector('[data-testid="stException"]')) return true;  // reported next
  const drawn = charts.every(k => {
      const el = panel.querySelector('.st-key-' + k + ' .js-plotly-plot');
      return el && el._fullLayout; });
  return drawn && texts.every(t => panel.innerText.includes(t));
}"""

# x range of a chart's first x axis in epoch ms, and its newest x value.
X_RANGE_JS = """key => {
  const el = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  if (!el || !el._fullLayout || !el._fullData) return null;
  const ax = el._fullLayout.xaxis;
  const xs = el._fullData.flatMap(t => Array.from(t.x || []));
  return {range: ax.range.slice(), lo: ax.r2l(ax.range[0]), hi: ax.r2l(ax.range[1]),
          autorange: ax.autorange, n: xs.length,
          first: xs.length ? Math.min(...xs) : null, last: xs.length ? Math.max(...xs) : null};
}"""


def assert_server_log_clean(server, shot_path: str) -> None:
    """The server printed no traceback (an exception outside any element, e.g. a thread)."""
    text = server.log_path.read_text(errors="replace")
    assert "Traceback" not in text, (f"server log has a traceback (screenshot {shot_path}):\n"
                                     f"{text[text.find('Traceback'):][:3000]}")


# --------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------


def test_live_z_score_changes_by_itself(server, page, tmp_path):
    shot = tmp_path / "live_z.png"
    window = page.locator(".st-key-window input")
    window.fill("10")
    window.press("Enter")
    wait_for(page, shot, "the strip caption saying 10-bar window",
             """() => document.querySelector('[data-testid="stMain"]').innerText
                  .includes('10-bar window')""")
    # While the z window fills, the strip shows "—" and says how many bars are missing; on a
    # bar whose β the guard refused (x did not move enough in 10 bars) β shows "—" as well,
    # with the reason in its help.
    state = page.evaluate(
        """() => { const main = document.querySelector('[data-testid="stMain"]');
             for (const m of main.querySelectorAll('[data-testid="stMetric"]'))
               if (m.innerText.startsWith('z-score'))
                 return [m.querySelector('[data-testid="stMetricValue"]').innerText.trim(),
                         main.innerText]; }""")
    if state[0] == "—" and metric_value(page, "β") != "—":
        assert re.search(r"z-score: needs 20 bars, has \d+", state[1]), (
            f"z shown as — without a warming message (screenshot {snap(page, shot)})")
    wait_for(page, shot, "a numeric z-score in the strip (z window filled)",
             """() => { for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
                  if (m.innerText.startsWith('z-score'))
                    return /^-?\\d+\\.\\d\\d$/.test(m.querySelector(
                      '[data-testid="stMetricValue"]').innerText.trim());
                return false; }""", timeout_s=60)
    first = metric_value(page, "z-score")
    changed = wait_for(
        page, shot, f"the z-score to change from {first}",
        """first => { for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
             if (m.innerText.startsWith('z-score')) {
               const v = m.querySelector('[data-testid="stMetricValue"]').innerText.trim();
               return /^-?\\d+\\.\\d\\d$/.test(v) && v !== first ? v : false; }
           return false; }""", first, timeout_s=30).json_value()
    assert changed != first and re.fullmatch(r"-?\d+\.\d\d", changed), (
        f"z-score {first} -> {changed} (screenshot {snap(page, shot)})")
    assert_no_error(page, shot, "live strip")
    assert_server_log_clean(server, snap(page, shot))


def test_last_price_changes_by_itself(server, page, tmp_path):
    """The strip's last prices are a fragment of their own (0.25 s, nested in the 0.5 s
    strip): in a browser its timer ticks and the newest trade's price replaces the last."""
    shot = tmp_path / "last_price.png"
    wait_for(page, shot, "a price in 'BTCUSDT last'",
             """() => { for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
                  if (m.innerText.startsWith('BTCUSDT last'))
                    return /\\d/.test(m.querySelector('[data-testid="stMetricValue"]')
                                       .innerText);
                return false; }""")
    first = metric_value(page, "BTCUSDT last")
    changed = wait_for(
        page, shot, f"'BTCUSDT last' to change from {first}",
        """first => { for (const m of document.querySelectorAll('[data-testid="stMetric"]'))
             if (m.innerText.startsWith('BTCUSDT last')) {
               const v = m.querySelector('[data-testid="stMetricValue"]').innerText.trim();
               return /\\d/.test(v) && v !== first ? v : false; }
           return false; }""", first, timeout_s=30).json_value()
    assert changed != first, f"{first} -> {changed} (screenshot {snap(page, shot)})"
    assert_no_error(page, shot, "last prices")


STRIP_TRUNCATED_JS = """() => {
  const cut = [];
  for (const m of document.querySelectorAll('[data-testid="stMain"] [data-testid="stMetric"]')) {
    const value = m.querySelector('[data-testid="stMetricValue"]');
    const text = value ? value.innerText.trim() : '';
    if (!/\\d/.test(text)) return null;  // not every value is there yet
    for (const el of [value, ...value.querySelectorAll('*')])
      if (el.scrollWidth > el.clientWidth + 1) { cut.push(m.innerText.replace('\\n', ': ')); break; }
  }
  return cut;
}"""


def test_the_strips_numbers_are_shown_whole(server, page, tmp_path):
    # Defect caught: "BTCUSDT last 88,364…" and "spread −10.4 …" cut at 1400 px wide.
    shot = tmp_path / "strip_numbers.png"
    wait_for(page, shot, "every strip metric with a number",
             f"() => ({STRIP_TRUNCATED_JS})() !== null", timeout_s=60)
    page.wait_for_timeout(1_000)
    cut = page.evaluate(STRIP_TRUNCATED_JS)
    assert cut == [], f"values cut short: {cut} (screenshot {snap(page, shot)})"


def test_every_tab_renders_without_errors(server, page, tmp_path):
    shot = tmp_path / "tabs.png"
    label = page.locator('[data-testid="stMain"] [data-testid="stAlert"]',
                         has_text=SIMULATED_LABEL)
    wait_for(page, shot, "the simulated-market label in the live strip",
             """label => Array.from(document.querySelectorAll(
                  '[data-testid="stMain"] [data-testid="stAlert"]'))
                  .some(e => e.innerText.includes(label))""", SIMULATED_LABEL)
    assert label.first.is_visible(), f"simulated-market label hidden ({snap(page, shot)})"
    for name in TABS:
        page.get_by_role("tab", name=name, exact=True).click()
        content = TAB_CONTENT[name]
        wait_for(page, shot, f"tab {name!r} with {content}", TAB_READY_JS,
                 [name, content["charts"], content["texts"]], timeout_s=30)
        panel_text = page.evaluate(f"name => ({OPEN_PANEL_JS})(name).innerText", name)
        assert len(panel_text.strip()) > 20, f"{name}: almost empty ({snap(page, shot)})"
        assert_no_error(page, shot, f"tab {name!r}")
    page.get_by_role("tab", name="Spread & z-score", exact=True).click()
    content = TAB_CONTENT["Spread & z-score"]
    wait_for(page, shot, "back on Spread & z-score", TAB_READY_JS,
             ["Spread & z-score", content["charts"], content["texts"]])
    saved = snap(page, shot)
    assert os.path.getsize(saved) > 10_000, f"screenshot suspiciously small: {saved}"
    assert_no_error(page, shot, "after all tabs")
    assert_server_log_clean(server, saved)


def test_box_zoom_survives_refreshes(server, page, tmp_path):
    shot = tmp_path / "zoom.png"
    chart = ".st-key-overlay"
    # A short lookback keeps each refresh quick (the built-in market backfills history).
    page.goto(page.url.split("?")[0] + "?lookback=5+min")
    page.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    before = wait_for(page, shot, "the overlay chart with 20+ points",
                      f"() => {{ const r = ({X_RANGE_JS})('overlay'); "
                      "return r && r.n >= 20 ? r : false; }", timeout_s=60).json_value()
    assert before["autorange"] is True, f"zoomed before any drag: {before}"
    # A live chart is remounted at each refresh (Streamlit 1.67 derives its id from the
    # figure), which cancels a drag in progress and drops a box sent just before: as the
    # strip's caption advises, pause, drag, and resume.
    page.locator(".st-key-paused label").click()
    page.wait_for_timeout(3000)  # the last timed reruns finish
    page.evaluate("() => document.querySelector('.st-key-overlay').scrollIntoView()")
    at_drag = page.evaluate(X_RANGE_JS, "overlay")
    drag_box(page, "overlay", steps=20, pause_s=0.05)
    zoomed = wait_for(page, shot, "the box applied as the overlay's zoom",
                      f"() => {{ const r = ({X_RANGE_JS})('overlay'); "
                      "return r && r.autorange === false ? r : false; }",
                      timeout_s=30).json_value()
    page.locator(".st-key-paused label").click()  # live again
    # The box covered 30 %..60 % of the plot's width: the zoom is that part of the axis.
    span = at_drag["hi"] - at_drag["lo"]
    assert abs(zoomed["lo"] - (at_drag["lo"] + 0.3 * span)) < 0.1 * span, (at_drag, zoomed)
    assert abs(zoomed["hi"] - (at_drag["lo"] + 0.6 * span)) < 0.1 * span, (at_drag, zoomed)
    # Several refreshes later the range is unchanged. The window lies in the past, so the
    # chart is not redrawn (a redraw remounts it and would cut a second drag short) while
    # the live strip keeps counting new bars.
    last_bar_js = """() => { const m = document.querySelector('[data-testid="stMain"]')
                           .innerText.match(/last bar (\\d\\d):(\\d\\d):(\\d\\d)/);
                           return m ? 3600 * m[1] + 60 * m[2] + 1 * m[3] : null; }"""
    then = page.evaluate(last_bar_js)
    wait_for(page, shot, "the live strip 6 s further on (several refreshes)",
             f"t => ({last_bar_js})() >= t + 6", then, timeout_s=30)
    later = page.evaluate(X_RANGE_JS, "overlay")
    assert later["range"] == zoomed["range"] and later["autorange"] is False, (
        f"zoom lost after refresh: {zoomed['range']} -> {later['range']} "
        f"(screenshot {snap(page, shot)})")
    assert page.locator(".st-key-overlay_reset").count() == 1, (
        f"no 'reset zoom' button (screenshot {snap(page, shot)})")
    assert_no_error(page, shot, "after zooming")
    assert_server_log_clean(server, snap(page, shot))


# --------------------------------------------------------------------------------------
# issue 15: the view in the URL, linked charts
# --------------------------------------------------------------------------------------

MAIN_TEXT_JS = "() => document.querySelector('[data-testid=\"stMain\"]').innerText"
SELECTED_TAB_JS = """() => { const t = document.querySelector('[role="tab"][aria-selected="true"]');
                        return t ? t.innerText.trim() : null; }"""


def open_page(browser, url: str, tmp_path: Path):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(url)
    tab.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
    return context, tab, errors


def test_reload_restores_the_view_from_the_url(server, browser, tmp_path):
    shot = tmp_path / "url.png"
    url = server.url
    context, tab, errors = open_page(
        browser, url + "?tf=5s&window=30&method=Kalman&prices=raw&entry=2.5&tab=Statistics",
        tmp_path)
    try:
        view_text = "Kalman, raw prices, 30-bar window, 5s bars"
        wait_for(tab, shot, f"the strip caption '{view_text}'",
                 f"() => ({MAIN_TEXT_JS})().includes({view_text!r})", timeout_s=60)
        assert tab.evaluate(SELECTED_TAB_JS) == "Statistics", snap(tab, shot)
        header = tab.evaluate("() => document.querySelector('header').innerText")
        assert "Deploy" not in header, f"a Deploy button in a local tool: {header!r}"
        assert tab.locator('[data-testid="stMainMenu"]').count() == 1  # settings, theme
        # A change in the page goes into the URL ...
        window = tab.locator(".st-key-window input")
        window.fill("40")
        window.press("Enter")
        wait_for(tab, shot, "window=40 in the URL",
                 "() => window.location.search.includes('window=40')")
        query = tab.evaluate("() => window.location.search")
        for part in ("tf=5s", "method=Kalman", "prices=raw", "entry=2.5", "tab=Statistics",
                     "y=ETHUSDT", "x=BTCUSDT"):
            assert part in query, (part, query)
        # ... and a reload (a new session) shows the same view.
        tab.reload()
        tab.wait_for_selector('[data-testid="stApp"]', timeout=60_000)
        view_text = "Kalman, raw prices, 40-bar window, 5s bars"
        wait_for(tab, shot, f"after reload, '{view_text}'",
                 f"() => ({MAIN_TEXT_JS})().includes({view_text!r})", timeout_s=60)
        wait_for(tab, shot, "the Statistics tab open after reload",
                 f"() => ({SELECTED_TAB_JS})() === 'Statistics'")
        # The number input is filled by the session's own run after the view text shows.
        wait_for(tab, shot, "entry 2.50 restored after reload",
                 "() => document.querySelector('.st-key-entry_z input')?.value === '2.50'")
        assert_no_error(tab, shot, "after reload")
        assert not errors, errors
    finally:
        context.close()


LINKED_RANGE_JS = """keys => keys.map(key => {
  const el = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
  if (!el || !el._fullLayout) return null;
  const ax = el._fullLayout.xaxis;
  return {key, autorange: ax.autorange, lo: ax.r2l(ax.range[0]), hi: ax.r2l(ax.range[1])};
})"""


def drag_box(page, key: str, steps: int, pause_s: float = 0.0) -> tuple[dict, dict]:
    """Drag a box over 30 %..60 % of chart ``key``'s width; returns the plot box and the
    x range before the drag."""
    box = None
    for _attempt in range(50):  # a chart being redrawn has no drag layer for a moment
        before = page.evaluate(X_RANGE_JS, key)
        box = page.locator(f".st-key-{key} .js-plotly-plot .nsewdrag").first.bounding_box()
        if box is not None and before is not None:
            break
        page.wait_for_timeout(200)
    assert box is not None, f"{key}: no drag layer to drag on"
    x0, x1 = box["x"] + 0.3 * box["width"], box["x"] + 0.6 * box["width"]
    y0, y1 = box["y"] + 0.15 * box["height"], box["y"] + 0.85 * box["height"]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
        if pause_s:
            page.wait_for_timeout(pause_s * 1000)
    page.mouse.up()
    return box, before


def wait_until_still(tab, shot: Path, key: str, still_s: float = 4.0,
                     timeout_s: float = 90.0) -> None:
    """Wait until chart ``key`` has not been redrawn for ``still_s`` seconds and the next
    1-minute bar close is at least ``still_s`` + 4 s away."""
    mark = """key => { const el = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
                       if (el) el.__still = true; }"""
    kept = """key => { const el = document.querySelector('.st-key-' + key + ' .js-plotly-plot');
                       return !!(el && el.__still); }"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if 60 - time.time() % 60 < still_s + 8:  # a bar closes soon: wait for it to pass
            time.sleep(60 - time.time() % 60 + 1)
            continue
        tab.evaluate(mark, key)
        time.sleep(still_s)
        if tab.evaluate(kept, key):
            return
    pytest.fail(f"chart {key} still redrawn after {timeout_s} s (screenshot {snap(tab, shot)})")


def test_zooming_one_chart_moves_the_others(server, browser, tmp_path):
    shot = tmp_path / "linked.png"
    url = server.url
    # 1m bars: the charts show closed bars and stay unchanged between bar closes
    context, tab, errors = open_page(browser, url + "?tf=1m&lookback=4+h&window=10", tmp_path)
    try:
        keys = ["candles_y", "candles_x", "overlay"]
        wait_for(tab, shot, "the three price charts drawn",
                 f"() => ({LINKED_RANGE_JS})({keys}).every(r => r !== null)", timeout_s=90)
        tab.evaluate("() => document.querySelector('.st-key-candles_y').scrollIntoView()")
        # A chart whose figure changes is redrawn and a drag on it is cut short (README):
        # here while the backfill still stores history, and at each 1m bar close.
        wait_until_still(tab, shot, "candles_y")
        # A slow drag (3 s) on one chart: it must end in a zoom, without page errors.
        _, before = drag_box(tab, "candles_y", steps=30, pause_s=0.1)
        ranges = wait_for(
            tab, shot, "every price chart zoomed to the same window",
            f"""() => {{ const r = ({LINKED_RANGE_JS})({keys});
                  return r.every(x => x && x.autorange === false) ? r : false; }}""",
            timeout_s=30).json_value()
        span = before["hi"] - before["lo"]
        for r in ranges:
            assert abs(r["lo"] - ranges[0]["lo"]) < 1 and abs(r["hi"] - ranges[0]["hi"]) < 1, \
                ranges
        assert abs(ranges[0]["lo"] - (before["lo"] + 0.3 * span)) < 0.1 * span, (before, ranges)
        assert tab.locator(".st-key-candles_x_reset").count() == 1
        # The other tab's charts follow too.
        tab.get_by_role("tab", name="Spread & z-score", exact=True).click()
        spread_keys = ["spread", "zscore", "beta"]
        linked = wait_for(
            tab, shot, "the spread, z and β charts in the same window",
            f"""() => {{ const r = ({LINKED_RANGE_JS})({spread_keys});
                  return r.every(x => x && x.autorange === false) ? r : false; }}""",
            timeout_s=60).json_value()
        for r in linked:
            assert abs(r["lo"] - ranges[0]["lo"]) < 1 and abs(r["hi"] - ranges[0]["hi"]) < 1, \
                (ranges, linked)
        # The backtest's trades are marked on the z chart (window 10 over hours of 1m bars
        # crosses ±2 many times), named in its legend.
        marks = tab.evaluate("""() => Array.from(document.querySelector(
              '.st-key-zscore .js-plotly-plot')._fullData)
              .filter(t => t.mode === 'markers').map(t => [t.name, t.x.length])""")
        names = {name for name, count in marks if count > 0}
        assert names & {"long entry", "short entry"} and "exit" in names, marks
        assert not [e for e in errors if "_hoverlayer" in e], errors
        assert not errors, errors
        assert_no_error(tab, shot, "after the linked zoom")
        assert_server_log_clean(server, snap(tab, shot))
    finally:
        context.close()
