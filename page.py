"""The dashboard page: ``main()`` is one run of it in a browser session (``app.py``).

UI only. Reading and analytics live in ``dashboard_data`` (which calls ``database`` and
``analytics``), figures in ``visualizations``, trades in ``collector`` (one per process,
started once), alert rules in ``alerts``.

Why a module and not the script itself
    Streamlit compiles the script it runs and forgets the compiled code whenever the last
    browser session disconnects (a reload of the only tab), and it re-creates every
    cached function's key (``inspect.getsource``) on every run of the script. Imported,
    this code is compiled once per process (or read from ``__pycache__``) and its
    functions are defined once: a reload's first run starts ~30 ms sooner (README,
    Performance: "The page became a module").

How the page stays live without flicker
    * Sidebar controls rerun the whole script; nothing else does.
    * ``@st.fragment(run_every=...)`` reruns only the live parts: the sidebar feed status
      every second, the live strip (values + z-score chart) twice a second and its last
      prices four times a second (``dd.LIVE_PRICE_EVERY_S``), the open tab's
      charts at the chosen refresh interval (for 1m/5m bars they draw closed bars only,
      so they change at a bar close: ``view_key``). Pause sets run_every=None.
    * Tabs are lazy (``on_change="rerun"``): only the open tab runs.
    * Heavy work is cached with ``st.cache_data`` keyed by the newest bar's time
      (``database.latest_bar_ts``), so several browser tabs share one computation; live
      bars are topped up incrementally (``dashboard_data.BarStore``).
    * Every chart has a constant ``st.plotly_chart`` key and a ``uirevision`` naming what
      its axes mean (source, symbols, timeframe, zone); a dragged box zoom is re-applied
      on every refresh (see ``chart``: Streamlit 1.67 remounts a chart whose data changed).
    * Download buttons are outside timed fragments.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time

import pandas as pd
import streamlit as st

import alerts
import analytics
import backtest
import collector
import dashboard_data as dd
import database
import exports
import page_state
import paper
import services
import uploads
import visualizations as viz
from config import ConfigError, Settings, parse_symbols

TAB_NAMES = ("Prices", "Spread & z-score", "Statistics", "Correlation", "Pairs", "Backtest",
             "Paper", "Alerts", "Data", "Health")
REFRESH_CHOICES = (1, 2, 5, 10, 30)
ZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago",
         "Asia/Kolkata", "Asia/Singapore", "Asia/Hong_Kong", "Asia/Tokyo", "Australia/Sydney")


def number_format(values: pd.Series) -> str:
    """A display format for a column of floats: thousands separators for prices, four
    decimals for ratios and z-scores, significant digits for tiny values."""
    finite = values[values.notna() & (values.abs() != float("inf"))].abs()
    largest = float(finite.max()) if len(finite) else 0.0
    if largest >= 1000:
        return "localized"
    if largest >= 0.01 or largest == 0:
        return "%.4f"
    return "%.3e"


def show_table(frame: pd.DataFrame, tz: str | None = None, **kwargs) -> None:
    """``st.dataframe`` for people: column and row names without underscores
    (``dd.column_label``), epoch-ms columns shown as wall-clock times in ``tz`` (the raw
    ones hidden, ``dd.readable_times``), floats formatted for their size, booleans as
    ticks. Extra ``column_config`` entries in ``kwargs`` win."""
    shown = dd.readable_times(frame, tz) if tz else frame
    config: dict = {}
    for name in shown.columns:
        values, label = shown[name], dd.column_label(name)
        if tz and dd.is_epoch_ms_column(name, values):
            config[name] = None
        elif pd.api.types.is_bool_dtype(values):
            config[name] = st.column_config.CheckboxColumn(label)
        elif pd.api.types.is_float_dtype(values):
            config[name] = st.column_config.NumberColumn(label, format=number_format(values))
        else:
            config[name] = st.column_config.Column(label)
    if not kwargs.get("hide_index") and pd.api.types.is_string_dtype(shown.index):
        shown = shown.rename(index=dd.column_label)
        # row labels such as "max drawdown duration seconds" must not be cut off
        config["_index"] = st.column_config.Column(width=240)
    config.update(kwargs.pop("column_config", {}) or {})
    st.dataframe(shown, column_config=config, **kwargs)

# --------------------------------------------------------------------------------------
# Settings and services
# --------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def start_services(settings: Settings) -> collector.Collector:
    """The process's collector, alert evaluator and paper monitor (``services.start``).

    The server's lifespan (``server.lifespan``) has started them already; this covers
    AppTest, which runs the page without a server. Idempotent per process."""
    return services.start(settings)


@st.cache_resource(show_spinner=False)
def bar_store() -> dd.BarStore:
    return dd.BarStore()


@st.cache_resource(show_spinner=False)
def watchlist_bar_store() -> dd.BarStore:
    """The watchlist's bars (two windows per pinned pair), topped up at each refresh;
    apart from ``bar_store`` so that many pins do not push the charts' windows out."""
    return dd.BarStore(max_windows=64)


@st.cache_resource(show_spinner=False)
def freeze_long_lived_objects() -> int:
    """Move every object alive after the first page run (modules, pandas and Plotly
    internals, the caches' first entries: ~120,000) out of the garbage collector's sight,
    once per process; returns how many.

    Streamlit collects all generations after every script and fragment run
    (``runner.postScriptGC``, which keeps memory flat under a fast feed). Walking this
    heap took ~45 ms per collection, four to five collections a second with one tab open:
    ~40 % of a core at idle (py-spy, ``bench_app.py tick``). Frozen, a collection only
    walks what was created since, a fraction of a millisecond. Frozen objects are still
    freed by reference counting; only reference cycles among them are never collected
    (at most the first run's cyclic garbage, once).
    """
    gc.freeze()
    return gc.get_freeze_count()


@st.cache_resource(show_spinner=False)
def subscribed_since() -> dict[str, int]:
    """When the page subscribed each symbol (process-wide, like the collector)."""
    return {}


# The process's settings and collector, which the page's functions read: set by ``main``
# at the start of every run, the same for every session (the settings come from the
# environment, the collector is one per process).
settings: Settings = None  # type: ignore[assignment]
feed: collector.Collector = None  # type: ignore[assignment]


def connect_services() -> None:
    """Read the settings and make sure the collector runs (``main``'s first step)."""
    global settings, feed
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
    feed = start_services(settings)
    if not feed.running and not services.collection_paused():
        # stopped elsewhere (tests, a CLI in the same process): start anew
        start_services.clear()
        feed = start_services(settings)


# --------------------------------------------------------------------------------------
# Cached loaders (keyed by the newest bar, shared by every session)
# --------------------------------------------------------------------------------------


# A view of 24 h of 1 s bars pickles to ~27 MB and its key changes every second: keep few.
@st.cache_data(max_entries=6, ttl=600, show_spinner=False)
def cached_pair_view(source: dd.DataSource, y: str, x: str, timeframe: str,
                     lookback_ms: int | None, method: str, window: int, log_prices: bool,
                     latest: tuple, version: tuple, closed_before: int | None) -> dict:
    """``dd.view_to_parts`` of the pair's view (pandas only: see there why).

    ``version`` (``dd.data_version``) is only part of the cache key: it changes with every
    trade in the newest bar, so the live strip's last price is never a second stale.
    ``closed_before``: drop bars opening at or after it (the forming bar), or None.
    """
    anchor = max((t for t in latest if t is not None), default=None)
    # Loaded from the history the windows and the Kalman anchor need, shown over the
    # lookback: the values do not depend on when the page was opened.
    return dd.view_to_parts(dd.load_pair_view(
        source, y, x, timeframe, lookback_ms, anchor, method, window, log_prices,
        store=bar_store(), closed_before=closed_before))


@st.cache_data(max_entries=16, show_spinner=False)
def cached_bars_by_symbol(source: dd.DataSource, symbols: tuple, timeframe: str,
                          lookback_ms: int | None, latest: tuple) -> dict:
    anchor = max((t for t in latest if t is not None), default=None)
    return {s: dd.load_bars(source, s, timeframe, lookback_ms, anchor, bar_store())
            for s in symbols}


@st.cache_data(max_entries=8, show_spinner=False)
def cached_minute_stats(source: dd.DataSource, y: str, x: str, lookback_ms: int | None,
                        window: int, log_prices: bool, latest: tuple) -> pd.DataFrame:
    anchor = max((t for t in latest if t is not None), default=None)
    bars_y = dd.load_bars(source, y, "1min", lookback_ms, anchor)
    bars_x = dd.load_bars(source, x, "1min", lookback_ms, anchor)
    return analytics.minute_stats(bars_y, bars_x, window=window, log_prices=log_prices)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_backtest(view_key: tuple, params: tuple) -> backtest.BacktestResult:
    view = dd.view_from_parts(cached_pair_view(*view_key))
    entry, exit_, stop, fee_bps, slippage_bps, notional = params
    return dd.pair_backtest(view, entry, exit_, stop=stop or None, fee_bps=fee_bps,
                            slippage_bps=slippage_bps, notional=notional)


@st.cache_data(max_entries=8, show_spinner=False)
def parse_ohlc(data: bytes, name: str, naive_tz: str, symbol: str,
               timeframe: str | None) -> uploads.OhlcUpload:
    return uploads.parse_ohlc_csv(data, filename=name, naive_timezone=naive_tz,
                                  default_symbol=symbol or None, timeframe=timeframe,
                                  max_bytes=Settings.from_env().upload_max_bytes)


@st.cache_data(max_entries=4, show_spinner=False)
def parse_ticks(data: bytes, name: str, naive_tz: str) -> uploads.TickUpload:
    return uploads.parse_tick_file(data, filename=name, naive_timezone=naive_tz,
                                   max_bytes=Settings.from_env().upload_max_bytes)


# --------------------------------------------------------------------------------------
# Sidebar: feed status, symbols, pair and parameters
# --------------------------------------------------------------------------------------


def sidebar_status() -> None:
    if services.collection_paused():
        st.warning("Collection stopped: no new trades are recorded (start it again under "
                   "Symbols)")
    health = feed.health()
    status = dd.feed_status(health)
    show = {"success": st.success, "info": st.info, "warning": st.warning,
            "error": st.error}[status.level]
    show(status.label)
    if status.detail:
        st.caption(status.detail)
    st.caption(f"reconnects: {health['reconnects']} · stored: {health['stored']:,} · "
               f"lag: {health['lag_ms']} ms")
    backfill_progress(health)
    activity = dd.symbol_activity_markdown(health)
    if activity:
        st.markdown(activity)
        st.caption("age: seconds since the symbol's last trade")
    for symbol, quiet_s in dd.silent_symbols(health, subscribed_since(), dd.now_ms()):
        st.warning(f"no trades for {symbol} in {quiet_s:.0f} s — check that it is listed on "
                   "this feed")


def backfill_progress(health: dict) -> None:
    """A progress bar per symbol while REST fetches the past; the page never waits for it."""
    for _symbol, fraction, label in dd.backfill_rows(health):
        st.progress(min(1.0, max(0.0, fraction)), text=label)


def add_symbol() -> None:
    text = st.session_state.get("new_symbol", "")
    try:
        new = parse_symbols(text)
        current = list(feed.settings.symbols)
        feed.set_symbols(current + [s for s in new if s not in current])
    except ConfigError as exc:
        st.session_state["symbol_message"] = ("error", str(exc))
        return
    for symbol in new:
        subscribed_since().setdefault(symbol.upper(), dd.now_ms())
    st.session_state["symbol_message"] = ("success", f"subscribed {', '.join(new).upper()}")
    st.session_state["new_symbol"] = ""


def remove_symbol() -> None:
    symbol = st.session_state.get("remove_choice", "").lower()
    remaining = [s for s in feed.settings.symbols if s != symbol]
    if not remaining:
        st.session_state["symbol_message"] = ("error", "keep at least one symbol")
        return
    feed.set_symbols(remaining)
    subscribed_since().pop(symbol.upper(), None)
    st.session_state["symbol_message"] = ("success", f"unsubscribed {symbol.upper()}")


def show_message(key: str) -> None:
    """Show once the ``(level, text)`` a button callback left under ``key`` (a callback
    runs before the script, so it cannot draw the message itself)."""
    message = st.session_state.pop(key, None)
    if message:
        {"success": st.success, "info": st.info, "error": st.error}[message[0]](message[1])


def swap_legs() -> None:
    state = st.session_state
    state["y_symbol"], state["x_symbol"] = state["x_symbol"], state["y_symbol"]


def keep_choice(key: str, options: list, default) -> None:
    """A widget whose stored value is no longer an option falls back to ``default``."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default


def restore_view_from_url(upload_names: list[str]) -> None:
    """On a session's first run, take the view from the URL (a reload, a shared link).

    Each valid parameter seeds its widget's session-state key; ignored ones are listed
    once in a warning (``url_problems``). ``write_view_to_url`` keeps the URL current."""
    if "url_restored" in st.session_state:
        return
    st.session_state["url_restored"] = True

    def symbols_of(kind: str, upload: str) -> list[str]:
        source = (dd.DataSource("uploaded", settings.upload_db_path, upload)
                  if kind == "uploaded" else dd.DataSource("live", feed.db_path))
        return dd.pair_symbols(feed.settings.symbols, source)

    view = page_state.read_url(st.query_params.to_dict(), uploads=upload_names,
                               symbols_of=symbols_of, tabs=TAB_NAMES)
    st.session_state.update(view.state)
    st.session_state["url_chosen"] = set(view.state)
    if view.problems:
        st.session_state["url_problems"] = ("Ignored in the URL: " + "; ".join(view.problems)
                                            + ". The view uses the defaults there.")


def write_view_to_url(c: dd.Controls) -> None:
    """The view's URL parameters (only they: other parameters are left alone)."""
    state = {"source_kind": c.source.kind, "y_symbol": c.y, "x_symbol": c.x,
             "timeframe": c.tf_label, "lookback": c.lookback_label, "window": c.window,
             "method": c.method_label, "log_prices": c.log_prices, "entry_z": c.entry,
             "exit_z": c.exit, "tab": st.session_state.get("tab")}
    if c.source.kind == "uploaded":
        state["upload_name"] = c.source.upload
    wanted = page_state.url_params(state)
    current = st.query_params.to_dict()
    changed = {name: value for name, value in wanted.items() if current.get(name) != value}
    if changed:  # one message to the browser (each assignment would send its own)
        st.query_params.update(changed)
    for name in page_state.URL_KEYS:
        if name not in wanted and name in current:
            del st.query_params[name]


def apply_source_defaults(source: dd.DataSource) -> None:
    """A newly chosen upload opens at the file's own bar size over the whole file (a
    static file never gets more bars); a value the URL chose is kept."""
    if st.session_state.get("defaults_for") == source.label:
        return
    st.session_state["defaults_for"] = source.label
    from_url = st.session_state.pop("url_chosen", set())
    if source.kind == "uploaded":
        if "timeframe" not in from_url:
            st.session_state["timeframe"] = page_state.timeframe_label_for(
                dd.upload_bar_ms(source))
        if "lookback" not in from_url:
            st.session_state["lookback"] = "all"


def sidebar_controls() -> dd.Controls | None:
    """All sidebar widgets; None when no pair can be chosen yet."""
    with st.expander("Symbols (collector)", expanded=False):
        st.text_input("add symbols", key="new_symbol", placeholder="e.g. solusdt, bnbusdt")
        st.button("Add", key="add_symbol", on_click=add_symbol)
        subscribed = [s.upper() for s in feed.settings.symbols]
        st.selectbox("remove symbol", subscribed, key="remove_choice")
        st.button("Remove", key="remove_symbol", on_click=remove_symbol)
        if services.collection_paused():
            st.button("▶ Start collection", key="start_collection",
                      on_click=services.resume_collection,
                      help="record trades again (same feed and symbols)")
        else:
            st.button("⏹ Stop collection", key="stop_collection",
                      on_click=services.pause_collection,
                      help="stop recording trades; the page, alerts, paper positions and "
                           "the API keep working on the stored data")
        show_message("symbol_message")

    upload_names = sorted(set(dd.list_uploads(settings.upload_db_path)["source"]))
    restore_view_from_url(upload_names)
    if st.session_state.get("url_problems"):  # shown on the first run only
        st.warning(st.session_state.pop("url_problems"))
    kind = st.radio("source", ("live", "uploaded"), key="source_kind", horizontal=True)
    if kind == "uploaded" and not upload_names:
        st.info("no uploaded files yet — upload one in the Data tab")
        kind = "live"
    if kind == "uploaded":
        keep_choice("upload_name", upload_names, upload_names[0])
        name = st.selectbox("uploaded file", upload_names, key="upload_name")
        source = dd.DataSource("uploaded", settings.upload_db_path, name)
    else:
        source = dd.DataSource("live", feed.db_path)
    apply_source_defaults(source)

    symbols = dd.pair_symbols(feed.settings.symbols, source)
    if len(symbols) < 2:
        st.warning("a pair needs two symbols: add one above")
        return None
    default_y, default_x = page_state.default_pair(symbols)
    keep_choice("y_symbol", symbols, default_y)
    keep_choice("x_symbol", symbols, default_x if default_x != st.session_state["y_symbol"]
                else default_y)
    st.selectbox("dependent leg y", symbols, key="y_symbol")
    st.selectbox("independent leg x", symbols, key="x_symbol")
    st.button("⇅ swap legs", key="swap", on_click=swap_legs)

    tf_label = st.selectbox("timeframe", dd.TIMEFRAME_LABELS, key="timeframe",
                            on_change=lambda: st.session_state.update(
                                window=dd.default_window(st.session_state["timeframe"])))
    # "all" only for uploads: all of a week of live 1 s bars is too much for a 1 s refresh
    lookbacks = [k for k in dd.LOOKBACKS_MS if source.kind == "uploaded" or k != "all"]
    keep_choice("lookback", lookbacks, "1 h" if source.kind == "live" else "all")
    lookback = st.selectbox("lookback", lookbacks, key="lookback")
    # Defaults through session state (not value=): the URL may have set these keys.
    for key, default in (("window", dd.default_window(tf_label)), ("log_prices", True),
                         ("entry_z", page_state.DEFAULT_ENTRY), ("exit_z", 0.0)):
        st.session_state.setdefault(key, default)
    window = int(st.number_input("rolling window (bars)", min_value=page_state.WINDOW_RANGE[0],
                                 max_value=page_state.WINDOW_RANGE[1], step=10, key="window"))
    method_label = st.selectbox("regression method", list(dd.METHODS), key="method")
    log_prices = st.toggle("log prices", key="log_prices",
                           help="log prices: β is an elasticity; raw: units of x per y")
    entry = st.number_input("entry |z|", min_value=page_state.ENTRY_RANGE[0],
                            max_value=page_state.ENTRY_RANGE[1], step=0.1, key="entry_z")
    exit_ = st.number_input("exit |z|", min_value=page_state.EXIT_RANGE[0],
                            max_value=page_state.EXIT_RANGE[1], step=0.1, key="exit_z")
    if exit_ >= entry:
        st.error(f"exit ({exit_:g}) must be below entry ({entry:g}); using 0")
        exit_ = 0.0
    zones = list(dict.fromkeys([settings.display_tz, *ZONES]))
    tz = st.selectbox("time zone", zones, key="tz",
                      help="times on charts and in tables; naive upload times are set in "
                           "the Data tab")
    refresh = st.selectbox("refresh every (s)", REFRESH_CHOICES, index=1, key="refresh_s")
    paused = st.toggle("pause", key="paused")
    return dd.Controls(source=source, y=st.session_state["y_symbol"],
                    x=st.session_state["x_symbol"], tf_label=tf_label,
                    timeframe=dd.timeframe_of(tf_label), lookback_label=lookback,
                    lookback_ms=dd.LOOKBACKS_MS[lookback], method_label=method_label,
                    method=dd.METHODS[method_label], window=window, log_prices=log_prices,
                    entry=float(entry), exit=float(exit_), tz=tz, refresh_s=float(refresh),
                    paused=paused)


# --------------------------------------------------------------------------------------
# Shared pieces for the fragments
# --------------------------------------------------------------------------------------


def latest_key(c: dd.Controls, symbols=None) -> tuple:
    return dd.latest_bar_times(c.source, symbols or (c.y, c.x))


def view_key(c: dd.Controls, closed_only: bool = False) -> tuple | None:
    """Arguments of ``cached_pair_view`` for the current data, or None without data.

    ``closed_only`` (the tabs' charts): for live 1m/5m bars, the view of the closed bars,
    keyed by the forming bar's open time, so it changes only at a bar close.
    """
    bars, history = dd.data_version(c.source, (c.y, c.x))
    latest = tuple(v[0] if isinstance(v, tuple) else v for v in bars)  # bar open times
    if all(t is None for t in latest):
        return None
    version = (bars, history)
    closed_before = None
    if closed_only and c.charts_at_bar_close:
        closed_before = dd.closed_bars_before(c.tf_label, latest)
        latest = (closed_before - 1,)  # the lookback ends at the last closed bar
        version = ("closed before", closed_before, history)  # the backfill adds past bars
    return (c.source, c.y, c.x, c.timeframe, c.lookback_ms, c.method, c.window,
            c.log_prices, latest, version, closed_before)


def current_view(c: dd.Controls, closed_only: bool = False) -> dd.PairView | None:
    key = view_key(c, closed_only)
    return None if key is None else dd.view_from_parts(cached_pair_view(*key))


def tab_view(c: dd.Controls) -> dd.PairView | None:
    """The view a tab draws (closed bars only at live 1m/5m): None, after saying why,
    while there is no data; under live 1m/5m bars a note on the last bar close."""
    return keyed_tab_view(c)[0]


def keyed_tab_view(c: dd.Controls) -> tuple[dd.PairView | None, tuple | None]:
    """``tab_view`` and the ``view_key`` it was read with (``closed_bar_figure``'s key)."""
    key = view_key(c, closed_only=True)
    view = None if key is None else dd.view_from_parts(cached_pair_view(*key))
    if view is None:
        waiting(c)
    elif c.charts_at_bar_close:
        bar_close_note(c, view)
    return view, key


def bar_close_note(c: dd.Controls, view: dd.PairView) -> None:
    """Say that these charts stop at the last closed bar (live 1m/5m bars)."""
    if len(view.aligned.frame) == 0:
        st.info(f"no {c.tf_label} bar has closed yet: these charts show closed bars and "
                "start at the first close (the live strip above shows the forming one)")
    else:
        last_close = int(view.aligned.frame.index[-1]) + dd.bar_ms_of(c.tf_label)
        stamp = dd.display_times([last_close], c.tz)[0].strftime("%H:%M %Z")
        st.caption(f"{len(view.aligned.frame)} closed {c.tf_label} bars up to {stamp}; the "
                   "charts update at each bar close, the live strip above every trade")


def waiting(c: dd.Controls) -> None:
    st.info(dd.WAITING_MESSAGE if c.live else f"{c.source.upload} has no bars for "
            f"{c.y}/{c.x}")


def warming(c: dd.Controls, view: dd.PairView, needed: int, nobs: int) -> str:
    return dd.warming_message(needed, nobs, c.tf_label, view.bar_seconds)


def chart(fig, key: str, link: str | None = None) -> None:
    """Draw a figure whose zoom survives refreshes; time charts zoom together.

    Streamlit 1.67 remounts a chart whose data changed (its element id hashes the figure),
    so Plotly's ``uirevision`` alone cannot keep a zoom across refreshes. Dragging draws a
    box (``dragmode="select"``); its axis ranges are kept in session state and written
    into every later figure until "reset zoom".

    ``link`` (``Controls.chart_key("time")``): the time charts of one view share one time
    window. A box on any of them sets the window of all (prices, spread, z, β, correlation,
    equity, the live strip), each y-axis fitted to the values inside it
    (``viz.show_time_range``), and the page reruns once so every chart shows it at once.
    Time charts come with a crosshair and the unified hover (``viz.CROSSHAIR``). A figure
    is drawn in the page's theme (light or dark).
    """
    zoom_key = f"zoom|{link}" if link else f"zoom|{key}|{fig.layout.uirevision}"
    seen_key = f"zoom_seen|{key}"
    box = dd.zoom_from_selection(st.session_state.get(key))
    if box is not None and box != st.session_state.get(seen_key):
        st.session_state[seen_key] = box  # a box is applied once; "reset" must stick
        if link:
            x_axis = next((axis for axis in box if axis.startswith("xaxis")), None)
            if x_axis is not None:
                st.session_state[zoom_key] = {"time": box[x_axis]}
                st.rerun()  # every linked chart (other fragments too) shows the window now
        else:
            st.session_state[zoom_key] = box
    zoom = st.session_state.get(zoom_key)
    if zoom and fig.data:
        if link:
            fig = unchanged_window(fig, key, zoom["time"])
        else:
            fig.update_layout({axis: {"range": bounds, "autorange": False}
                               for axis, bounds in zoom.items()})
    if page_theme() == "light":
        viz.apply_colors(fig, "light")
    fig.update_layout(dragmode="select")
    st.plotly_chart(fig, theme=None, key=key, on_select="rerun", selection_mode="box",
                    config={"displaylogo": False})
    if zoom:
        st.button("reset zoom", key=f"{key}_reset", on_click=st.session_state.pop,
                  args=(zoom_key, None), type="tertiary")


def unchanged_window(fig, key: str, window: list):
    """``fig`` zoomed to ``window``, or the figure drawn last time when what it shows has
    not changed: the window lies in the past (that figure already had data after it).

    Streamlit remounts a chart whose figure changed, and a remount in the middle of a drag
    cancels it (Plotly then throws ``_hoverlayer`` errors): re-sending the same figure
    keeps a chart zoomed into history still while the user drags a finer box. New bars
    appear again after "reset zoom" or once the window reaches the newest bar.
    """
    state_key = f"drawn|{key}"
    # everything else that changes what a chart shows: the view's settings and the theme
    settings = [st.session_state.get(k) for k in (*page_state.URL_KEYS.values(), "tz",
                                                  "bt_entry", "bt_exit", "bt_stop")]
    meaning = (list(window), page_theme(), repr(settings))
    drawn = st.session_state.get(state_key)
    if drawn is not None and drawn[0] == meaning and \
            viz.newest_x(drawn[1]) > viz.time_range_ms(window)[1]:
        return drawn[1]
    viz.show_time_range(fig, window)
    st.session_state[state_key] = (meaning, fig)
    return fig


def closed_bar_figure(c: dd.Controls, data_key: tuple, name: str, settings: tuple, build):
    """``build()``, built once per closed-bar view: at 1m/5m bars the tabs rerun every
    refresh over the same closed bars and would build the same figure each time. Keyed by
    the ``view_key`` the tab read its view with (``keyed_tab_view``), so a figure is never
    kept under the key of newer bars than it shows. Returns a copy (``chart`` and the
    markers change it); other timeframes build every time."""
    if not c.charts_at_bar_close:
        return build()
    key = (data_key, settings)
    held = st.session_state.get(f"figure|{name}")
    if held is None or held[0] != key:
        held = (key, build())
        st.session_state[f"figure|{name}"] = held
    return viz.copy_figure(held[1])


def page_theme() -> str:
    """"light" or "dark": the theme the browser shows (Settings ▸ Theme, or the system's);
    the figures are drawn to match. Dark (the configured base) until the browser says.

    A browser opening the page asks for the first run before it has applied the theme
    configured here (``theme.base``, .streamlit/config.toml), so with no theme of its own
    saved it reports its system's (often light). The first run of a session therefore
    draws in the configured theme: drawn in the reported one, every chart came again at
    its next refresh, redrawn in the other theme (a new session's first render ~0.25 s
    later whenever the strip's refresh came during it; README, Performance). A user who
    saved the other theme in Settings sees that one from the second run on."""
    configured = st.get_option("theme.base")
    if configured in ("light", "dark") and not st.session_state.get("theme_reported"):
        return configured
    theme = getattr(getattr(st.context, "theme", None), "type", None)
    return "light" if theme == "light" else "dark"


MARKED_TRADES_MAX_AGE_MS = 30_000  # chart markers: backtest at most twice a minute


def marked_trades(c: dd.Controls, params: tuple) -> pd.DataFrame | None:
    """The backtest trades the charts mark: those of the last backtest of this view and
    these settings — the Backtest tab's run (``remember_trades``), or one run here when
    there is none yet, or when they are older than ``MARKED_TRADES_MAX_AGE_MS``. Not re-run
    at every refresh (over an hour of 1 s bars a backtest costs tens of ms): new trades
    appear within that age, when the Backtest tab runs again or when a setting changes.
    None when the backtest cannot run (too few bars, exit not below entry). The view's
    key (``view_key``: database reads) is only looked up when the backtest runs."""
    identity = trades_identity(c, params)
    held = st.session_state.get("marked_trades")
    if held is None or held[0] != identity or \
            dd.now_ms() - held[2] > MARKED_TRADES_MAX_AGE_MS:
        key = view_key(c, closed_only=True)
        if key is None:
            return None
        try:
            remember_trades(c, params, cached_backtest(key, params).trades)
        except ValueError:
            return None
        held = st.session_state["marked_trades"]
    return held[1]


def trades_identity(c: dd.Controls, params: tuple) -> str:
    return repr((c.chart_key("trades"), c.method, c.window, c.log_prices,
                 tuple(float(p) for p in params)))


def remember_trades(c: dd.Controls, params: tuple, trades: pd.DataFrame) -> None:
    st.session_state["marked_trades"] = (trades_identity(c, params), trades, dd.now_ms())


def signal_events(c: dd.Controls, with_trades: bool) -> list[tuple[str, list, list]]:
    """(kind, times, hover texts) to mark on the z and price charts: with ``with_trades``
    the backtest's entries and exits with the Backtest tab's settings (its defaults before
    it was opened; ``marked_trades``), and the firings of alert rules on this pair or its
    legs."""
    events: list[tuple[str, list, list]] = []
    state = st.session_state
    if with_trades:
        params = (state.get("bt_entry", c.entry), state.get("bt_exit", c.exit),
                  state.get("bt_stop", 0.0), state.get("bt_fee", dd.BACKTEST_FEE_BPS),
                  state.get("bt_slip", dd.BACKTEST_SLIPPAGE_BPS),
                  state.get("bt_size", dd.BACKTEST_NOTIONAL))
        trades = marked_trades(c, params)
        if trades is None:
            trades = pd.DataFrame(columns=["entry_ts", "exit_ts", "side"])
        for side in ("long", "short"):
            mine = trades[trades["side"] == side]
            events.append((f"{side} entry", mine["entry_ts"].tolist(),
                           [f"{side} entry (backtest)"] * len(mine)))
        closed = trades[trades["exit_ts"].notna()]
        events.append(("exit", closed["exit_ts"].astype("int64").tolist(),
                       [f"exit of {side} (backtest)" for side in closed["side"]]))
    if alerts_ready():
        with dd.reading(feed.db_path) as conn:
            fired = database.list_alert_events(conn, limit=500)
        fired = fired[fired["subject"].isin([f"{c.y}/{c.x}", c.y, c.x])]
        times = fired["as_of_ts"].where(fired["as_of_ts"].notna(), fired["ts"])
        events.append(("alert", times.astype("int64").tolist(),
                       [f"alert: {m}" for m in fired["message"]]))
    return events


def mark_signals(fig, c: dd.Controls, events: list, on: pd.Series) -> None:
    if not fig.data:
        return
    traces = [viz.marker_trace(times, on, kind, hover=hover, tz=c.tz)
              for kind, times, hover in events if times]
    fig.add_traces([t for t in traces if t is not None])  # one validation pass for all


def signals_caption(c: dd.Controls) -> None:
    state = st.session_state
    held = state.get("marked_trades")
    when = (f", run at {dd.display_times([held[2]], c.tz)[0].strftime('%H:%M:%S')}"
            if held else "")
    st.caption(f"markers: ▲ long entry, ▼ short entry, ✕ exit of the backtest (entry "
               f"{state.get('bt_entry', c.entry):g}, exit {state.get('bt_exit', c.exit):g}"
               f"{when}; re-run every 30 s and by the Backtest tab); ◆ alert fired on "
               "this pair or a leg")


def alerts_ready() -> bool:
    return dd.database_ready(feed.db_path)


def show_toasts() -> None:
    """Toast alert events newer than the last one this session has seen."""
    if not alerts_ready():
        return
    if "last_event_id" not in st.session_state:  # events from before this session: no toast
        st.session_state["last_event_id"] = dd.newest_alert_event_id(feed.db_path)
        return
    for event_id, message in dd.alert_messages_after(feed.db_path,
                                                     st.session_state["last_event_id"]):
        st.toast(f"🔔 {message}")
        st.session_state["last_event_id"] = event_id


# --------------------------------------------------------------------------------------
# Live strip (twice a second)
# --------------------------------------------------------------------------------------


def live_strip(c: dd.Controls) -> None:
    if c.live and feed.db_path != c.source.db_path:  # 'auto' fell back to the built-in market
        st.rerun(scope="app")
    status = dd.feed_status(feed.health())
    if c.live and status.builtin:
        st.warning(f"**{status.label}.** {status.detail}")
    view = current_view(c)
    if view is None:
        waiting(c)
        return
    strip_values(c, view, status)
    numbers_first()
    strip_chart(c, view)
    show_toasts()


# Seconds between the strip's numbers and the first chart a session is sent (once).
FIRST_NUMBERS_LEAD_S = 0.15


def numbers_first() -> None:
    """Once per session, pause before the strip's chart: the browser shows the numbers
    first instead of with the charts.

    A new session's browser is still starting (Streamlit's and Plotly's scripts, every
    widget) when this server, done with the run in ~0.3 s, has sent the whole page; it then
    showed the strip's numbers with the charts, ~1.1 s after the request. With the chart
    sent 0.15 s after the numbers, a new session on a running server shows them
    0.25–0.45 s sooner and the charts no later (README, Performance: "The numbers
    first"). Sleeping holds no lock and no other session waits; a session pauses once, on
    its first strip with numbers.
    """
    if st.session_state.get("strip_numbers_sent"):
        return
    st.session_state["strip_numbers_sent"] = True
    time.sleep(FIRST_NUMBERS_LEAD_S)


# Seven numbers in one row: at Streamlit's metric size a BTC price ("88,364.12") and a
# spread ("−10.4 bp") were cut short ("88,364…") in a 1400 px wide window.
STRIP_STYLE = """<style>.st-key-strip_values [data-testid="stMetricValue"]
{font-size: 1.6rem;}</style>"""


def strip_values(c: dd.Controls, view: dd.PairView, status: dd.FeedStatus) -> None:
    """The strip's metrics (last prices, spread, z, β, correlation, alerts) and caption."""
    values = dd.live_values(view)
    with st.container(key="strip_values"):
        strip_metrics(c, values)
    scale = "log" if c.log_prices else "raw"
    last = (dd.display_times([values.last_ts], c.tz)[0].strftime("%H:%M:%S %Z")
            if values.last_ts is not None else "—")
    feed_words = status.label if c.live else c.source.label
    # live: the count includes the forming bar, which the tabs' closed-bar counts do not
    count = f"{len(view.aligned.frame)} bars" + (" incl. the forming one" if c.live else "")
    st.caption(f"{feed_words} · {c.y} on {c.x} · {c.method_label}, {scale} prices, "
               f"{c.window}-bar window, {c.tf_label} bars · last bar {last} · "
               f"{count} · drag a box on a chart to zoom all time charts (a refresh cuts "
               "a slow drag on a live chart short: pause first)")


def strip_metrics(c: dd.Controls, values: dd.LiveValues) -> None:
    columns = st.columns([2.8, 1.1, 0.9, 1.0, 1.1, 1.0])
    with columns[0]:
        if c.price_every is None:
            last_prices(c, values.last_y, values.last_x)
        else:  # its own faster timer (dd.LIVE_PRICE_EVERY_S), nested in the strip
            st.fragment(run_every=c.price_every)(last_prices)(c, values.last_y, values.last_x)
    columns[1].metric("spread", dd.format_spread(values.spread, c.log_prices),
                      help="y − β·x − α; of log prices in basis points")
    columns[2].metric("z-score", dd.format_number(values.z, ".2f"))
    columns[3].metric("β", dd.format_number(values.beta, ".4f"),
                      help=f"no β at the last bar: {values.beta_note}"
                      if values.beta_note else None)
    columns[4].metric("correlation", dd.format_number(values.correlation, ".3f"))
    columns[5].metric("alerts firing / on",
                      dd.alert_summary(feed.db_path) if alerts_ready() else "—")


def strip_chart(c: dd.Controls, view: dd.PairView) -> None:
    """The strip's z-score chart, or why it is not drawn yet."""
    signals = view.signals
    if signals.enough_data:
        fig = viz.zscore_figure(signals.frame["z"], c.entry, c.exit, tz=c.tz,
                                uirevision=c.chart_key("live_z"))
    else:
        st.info("z-score: " + warming(c, view, signals.needed, signals.nobs))
        fig = viz.empty_figure("the z-score is drawn here once it has its bars",
                               uirevision=c.chart_key("live_z"))
    fig.update_layout(height=220)
    chart(fig, "live_z", link=c.chart_key("time"))


def last_prices(c: dd.Controls, last_y: float, last_x: float) -> None:
    """The strip's two last prices. Live: the newest stored trade of each leg (read on
    every rerun of this fragment); the view's last closes (``last_y``/``last_x``, from the
    strip's latest run) stand in while a leg has no trade yet, and for uploaded data."""
    if c.live:
        newest = dd.newest_prices(c.source.db_path, (c.y, c.x))
        last_y = newest[0] if math.isfinite(newest[0]) else last_y
        last_x = newest[1] if math.isfinite(newest[1]) else last_x
    columns = st.columns([1.5, 1.3])
    columns[0].metric(f"{c.y} last", dd.format_price(last_y))
    columns[1].metric(f"{c.x} last", dd.format_price(last_x))


# --------------------------------------------------------------------------------------
# Tabs
# --------------------------------------------------------------------------------------


def chart_style_controls(leg: str, symbol: str) -> tuple[str, bool]:
    """Above each price chart: candles, line (close) or area, and a log price axis."""
    cols = st.columns([3, 1])
    style = cols[0].radio(f"{symbol} chart", viz.CHART_STYLES, key=f"chart_style_{leg}",
                          horizontal=True, label_visibility="collapsed")
    log_y = cols[1].toggle("log price axis", key=f"chart_log_{leg}")
    return style, log_y


def tab_prices(c: dd.Controls) -> None:
    view, key = keyed_tab_view(c)
    if view is None:
        return
    events = signal_events(c, with_trades=view.signals.enough_data)
    signals_caption(c)
    for leg, symbol, bars in (("y", c.y, view.bars_y), ("x", c.x, view.bars_x)):
        style, log_y = chart_style_controls(leg, symbol)
        uirevision = c.chart_key(f"candles_{leg}|{style}|{log_y}")
        fig = closed_bar_figure(c, key, f"candles_{leg}", (uirevision, c.tz), lambda: (
            viz.candlestick_figure(bars, symbol, tz=c.tz, uirevision=uirevision,
                                   empty_message=f"{symbol}: no bars yet", style=style,
                                   log_y=log_y)))
        if leg == "y":
            mark_signals(fig, c, events, bars["close"])
        chart(fig, f"candles_{leg}", link=c.chart_key("time"))
    overlay = closed_bar_figure(c, key, "overlay", (c.chart_key("overlay"), c.tz), lambda: (
        viz.normalised_overlay_figure(view.bars_y, view.bars_x, c.y, c.x, tz=c.tz,
                                      uirevision=c.chart_key("overlay"))))
    chart(overlay, "overlay", link=c.chart_key("time"))


def tab_spread(c: dd.Controls) -> None:
    view, key = keyed_tab_view(c)
    if view is None:
        return
    signals = view.signals
    spread_name = "log spread" if c.log_prices else "spread"
    settings = (c.entry, c.exit, c.tz)
    if signals.enough_data:
        spread_fig = closed_bar_figure(c, key, "spread", settings, lambda: viz.spread_figure(
            signals.frame["spread"], *dd.spread_bands(view, c.entry), name=spread_name,
            tz=c.tz, uirevision=c.chart_key("spread")))
        z_fig = closed_bar_figure(c, key, "zscore", settings, lambda: viz.zscore_figure(
            signals.frame["z"], c.entry, c.exit, tz=c.tz, uirevision=c.chart_key("zscore")))
        mark_signals(z_fig, c, signal_events(c, with_trades=True), signals.frame["z"])
    else:
        message = warming(c, view, signals.needed, signals.nobs)
        st.info(f"spread and z-score: {message}")
        spread_fig = viz.empty_figure(f"spread: {message}", uirevision=c.chart_key("spread"))
        z_fig = viz.empty_figure(f"z-score: {message}", uirevision=c.chart_key("zscore"))
    st.caption(f"{spread_name} = y − β·x − α with β, α from the trailing {c.window} bars "
               f"({c.method_label}); bands at ±{c.entry:g}σ")
    chart(spread_fig, "spread", link=c.chart_key("time"))
    if signals.enough_data:
        signals_caption(c)
    chart(z_fig, "zscore", link=c.chart_key("time"))
    st.caption("β over time: the chosen method's trailing β and the Kalman prior β(t|t−1)")
    beta_fig = closed_bar_figure(c, key, "beta", settings, lambda: viz.beta_figure(
        view.rolling_beta, view.kalman_beta, tz=c.tz, uirevision=c.chart_key("beta"),
        empty_message="β: " + warming(c, view, c.window + 1, signals.nobs)))
    chart(beta_fig, "beta", link=c.chart_key("time"))


def statistics_live(c: dd.Controls) -> None:
    view = tab_view(c)
    if view is None:
        return
    table = dd.price_stats_table({c.y: view.bars_y, c.x: view.bars_x}, view.bar_seconds)
    st.markdown(f"**Prices** over the lookback ({c.lookback_label}, {c.tf_label} bars)")
    shown = table.drop(index=["first_ts", "last_ts"]).rename(index=dd.column_label)
    st.dataframe(dd.styled_by_row(shown), width="stretch", column_config={
        "_index": st.column_config.Column(width=240)})
    spread = view.signals.frame["spread"]
    life = analytics.half_life(spread)
    hurst = analytics.hurst(spread)
    cols = st.columns(4)
    cols[0].metric("half-life (bars)", dd.format_number(life.bars, ".1f"))
    seconds = life.seconds(view.bar_seconds) if math.isfinite(life.bars) else math.nan
    cols[1].metric("half-life (s)", dd.format_number(seconds, ".0f"))
    cols[2].metric("Hurst (spread)", dd.format_number(hurst, ".3f"))
    cols[3].metric("mean crossings", analytics.mean_crossings(spread))
    st.caption(f"half-life and Hurst of the spread in 'Spread & z-score' (trailing "
               f"{c.window}-bar {c.method_label} β): a short β window absorbs slow "
               "reversion, so the half-life shortens with the window")
    if life.reason:
        st.caption(f"half-life: {life.reason}")
    if dd.hurst_note(hurst):
        st.caption(dd.hurst_note(hurst))
    if not math.isfinite(hurst):
        needed = 4 * analytics.HURST_DEFAULT_MAX_LAG
        st.caption(f"Hurst: {warming(c, view, needed, int(spread.notna().sum()))}")


def tab_statistics(c: dd.Controls) -> None:
    st.fragment(run_every=c.chart_every)(statistics_live)(c)
    st.markdown("**Stationarity and cointegration** (runs on request: ADF and "
                "Engle–Granger cost up to a second)")
    test_key = repr(("tests", c.source, c.y, c.x, c.timeframe, c.lookback_ms, c.method,
                     c.window, c.log_prices))
    if st.button("Run ADF on the spread and Engle–Granger on the pair", key="run_tests"):
        view = current_view(c, closed_only=True)
        if view is None:
            waiting(c)
        else:
            with st.spinner("Running ADF and Engle–Granger…"):
                st.session_state[test_key] = dd.run_pair_tests(view)
    results = st.session_state.get(test_key)
    if results is not None:
        stamp = (dd.display_times([results.last_ts], c.tz)[0].strftime("%H:%M:%S")
                 if results.last_ts is not None else "—")
        st.caption(f"on {results.bars} bars up to {stamp}; click again for newer data")
        adf, eg = results.adf, results.eg
        tests = (("ADF", "ADF on spread (not a cointegration test on its own)", adf,
                  f"lags {adf.lags_used}"),
                 ("Engle–Granger", f"Engle–Granger: {c.y} on {c.x}", eg, f"β {eg.beta:.4f}"))
        for column, (name, title, test, extra) in zip(st.columns(2), tests):
            column.markdown(title)
            if test.enough_data:
                column.write(f"statistic {test.statistic:.3f}, p = {test.pvalue:.4f}, 5 % "
                             f"critical {test.critical_values['5%']:.3f}, {extra}")
                # green only for a rejection at 5 %: "cannot reject" is not good news
                (column.success if test.rejects_at_5pct else column.warning)(
                    f"{name}: {test.verdict}")
            else:
                column.info(f"{name}: needs {test.needed} bars, has {test.nobs}")

    st.markdown("**Per-minute statistics** (no look-ahead; the table you can download)")
    minutes = int(st.number_input("window (minutes)", min_value=3, max_value=1440, value=15,
                                  key="minute_window"))
    latest = latest_key(c)
    if all(t is None for t in latest):
        waiting(c)
        return
    table = cached_minute_stats(c.source, c.y, c.x, c.lookback_ms, minutes, c.log_prices,
                                latest)
    if table["z"].notna().sum() == 0:
        st.info(f"z and β per minute: needs {2 * minutes} minutes, has {len(table)}")
    show_table(dd.with_time_column(table, c.tz), c.tz, width="stretch", height=280,
               hide_index=True)
    closed = export_closed(table, "1min", c)
    download_formats("Per-minute table", lambda: closed, f"minute_stats_{c.y}_{c.x}",
                     "download_minute_stats", c, rows=len(closed))


def correlation_live(c: dd.Controls, symbols: tuple, min_tpm: float, max_empty: float,
                     liquid_only: bool) -> None:
    view = tab_view(c)
    if view is None:
        return
    if view.correlation.notna().any():
        fig = viz.correlation_figure(view.correlation,
                                     name=f"corr of log returns ({c.window} co-traded bars)",
                                     tz=c.tz, uirevision=c.chart_key("correlation"))
    else:
        co_traded = int(view.aligned.both_traded.sum())
        message = "correlation: " + warming(c, view, c.window + 1, co_traded)
        st.info(message + " (co-traded bars)")
        fig = viz.empty_figure(message, uirevision=c.chart_key("correlation"))
    chart(fig, "correlation", link=c.chart_key("time"))

    bars = cached_bars_by_symbol(c.source, symbols, c.timeframe, c.lookback_ms,
                                 latest_key(c, symbols))
    liquidity = dd.liquidity_table(bars, c.timeframe, min_tpm, max_empty)
    show_table(liquidity, width="stretch")
    chosen = [s for s in symbols if not liquid_only or bool(liquidity.loc[s, "liquid"])]
    returns = dd.returns_table({s: bars[s] for s in chosen}, c.timeframe)
    if returns.shape[1] >= 2:
        matrix = analytics.correlation_matrix(returns, min_periods=dd.HEATMAP_MIN_PERIODS)
        chart(viz.heatmap_figure(matrix, "correlation of log returns", -1, 1,
                                 uirevision=c.chart_key("corr_matrix"),
                                 empty_message="no pair has enough common returns"),
              "corr_matrix")
    else:
        st.info("the heat-maps need at least two (liquid) symbols with data")
    st.session_state["screen_symbols"] = tuple(chosen)


def tab_correlation(c: dd.Controls) -> None:
    symbols = tuple(dd.pair_symbols(feed.settings.symbols, c.source))
    cols = st.columns(3)
    min_tpm = cols[0].number_input("min trades per minute", min_value=0.0, value=10.0,
                                   key="min_tpm")
    max_empty = cols[1].slider("max share of empty bars", 0.0, 1.0, 0.5, key="max_empty")
    liquid_only = cols[2].checkbox("heat-maps: liquid symbols only", value=True,
                                   key="liquid_only")
    st.fragment(run_every=c.chart_every)(correlation_live)(c, symbols, min_tpm, max_empty,
                                                           liquid_only)
    chosen = st.session_state.get("screen_symbols", ())
    screen_key = repr(("screen", c.source, chosen, c.timeframe, c.lookback_ms, c.log_prices))
    if st.button("Run cointegration screen (Engle–Granger, Benjamini–Hochberg)",
                 key="run_screen", disabled=len(chosen) < 2):
        pairs = len(chosen) * (len(chosen) - 1)
        with st.status(f"Cointegration screen: {pairs} Engle–Granger tests on "
                       f"{len(chosen)} symbols…", expanded=False) as status:
            bars = cached_bars_by_symbol(c.source, chosen, c.timeframe, c.lookback_ms,
                                         latest_key(c, chosen))
            status.write("bars loaded; testing every ordered pair")
            st.session_state[screen_key] = analytics.cointegration_matrix(
                dd.closes_table(bars), log_prices=c.log_prices)
            status.update(label=f"Cointegration screen: {pairs} tests done", state="complete")
    screen = st.session_state.get(screen_key)
    if screen is not None:
        chart(viz.heatmap_figure(screen.pvalues_bh, "Engle–Granger p-values, BH-corrected "
                                 "(row = y, column = x)", 0, 1,
                                 colorscale=viz.pvalue_colorscale(screen.alpha),
                                 text_fmt=".3f", uirevision=c.chart_key("coint_matrix")),
              "coint_matrix")


def tab_backtest(c: dd.Controls) -> None:
    key = view_key(c, closed_only=True)
    if key is None:
        waiting(c)
        return
    with st.form("backtest_form"):
        cols = st.columns(6)
        entry = cols[0].number_input("entry z", 0.1, 10.0, c.entry, 0.1, key="bt_entry")
        exit_ = cols[1].number_input("exit z", 0.0, 10.0, c.exit, 0.1, key="bt_exit")
        stop = cols[2].number_input("stop z (0 = none)", 0.0, 20.0, 0.0, 0.5, key="bt_stop")
        fee = cols[3].number_input("fee (bps per fill)", 0.0, 100.0, dd.BACKTEST_FEE_BPS, 0.5,
                                   key="bt_fee")
        slip = cols[4].number_input("slippage (bps)", 0.0, 100.0, dd.BACKTEST_SLIPPAGE_BPS,
                                    0.5, key="bt_slip")
        size = cols[5].number_input("size (y notional)", 10.0, 1e9, dd.BACKTEST_NOTIONAL,
                                    1000.0, key="bt_size")
        st.form_submit_button("Run backtest on the latest data")
    view = dd.view_from_parts(cached_pair_view(*key))
    if not view.signals.enough_data:
        st.info("backtest: " + warming(c, view, view.signals.needed, view.signals.nobs))
        return
    try:
        result = cached_backtest(key, (entry, exit_, stop, fee, slip, size))
    except ValueError as exc:
        st.error(str(exc))
        return
    remember_trades(c, (entry, exit_, stop, fee, slip, size), result.trades)  # the markers
    st.caption(f"{c.y} on {c.x}, {c.method_label} β, {'log' if c.log_prices else 'raw'} "
               "prices; each leg fills at its own next traded price (never a carried one); "
               "a round trip pays four fees")
    headline = (("total return", f"{result.total_return:.2%}"),
                ("Sharpe", dd.format_number(math.nan if result.ratios_note else
                                            result.sharpe, ".2f")),
                ("max drawdown", f"{result.max_drawdown:.2%}"), ("trades", result.n_trades),
                ("win rate", dd.format_number(result.win_rate, ".0%")),
                ("fees paid", f"{result.fees_paid:,.2f}"))
    for column, (label, value) in zip(st.columns(6), headline):
        column.metric(label, value)
    if result.ratios_note:
        st.caption(result.ratios_note + ": shown as — (too short to annualise)")
    else:
        st.caption(f"Sharpe and Sortino: annualised from {c.tf_label} bar returns over "
                   "365 days of 24 h")
    metrics = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
               if f.name not in ("trades", "equity", "positions", "ratios_note")}
    if result.ratios_note:
        metrics.update(sharpe=math.nan, sortino=math.nan)
    chart(viz.equity_figure(result.equity, tz=c.tz, uirevision=c.chart_key("equity")),
          "equity", link=c.chart_key("time"))
    show_table(pd.Series(metrics, name="value").to_frame(), width="stretch")
    trades = result.trades
    show_table(trades, c.tz, width="stretch", hide_index=True)
    download_formats("Trades", lambda: trades, f"backtest_trades_{c.y}_{c.x}",
                     "download_trades", c, rows=len(trades), ts_column="entry_ts")


def create_alert(fields: dict) -> None:
    try:
        with dd.writing(feed.db_path) as conn:
            same = alerts.duplicate_rule_id(conn, **fields)
            if same is not None:
                st.error(f"not created: same as rule {same} (same metric, subject, "
                         "settings, trigger, cooldown and webhook)")
                return
            rule_id = alerts.create_rule(conn, **fields)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.success(f"rule {rule_id} created")


def alert_form(c: dd.Controls) -> None:
    metrics = list(alerts.METRICS)
    with st.form("new_alert", enter_to_submit=False):  # Enter commits a value, no more
        cols = st.columns(3)
        metric = cols[0].selectbox("metric", metrics, key="alert_metric",
                                   format_func=lambda m: alerts.METRICS[m].label)
        symbol = cols[1].selectbox("symbol (for one-symbol metrics)", [c.y, c.x],
                                   key="alert_symbol")
        comparison = cols[2].selectbox("comparison", alerts.COMPARISONS,
                                       key="alert_comparison")
        cols = st.columns(4)
        threshold = cols[0].number_input("threshold", value=2.0, key="alert_threshold")
        cooldown = cols[1].number_input("cooldown (s)", 0.0, 86_400.0, 60.0,
                                        key="alert_cooldown")
        hysteresis = cols[2].number_input("hysteresis", 0.0, value=0.0,
                                          key="alert_hysteresis")
        name = cols[3].text_input("name (optional)", key="alert_name")
        webhook = st.text_input("webhook URL (optional)", key="alert_webhook")
        submitted = st.form_submit_button("Create alert")
    info = alerts.METRICS[metric]
    st.caption(f"{info.label} ({info.unit}): {info.description}")
    if submitted:
        subject = ({"y_symbol": c.y, "x_symbol": c.x} if info.subject == "pair"
                   else {"symbol": symbol})
        create_alert(dict(name=name.strip() or None, metric=metric, **subject,
                          timeframe=c.timeframe, window=c.window, method=c.method,
                          log_prices=c.log_prices, comparison=comparison,
                          threshold=float(threshold), cooldown_s=float(cooldown),
                          hysteresis=float(hysteresis), enabled=True,
                          webhook_url=webhook.strip() or None))


def alert_rule_actions(rules: pd.DataFrame) -> None:
    cols = st.columns(4)
    names = dict(zip(rules["id"], rules["name"]))
    rule_id = cols[0].selectbox("rule", list(names), key="alert_rule_choice",
                                format_func=lambda i: f"{i}: {names[i]}")
    actions = {"enable": cols[1].button("Enable", key="alert_enable"),
               "disable": cols[2].button("Disable", key="alert_disable"),
               "delete": cols[3].button("Delete", key="alert_delete")}
    if not any(actions.values()):
        return
    with dd.writing(feed.db_path) as conn:
        if actions["delete"]:
            database.delete_alert_rule(conn, int(rule_id))
        else:
            database.set_alert_rule_enabled(conn, int(rule_id), actions["enable"])
    st.rerun()


def tab_alerts(c: dd.Controls) -> None:
    status = alerts.evaluator_status()
    st.caption(f"evaluator {'running' if status.get('running') else 'stopped'} · "
               f"{status.get('rules_evaluated', 0)} evaluations · "
               f"{status.get('events_fired', 0)} events fired · checks rules without a "
               f"browser{' · ' + status['last_error'] if status.get('last_error') else ''}")
    defaults_key = repr(("default_rules", feed.db_path, c.y, c.x))
    if c.live and defaults_key not in st.session_state:
        with dd.writing(feed.db_path) as conn:  # disabled |z| > 2, > 3; once per pair
            alerts.ensure_default_rules(conn, c.y, c.x, timeframe=c.timeframe,
                                        window=c.window, method=c.method,
                                        log_prices=c.log_prices)
        st.session_state[defaults_key] = True
    alert_form(c)
    if not dd.database_ready(feed.db_path):
        waiting(c)
        return
    with dd.reading(feed.db_path) as conn:
        rules = database.list_alert_rules(conn)
    st.markdown(f"**Rules** ({len(rules)})")
    shown_rules = rules[[col for col in dd.ALERT_RULE_TABLE if col in rules.columns]].copy()
    if "state" in shown_rules and "events" in rules:
        shown_rules["state"] = [dd.rule_state_text(state, events) for state, events
                                in zip(rules["state"], rules["events"])]
    show_table(shown_rules, c.tz, width="stretch", hide_index=True)
    if len(rules):
        alert_rule_actions(rules)
    st.fragment(run_every=c.chart_every)(alert_history)(c)


def alert_history(c: dd.Controls) -> None:
    with dd.reading(feed.db_path) as conn:
        events = database.list_alert_events(conn, limit=200)
    st.markdown(f"**History** ({len(events)} most recent events)")
    show_table(events, c.tz, width="stretch", hide_index=True)


def export_closed(frame: pd.DataFrame, timeframe: str, c: dd.Controls) -> pd.DataFrame:
    """Live bars without the one still forming, unless the Data tab's toggle asks for it
    (then flagged ``forming``); uploaded files have no forming bar."""
    if not c.live:
        return frame
    return exports.closed_only(frame, timeframe, dd.now_ms(),
                               bool(st.session_state.get("export_forming", False)))


def download_formats(label: str, build, stem: str, key: str, c: dd.Controls, *, rows: int,
                     ts_column: str | None = None, excel: bool = True, where=None) -> None:
    """A format choice (CSV, JSON, Parquet, Excel) and one download button.

    The file is built when clicked (``build`` returns the table); above the format's row
    cap (``exports.MAX_ROWS``) a message replaces the button, so the page never freezes.
    """
    where = where or st
    formats = [f for f in exports.FORMATS if excel or f != "xlsx"]
    fmt = where.radio(f"{label} format", formats, format_func=exports.FORMAT_LABELS.get,
                      key=f"{key}_format", horizontal=True)
    message = exports.cap_message(rows, fmt)
    if message:
        where.warning(f"{label}: {message}")
        return
    where.download_button(
        f"{label} {exports.FORMAT_LABELS[fmt]}",
        lambda: exports.export(build(), fmt, tz=c.tz, ts_column=ts_column).data,
        file_name=f"{stem}.{fmt}", mime=exports.MIME[fmt], key=key, on_click="ignore")


def export_buttons(c: dd.Controls) -> None:
    """Exports of the chosen range in every format; the files are built when clicked."""
    st.markdown("**Export the chosen range**")
    key = view_key(c)
    if key is None:
        waiting(c)
        return
    view = dd.view_from_parts(cached_pair_view(*key))
    start = int(view.aligned.frame.index[0]) if len(view.aligned.frame) else None
    st.caption(f"range: {len(view.aligned.frame)} {c.tf_label} bars of {c.y} and {c.x} "
               f"({c.lookback_label} lookback, {c.source.label}); times in epoch ms (ts) "
               "and, in CSV and Excel, as text in the chosen zone")
    if c.live:
        st.toggle("include the bar still forming (flagged forming = true)",
                  key="export_forming")
    bars = exports.by_symbol({c.y: export_closed(view.bars_y, c.timeframe, c),
                              c.x: export_closed(view.bars_x, c.timeframe, c)})
    analytics_table = export_closed(dd.analytics_frame(view), c.timeframe, c)
    cols = st.columns(3)
    download_formats("Bars", lambda: bars, f"bars_{c.y}_{c.x}_{c.tf_label}",
                     "download_bars", c, rows=len(bars), where=cols[0])
    if c.live:
        tick_rows = int(view.bars_y["trades"].sum() + view.bars_x["trades"].sum()) \
            if "trades" in view.bars_y else 0
        download_formats(
            "Ticks", lambda: exports.by_symbol(
                {s: dd.read_ticks(c.source.db_path, s, start) for s in (c.y, c.x)}),
            f"ticks_{c.y}_{c.x}", "download_ticks", c, rows=tick_rows, ts_column="ts",
            excel=False, where=cols[1])
    else:
        cols[1].caption("ticks: uploads are stored as bars")
    download_formats("Analytics", lambda: analytics_table,
                     f"analytics_{c.y}_{c.x}_{c.tf_label}", "download_analytics", c,
                     rows=len(analytics_table), where=cols[2])


def store_upload(name: str, bars: pd.DataFrame) -> None:
    """Button callback: store bars, then analyse them (source: uploaded, all history)."""
    try:
        rows = dd.save_uploaded(settings.upload_db_path, name, bars)
    except ValueError as exc:
        st.session_state["upload_message"] = ("error", str(exc))
        return
    st.session_state.update(source_kind="uploaded", upload_name=name, lookback="all")
    st.session_state["upload_message"] = (
        "success", f"stored {rows:,} bars as '{name}'; source is now 'uploaded: {name}'")


def upload_report(name: str, parsed, counts: str) -> None:
    """What a parse accepted and rejected, with each rejected row and why."""
    if parsed.error:
        st.error(f"{name}: {dd.upload_words(parsed.error)}")
    st.write(f"{name}: {parsed.n_rows} rows — {counts}")
    if parsed.n_rejected:
        st.error(f"{parsed.n_rejected} rows rejected — they are listed below with the reason "
                 "and are NOT stored; the series has holes where they were")
        st.dataframe(parsed.rejected, width="stretch", hide_index=True, height=220)
    for warning in parsed.warnings:
        st.caption(f"⚠ {dd.upload_words(warning)}")


def upload_section() -> None:
    st.markdown("**Upload OHLC CSV** — timestamp, open, high, low, close[, volume][, symbol]; "
                "epoch s/ms or ISO times")
    cols = st.columns(3)
    naive_tz = cols[0].selectbox("zone of times written without one", ZONES, key="naive_tz")
    symbol = cols[1].text_input("symbol for files without a symbol column",
                                key="upload_symbol", placeholder="e.g. BTCUSDT")
    file_tf = cols[2].selectbox("bar size to keep (files with a timeframe column)",
                                ("—", *dd.TIMEFRAME_LABELS), key="upload_timeframe")
    ohlc_file = st.file_uploader("OHLC CSV", type=["csv", "txt"], key="ohlc_file")
    if ohlc_file is not None:
        with st.spinner(f"Reading {ohlc_file.name} ({ohlc_file.size / 1e6:,.1f} MB)…"):
            parsed = parse_ohlc(ohlc_file.getvalue(), ohlc_file.name, naive_tz,
                                symbol.strip(), None if file_tf == "—" else file_tf)
        upload_report(ohlc_file.name, parsed, (
            f"{parsed.n_accepted} accepted, {parsed.n_rejected} rejected, {parsed.n_skipped} "
            f"skipped; symbols {', '.join(parsed.symbols) or '—'}; times read as "
            f"{parsed.time_format}"))
        if parsed.ok:
            st.button(f"Store {parsed.n_accepted} accepted bars as '{ohlc_file.name}'",
                      key="store_ohlc", on_click=store_upload,
                      args=(ohlc_file.name, parsed.bars))

    st.markdown("**Upload ticks** — the browser collector's NDJSON or a CSV of trades; "
                "stored as 1 s bars")
    tick_file = st.file_uploader("tick file", type=["ndjson", "json", "jsonl", "csv", "txt"],
                                 key="tick_file")
    if tick_file is not None:
        with st.spinner(f"Reading {tick_file.name} ({tick_file.size / 1e6:,.1f} MB)…"):
            parsed = parse_ticks(tick_file.getvalue(), tick_file.name, naive_tz)
        upload_report(tick_file.name, parsed, (
            f"{parsed.n_accepted} trades accepted, {parsed.n_rejected} rejected, "
            f"{parsed.n_filtered_zero} zero-price placeholders dropped; per symbol "
            f"{dd.counts_text(parsed.trades_by_symbol)}"))
        if parsed.ok:
            bars = dd.tick_upload_bars(parsed.trades, parsed.side_known)
            st.button(f"Store {len(bars)} 1 s bars as '{tick_file.name}'", key="store_ticks",
                      on_click=store_upload, args=(tick_file.name, bars))
    show_message("upload_message")
    stored = dd.list_uploads(settings.upload_db_path)
    if len(stored):
        st.markdown("**Stored uploads**")
        show_table(stored, st.session_state.get("tz", settings.display_tz), width="stretch",
                   hide_index=True)


def tab_data(c: dd.Controls) -> None:
    export_buttons(c)
    st.divider()
    upload_section()


def tab_health(c: dd.Controls) -> None:
    health = feed.health()
    collection = ("stopped (from the page or the API)" if services.collection_paused()
                  else "running")
    monitor = "running" if paper.monitor_status().get("running") else "stopped"
    st.markdown(f"**collection:** {collection} · paper monitor: {monitor}")
    st.markdown(f"**{dd.feed_status(health).label}** · {health['url']} · "
                f"{dd.connection_summary(health)}")
    # received = stored + duplicates + rejected + filtered + spilled + dropped (README);
    # gaps = the open gaps listed below, gaps_filled = gaps late trades closed this run.
    counters = ("received", "stored", "duplicates", "rejected", "filtered", "spilled",
                "dropped", "gaps", "gaps_filled", "reconnects", "queue_depth",
                "queue_high_water", "queue_max", "lag_ms", "batches", "write_errors")
    cols = st.columns(7)
    for i, name in enumerate(counters):
        cols[i % 7].metric(name.replace("_", " "), f"{health[name]:,}")
    show_table(dd.symbol_activity_table(health), width="stretch", column_config={
        "trades/s": st.column_config.NumberColumn("trades/s", format="%.1f"),
        "age (s)": st.column_config.NumberColumn("age (s)", format="%.2f"),
        "received": st.column_config.NumberColumn("received", format="localized")})
    sizes = {"collector database": health["db_path"], "upload database":
             settings.upload_db_path}
    st.write(" · ".join(f"{label} {path}: {database.database_size_bytes(path) / 1e6:,.1f} MB"
                        for label, path in sizes.items()))
    if dd.database_ready(health["db_path"]):
        with dd.reading(health["db_path"]) as conn:
            gaps = database.read_gaps_with_reasons(conn)
            repaired = database.read_repaired_gaps(conn)
        st.markdown(f"**Trade-id gaps** ({len(gaps)}) still open; `reason` says why REST "
                    "could not fill one")
        show_table(gaps, c.tz, width="stretch", hide_index=True)
        backfill_health(health, repaired, c.tz)
    else:
        st.info(dd.WAITING_MESSAGE)


def backfill_health(health: dict, repaired: pd.DataFrame, tz: str) -> None:
    """REST backfill and gap repair: counters, rate use, repaired gaps (Health tab)."""
    backfill = health.get("backfill") or {}
    st.markdown(f"**History over REST** · {backfill.get('rest_url', '—')} · state "
                f"{backfill.get('state', 'off')}" + (f" · {backfill['detail']}"
                                                     if backfill.get("detail") else ""))
    if health.get("stream") == "trade":
        st.caption("Raw @trade ids are not aggregate-trade ids: REST cannot repair their "
                   "gaps (they stay recorded above); 1-minute klines are still fetched.")
    cols = st.columns(6)
    for i, (label, value) in enumerate((
            ("rows backfilled", backfill.get("backfilled", 0)),
            ("gaps repaired", backfill.get("gaps_repaired", 0)),
            ("REST requests", backfill.get("requests", 0)),
            ("weight / min", int(backfill.get("weight_per_minute", 0))),
            ("weight limit", backfill.get("weight_limit", 0)),
            ("429 answers", backfill.get("throttled", 0)))):
        cols[i].metric(label, f"{value:,}")
    st.markdown(f"**Gaps repaired over REST** ({len(repaired)})")
    show_table(repaired, tz, width="stretch", hide_index=True)


# --------------------------------------------------------------------------------------
# Paper trading
# --------------------------------------------------------------------------------------


def open_paper_position(c: dd.Controls, side: str) -> None:
    """Form callback: place the entry orders with the form's settings and the sidebar's
    hedge settings; fills come from the monitor thread at the next trade of each leg."""
    state = st.session_state
    optional = {name: state.get(key) for name, key in (("exit_z", "paper_exit_z"),
                                                       ("stop_z", "paper_stop_z"))}
    max_minutes = state.get("paper_max_minutes")
    try:
        order = paper.PaperOrder(
            y=c.y, x=c.x, side=side, notional=float(state["paper_size"]),
            timeframe=c.timeframe, window=c.window, method=c.method,
            log_prices=c.log_prices, fee_bps=float(state["paper_fee"]),
            slippage_bps=float(state["paper_slip"]),
            notify=bool(state.get("paper_notify", False)),
            max_holding_s=None if max_minutes is None else float(max_minutes) * 60,
            **{k: None if v is None else float(v) for k, v in optional.items()})
        position_id = paper.open_position(feed.db_path, order)
    except ValueError as exc:
        state["paper_message"] = ("error", str(exc))
        return
    state["paper_message"] = ("success", f"position {position_id}: {side} {c.y}/{c.x} "
                              "placed; it fills at the next trade of each leg")


def close_paper_position() -> None:
    position_id = st.session_state.get("paper_close_choice")
    if position_id is None:
        return
    try:
        status = paper.request_close(feed.db_path, int(position_id))
    except (LookupError, ValueError) as exc:
        st.session_state["paper_close_message"] = ("error", str(exc))
        return
    st.session_state["paper_close_message"] = (
        "success", f"position {position_id}: {status}"
        + (" — it closes at the next trade of each leg" if status == "closing" else ""))


def paper_live(c: dd.Controls) -> None:
    """Open positions with live P&L, the close button and the history (a timed fragment:
    it refreshes with the charts, so a fill or an automatic close shows by itself)."""
    paper_open_positions(c)
    show_message("paper_close_message")
    history = paper.positions_table(feed.db_path, status="closed", with_z=False)
    st.markdown(f"**History** ({len(history)} closed or cancelled)")
    if len(history):
        done = history[history["status"] == "closed"]
        cols = st.columns(3)
        cols[0].metric("realised P&L", f"{done['pnl'].sum():,.2f}")
        cols[1].metric("fees paid", f"{done['fees'].sum():,.2f}")
        cols[2].metric("positions", len(done))
        show_table(history, c.tz, width="stretch", hide_index=True)


def paper_open_positions(c: dd.Controls) -> None:
    table = paper.positions_table(feed.db_path, status="open")
    st.markdown(f"**Open positions** ({len(table)})")
    if table.empty:
        st.caption("none: open one above")
        return
    filled = table[table["status"] != "opening"]
    cols = st.columns(3)
    cols[0].metric("unrealised P&L", dd.format_number(float(filled["upnl"].sum()), ",.2f")
                   if len(filled) else "—")
    cols[1].metric("y legs", dd.format_number(float(filled["upnl_y"].sum()), ",.2f")
                   if len(filled) else "—")
    cols[2].metric("x legs", dd.format_number(float(filled["upnl_x"].sum()), ",.2f")
                   if len(filled) else "—")
    show_table(table, c.tz, width="stretch", hide_index=True)
    st.caption("unrealised P&L: if both legs closed at their last trade, after the four "
               "fees and slippage; fees so far: the entry fee; holding: since the click")
    ids = [int(i) for i in table.loc[table["status"] != "closing", "id"]]
    if ids:
        cols = st.columns([2, 1])
        cols[0].selectbox("position", ids, key="paper_close_choice")
        cols[1].button("Close position", key="paper_close", on_click=close_paper_position)


def tab_paper(c: dd.Controls) -> None:
    """Paper trading on the chosen pair: open, watch live P&L, close, history, export."""
    if not c.live:
        st.info("paper trading fills at live trades: choose the live source")
        return
    if not dd.database_ready(feed.db_path):
        waiting(c)
        return
    state = st.session_state
    st.caption(f"{c.y} on {c.x}: size in {c.y} notional, β = the {c.method_label} "
               f"{c.window}-bar trailing hedge ({c.tf_label}, "
               f"{'log' if c.log_prices else 'raw'} prices) at the click; each leg fills "
               "at its next trade after the click, costs as in the backtest")
    with st.form("paper_form"):
        cols = st.columns(3)
        cols[0].number_input("size (y notional)", 10.0, 1e9,
                             float(state.get("bt_size", dd.BACKTEST_NOTIONAL)), 1000.0,
                             key="paper_size")
        cols[1].number_input("fee (bps per fill)", 0.0, 100.0,
                             float(state.get("bt_fee", dd.BACKTEST_FEE_BPS)),
                             0.5, key="paper_fee")
        cols[2].number_input("slippage (bps)", 0.0, 100.0,
                             float(state.get("bt_slip", dd.BACKTEST_SLIPPAGE_BPS)),
                             0.5, key="paper_slip")
        cols = st.columns(3)
        cols[0].number_input("auto close at |z| ≤ (empty: never)", 0.0, 10.0, None, 0.1,
                             key="paper_exit_z")
        cols[1].number_input("stop at |z| ≥ (empty: never)", 0.0, 20.0, None, 0.5,
                             key="paper_stop_z")
        cols[2].number_input("max holding, minutes (empty: none)", 0.0, 1e6, None, 1.0,
                             key="paper_max_minutes")
        st.checkbox("alert when it fills and when it closes (Alerts history, a toast)",
                    key="paper_notify")
        cols = st.columns(2)
        cols[0].form_submit_button("Open long spread (buy y, sell β·x)",
                                   on_click=open_paper_position, args=(c, "long"))
        cols[1].form_submit_button("Open short spread (sell y, buy β·x)",
                                   on_click=open_paper_position, args=(c, "short"))
    show_message("paper_message")
    st.fragment(run_every=c.chart_every)(paper_live)(c)
    # Downloads stay outside the timed fragment; the file is read when clicked.
    rows = len(paper.positions_table(feed.db_path, status="closed", with_z=False))
    if rows:
        download_formats("Paper history", lambda: paper.positions_table(
            feed.db_path, status="closed", limit=paper.MAX_LISTED, with_z=False),
            "paper_history", "download_paper", c, rows=rows, ts_column="requested_ms")


# --------------------------------------------------------------------------------------
# Pairs tab (issue 16): screen every symbol, watch the best pairs, open or alert one
# --------------------------------------------------------------------------------------

SCREEN_LOOKBACKS = ("1 h", "4 h", "24 h")
SCREEN_SPARKLINE_ROWS = 40  # rows that get a z sparkline: one trailing pair_signals each
SCREEN_TABLE = ("y", "x", "passed", "z_spark", "z", "eg_qvalue", "eg_pvalue", "beta",
                "half_life", "hurst", "crossings", "correlation", "liquidity", "cluster",
                "reason")
SCREEN_COLUMN_CONFIG = {
    "y": st.column_config.TextColumn("dependent (y)"),
    "x": st.column_config.TextColumn("independent (x)"),
    "passed": st.column_config.CheckboxColumn("passes", help="q, half-life, Hurst, "
                                              "crossings and I(1) legs all pass"),
    "z_spark": st.column_config.LineChartColumn("trailing z", width="medium"),
    "z": st.column_config.NumberColumn("z now", format="%.2f",
                                       help="in-sample spread, latest bar, in std units"),
    "eg_qvalue": st.column_config.NumberColumn("EG q (BH)", format="%.2e",
                                               help="Benjamini–Hochberg over all pairs tested"),
    "eg_pvalue": st.column_config.NumberColumn("EG p", format="%.2e"),
    "beta": st.column_config.NumberColumn("β", format="%.3f"),
    "half_life": st.column_config.NumberColumn("half-life (bars)", format="%.1f"),
    "hurst": st.column_config.NumberColumn("Hurst", format="%.2f"),
    "crossings": st.column_config.NumberColumn("mean crossings", format="%d"),
    "correlation": st.column_config.NumberColumn("return corr.", format="%.2f"),
    "liquidity": st.column_config.NumberColumn("trades/min (less liquid leg)", format="%.0f"),
    "cluster": st.column_config.NumberColumn("cluster", format="%d"),
    "reason": st.column_config.TextColumn("why not", width="large"),
}
WATCH_COLUMN_CONFIG = {
    "pair": st.column_config.TextColumn("pair (y / x)"),
    "timeframe": st.column_config.TextColumn("bars"),
    "z": st.column_config.NumberColumn("z now", format="%.2f"),
    "beta": st.column_config.NumberColumn("β", format="%.3f"),
    "half_life": st.column_config.NumberColumn("half-life (bars)", format="%.1f"),
    "since_cross": st.column_config.TextColumn("since last cross"),
    "liquidity": st.column_config.NumberColumn("trades/min (less liquid leg)", format="%.0f"),
    "z_spark": st.column_config.LineChartColumn("trailing z"),
    "screened_beta": st.column_config.NumberColumn("β when pinned", format="%.3f"),
    "status": st.column_config.TextColumn("status"),
}


def screen_inputs(source: dd.DataSource, symbols: tuple, tf_label: str,
                  lookback_label: str) -> tuple[pd.DataFrame, pd.Series]:
    """Log closes of ``symbols`` on the full bar grid, and trades per minute per symbol."""
    timeframe = dd.timeframe_of(tf_label)
    bars = cached_bars_by_symbol(source, symbols, timeframe, dd.LOOKBACKS_MS[lookback_label],
                                 dd.latest_bar_times(source, symbols))
    bars = {symbol: frame for symbol, frame in bars.items() if len(frame)}
    if not bars:
        return pd.DataFrame(), pd.Series(dtype=float)
    liquidity = analytics.liquidity_metrics(bars, timeframe)["trades_per_minute"]
    return analytics.screen_grid(dd.closes_table(bars), timeframe), liquidity


def run_pair_screen(c: dd.Controls, symbols: tuple, options: dict) -> None:
    """Screen ``symbols`` with a progress bar; the result goes to session state."""
    progress = st.progress(0.0, text=f"loading {len(symbols)} symbols' bars…")
    grid, liquidity = screen_inputs(c.source, symbols, options["tf_label"],
                                    options["lookback"])
    if grid.shape[1] < 2:
        progress.empty()
        st.session_state["pair_screen"] = {"error": "the screen needs bars of at least two "
                                           "symbols in the lookback"}
        return

    def report(done: int, total: int) -> None:
        progress.progress(done / total, text=f"Engle–Granger: {done} of {total} pairs")

    started = dd.now_ms()
    try:
        result = analytics.screen_pairs(
            grid, candidates=options["candidates"], min_bars=options["min_bars"],
            q_threshold=options["q"], max_hurst=options["max_hurst"],
            min_crossings=options["min_crossings"], liquidity=liquidity, progress=report)
    except ValueError as exc:
        progress.empty()
        st.session_state["pair_screen"] = {"error": str(exc)}
        return
    progress.progress(1.0, text="z sparklines of the best pairs…")
    window = dd.default_window(options["tf_label"])
    result["z_spark"] = [viz.sparkline_points(dd.trailing_z(grid, y, x, window))
                         if i < SCREEN_SPARKLINE_ROWS else []
                         for i, (y, x) in enumerate(zip(result["y"], result["x"]))]
    progress.empty()
    st.session_state["pair_screen"] = {
        "result": result, "options": options, "bars": len(grid),
        "symbols": grid.shape[1], "seconds": (dd.now_ms() - started) / 1000.0,
        "source": c.source.label}


def open_pair(y: str, x: str, tf_label: str) -> None:
    """Button callback: show ``y``/``x`` at ``tf_label`` in the pair tabs."""
    st.session_state.update(y_symbol=y, x_symbol=x, timeframe=tf_label,
                            window=dd.default_window(tf_label), tab="Spread & z-score")


def pin_pair(y: str, x: str, timeframe: str, beta: float, half_life: float,
             qvalue: float) -> None:
    with dd.writing(feed.db_path) as conn:
        database.pin_pair(conn, y, x, timeframe=timeframe, beta=beta, half_life=half_life,
                          eg_qvalue=qvalue)
    st.session_state["pairs_message"] = ("success", f"pinned {y} / {x} to the watchlist")


def unpin_pair(y: str, x: str) -> None:
    with dd.writing(feed.db_path) as conn:
        removed = database.unpin_pair(conn, y, x)
    st.session_state["pairs_message"] = (
        ("success", f"unpinned {y} / {x}") if removed else ("error", f"{y} / {x} is not pinned"))


def create_pair_alert(y: str, x: str, timeframe: str, threshold: float) -> None:
    """Button callback: an enabled |z| > threshold rule for the pair (OLS, log prices)."""
    window = dd.default_window(timeframe)
    fields = dict(name=f"|z| > {threshold:g} {y}/{x} (Pairs tab)", metric="zscore",
                  y_symbol=y, x_symbol=x, timeframe=timeframe, window=window,
                  z_window=window, method="ols", log_prices=True, comparison="abs>",
                  threshold=float(threshold), hysteresis=0.5, cooldown_s=60.0, enabled=True)
    try:
        with dd.writing(feed.db_path) as conn:
            existing = alerts.duplicate_rule_id(conn, **fields)
            if existing is not None:
                st.session_state["pairs_message"] = (
                    "info", f"rule {existing} already watches |z| > {threshold:g} for {y}/{x}")
                return
            rule_id = alerts.create_rule(conn, **fields)
    except ValueError as exc:
        st.session_state["pairs_message"] = ("error", str(exc))
        return
    st.session_state["pairs_message"] = (
        "success", f"alert rule {rule_id} created: |z| of {y}/{x} above {threshold:g} "
        f"({timeframe} bars, OLS {window}/{window}); see the Alerts tab")


def pair_actions(y: str, x: str, timeframe: str, c: dd.Controls, key: str, *,
                 screened: dict | None = None, pinned: bool = False) -> None:
    """Open / pin or unpin / alert buttons for one pair."""
    cols = st.columns(3)
    label = dd.TIMEFRAME_LABEL_OF.get(timeframe, timeframe)
    cols[0].button(f"Open {y} / {x} in the other tabs", key=f"{key}_open", on_click=open_pair,
                   args=(y, x, label))
    if pinned:
        cols[1].button("Unpin", key=f"{key}_unpin", on_click=unpin_pair, args=(y, x))
    else:
        values = screened or {}
        cols[1].button("Pin to watchlist", key=f"{key}_pin", on_click=pin_pair,
                       args=(y, x, timeframe, values.get("beta"), values.get("half_life"),
                             values.get("eg_qvalue")))
    cols[2].button(f"Alert when |z| > {c.entry:g}", key=f"{key}_alert",
                   on_click=create_pair_alert, args=(y, x, timeframe, c.entry))


def screen_results(c: dd.Controls) -> None:
    screen = st.session_state.get("pair_screen")
    if screen is None:
        return
    if "error" in screen:
        st.error(screen["error"])
        return
    result, options = screen["result"], screen["options"]
    passed = int(result["passed"].sum())
    mode = ("within clusters (PCA + OPTICS)" if options["candidates"] == "clusters"
            else "all pairs")
    note = f" · {result.attrs['note']}" if result.attrs.get("note") else ""
    st.caption(f"{screen['source']} · {screen['symbols']} symbols × {screen['bars']} "
               f"{options['tf_label']} bars ({options['lookback']}) · {len(result)} pairs "
               f"tested, {mode} · {passed} pass at q < {options['q']:g} · "
               f"{screen['seconds']:.1f} s{note}")
    if result.empty:
        st.info("no pair to test: clusters mode found no cluster with two symbols, or there "
                "are fewer than two symbols")
        return
    shown = result if not options["passed_only"] else result[result["passed"]]
    event = st.dataframe(shown[list(SCREEN_TABLE)], column_config=SCREEN_COLUMN_CONFIG,
                         hide_index=True, width="stretch", height=380, key="pairs_table",
                         on_select="rerun", selection_mode="single-row")
    choices = [f"{y} / {x}" for y, x in zip(shown["y"], shown["x"])]
    if not choices:
        st.info("no pair passes: untick 'passing pairs only' to see why each failed")
        return
    rows = list(event.selection.rows) if event is not None else []
    if rows and st.session_state.get("pairs_table_applied") != rows:  # a newly clicked row
        st.session_state["pairs_table_applied"] = rows
        if rows[0] < len(choices):  # a selection left from a longer table is ignored
            st.session_state["pairs_choice"] = choices[rows[0]]
    keep_choice("pairs_choice", choices, choices[0])
    choice = st.selectbox("pair (or click a row)", choices, key="pairs_choice")
    row = shown.iloc[choices.index(choice)]
    pair_actions(row["y"], row["x"], dd.timeframe_of(options["tf_label"]), c, "screen",
                 screened={k: float(row[k]) for k in ("beta", "half_life", "eg_qvalue")})


def watchlist_live(c: dd.Controls) -> None:
    pinned = pd.DataFrame(columns=database.WATCHLIST_COLUMNS)
    if dd.database_ready(feed.db_path):
        with dd.reading(feed.db_path) as conn:
            pinned = database.list_watchlist(conn)
    st.markdown(f"**Watchlist** ({len(pinned)} pinned · live from the collected bars · "
                f"highlighted where |z| ≥ entry {c.entry:g})")
    if pinned.empty:
        st.caption("pin pairs from the screen above; the list is stored in the database, "
                   "shared by every page and kept across restarts")
        return
    rows = [dd.watch_row(feed.db_path, p, c.entry, watchlist_bar_store())
            for _, p in pinned.iterrows()]
    table = pd.DataFrame([{**row, "z_path": viz.sparkline_points(row["z_path"])}
                          for row in rows]).rename(columns={"z_path": "z_spark"})
    styled = table.style.apply(lambda column: viz.highlight_beyond(column, c.entry),
                               subset=["z"])
    st.dataframe(styled, column_config=WATCH_COLUMN_CONFIG, hide_index=True, width="stretch",
                 key="watchlist_table")


def watchlist_actions(c: dd.Controls) -> None:
    if not dd.database_ready(feed.db_path):
        return
    with dd.reading(feed.db_path) as conn:
        pinned = database.list_watchlist(conn)
    if pinned.empty:
        return
    names = [f"{y} / {x}" for y, x in zip(pinned["y_symbol"], pinned["x_symbol"])]
    keep_choice("watch_choice", names, names[0])
    choice = st.selectbox("watched pair", names, key="watch_choice")
    row = pinned.iloc[names.index(choice)]
    pair_actions(row["y_symbol"], row["x_symbol"], row["timeframe"], c, "watch", pinned=True)


def tab_pairs(c: dd.Controls) -> None:
    symbols = tuple(dd.pair_symbols(feed.settings.symbols, c.source))
    st.markdown(f"**Pair screen** over the {len(symbols)} symbols of {c.source.label}: "
                "Engle–Granger with Benjamini–Hochberg false-discovery control, half-life, "
                "Hurst and mean crossings (method in README, *Pair screen*)")
    with st.form("pair_screen_form"):
        cols = st.columns(4)
        st.session_state.setdefault("screen_tf", "1m")
        st.session_state.setdefault("screen_lookback", "24 h")
        tf_label = cols[0].selectbox("timeframe", dd.TIMEFRAME_LABELS, key="screen_tf")
        lookback = cols[1].selectbox("lookback", SCREEN_LOOKBACKS, key="screen_lookback")
        candidates = cols[2].radio("candidates", ("all", "clusters"), key="screen_candidates",
                                   format_func={"all": "all pairs",
                                                "clusters": "clusters (PCA + OPTICS)"}.get,
                                   help="clusters: only pairs whose returns load alike on "
                                        "the main factors (fewer tests, faster)")
        passed_only = cols[3].checkbox("passing pairs only", value=False,
                                       key="screen_passed_only")
        cols = st.columns(4)
        q = cols[0].number_input("max q (FDR)", 0.001, 0.5, 0.05, 0.01, format="%.3f",
                                 key="screen_q")
        max_hurst = cols[1].number_input("max Hurst", 0.05, 1.0, 0.5, 0.05, key="screen_hurst")
        min_crossings = int(cols[2].number_input("min mean crossings", 0, 10_000, 12, 1,
                                                 key="screen_crossings"))
        min_bars = int(cols[3].number_input("min common bars", 30, 100_000, 100, 10,
                                            key="screen_min_bars"))
        submitted = st.form_submit_button("Run the screen", disabled=len(symbols) < 2)
    n = min(len(symbols), analytics.SCREEN_MAX_SYMBOLS)
    st.caption(f"all pairs: {n * (n - 1) // 2:,} Engle–Granger tests (~20 ms each at 1,440 "
               f"bars); at most {analytics.SCREEN_MAX_SYMBOLS} symbols, the most liquid")
    if submitted:
        run_pair_screen(c, symbols, dict(tf_label=tf_label, lookback=lookback,
                                         candidates=candidates, passed_only=passed_only,
                                         q=float(q), max_hurst=float(max_hurst),
                                         min_crossings=min_crossings, min_bars=min_bars))
    show_message("pairs_message")
    screen_results(c)
    st.divider()
    st.fragment(run_every=c.chart_every)(watchlist_live)(c)
    watchlist_actions(c)


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------

TIMED_TABS = {"Prices": tab_prices, "Spread & z-score": tab_spread}
PLAIN_TABS = {"Statistics": tab_statistics, "Correlation": tab_correlation,
              "Pairs": tab_pairs, "Backtest": tab_backtest, "Paper": tab_paper,
              "Alerts": tab_alerts, "Data": tab_data}


def main() -> None:
    """One run of the page in a browser session (``app.py`` calls it)."""
    st.set_page_config(page_title="Pairs analytics", page_icon="📈", layout="wide")
    connect_services()
    with st.sidebar:
        st.header("Pairs analytics")
        st.fragment(run_every=None if st.session_state.get("paused") else 1.0)(sidebar_status)()
        controls = sidebar_controls()
    if controls is None:
        st.stop()
    if controls.y == controls.x:
        st.warning("choose two different symbols for y and x")
        st.stop()

    st.html(STRIP_STYLE)
    st.fragment(run_every=controls.fast_every)(live_strip)(controls)

    tabs = st.tabs(TAB_NAMES, key="tab", on_change="rerun")
    write_view_to_url(controls)
    for name, tab in zip(TAB_NAMES, tabs):
        if not tab.open:
            continue
        with tab:
            if name in TIMED_TABS:
                st.fragment(run_every=controls.chart_every)(TIMED_TABS[name])(controls)
            elif name == "Health":
                st.fragment(run_every=None if controls.paused else controls.refresh_s)(
                    tab_health)(controls)
            else:
                PLAIN_TABS[name](controls)
    freeze_long_lived_objects()
    st.session_state["theme_reported"] = True  # from the next run on (see page_theme)
    services.page_served()
