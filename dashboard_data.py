"""Data the dashboard page shows: loading bars, assembling pair analytics, labels and CSVs.

The page (``page.py``) arranges widgets; this module does the reading and the calling of
``database`` / ``analytics`` behind it, so that what the page shows can be built and checked
without Streamlit. It holds no statistics of its own: every number comes from
``analytics``; the only arithmetic here is unit conversion for messages (bars -> seconds)
and window bounds for reads.

Sources
    ``DataSource("live", db_path)`` reads the collector's database (``bars_1s`` aggregated
    in SQL); ``DataSource("uploaded", upload_db_path, name)`` reads one uploaded file's bars
    (``uploaded_bars``). Both come back in the project's bar layout, so the same analytics
    and charts serve both.
Connections
    Reads use read-only connections, one ``with reading(...)`` block at a time, kept for
    reuse (``reading``): two threads never use one connection at once. Writes (uploads)
    open a short-lived writable connection.
Incremental reads
    ``BarStore`` keeps the bars of a (database, symbol, timeframe, lookback) window and
    tops them up with ``database.read_bars_since``: a refresh reads the last few bars, not
    the whole window (24 h of 1 s bars cost ~130 ms to read, the delta < 1 ms).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import sqlite3
import threading
import time
import zoneinfo
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

import analytics
import backtest
import database

BUILTIN_MARKET_LABEL = "Built-in simulated market — not real prices"
REPLAY_LABEL = "Built-in market replaying a recorded file — not live prices"
WAITING_MESSAGE = "waiting for the first trades…"
FEED_NAMES = {"binance-futures": "Binance futures", "binance-spot": "Binance spot",
              "demo": "built-in simulated market", "replay": "recorded-file replay"}

# UI labels -> canonical timeframes (the project's "1m"/"5m" mean "1min"/"5min").
TIMEFRAME_LABELS = ("1s", "5s", "10s", "30s", "1m", "5m")
LOOKBACKS_MS: dict[str, int | None] = {
    "5 min": 5 * 60_000, "15 min": 15 * 60_000, "1 h": 3_600_000, "4 h": 4 * 3_600_000,
    "24 h": 24 * 3_600_000, "all": None,
}
# Default hedge window per timeframe, in bars of clock time (analytics.pair_signals). A β is
# only as good as x's movement over the window against the spread's own noise: x's range
# grows like sqrt(time), so a 1 s window needs minutes. Measured (bench/check_signals.py,
# README): at 1 s the unguarded OLS β's 5th-95th percentiles span -0.2..2.5 with 60 bars on
# the real recordings (max 9.9 on the spot recording) and 0.5..2.2 with 300 bars (0.6..1.9
# on the built-in market, true 1.2), where the guard refuses no window; coarser bars reach
# the same span of time with fewer bars, and every default keeps at least 48 observations.
DEFAULT_WINDOWS: dict[str, int] = {"1s": 300, "5s": 120, "10s": 90, "30s": 60, "1m": 60,
                                   "5m": 48}
METHODS = {"OLS": "ols", "TLS": "tls", "Huber": "huber", "Theil–Sen": "theil-sen",
           "Kalman": "kalman"}
LIVE_STRIP_EVERY_S = 0.5  # the live strip's fragment period
# The strip's two last prices rerun on their own every 0.25 s (one index seek per leg for
# the newest stored trade) while the rest of the strip keeps its 0.5 s: a trade reaches the
# screen within the collector's 50 ms flush + <= 0.25 s + a small rerun (issue 17: p95 <=
# 500 ms). CRYPTO_LIVE_PRICE_EVERY=0 folds them back into the strip. The extra reruns cost
# less than the page saved when its long-lived heap was frozen (page.freeze_long_lived_objects):
# README Performance (bench_app.py tick --compare-prices).
LIVE_PRICE_EVERY_S = float(os.environ.get("CRYPTO_LIVE_PRICE_EVERY", "0.25"))
NO_TRADES_WARNING_S = 10.0  # a subscribed symbol silent this long gets a warning
HEATMAP_MIN_PERIODS = 30  # common returns per pair before a correlation is shown
ALERT_RULE_TABLE = ("id", "name", "enabled", "state", "value", "detail", "metric", "symbol",
                    "y_symbol", "x_symbol", "comparison", "threshold", "cooldown_s",
                    "hysteresis", "timeframe", "window", "method", "log_prices", "events",
                    "webhook_url")  # the columns of database.list_alert_rules shown


def timeframe_of(label: str) -> str:
    """``"1m"`` -> ``"1min"``; the canonical timeframe of a UI label."""
    return analytics.normalize_timeframe(label)


def bar_ms_of(label: str) -> int:
    return analytics.TIMEFRAME_MS[timeframe_of(label)]


def default_window(label: str) -> int:
    """The page's default hedge window for a timeframe label (``DEFAULT_WINDOWS``)."""
    return DEFAULT_WINDOWS.get(label, DEFAULT_WINDOWS.get(
        {v: k for k, v in analytics.TIMEFRAME_ALIASES.items()}.get(label, label), 60))


# --------------------------------------------------------------------------------------
# Sources and connections
# --------------------------------------------------------------------------------------


class DataSource(NamedTuple):
    """Where bars come from. A tuple, so Streamlit's caches can hash it."""

    kind: str  # "live" | "uploaded"
    db_path: str
    upload: str = ""  # the uploaded file's name (``uploaded_bars.source``)

    @property
    def label(self) -> str:
        return "live" if self.kind == "live" else f"uploaded: {self.upload}"


@contextlib.contextmanager
def reading(path: str) -> Iterator[sqlite3.Connection]:
    """A read-only connection for one ``with`` block; FileNotFoundError when the file is
    missing.

    SQLite connections are reused (``_READERS``): opening one and reading its schema costs
    ~0.5 ms, and a refresh of the page reads ten times. A connection serves one block at a
    time, in autocommit mode, so each statement sees the newest committed data; one that
    raised or was left inside a transaction is closed, not reused. A file replaced by
    another one at the same path (another inode) gets new connections.
    """
    if database.is_server(path):  # pooled by database_postgres
        with contextlib.closing(database.connect(path, readonly=True)) as conn:
            yield conn
        return
    conn, identity = _take_reader(path)
    try:
        yield conn
    except BaseException:
        conn.close()
        raise
    _return_reader(path, identity, conn)


READERS_KEPT = 4  # idle read-only connections kept per database file
READER_FILES_KEPT = 8  # files with kept connections (least recently read ones closed)
_READERS: OrderedDict[str, tuple[tuple, list[sqlite3.Connection]]] = OrderedDict()
_READERS_LOCK = threading.Lock()


def _take_reader(path: str) -> tuple[sqlite3.Connection, tuple]:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        database.connect(path, readonly=True)  # raises the module's FileNotFoundError
        raise
    identity = (stat.st_dev, stat.st_ino)
    with _READERS_LOCK:
        held_identity, idle = _READERS.get(path, (identity, []))
        if held_identity != identity:  # a new file at this path: the old ones are stale
            stale, idle = idle, []
            for conn in stale:
                conn.close()
        _READERS[path] = (identity, idle)
        _READERS.move_to_end(path)
        while len(_READERS) > READER_FILES_KEPT:
            for conn in _READERS.popitem(last=False)[1][1]:
                conn.close()
        if idle:
            return idle.pop(), identity
    return database.connect(path, readonly=True), identity


def _return_reader(path: str, identity: tuple, conn: sqlite3.Connection) -> None:
    with _READERS_LOCK:
        held_identity, idle = _READERS.get(path, (identity, []))
        if conn.in_transaction or held_identity != identity or len(idle) >= READERS_KEPT:
            conn.close()
            return
        idle.append(conn)
        _READERS[path] = (held_identity, idle)


@contextlib.contextmanager
def writing(path: str) -> Iterator[sqlite3.Connection]:
    """A short-lived writable connection (uploads, alert rules); creates the file."""
    conn = database.connect(path)
    try:
        yield conn
    finally:
        conn.close()


_READY_PATHS: set[str] = set()  # files found with their schema (see database_ready)


def database_ready(path: str) -> bool:
    """True once the file exists and has its schema (the collector creates it lazily).

    A file once found ready is remembered (a schema is never dropped), so later calls cost
    one ``stat``, not a connection: the page's fragments call this several times a run.
    """
    if not path or not database.database_exists(path):  # a file, or a postgresql:// URL
        return False
    if path in _READY_PATHS:
        return True
    try:
        with reading(path) as conn:
            conn.execute("SELECT 1 FROM bars_1s LIMIT 1").fetchall()
    except sqlite3.DatabaseError:
        return False
    _READY_PATHS.add(path)
    return True


def newest_prices(db_path: str, symbols) -> tuple[float, ...]:
    """Price of the newest stored trade of each symbol (NaN where none or no database yet).

    One primary-key seek per symbol on a short read-only connection: cheap enough for the
    strip's last prices several times a second.
    """
    try:
        with reading(db_path) as conn:
            rows = [database.newest_trade(conn, symbol) for symbol in symbols]
    except (FileNotFoundError, sqlite3.DatabaseError):  # no file or no schema yet
        return tuple(math.nan for _ in symbols)
    return tuple(math.nan if row is None else float(row[2]) for row in rows)


def latest_bar_times(source: DataSource, symbols) -> tuple:
    """Open time of the newest bar of each symbol in ``source`` (None where it has none).

    The cache key of everything computed from bars: one index seek per live symbol.
    """
    if not database_ready(source.db_path):
        return tuple(None for _ in symbols)
    with reading(source.db_path) as conn:
        if source.kind == "live":
            return tuple(database.latest_bar_ts(conn, s) for s in symbols)
        uploads = database.list_uploads(conn)
    mine = uploads[uploads["source"] == source.upload].set_index("symbol")["last_ts"]
    return tuple(int(mine[s.upper()]) if s.upper() in mine.index else None for s in symbols)


def data_version(source: DataSource, symbols) -> tuple[tuple, int]:
    """``(bars, history)``: a value that changes whenever any of ``symbols`` gets a trade
    or the REST backfill stores past bars — the cache key of a view — read on one
    connection (the live strip asks twice a second).

    Live: ``bars`` holds (open time, trade count) of each symbol's newest bar, so a trade
    inside the current second refreshes the view too, and ``history`` is
    ``database.history_version`` (past bars a top-up from the newest bar would not see).
    Uploads never change after they are stored: their newest bar times and 0.
    """
    if source.kind != "live" or not database_ready(source.db_path):
        return latest_bar_times(source, symbols), 0
    with reading(source.db_path) as conn:
        return (tuple(database.latest_bar_version(conn, s) for s in symbols),
                database.history_version(conn))


def stored_symbols(source: DataSource) -> list[str]:
    """Upper-case symbols with bars in ``source``."""
    if not database_ready(source.db_path):
        return []
    with reading(source.db_path) as conn:
        if source.kind == "live":
            return database.symbol_names(conn)
        uploads = database.list_uploads(conn)
    return uploads.loc[uploads["source"] == source.upload, "symbol"].tolist()


def list_uploads(upload_db_path: str) -> pd.DataFrame:
    """``database.list_uploads`` of the upload database (empty when it does not exist)."""
    if not database_ready(upload_db_path):
        return pd.DataFrame(columns=["source", "symbol", "first_ts", "last_ts", "rows"])
    with reading(upload_db_path) as conn:
        return database.list_uploads(conn)


def upload_bar_ms(source: DataSource) -> int | None:
    """The bar size of an uploaded file: the most common step between its first symbol's
    bar times (a few missing bars do not change it); None without two bars."""
    symbols = stored_symbols(source)
    if not symbols:
        return None
    with reading(source.db_path) as conn:
        bars = database.read_uploaded_bars(conn, source.upload, symbols[0])
    steps = np.diff(bars.index.to_numpy(dtype=np.int64))
    steps = steps[steps > 0]
    if len(steps) == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return int(values[np.argmax(counts)])


def pair_symbols(collector_symbols, source: DataSource) -> list[str]:
    """Pair choices: the collector's symbols and the stored ones (live), or the upload's."""
    stored = stored_symbols(source)
    if source.kind != "live":
        return sorted(stored)
    names = [s.upper() for s in collector_symbols]
    return names + sorted(set(stored) - set(names))


# --------------------------------------------------------------------------------------
# Page settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Controls:
    """What the page's sidebar selected; passed to every fragment and tab."""

    source: DataSource
    y: str
    x: str
    tf_label: str
    timeframe: str
    lookback_label: str
    lookback_ms: int | None
    method_label: str
    method: str
    window: int
    log_prices: bool
    entry: float
    exit: float
    tz: str
    refresh_s: float
    paused: bool

    @property
    def live(self) -> bool:
        return self.source.kind == "live"

    @property
    def fast_every(self) -> float | None:
        # Twice a second: with the collector's 0.25 s flush a new trade reaches the strip
        # within about 0.25 + 0.5 s plus the rerun (the target is 1 s).
        return None if self.paused else LIVE_STRIP_EVERY_S

    @property
    def price_every(self) -> float | None:
        """Period of the strip's last-price fragment: None when paused, for uploaded data
        or when turned off (``LIVE_PRICE_EVERY_S`` 0)."""
        if self.paused or not self.live or LIVE_PRICE_EVERY_S <= 0:
            return None
        return LIVE_PRICE_EVERY_S

    @property
    def chart_every(self) -> float | None:
        """Seconds between chart refreshes: None when paused or for static uploaded data,
        else the chosen refresh interval. Charts of 1m/5m bars rerun as often but draw
        closed bars only (``closed_bars_before``): they change at each bar close, seen
        within one interval, and a rerun between closes sends the same figures."""
        return None if self.paused or not self.live else float(self.refresh_s)

    @property
    def charts_at_bar_close(self) -> bool:
        """Live 1m/5m charts draw closed bars only (see ``closed_bars_before``)."""
        return self.live and bar_ms_of(self.tf_label) >= CLOSED_BARS_FROM_MS

    def chart_key(self, name: str) -> str:
        """uirevision: whatever changes the meaning of the axes resets the zoom."""
        return f"{name}|{self.source.label}|{self.y}|{self.x}|{self.timeframe}|{self.tz}"


# --------------------------------------------------------------------------------------
# Bars
# --------------------------------------------------------------------------------------


def _window_start(anchor_ms: int | None, lookback_ms: int | None) -> int | None:
    if anchor_ms is None or lookback_ms is None:
        return None
    return int(anchor_ms) - int(lookback_ms)


@dataclass
class _Window:
    start_ms: int | None
    bars: pd.DataFrame
    history: int = 0  # database.history_version when read: REST history since -> read again


class BarStore:
    """Live bars per (database, symbol, timeframe, lookback), topped up incrementally.

    ``bars(...)`` returns the bars whose open is in ``[anchor - lookback, ...)``; the first
    call reads the whole window, later calls read only from the last bar held (which may
    have grown) with ``database.read_bars_since``. One window per (database, symbol,
    timeframe): the page's pair view asks for a start that moves with every new bar (the
    lookback plus the method's warm-up), so the window is kept by what it holds, not by the
    span asked, and trimmed to twice the span of the latest call. Thread-safe; holds at
    most ``max_windows`` windows (least recently used dropped).
    """

    def __init__(self, max_windows: int = 32) -> None:
        self._windows: OrderedDict[tuple, _Window] = OrderedDict()
        self._lock = threading.Lock()
        self.max_windows = max_windows

    def bars(self, db_path: str, symbol: str, timeframe: str, lookback_ms: int | None,
             anchor_ms: int | None) -> pd.DataFrame:
        key = (db_path, symbol.upper(), timeframe)
        start = _window_start(anchor_ms, lookback_ms)
        with self._lock:
            window = self._windows.get(key)
            with reading(db_path) as conn:
                # Read before the bars: REST history stored in between is seen next time.
                history = database.history_version(conn)
                # A held window can be topped up when it reaches back at least as far as
                # asked and no past bars were stored since it was read.
                reusable = window is not None and len(window.bars) > 0 and (
                    window.history == history) and (
                    window.start_ms is None
                    or (start is not None and window.start_ms <= start))
                if reusable:
                    fresh = database.read_bars_since(conn, symbol, int(window.bars.index[-1]),
                                                     timeframe)
                    kept = window.bars[window.bars.index < fresh.index[0]] if len(fresh) \
                        else window.bars
                    merged = pd.concat([kept, fresh]) if len(fresh) else kept
                else:
                    merged, window = database.read_bars(conn, symbol, start, None,
                                                        timeframe), None
            held_from = start if window is None else window.start_ms
            if start is not None:
                keep_from = start - int(lookback_ms)  # twice the span asked
                if held_from is None or held_from < keep_from:
                    held_from = keep_from
                    merged = merged[merged.index >= keep_from]
            self._windows[key] = _Window(held_from, merged, history)
            self._windows.move_to_end(key)
            while len(self._windows) > self.max_windows:
                self._windows.popitem(last=False)
            if start is not None and len(merged):
                size = analytics.TIMEFRAME_MS[timeframe]
                first_full_bucket = -(-start // size) * size  # read_bars' rule
                merged = merged[merged.index >= first_full_bucket]
            return merged


def backfill_rows(health: Mapping) -> list[tuple[str, float, str]]:
    """(symbol, fraction done, label) per symbol while the REST backfill runs, else []."""
    backfill = health.get("backfill") or {}
    if backfill.get("state") not in ("new", "klines", "waiting for the page", "trades"):
        return []
    rows = []
    for symbol, progress in backfill.get("symbols", {}).items():
        label = (f"{symbol} history: {progress['klines']:,} 1m bars, "
                 f"{progress['trades']:,} trades")
        rows.append((symbol, float(progress["fraction"]), label))
    return rows


def load_bars(source: DataSource, symbol: str, timeframe: str, lookback_ms: int | None,
              anchor_ms: int | None, store: BarStore | None = None) -> pd.DataFrame:
    """Bars of one symbol over ``[anchor - lookback, ...)`` at ``timeframe``.

    Live data come from ``database.read_bars`` (through ``store`` when given); uploaded
    data from ``database.read_uploaded_bars`` (a timeframe finer than the file gives the
    file's bars). Empty when the database or the symbol has nothing yet.
    """
    if not database_ready(source.db_path):
        return analytics.resample(pd.DataFrame({"ts": [], "price": [], "qty": []}), "1s")
    if source.kind == "live":
        if store is not None:
            return store.bars(source.db_path, symbol, timeframe, lookback_ms, anchor_ms)
        with reading(source.db_path) as conn:
            return database.read_bars(conn, symbol, _window_start(anchor_ms, lookback_ms),
                                      None, timeframe)
    with reading(source.db_path) as conn:
        bars = database.read_uploaded_bars(conn, source.upload, symbol, timeframe)
    start = _window_start(anchor_ms, lookback_ms)
    return bars if start is None else bars[bars.index >= start]


def read_ticks(db_path: str, symbol: str, start_ms: int | None) -> pd.DataFrame:
    """Stored trades of one symbol since ``start_ms`` (all when None)."""
    with reading(db_path) as conn:
        return database.read_ticks(conn, symbol, 0 if start_ms is None else start_ms)


# --------------------------------------------------------------------------------------
# Pair analytics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairView:
    """Everything the page draws for one pair, built by ``build_pair_view``.

    ``signals`` uses the chosen method (``analytics.pair_signals``, the one function every
    consumer calls); ``rolling_beta`` is that method's trailing β (the rolling OLS β when
    the method is Kalman) and ``kalman_beta`` the Kalman prior β(t|t-1) after the filter's
    warm-up (NaN before), drawn side by side; both are NaN where the β guard refused a β.
    ``correlation`` is the trailing correlation of co-traded log returns over ``window``
    co-traded bars.
    """

    y_symbol: str
    x_symbol: str
    timeframe: str
    bar_ms: int
    bars_y: pd.DataFrame
    bars_x: pd.DataFrame
    aligned: analytics.AlignResult
    signals: analytics.PairSignals
    rolling_beta: pd.Series
    kalman_beta: pd.Series
    correlation: pd.Series

    @property
    def bar_seconds(self) -> float:
        return self.bar_ms / 1000.0


def build_pair_view(bars_y: pd.DataFrame, bars_x: pd.DataFrame, y_symbol: str, x_symbol: str,
                    timeframe: str | None, method: str, window: int,
                    log_prices: bool, z_window: int | None = None,
                    display_from_ms: int | None = None) -> PairView:
    """Align two legs and compute the trailing hedge, spread, z, β paths and correlation.

    Parameters
    ----------
    bars_y, bars_x : pandas.DataFrame
        Bars of the dependent and independent leg.
    timeframe : str or None
        The bars' size; None lets ``analytics.align`` infer it (uploaded files, whose bar
        size may be coarser than the one asked for).
    method : {"ols", "tls", "huber", "theil-sen", "kalman"}
    window : int
        Bars in the trailing hedge, z and correlation windows.
    log_prices : bool
    z_window : int or None
        Bars in the z-score window of the chosen method; None means ``window``.
    display_from_ms : int or None
        Compute on all the bars given (history the windows and the Kalman anchor need,
        see ``pair_history_start``) but keep only bars opening at or after this in the view.

    Notes
    -----
    Legs are aligned with ``analytics.align`` (levels carried at most
    ``analytics.DEFAULT_FFILL_LIMIT`` bars); windows count bars of clock time
    (``bar_ms`` passed to ``pair_signals``).
    """
    aligned = analytics.align(bars_y, bars_x, timeframe=timeframe)
    bar_ms = int(aligned.bar_ms)

    def history(method: str, z_window: int | None) -> analytics.PairSignals:
        # each method on the rows its values from display_from_ms on depend on (the
        # loaded history reaches back to the Kalman anchor, up to 2 h more at 1 s bars)
        rows = aligned
        if display_from_ms is not None:
            start = analytics.history_start(int(display_from_ms), bar_ms, method, window,
                                            z_window)
            rows = dataclasses.replace(aligned, frame=aligned.frame[aligned.frame.index >= start])
        return pair_history(rows, method, window, z_window, log_prices)

    signals = history(method, z_window)
    if method == "kalman":
        kalman = signals
        rolling = history("ols", None)
    else:
        rolling = signals
        kalman = history("kalman", None)
    correlation = analytics.rolling_correlation(aligned.y, aligned.x, window,
                                                co_traded=aligned.both_traded)
    # The filter spends its warm-up fitting its start: no β is drawn before it ends.
    kalman_beta = kalman.frame["beta"].where(~kalman.frame["warmup"].astype(bool))
    view = PairView(y_symbol=y_symbol.upper(), x_symbol=x_symbol.upper(),
                    timeframe=timeframe or "", bar_ms=bar_ms, bars_y=bars_y,
                    bars_x=bars_x, aligned=aligned, signals=signals,
                    rolling_beta=rolling.frame["beta"], kalman_beta=kalman_beta,
                    correlation=correlation)
    return view if display_from_ms is None else _view_from(view, int(display_from_ms))


class _FitCache(dict):
    """``pair_signals``' memo (Huber / Theil-Sen fits and Kalman filter runs by a digest of
    their exact inputs, and the newest filter's state to continue from): a refresh that adds
    one bar refits one window and filters the new bars instead of all of them. Bounded: at
    most ``max_fits`` entries and the ``max_kalman`` most recent filter runs (each up to
    3,600 rows). Single dict reads and writes are atomic, so the page's threads share it;
    a lost race costs a recomputation.
    """

    def __init__(self, max_fits: int = 20_000, max_kalman: int = 48) -> None:
        super().__init__()
        self.max_fits, self.max_kalman = max_fits, max_kalman
        self._kalman_keys: list = []

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.max_fits:
            self.clear()
            self._kalman_keys.clear()
        if key[0] == "kalman":
            self._kalman_keys.append(key)
            while len(self._kalman_keys) > self.max_kalman:
                self.pop(self._kalman_keys.pop(0), None)
        super().__setitem__(key, value)


_FIT_CACHE = _FitCache()


def pair_history(aligned: analytics.AlignResult, method: str, window: int,
                 z_window: int | None, log_prices: bool) -> analytics.PairSignals:
    """``analytics.pair_signals`` of aligned legs with windows in clock time: the pair's
    history as the page, the alert evaluator and the backtest all compute it."""
    return analytics.pair_signals(aligned.y, aligned.x, method=method, window=window,
                                  z_window=z_window, log_prices=log_prices,
                                  bar_ms=int(aligned.bar_ms), fit_cache=_FIT_CACHE)


def pair_history_start(first_ms: int, bar_ms: int, method: str, window: int,
                       z_window: int | None = None) -> int:
    """Epoch ms from which to load bars so that every value the view shows from
    ``first_ms`` on is final: the chosen method's history and the Kalman β drawn beside
    it (``analytics.history_start``; the Kalman anchor is usually the earlier)."""
    starts = [analytics.history_start(first_ms, bar_ms, method, window, z_window),
              analytics.history_start(first_ms, bar_ms, "kalman", window),
              analytics.history_start(first_ms, bar_ms, "ols", window)]
    return min(starts)


def _view_from(view: PairView, start_ms: int) -> PairView:
    """The view restricted to bars opening at or after ``start_ms`` (values unchanged)."""
    def keep(obj):
        return obj[obj.index >= start_ms]

    aligned = analytics.AlignResult(frame=keep(view.aligned.frame), bar_ms=view.aligned.bar_ms,
                                    ffill_limit=view.aligned.ffill_limit)
    signals = dataclasses.replace(view.signals, frame=keep(view.signals.frame))
    return dataclasses.replace(view, bars_y=keep(view.bars_y), bars_x=keep(view.bars_x),
                               aligned=aligned, signals=signals,
                               rolling_beta=keep(view.rolling_beta),
                               kalman_beta=keep(view.kalman_beta),
                               correlation=keep(view.correlation))


def load_pair_view(source: DataSource, y: str, x: str, timeframe: str,
                   lookback_ms: int | None, anchor_ms: int | None, method: str, window: int,
                   log_prices: bool, *, z_window: int | None = None,
                   store: BarStore | None = None, closed_before: int | None = None) -> PairView:
    """The pair view over ``[anchor - lookback, ...)``, computed on enough history.

    Bars are loaded from ``pair_history_start`` of the lookback's first bar, so the values
    shown do not depend on when the page was opened or how much it loaded: the alert
    evaluator and the backtest get the same numbers at the same bar. ``closed_before``
    drops bars opening at or after it (the forming bar of 1m/5m charts).
    """
    bar_ms = bar_ms_of(timeframe)
    start = _window_start(anchor_ms, lookback_ms)
    history = lookback_ms
    if source.kind != "live":
        history = None  # an uploaded file is read whole anyway: compute on all of it
    elif start is not None:
        history_from = pair_history_start(start, bar_ms, method, window, z_window)
        history = int(anchor_ms) - history_from
    bars_y = load_bars(source, y, timeframe, history, anchor_ms, store)
    bars_x = load_bars(source, x, timeframe, history, anchor_ms, store)
    if closed_before is not None:
        bars_y = bars_y[bars_y.index < closed_before]
        bars_x = bars_x[bars_x.index < closed_before]
    return build_pair_view(bars_y, bars_x, y, x,
                           timeframe if source.kind == "live" else None, method, window,
                           log_prices, z_window=z_window, display_from_ms=start)


def view_to_parts(view: PairView) -> dict:
    """The view as pandas objects and Python scalars only, for ``st.cache_data``.

    Streamlit pickles cached values; a pickled instance of a class from a project module
    fails once Streamlit has re-imported that module (it does after a source file changes,
    and a fragment rerun keeps the old module), while pandas objects always pickle.
    """
    signals = view.signals
    return {
        "y_symbol": view.y_symbol, "x_symbol": view.x_symbol, "timeframe": view.timeframe,
        "bar_ms": view.bar_ms, "bars_y": view.bars_y, "bars_x": view.bars_x,
        "aligned_frame": view.aligned.frame, "ffill_limit": view.aligned.ffill_limit,
        "signals_frame": signals.frame,
        "signals_meta": {"method": signals.method, "window": signals.window,
                         "z_window": signals.z_window, "log_prices": signals.log_prices,
                         "nobs": signals.nobs, "needed": signals.needed,
                         "refit_every": signals.refit_every, "bar_ms": signals.bar_ms},
        "rolling_beta": view.rolling_beta, "kalman_beta": view.kalman_beta,
        "correlation": view.correlation,
    }


def view_from_parts(parts: Mapping) -> PairView:
    """Inverse of ``view_to_parts``."""
    aligned = analytics.AlignResult(frame=parts["aligned_frame"], bar_ms=parts["bar_ms"],
                                    ffill_limit=parts["ffill_limit"])
    signals = analytics.PairSignals(frame=parts["signals_frame"], **parts["signals_meta"])
    return PairView(y_symbol=parts["y_symbol"], x_symbol=parts["x_symbol"],
                    timeframe=parts["timeframe"], bar_ms=parts["bar_ms"],
                    bars_y=parts["bars_y"], bars_x=parts["bars_x"], aligned=aligned,
                    signals=signals, rolling_beta=parts["rolling_beta"],
                    kalman_beta=parts["kalman_beta"], correlation=parts["correlation"])


@dataclass(frozen=True)
class LiveValues:
    """The numbers of the live strip (NaN when not available yet)."""

    last_y: float
    last_x: float
    spread: float
    z: float
    beta: float
    correlation: float
    last_ts: int | None
    beta_note: str = ""  # why the newest bar has no β (analytics.BETA_NOTES), "" if it has


def live_values(view: PairView) -> LiveValues:
    """Last prices, and the newest spread, z, β and correlation that exist.

    While the z window fills, β and the spread already exist (they need ``window`` bars,
    z needs ``window + z_window``): the strip shows them from the newest bar that has a β,
    and z from the newest bar that has a z (the same bar once z exists). When the β guard
    refused the newest bar's β (x did not move enough, or beyond the cap), β, spread and z
    are NaN and ``beta_note`` says why: the strip never shows a number the guard refused
    next to one from an older window.
    """
    frame = view.signals.frame
    # a bar with a β but no spread (a leg without a price there) would show "spread —"
    # next to the z of an older bar
    usable = frame["beta"].notna() & frame["spread"].notna()
    if view.signals.method == "kalman":  # the filter's β means nothing during its warm-up
        usable &= ~frame["warmup"].astype(bool)
    hedged = frame[usable]
    latest = hedged.iloc[-1] if len(hedged) else view.signals.latest
    note = str(frame["beta_note"].iloc[-1]) if len(frame) and "beta_note" in frame else ""
    refused = note in analytics.BETA_NOTES[2:]
    corr = view.correlation.dropna()
    return LiveValues(
        last_y=float(view.bars_y["close"].iloc[-1]) if len(view.bars_y) else math.nan,
        last_x=float(view.bars_x["close"].iloc[-1]) if len(view.bars_x) else math.nan,
        spread=math.nan if refused else float(latest["spread"]),
        z=math.nan if refused else float(view.signals.latest["z"]),
        beta=math.nan if refused else float(latest["beta"]),
        correlation=float(corr.iloc[-1]) if len(corr) else math.nan,
        last_ts=int(view.aligned.frame.index[-1]) if len(view.aligned.frame) else None,
        beta_note=note,
    )


def analytics_frame(view: PairView) -> pd.DataFrame:
    """The pair's per-bar analytics at full resolution (the 'analytics' CSV)."""
    frame = view.aligned.frame
    signals = view.signals.frame
    return pd.DataFrame({
        "y_close": frame["y"], "x_close": frame["x"],
        "y_traded": frame["y_traded"], "x_traded": frame["x_traded"],
        "both_traded": frame["both_traded"],
        "beta": signals["beta"], "alpha": signals["alpha"], "spread": signals["spread"],
        "spread_mean": signals["spread_mean"], "spread_std": signals["spread_std"],
        "z": signals["z"], "beta_note": signals["beta_note"],
        "rolling_beta": view.rolling_beta,
        "kalman_beta": view.kalman_beta, "correlation": view.correlation,
    }, index=frame.index)


def spread_bands(view: PairView, k: float) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Trailing mean of the spread and mean ± k·std (k = the entry z: where z crosses ±k)."""
    frame = view.signals.frame
    mean, std = frame["spread_mean"], frame["spread_std"]
    return mean, mean + k * std, mean - k * std


def model_levels(view: PairView) -> tuple[pd.Series, pd.Series]:
    """The legs on the model's scale (log prices when the view uses them)."""
    if view.signals.log_prices:
        return analytics.to_log_prices(view.aligned.y), analytics.to_log_prices(view.aligned.x)
    return view.aligned.y, view.aligned.x


# The backtest form's defaults: Binance USD-M taker fee at the base tier (spot is ~10 bps),
# one basis point of slippage, $10k of y per trade. A zero fee flatters every result.
BACKTEST_FEE_BPS = 5.0
BACKTEST_SLIPPAGE_BPS = 1.0
BACKTEST_NOTIONAL = 10_000.0


def pair_backtest(view: PairView, entry: float, exit: float, *, stop: float | None = None,
                  fee_bps: float = BACKTEST_FEE_BPS,
                  slippage_bps: float = BACKTEST_SLIPPAGE_BPS,
                  notional: float = BACKTEST_NOTIONAL,
                  max_hedge_multiple: float = backtest.DEFAULT_MAX_HEDGE_MULTIPLE
                  ) -> backtest.BacktestResult:
    """``backtest.backtest`` of the view's own signal: the z and β the page draws, sized
    on the view's scale (log or raw prices, as the spread was built), each leg filling
    only on a bar in which it traded (``y_traded``/``x_traded``), hedge leg capped."""
    frame = view.aligned.frame
    return backtest.backtest(frame["y"], frame["x"], view.signals.frame["z"], entry, exit,
                             beta=view.signals.frame["beta"], stop=stop, fee_bps=fee_bps,
                             slippage_bps=slippage_bps, notional=notional,
                             bar_seconds=view.bar_seconds, log_prices=view.signals.log_prices,
                             y_traded=frame["y_traded"], x_traded=frame["x_traded"],
                             max_hedge_multiple=max_hedge_multiple)


@dataclass(frozen=True)
class PairTests:
    """ADF on the spread and Engle–Granger on the pair, as run by ``run_pair_tests``."""

    adf: analytics.ADFResult
    eg: analytics.EngleGrangerResult
    bars: int
    last_ts: int | None


def run_pair_tests(view: PairView) -> PairTests:
    """ADF on the view's trailing spread (out of sample: a full-sample fit's residuals
    would look stationary by construction) and Engle–Granger on the legs' levels; both
    use only the most recent run without a gap (``analytics.adf_test``)."""
    y_model, x_model = model_levels(view)
    adf = analytics.adf_test(view.signals.frame["spread"])
    eg = analytics.engle_granger(y_model, x_model, log_prices=view.signals.log_prices)
    last = int(view.aligned.frame.index[-1]) if len(view.aligned.frame) else None
    return PairTests(adf=adf, eg=eg, bars=len(view.aligned.frame), last_ts=last)


def price_stats_table(bars_by_symbol: Mapping[str, pd.DataFrame],
                      bar_seconds: float) -> pd.DataFrame:
    """``analytics.price_stats`` per symbol: one column per symbol, one row per field."""
    columns = {symbol: dataclasses.asdict(analytics.price_stats(bars, bar_seconds))
               for symbol, bars in bars_by_symbol.items()}
    return pd.DataFrame(columns)


def styled_by_row(table: pd.DataFrame):
    """``table`` (measures by symbol) as a pandas Styler showing each row in
    ``row_formats`` (missing values "—"); the cells keep their numbers."""
    styler = table.style
    for name, spec in row_formats(table).items():
        styler = styler.format(lambda v, spec=spec: format(v, spec) if math.isfinite(v)
                               else "—", subset=pd.IndexSlice[[name], :])
    return styler


def row_formats(table: pd.DataFrame) -> dict:
    """For a table of measures by symbol (one row per measure): each row's format spec for
    its own size — counts with separators and no decimals, prices with two decimals, ratios
    with four, tiny values (a per-bar volatility, ~1e-4) in scientific notation. One format
    per column would show a volatility of 0.0001 next to a price as "0"."""
    formats = {}
    for name, row in table.iterrows():
        values = pd.to_numeric(row, errors="coerce").astype(float)
        finite = values[np.isfinite(values)]
        largest = float(finite.abs().max()) if len(finite) else 0.0
        if len(finite) and largest >= 1 and bool((finite == finite.round()).all()):
            formats[name] = ",.0f"
        elif largest >= 1000:
            formats[name] = ",.2f"
        elif largest >= 0.01 or largest == 0:
            formats[name] = ".4f"
        else:
            formats[name] = ".3e"
    return formats


def liquidity_table(bars_by_symbol: Mapping[str, pd.DataFrame], timeframe: str,
                    min_trades_per_minute: float, max_empty_share: float) -> pd.DataFrame:
    """``analytics.liquidity_metrics`` plus the ``is_liquid`` verdict and its reason."""
    metrics = analytics.liquidity_metrics(dict(bars_by_symbol), timeframe)
    verdicts = [analytics.is_liquid(metrics.loc[symbol], min_trades_per_minute,
                                    max_empty_share) for symbol in metrics.index]
    metrics["liquid"] = [v.liquid for v in verdicts]
    metrics["reason"] = [v.reason for v in verdicts]
    return metrics


def returns_table(bars_by_symbol: Mapping[str, pd.DataFrame], timeframe: str) -> pd.DataFrame:
    """One column of one-bar log returns per symbol (NaN where a symbol did not trade)."""
    columns = {symbol: analytics.log_returns(bars["close"], timeframe)
               for symbol, bars in bars_by_symbol.items() if len(bars)}
    return pd.DataFrame(columns)


def closes_table(bars_by_symbol: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Close prices, one column per symbol, on the union of bar times (NaN where absent)."""
    return pd.DataFrame({symbol: bars["close"] for symbol, bars in bars_by_symbol.items()
                         if len(bars)})


# --------------------------------------------------------------------------------------
# The Pairs tab: screened and pinned pairs
# --------------------------------------------------------------------------------------

TIMEFRAME_LABEL_OF = {timeframe_of(label): label for label in TIMEFRAME_LABELS}


def trailing_z(grid: pd.DataFrame, y: str, x: str, window: int) -> pd.Series:
    """The trailing z of ``y`` on ``x`` (log-price columns of ``analytics.screen_grid``):
    OLS, hedge and z windows of ``window`` bars, as ``analytics.watch_pair`` computes it."""
    # pair_signals takes price levels (and logs them): back from the grid's log prices
    return analytics.pair_signals(np.exp(grid[y]), np.exp(grid[x]), method="ols",
                                  window=window, z_window=window).frame["z"]


def watch_row(db_path: str, pinned: Mapping, entry: float,
              store: BarStore | None = None) -> dict:
    """Live values of one pinned pair (a row of ``database.list_watchlist``) for the
    watchlist: its own timeframe, OLS over the default window (``analytics.watch_pair``),
    on the last hour of bars or four windows if longer.

    Keys: pair, timeframe (label), z, beta, half_life, since_cross (text), liquidity
    (trades per minute of the less liquid leg), z_path (the trailing z, for a sparkline),
    screened_beta (β when pinned), status ("no bars yet", "warming up: ...", "|z| beyond
    entry ..." or "").
    """
    timeframe = pinned["timeframe"]
    window = default_window(timeframe)
    bar_ms = analytics.TIMEFRAME_MS[timeframe]
    lookback = max(3_600_000, 4 * window * bar_ms)
    source = DataSource("live", db_path)
    legs = (pinned["y_symbol"], pinned["x_symbol"])
    anchor = max((t for t in latest_bar_times(source, legs) if t is not None), default=None)
    bars = {s: load_bars(source, s, timeframe, lookback, anchor, store) for s in legs}
    row = {"pair": f"{legs[0]} / {legs[1]}",
           "timeframe": TIMEFRAME_LABEL_OF.get(timeframe, timeframe), "z": math.nan,
           "beta": math.nan, "half_life": math.nan, "since_cross": "—", "liquidity": math.nan,
           "z_path": pd.Series(dtype=float), "screened_beta": pinned["beta"], "status": ""}
    if any(len(b) == 0 for b in bars.values()):
        row["status"] = "no bars yet"
        return row
    grid = analytics.screen_grid(closes_table(bars), timeframe)
    values = analytics.watch_pair(grid[legs[0]], grid[legs[1]], window)
    liquidity = analytics.liquidity_metrics(bars, timeframe)["trades_per_minute"]
    row.update(z=values.z, beta=values.beta, half_life=values.half_life,
               liquidity=float(liquidity.min()),
               z_path=trailing_z(grid, legs[0], legs[1], window))
    if values.last_cross_ts is not None:
        row["since_cross"] = format_duration(values.bars_since_cross * bar_ms / 1000.0)
    if not math.isfinite(values.z):
        row["status"] = f"warming up: needs {values.needed} bars, has {values.nobs}"
    elif abs(values.z) >= entry:
        row["status"] = f"|z| beyond entry {entry:g}"
    return row


# --------------------------------------------------------------------------------------
# Words on screen
# --------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``46 s``, ``12 min``, ``3.5 h`` — for "about ... more" messages."""
    if not math.isfinite(seconds):
        return "unknown time"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def warming_message(needed: int, nobs: int, timeframe_label: str, bar_seconds: float) -> str:
    """'needs 60 bars, has 14 — about 46 s more at 1s bars'."""
    missing = max(int(needed) - int(nobs), 0)
    return (f"needs {needed} bars, has {nobs} — about "
            f"{format_duration(missing * bar_seconds)} more at {timeframe_label} bars")


@dataclass(frozen=True)
class FeedStatus:
    """How the page names the feed: ``label`` everywhere, ``detail`` next to it."""

    label: str
    level: str  # "success" | "info" | "warning" | "error"
    builtin: bool
    detail: str = ""


STORAGE_ALARM_S = 60  # a trade dropped within this many seconds keeps the status red
_LEVELS = ("success", "info", "warning", "error")


def feed_status(health: Mapping, at_ms: int | None = None) -> FeedStatus:
    """Feed label from ``Collector.health()``: live, reconnecting, the built-in market or
    read-only, raised to amber or red with the reason when trades are not getting stored.

    Red: trades were dropped in the last ``STORAGE_ALARM_S`` seconds (queue full, or the
    spill journal could not be written). Amber: the database refuses writes (trades go to
    the spill journal), the journal is being replayed, or the queue is growing. The reason
    leads the detail line and a short form is added to the label.
    """
    status = _connection_status(health)
    trouble = storage_trouble(health, now_ms() if at_ms is None else at_ms)
    if trouble is None:
        return status
    level, short, reason = trouble
    if _LEVELS.index(level) < _LEVELS.index(status.level):
        level = status.level
    detail = f"{reason} {status.detail}".strip()
    return dataclasses.replace(status, label=f"{status.label} · {short}", level=level,
                               detail=detail)


def storage_trouble(health: Mapping, at_ms: int) -> tuple[str, str, str] | None:
    """(level, short label, reason) when received trades are not reaching the database."""
    last_drop = health.get("last_drop_ms")
    if last_drop and at_ms - last_drop < STORAGE_ALARM_S * 1000:
        return ("error", "dropping trades",
                f"{health.get('dropped', 0):,} trades dropped (queue full or spill journal "
                "not writable); their trade ids are recorded as gaps.")
    failing_since = health.get("db_failing_since_ms")
    if failing_since:
        return ("warning", "database refuses writes",
                f"The database has refused writes for {(at_ms - failing_since) / 1000:,.0f} s "
                f"({health.get('last_write_error') or 'write error'}): "
                f"{health.get('journal_pending', 0):,} trades are kept in the spill journal "
                f"{health.get('spill_path', '')} and are stored once it takes writes again.")
    if health.get("journal_pending"):
        return ("warning", "replaying spilled trades",
                f"Storing {health['journal_pending']:,} trades from the spill journal "
                f"{health.get('spill_path', '')}.")
    if health.get("queue_growing"):
        return ("warning", "writer falling behind",
                f"{health.get('queue_depth', 0):,} of {health.get('queue_max', 0):,} trades "
                "are waiting for the database; beyond the limit new trades are dropped.")
    return None


def _connection_status(health: Mapping) -> FeedStatus:
    state = health.get("state", "")
    reason = health.get("last_close_reason") or "no reason given"
    if state == "read-only":
        return FeedStatus(f"read-only — {health.get('db_path', 'database')}", "warning",
                          False, f"{health.get('read_only_reason', '')} This page shows "
                          "that file read-only: charts and statistics work, nothing is "
                          "collected here.".strip())
    if health.get("builtin_market"):
        label = BUILTIN_MARKET_LABEL if health.get("feed") == "demo" else REPLAY_LABEL
        details = []
        if health.get("requested_feed") == "auto":
            details.append("Binance did not answer "
                           f"({health.get('fallback_reason') or 'no data'}): "
                           "switched to the built-in simulated market.")
        if state == "reconnecting":
            details.append(f"reconnecting — {reason}")
        return FeedStatus(label, "warning", True, " ".join(details))
    name = FEED_NAMES.get(health.get("feed", ""), health.get("feed", "feed"))
    if state == "connected":
        return FeedStatus(f"live — {name}", "success", False)
    if state == "reconnecting":
        return FeedStatus(f"reconnecting — {name}", "warning", False, reason)
    if state == "connecting":
        detail = ""
        if health.get("requested_feed") == "auto":
            detail = ("falls back to the built-in simulated market if Binance sends "
                      "nothing")
        return FeedStatus(f"connecting — {name}", "info", False, detail)
    return FeedStatus(f"stopped — {name}", "error", False, reason)


def connection_summary(health: Mapping) -> str:
    """The Health tab's line on the connection, from ``Collector.health()``.

    After 'auto' fell back to the built-in market, the last close reason and the reconnect
    count describe the failed attempts to reach Binance, not the current connection: say
    that, instead of "last close: connect failed" next to a healthy feed.
    """
    state = health.get("state", "")
    if health.get("builtin_market") and health.get("requested_feed") == "auto":
        return (f"fell back to the built-in simulated market after "
                f"{health.get('reconnects', 0):,} failed attempts to reach Binance (last: "
                f"{health.get('fallback_reason') or 'no data'}); current connection: {state}")
    return f"state {state} · last close: {health.get('last_close_reason') or '—'}"


def silent_symbols(health: Mapping, subscribed_since_ms: Mapping[str, int], now_ms: int,
                   threshold_s: float = NO_TRADES_WARNING_S) -> list[tuple[str, float]]:
    """(symbol, seconds) for subscribed symbols without a trade for ``threshold_s``.

    A symbol that never traded counts from when it was subscribed (``subscribed_since_ms``,
    default the collector's start).
    """
    started = health.get("started_ms") or now_ms
    silent = []
    for symbol, info in health.get("symbols", {}).items():
        if info.get("last_trade_ms"):
            quiet_s = info.get("last_trade_age_s") or 0.0
        else:
            quiet_s = (now_ms - subscribed_since_ms.get(symbol, started)) / 1000.0
        if quiet_s > threshold_s:
            silent.append((symbol, quiet_s))
    return silent


def symbol_activity_table(health: Mapping) -> pd.DataFrame:
    """Per-symbol trades/s, last-trade age and trades received, from ``health()``."""
    rows = {symbol: {"trades/s": info.get("trades_per_s"),
                     "age (s)": info.get("last_trade_age_s"),
                     "received": info.get("received")}
            for symbol, info in health.get("symbols", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["trades/s", "age (s)", "received"])


def symbol_activity_markdown(health: Mapping) -> str:
    """The sidebar's per-symbol trades/s and last-trade age as a Markdown table ("" when
    no symbol has reported yet). Markdown, not ``st.dataframe``: the first page view then
    does not wait for the browser to load and compile Streamlit's table component."""
    table = symbol_activity_table(health)
    if table.empty:
        return ""

    def cell(value, spec: str) -> str:
        return "—" if value is None or not math.isfinite(value) else format(value, spec)

    rows = [f"| {symbol} | {cell(row['trades/s'], '.1f')} | {cell(row['age (s)'], '.2f')} |"
            for symbol, row in table.iterrows()]
    return "\n".join(["| symbol | trades/s | age |", "|---|--:|--:|", *rows])


def format_price(value: float) -> str:
    """Enough decimals for any crypto price: 89,761.30 / 3,139.77 / 0.123456."""
    if not math.isfinite(value):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if abs(value) >= 1:
        return f"{value:,.4f}"
    return f"{value:.6g}"


def format_spread(value: float, log_prices: bool) -> str:
    """A spread short enough for the live strip: basis points of log price, or 4
    significant digits of a raw-price spread (in units of the y leg's quote)."""
    if value is None or not math.isfinite(value):
        return "—"
    if log_prices:
        return f"{value * 1e4:,.1f} bp"
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f"{value:,.{min(6, max(0, 3 - magnitude))}f}"


def format_number(value: float, spec: str = ".3f") -> str:
    """``format(value, spec)``, or an em dash for NaN/None."""
    if value is None or not math.isfinite(value):
        return "—"
    return format(value, spec)


CLOSED_BARS_FROM_MS = 60_000  # charts of bars this long or longer show closed bars only


def closed_bars_before(timeframe_label: str, latest_ms) -> int | None:
    """Open time of the forming bar for charts that show closed bars only, else None.

    For bars of ``CLOSED_BARS_FROM_MS`` or longer: the newest 1 s bar of the pair
    (``latest_ms``, open times, None where a leg has none) lies in the forming bar; every
    bar opening before it is closed. A bar counts as closed once a trade after its end has
    arrived, so its last second's trades, which arrive first, are already in.
    """
    bar_ms = bar_ms_of(timeframe_label)
    newest = max((t for t in latest_ms if t is not None), default=None)
    if bar_ms < CLOSED_BARS_FROM_MS or newest is None:
        return None
    return newest // bar_ms * bar_ms


def zoom_from_selection(state) -> dict[str, list] | None:
    """Axis ranges of the newest box in a ``st.plotly_chart`` selection state.

    ``state`` is what Streamlit keeps for a chart with ``on_select``: ``{"selection":
    {"box": [{"xref": "x", "yref": "y2", "x": [a, b], "y": [c, d]}, ...], ...}}``.
    Returns ``{"xaxis": [lo, hi], "yaxis2": [lo, hi]}`` or None without a box.
    """
    selection = (state or {}).get("selection") or {}
    boxes = selection.get("box") or []
    if not boxes:
        return None
    box = boxes[-1]
    ranges = {}
    for ref, values in ((box.get("xref") or "x", box.get("x")),
                        (box.get("yref") or "y", box.get("y"))):
        if values is not None and len(values) == 2:
            ranges[f"{ref[0]}axis{ref[1:]}"] = sorted(values)
    return ranges or None


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def newest_alert_event_id(db_path: str) -> int:
    """Where a new page session starts its toasts (0 without events)."""
    with reading(db_path) as conn:
        return database.latest_alert_event_id(conn)


def alert_messages_after(db_path: str, event_id: int) -> list[tuple[int, str]]:
    """(id, message) of alert events newer than ``event_id``, oldest first."""
    with reading(db_path) as conn:
        events = database.list_alert_events(conn, since_id=event_id, limit=None)
    events = events.sort_values("id")
    return list(zip(events["id"].astype(int).tolist(), events["message"].tolist()))


def alert_summary(db_path: str) -> str:
    """'1 / 3': enabled rules disarmed by a firing (their condition still holds) / enabled."""
    with reading(db_path) as conn:
        rules = database.list_alert_rules(conn, enabled_only=True)
    return f"{int((rules['state'] == 'disarmed').sum())} / {len(rules)}"


# --------------------------------------------------------------------------------------
# Time display and CSV
# --------------------------------------------------------------------------------------


def display_times(ts_ms, tz: str) -> pd.Series:
    """Epoch ms -> wall-clock times in ``tz`` (tz-aware), for tables."""
    values = np.asarray(ts_ms, dtype=np.int64)
    return pd.Series(pd.to_datetime(values, unit="ms", utc=True).tz_convert(zoneinfo.ZoneInfo(tz)))


def with_time_column(frame: pd.DataFrame, tz: str, ts_column: str | None = None,
                     name: str = "time") -> pd.DataFrame:
    """A copy with a ``time`` column (ISO, in ``tz``) first; ``ts`` (epoch ms) kept."""
    out = frame.reset_index() if ts_column is None else frame.copy()
    column = "ts" if ts_column is None else ts_column
    out = out.reset_index(drop=True)
    if column in out.columns:
        times = display_times(out[column].to_numpy(dtype=np.int64), tz)
        out.insert(0, name, times.map(lambda t: t.isoformat(timespec="milliseconds")))
    return out


# A spreadsheet runs a text cell starting with one of these as a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would run it as a formula.

    Excel, LibreOffice and Google Sheets treat a cell starting with = + - @ tab or CR as a
    formula (``=cmd|' /C calc'!A0`` starts a program); a leading ``'`` makes it plain text
    and is not displayed. Numbers written as text (``-0.5``, ``+3``, ``-1e-05``) are data
    a spreadsheet reads as numbers, so they are left alone.
    """
    if not text or text[0] not in FORMULA_STARTS:
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every formula-like text cell neutralised (``neutralise_cell``);
    number columns are untouched (a negative number is not a formula). A copy only when
    a cell changes."""
    out = frame
    for column in frame.columns:
        values = frame[column]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values.dtype)):
            continue
        first = values.map(lambda v: v[:1] if isinstance(v, str) else "")
        suspect = first.isin(FORMULA_STARTS).to_numpy(dtype=bool)
        if suspect.any():
            if out is frame:
                out = frame.copy()
            out.loc[suspect, column] = values[suspect].map(neutralise_cell)
    return out


CSV_FLOAT_FORMAT = "%.15g"  # see to_csv_bytes


def to_csv_bytes(frame: pd.DataFrame, tz: str, ts_column: str | None = None) -> bytes:
    """CSV with epoch-ms ``ts`` and an ISO ``time`` column in ``tz``; floats written with
    15 significant digits: the value to 5e-15 relative, without binary noise such as
    0.30000000000000004 (``CSV_FLOAT_FORMAT``).
    Text cells a spreadsheet would run as a formula are neutralised (``neutralise_cell``)."""
    buffer = io.StringIO()
    spreadsheet_safe(with_time_column(frame, tz, ts_column)).to_csv(
        buffer, index=False, float_format=CSV_FLOAT_FORMAT)
    return buffer.getvalue().encode("utf-8")


# --------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------


def tick_upload_bars(trades: pd.DataFrame, side_known: bool) -> pd.DataFrame:
    """1 s bars per symbol from uploaded trades, in ``save_uploaded_bars``'s layout."""
    frames = []
    for symbol, group in trades.groupby("symbol", sort=True):
        ticks = group[["ts", "trade_id", "price", "qty"]]
        if side_known:
            ticks = ticks.assign(is_buyer_maker=group["is_buyer_maker"].astype(float))
        bars = analytics.resample(ticks, "1s")
        frames.append(bars.reset_index().assign(symbol=symbol))
    if not frames:
        return pd.DataFrame(columns=["symbol", "ts", "open", "high", "low", "close", "volume",
                                     "vwap"])
    return pd.concat(frames, ignore_index=True)


def save_uploaded(upload_db_path: str, name: str, bars: pd.DataFrame) -> int:
    """Store bars under ``name`` in the upload database (own writable connection)."""
    with writing(upload_db_path) as conn:
        return database.save_uploaded_bars(conn, name, bars)


# --------------------------------------------------------------------------------------
# One pair's latest analytics, for the REST API and paper trading
# --------------------------------------------------------------------------------------


def pair_view(db_path: str, y: str, x: str, *, timeframe: str, window: int,
              z_window: int | None, method: str, log_prices: bool, lookback_ms: int,
              end_ms: int | None = None) -> PairView:
    """The page's pair view (``load_pair_view``) of live bars over ``[anchor - lookback,
    anchor)``, computed on the history its windows need.

    ``anchor`` is ``end_ms`` (bars opening before it), or the newest stored bar of the
    pair.
    """
    source = DataSource("live", db_path)
    anchor = end_ms if end_ms is not None else max(
        (t for t in latest_bar_times(source, (y, x)) if t is not None), default=None)
    return load_pair_view(source, y, x, timeframe, lookback_ms, anchor, method, window,
                          log_prices, z_window=z_window, closed_before=end_ms)


def pair_summary(view: PairView) -> dict:
    """The live strip's numbers plus alpha and the half-life (NaN where not ready).

    Keys: ``ts`` (newest aligned bar), ``last_y, last_x, beta, alpha, spread, z,
    correlation, half_life_bars, half_life_s, nobs, needed, enough_data``.
    """
    live = live_values(view)
    frame = view.signals.frame
    hedged = frame[frame["beta"].notna()]
    life = analytics.half_life(frame["spread"])
    return {"ts": live.last_ts, "last_y": live.last_y, "last_x": live.last_x,
            "beta": live.beta, "alpha": float(hedged["alpha"].iloc[-1]) if len(hedged)
            else math.nan, "spread": live.spread, "z": live.z,
            "correlation": live.correlation, "half_life_bars": life.bars,
            "half_life_s": life.seconds(view.bar_seconds) if math.isfinite(life.bars)
            else math.nan,
            "nobs": view.signals.nobs, "needed": view.signals.needed,
            "enough_data": view.signals.enough_data}


# --------------------------------------------------------------------------------------
# Tables for people (issue 15): labels, times in the display zone
# --------------------------------------------------------------------------------------

COLUMN_LABELS = {  # where "_" -> " " is not enough
    "ts": "time (epoch ms)", "y_close": "y close", "x_close": "x close",
    "cooldown_s": "cooldown (s)", "window": "window (bars)", "z_window": "z window (bars)",
    "log_prices": "log prices", "webhook_url": "webhook", "bars_held": "bars held",
    "volatility_per_bar": "volatility per bar", "trades/s": "trades/s", "age (s)": "age (s)",
    # paper positions
    "upnl": "unrealised P&L", "upnl_y": "y unrealised P&L", "upnl_x": "x unrealised P&L",
    "pnl": "P&L", "gross_pnl": "gross P&L", "holding_s": "holding (s)",
    "max_holding_s": "max holding (s)", "fee_bps": "fee (bps)", "slippage_bps": "slippage (bps)",
    "qty_y": "y quantity", "qty_x": "x quantity", "last_y": "y last", "last_x": "x last",
    "entry_fill_y": "y entry fill", "entry_fill_x": "x entry fill", "exit_fill_y": "y exit fill",
    "exit_fill_x": "x exit fill", "entry_ref_y": "y entry reference",
    "entry_ref_x": "x entry reference", "exit_ref_y": "y exit reference",
    "exit_ref_x": "x exit reference",
}
TIME_COLUMN_LABELS = {"entry_ts": "entry time", "exit_ts": "exit time", "ts": "time",
                      "created_ms": "created", "updated_ms": "updated", "checked_ms": "checked",
                      "last_fired_ms": "last fired", "as_of_ts": "bar time",
                      "delivered_ms": "delivered", "detected_at": "detected",
                      "first_ts": "first bar", "last_ts": "last bar", "noted_ms": "repaired",
                      "requested_ms": "opened", "closed_ms": "closed",
                      "entry_ts_y": "y entry time", "entry_ts_x": "x entry time",
                      "exit_ts_y": "y exit time", "exit_ts_x": "x exit time"}


def column_label(name) -> str:
    """A column or row name as people read it: ``volatility_per_bar`` -> "volatility per
    bar", ``cooldown_s`` -> "cooldown (s)"."""
    text = str(name)
    return COLUMN_LABELS.get(text, text.replace("_", " "))


def is_epoch_ms_column(name, values: pd.Series) -> bool:
    """Epoch-millisecond columns by the project's naming (``ts``, ``*_ts``, ``*_ms``,
    ``detected_at``) and a numeric type."""
    text = str(name)
    named = text in TIME_COLUMN_LABELS or text.endswith(("_ts", "_ms"))
    return named and pd.api.types.is_numeric_dtype(values) \
        and not pd.api.types.is_bool_dtype(values)


def readable_times(frame: pd.DataFrame, tz: str) -> pd.DataFrame:
    """A copy where each epoch-ms column has a companion column of wall-clock times in
    ``tz`` ("entry time", "last fired", ...: ``TIME_COLUMN_LABELS``) right after it; the
    epoch columns stay (the page hides them) so that code reading the table keeps them.
    Missing times (NaN) stay empty."""
    out = frame.copy()
    for name in [c for c in frame.columns if is_epoch_ms_column(c, frame[c])]:
        label = TIME_COLUMN_LABELS.get(str(name), column_label(str(name)[:-3]) + " time")
        if label in out.columns:
            continue  # ``with_time_column`` already wrote it
        values = pd.to_numeric(frame[name], errors="coerce")
        known = values.notna().to_numpy()
        text = np.full(len(values), "", dtype=object)
        if known.any():
            times = display_times(values[known].to_numpy(dtype=np.int64), tz)
            text[known] = times.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S")).to_numpy()
        out.insert(out.columns.get_loc(name) + 1, label, text)
    return out


def rule_state_text(state: str, events: int) -> str:
    """The rules table's state: a rule that fired was checked, even when the evaluator
    has not stored its status yet (it writes status and event separately)."""
    if state == "not checked yet" and events > 0:
        return "fired (status pending)"
    return state


def hurst_note(hurst: float) -> str:
    """Why a Hurst estimate is outside 0..1 or near 0, for a caption ("" when ordinary)."""
    if not math.isfinite(hurst):
        return ""
    if hurst < 0 or hurst > 1:
        return (f"Hurst {hurst:.3f} is outside its 0–1 range: the estimate on this spread "
                "is not reliable (too few bars, or a spread that barely moves); read it as "
                "'no clear persistence or reversion'")
    if hurst < 0.1:
        return (f"Hurst {hurst:.3f}: near 0, i.e. a strongly mean-reverting spread at these "
                "lags (0.5 = random walk, above 0.5 = trending)")
    return ""


UPLOAD_API_WORDS = {  # names in uploads' messages -> the Data tab's fields
    "timeframe=": 'the "bar size to keep" choice above',
    "default_symbol=": 'the "symbol for files without a symbol column" field',
}


def upload_words(message: str) -> str:
    """An upload message with the library's argument names replaced by the page's fields."""
    for api_name, words in UPLOAD_API_WORDS.items():
        message = message.replace(f"({api_name})", f"({words})").replace(api_name, words)
    return message


def counts_text(counts) -> str:
    """``{"BTCUSDT": 2512, "ETHUSDT": 2488}`` -> "BTCUSDT 2,512 · ETHUSDT 2,488"."""
    items = dict(counts).items()
    return " · ".join(f"{key} {int(value):,}" for key, value in items) or "—"
