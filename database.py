"""SQLite storage: ticks, 1-second bars, trade-id gaps and uploaded bars.

Given a ``postgresql://`` URL instead of a file path, ``connect`` returns a PostgreSQL
connection and the same functions store and read the same tables on a server: see
``database_postgres`` (partitioned ticks, many writers). The notes below are SQLite's.

One writer thread owns one connection and calls ``TickWriter.write(batch)`` once per batch;
every page reads on its own connections (``connect(path, readonly=True)``). The file is in
WAL mode, so readers never block the writer and the writer never blocks readers; two writers
queue behind each other for up to the busy timeout (5 s).

Tables (column names are part of the contract; extra columns are ours)

- ``ticks(symbol, trade_id, ts, price, qty, is_buyer_maker, received_ms)`` - one row per
  trade, ``symbol`` upper-case, ``ts`` the exchange trade time and ``received_ms`` the local
  receive time (epoch ms). ``PRIMARY KEY (symbol, ts, trade_id) WITHOUT ROWID`` plus
  ``UNIQUE INDEX ticks_symbol_trade_id (symbol, trade_id)``.
- ``bars_1s(symbol, ts, open, high, low, close, volume, buy_volume, trades, notional,
  first_ts, first_id, last_ts, last_id)`` - ``ts`` is the bar open (a multiple of 1000);
  ``first_*``/``last_*`` are the (ts, trade_id) of the trades that gave ``open``/``close``,
  which is what keeps them right when trades arrive out of order.
- ``bars_1m`` - the same columns per minute (``ts`` a multiple of 60000), merged from
  exactly the rows each batch inserted, in the batch's transaction, and pruned with the
  1 s bars; 1-minute and coarser reads come from it. Files of schema version 1 get it built
  from their 1 s bars once, when a writable connection opens them.
- ``gaps(symbol, from_id, to_id, detected_at, from_ts, to_ts)`` - missing trade ids, both
  ends inclusive; ``detected_at`` is local epoch ms; ``from_ts`` is the exchange time of the
  trade just before the gap and ``to_ts`` of the trade that revealed it (NULL when unknown).
- ``trade_id_cursor(symbol, last_id, last_ts)`` - highest trade id seen per symbol, written
  in the same transaction as the ticks, so a restart measures the downtime gap from the last
  id really seen (placeholder ids included), not from the last id stored.
- ``uploaded_bars(source, symbol, ts, open, high, low, close, volume, vwap)`` - bars from
  user files, kept apart from live data, ``PRIMARY KEY (source, symbol, ts)``.
- ``meta(key, value)`` - ``schema_version``; the alert evaluator's lease
  (``alert_evaluator``) and which default alert rules were added (``alert_defaults:Y/X``).
- Alert rules and events (section "Alert rules and events" at the end; used by ``alerts.py``):
  ``alert_rules`` (one row per rule), ``alert_events`` (one row per firing, kept when its rule
  is deleted, with copies of the rule's name, metric and subject) and ``alert_status`` (the
  evaluator's latest verdict and trigger state per rule, readable by every page).
- ``watchlist(y_symbol, x_symbol, timeframe, beta, half_life, eg_qvalue, added_ms)`` - pairs
  pinned from the Pairs tab (section "Pair watchlist" at the end), created on first pin.

Why this tick layout. Measured by ``bench/bench_database.py`` on the 2-core dev machine
(other jobs running; four runs, ranges shown): 2M synthetic ticks, 2 symbols, 24 h,
1000-row ``INSERT OR IGNORE`` transactions through ``TickWriter`` (1 s bar upkeep, gap
tracking and cursor included). "write" = 24 h density (~12 trades/s/symbol, one bar upsert
per ~12 ticks); "burst" = 400k ticks at 40k/s (one bar upsert per ~1000 ticks); "ticks
only" = bare executemany, no bars; "read 1 h" = ``read_ticks`` of the last hour of one
symbol (41k rows, warm, best of 7); size after a WAL checkpoint.

==========================================  ===========  ==========  ==========  ========  =====
layout                                      write rows/s  burst       ticks only  read 1 h  MB/1M
==========================================  ===========  ==========  ==========  ========  =====
(a) PK(symbol, ts, trade_id) WITHOUT ROWID    360-450k    350-610k    560-785k    31-33 ms     64
(b) (a) + UNIQUE(symbol, trade_id) [chosen]   280-355k    390-425k    435-490k    29-31 ms     89
(c) PK(symbol, trade_id) WITHOUT ROWID        290-365k    400-455k    470-530k    41-46 ms     89
    + INDEX(symbol, ts)
==========================================  ===========  ==========  ==========  ========  =====

(b) writes ~25 % slower than (a) and takes ~40 % more disk (~0.3-0.5 GB per symbol-day at
3-6M trades/day), reads the same, and still writes >= 280k rows/s in every run: well above
the ~150k rows/s the write path may cost for the collector's 40k ticks/s with the WebSocket
receive in the same process. In exchange ``(symbol, trade_id)`` is unique by constraint, not
only because a trade's exchange time never changes, and the unique index makes the lookups
the writer needs (highest stored id, which ids of a batch are stored already) index seeks.
(c) writes like (b) at the same size but reads time ranges ~1.4x slower (a second B-tree
lookup per row). The bar upkeep + gap tracking cost 10-15 % of the write path at burst
density and 20-40 % at 24 h density (more seconds per batch).

Bars: the rows actually inserted are aggregated per (symbol, second) in Python and merged
into ``bars_1s`` by an upsert that adds the sums and keeps the open of the smaller and the
close of the larger (ts, trade_id). When ``total_changes`` shows that some rows of a batch
were duplicates, the insert is undone to a savepoint and redone with only the rows not
stored yet (one ``json_each`` index lookup per symbol), so a duplicate is never counted
twice and no second is re-read from ``ticks``. Merging partial bars is exact in any arrival
order because every field is a sum, a max/min or an arg-min/arg-max.

Every value goes through SQL parameters; the only SQL text built at run time is fixed.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import os
import pathlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

import database_postgres
from analytics import TIMEFRAME_MS
from writer_lock import WriterLock, WriterLockError  # noqa: F401 (part of this API)

log = logging.getLogger(__name__)

# 2: ``bars_1m`` (kept with ``bars_1s``); a version-1 file gets it built once at open.
SCHEMA_VERSION = 2
BUSY_TIMEOUT_MS = 5_000
# Page cache per connection (KiB, as a negative cache_size): a day of one symbol's 1 s bars
# is ~10 MB, so repeated bucket reads stay in memory (~15 % faster warm reads than 2 MiB).
CACHE_KIB = 65_536

# Shared with analytics so a timeframe means the same bucket everywhere.
TICK_COLUMNS = ("ts", "trade_id", "price", "qty", "is_buyer_maker")

# A trade id more than this far below the highest id seen, with an exchange time later than
# any seen, starts a new id sequence (see TickWriter Notes).
RESET_ID_DISTANCE = 1_000

_MIN_TS = -(2**63)
_MAX_TS = 2**63 - 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS ticks (
        symbol TEXT NOT NULL,             -- upper case, e.g. BTCUSDT
        trade_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,              -- exchange trade time, epoch ms
        price REAL NOT NULL,
        qty REAL NOT NULL,
        is_buyer_maker INTEGER NOT NULL,  -- 1: the seller was the taker
        received_ms INTEGER NOT NULL,     -- local receive time, epoch ms
        PRIMARY KEY (symbol, ts, trade_id)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS ticks_symbol_trade_id ON ticks (symbol, trade_id)",
    """CREATE TABLE IF NOT EXISTS bars_1s (
        symbol TEXT NOT NULL,
        ts INTEGER NOT NULL,              -- bar open, epoch ms, multiple of 1000
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        close REAL NOT NULL,
        volume REAL NOT NULL,
        buy_volume REAL NOT NULL,         -- taker-buy volume (is_buyer_maker = 0)
        trades INTEGER NOT NULL,
        notional REAL NOT NULL,           -- sum(price * qty)
        first_ts INTEGER NOT NULL,        -- (first_ts, first_id): the trade giving open
        first_id INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,         -- (last_ts, last_id): the trade giving close
        last_id INTEGER NOT NULL,
        PRIMARY KEY (symbol, ts)
    ) WITHOUT ROWID""",
    # The same bars per minute, kept in the same transactions as bars_1s (see TickWriter):
    # a day of 1-minute reads is 1,440 rows instead of aggregating 86,400.
    """CREATE TABLE IF NOT EXISTS bars_1m (
        symbol TEXT NOT NULL,
        ts INTEGER NOT NULL,              -- bar open, epoch ms, multiple of 60000
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        close REAL NOT NULL,
        volume REAL NOT NULL,
        buy_volume REAL NOT NULL,
        trades INTEGER NOT NULL,
        notional REAL NOT NULL,
        first_ts INTEGER NOT NULL,
        first_id INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        PRIMARY KEY (symbol, ts)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS gaps (
        symbol TEXT NOT NULL,
        from_id INTEGER NOT NULL,         -- first missing trade id
        to_id INTEGER NOT NULL,           -- last missing trade id (inclusive)
        detected_at INTEGER NOT NULL,     -- local epoch ms
        from_ts INTEGER,                  -- exchange time of the trade before the gap
        to_ts INTEGER                     -- exchange time of the trade that revealed it
    )""",
    "CREATE INDEX IF NOT EXISTS gaps_symbol_from_id ON gaps (symbol, from_id)",
    """CREATE TABLE IF NOT EXISTS trade_id_cursor (
        symbol TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL,         -- highest trade id seen (stored or placeholder)
        last_ts INTEGER                   -- latest exchange time of a stored trade
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS uploaded_bars (
        source TEXT NOT NULL,             -- file name
        symbol TEXT NOT NULL,
        ts INTEGER NOT NULL,              -- bar open, epoch ms
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        close REAL NOT NULL,
        volume REAL,
        vwap REAL,
        PRIMARY KEY (source, symbol, ts)
    ) WITHOUT ROWID""",
    # ---- Alert rules and events (see the section at the end of this module) -------------
    """CREATE TABLE IF NOT EXISTS alert_rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        metric TEXT NOT NULL,             -- alerts.METRICS key, e.g. zscore
        symbol TEXT,                      -- one-symbol metrics (upper case), else NULL
        y_symbol TEXT,                    -- pair metrics: dependent leg, else NULL
        x_symbol TEXT,                    -- pair metrics: independent leg, else NULL
        timeframe TEXT NOT NULL,          -- bar size, e.g. 1s
        window INTEGER NOT NULL,          -- bars (hedge window for pairs)
        z_window INTEGER NOT NULL,        -- bars in the z-score window
        method TEXT NOT NULL,             -- hedge method (pairs)
        log_prices INTEGER NOT NULL,      -- 1: pair model in log prices
        comparison TEXT NOT NULL,         -- >, <, crosses_above, crosses_below, abs>
        threshold REAL NOT NULL,
        cooldown_s REAL NOT NULL,
        hysteresis REAL NOT NULL,
        enabled INTEGER NOT NULL,
        webhook_url TEXT,                 -- NULL: no webhook
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL       -- changes on every edit: the rule's version
    )""",
    """CREATE TABLE IF NOT EXISTS alert_events (
        id INTEGER PRIMARY KEY,
        rule_id INTEGER NOT NULL,         -- may name a deleted rule
        ts INTEGER NOT NULL,              -- firing time, epoch ms (local clock)
        as_of_ts INTEGER,                 -- open of the bar the value belongs to
        rule_name TEXT NOT NULL,          -- copies: history stays readable after edits
        metric TEXT NOT NULL,
        subject TEXT NOT NULL,            -- BTCUSDT or BTCUSDT/ETHUSDT
        comparison TEXT NOT NULL,
        value REAL NOT NULL,
        threshold REAL NOT NULL,
        message TEXT NOT NULL,
        delivered TEXT NOT NULL,          -- 'not requested' | 'pending' | 'ok' | 'failed: ...'
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_ms INTEGER              -- when the webhook result was recorded
    )""",
    "CREATE INDEX IF NOT EXISTS alert_events_rule_id ON alert_events (rule_id, id)",
    """CREATE TABLE IF NOT EXISTS alert_status (
        rule_id INTEGER PRIMARY KEY,
        state TEXT NOT NULL,              -- waiting for data | armed | cooling down | ...
        value REAL,                       -- latest metric value (NULL while waiting)
        checked_ms INTEGER NOT NULL,
        detail TEXT NOT NULL,             -- e.g. 'waiting for data: needs 120 bars, has 14'
        armed INTEGER NOT NULL,           -- trigger state (alerts.RuleState)
        last_fired_ms INTEGER,
        previous_value REAL,
        as_of_ts INTEGER                  -- bar the latest value belongs to
    )""",
)

_INSERT_TICK = """INSERT OR IGNORE INTO ticks
    (symbol, trade_id, ts, price, qty, is_buyer_maker, received_ms)
    VALUES (?, ?, ?, ?, ?, ?, ?)"""

_BAR_VALUES = """INSERT INTO bars_1s
    (symbol, ts, open, high, low, close, volume, buy_volume, trades, notional,
     first_ts, first_id, last_ts, last_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

# Adds a partial bar (trades new to the table) to the stored one. In an UPDATE every
# right-hand side sees the old row, so the CASEs compare against the stored first/last.
# The stored row is named ``bar`` (PostgreSQL refuses unqualified names here as ambiguous;
# the same SQL runs on both backends).
_MERGE_BAR = _BAR_VALUES.replace("INSERT INTO bars_1s", "INSERT INTO bars_1s AS bar", 1) + """
    ON CONFLICT (symbol, ts) DO UPDATE SET
        open = CASE WHEN (excluded.first_ts, excluded.first_id) < (bar.first_ts, bar.first_id)
                    THEN excluded.open ELSE bar.open END,
        first_ts = CASE WHEN (excluded.first_ts, excluded.first_id) < (bar.first_ts, bar.first_id)
                        THEN excluded.first_ts ELSE bar.first_ts END,
        first_id = CASE WHEN (excluded.first_ts, excluded.first_id) < (bar.first_ts, bar.first_id)
                        THEN excluded.first_id ELSE bar.first_id END,
        close = CASE WHEN (excluded.last_ts, excluded.last_id) > (bar.last_ts, bar.last_id)
                     THEN excluded.close ELSE bar.close END,
        last_ts = CASE WHEN (excluded.last_ts, excluded.last_id) > (bar.last_ts, bar.last_id)
                       THEN excluded.last_ts ELSE bar.last_ts END,
        last_id = CASE WHEN (excluded.last_ts, excluded.last_id) > (bar.last_ts, bar.last_id)
                       THEN excluded.last_id ELSE bar.last_id END,
        high = CASE WHEN excluded.high > bar.high THEN excluded.high ELSE bar.high END,
        low = CASE WHEN excluded.low < bar.low THEN excluded.low ELSE bar.low END,
        volume = bar.volume + excluded.volume,
        buy_volume = bar.buy_volume + excluded.buy_volume,
        trades = bar.trades + excluded.trades,
        notional = bar.notional + excluded.notional"""

_MERGE_BAR_1M = _MERGE_BAR.replace("INSERT INTO bars_1s", "INSERT INTO bars_1m", 1)

# Ticks go in as multi-row INSERTs of this many rows (7 parameters each, far below SQLite's
# 32,766): one statement step per chunk instead of one per row, so the sqlite3 module drops
# the GIL once per chunk and the receive thread is not kept waiting behind each row.
TICK_CHUNK_ROWS = 250
_INSERT_TICK_CHUNK = _INSERT_TICK.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * TICK_CHUNK_ROWS), 1)

# Minute bars from 1 s bars (prune: one symbol's cut minute; migration: every symbol): like
# _READ_BUCKETS, per symbol and minute, with the (ts, trade_id) of the trades that gave open
# and close. ``symbol = :symbol`` keeps the ts range on the primary key: a range on symbol
# (BETWEEN) would make the one-minute rebuild of every prune step scan the symbol's history.
_REBUILD_MINUTES = """
    INSERT INTO bars_1m (symbol, ts, open, high, low, close, volume, buy_volume, trades,
                         notional, first_ts, first_id, last_ts, last_id)
    WITH buckets AS (
        SELECT symbol, ts - ts % 60000 AS bucket, min(ts) AS first_bar, max(ts) AS last_bar,
               max(high) AS high, min(low) AS low, sum(volume) AS volume,
               sum(buy_volume) AS buy_volume, sum(trades) AS trades,
               sum(notional) AS notional
        FROM bars_1s
        WHERE symbol = :symbol AND ts >= :start AND ts < :end
        GROUP BY symbol, bucket
    )
    SELECT b.symbol, b.bucket, o.open, b.high, b.low, c.close, b.volume, b.buy_volume,
           b.trades, b.notional, o.first_ts, o.first_id, c.last_ts, c.last_id
    FROM buckets AS b
    JOIN bars_1s AS o ON o.symbol = b.symbol AND o.ts = b.first_bar
    JOIN bars_1s AS c ON c.symbol = b.symbol AND c.ts = b.last_bar"""
_REBUILD_ALL_MINUTES = _REBUILD_MINUTES.replace("symbol = :symbol AND ", "", 1)

_UPSERT_CURSOR = """INSERT INTO trade_id_cursor (symbol, last_id, last_ts) VALUES (?, ?, ?)
    ON CONFLICT (symbol) DO UPDATE SET last_id = excluded.last_id, last_ts = excluded.last_ts"""

_INSERT_GAP = """INSERT INTO gaps (symbol, from_id, to_id, detected_at, from_ts, to_ts)
    VALUES (?, ?, ?, ?, ?, ?)"""

# Buckets of 1 s bars: aggregates per bucket, then the first and last 1 s bar of each
# bucket are joined back by primary key for open and close.
_READ_BUCKETS = """
    WITH buckets AS (
        SELECT ts - ts % :size AS bucket, min(ts) AS first_bar, max(ts) AS last_bar,
               max(high) AS high, min(low) AS low, sum(volume) AS volume,
               sum(buy_volume) AS buy_volume, sum(trades) AS trades,
               sum(notional) AS notional
        FROM bars_1s
        WHERE symbol = :symbol AND ts >= :start AND ts < :end
        GROUP BY bucket
    )
    SELECT b.bucket, o.open, b.high, b.low, c.close, b.volume, b.buy_volume, b.trades,
           b.notional
    FROM buckets AS b
    JOIN bars_1s AS o ON o.symbol = :symbol AND o.ts = b.first_bar
    JOIN bars_1s AS c ON c.symbol = :symbol AND c.ts = b.last_bar
    ORDER BY b.bucket"""

_READ_TICKS_OLDEST = """SELECT ts, trade_id, price, qty, is_buyer_maker FROM ticks
    WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts, trade_id LIMIT ?"""
_READ_TICKS_NEWEST = """SELECT ts, trade_id, price, qty, is_buyer_maker FROM ticks
    WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts DESC, trade_id DESC LIMIT ?"""

_READ_GAPS = """SELECT symbol, from_id, to_id, to_id - from_id + 1, detected_at, from_ts, to_ts
    FROM gaps"""

_READ_1S = """SELECT ts, open, high, low, close, volume, buy_volume, trades, notional
    FROM bars_1s WHERE symbol = :symbol AND ts >= :start AND ts < :end ORDER BY ts"""

# The same two reads on the minute bars: 1 min as stored, coarser buckets built from them.
_READ_1M = _READ_1S.replace("FROM bars_1s", "FROM bars_1m", 1)
_READ_MINUTE_BUCKETS = _READ_BUCKETS.replace("bars_1s", "bars_1m")

# Uploaded bars: volume and vwap may be unknown (NULL); an aggregate over a bucket is
# known only when every bar in it is.
_READ_UPLOADED = """SELECT ts, open, high, low, close, volume,
        NULL, NULL, vwap * volume, vwap
    FROM uploaded_bars WHERE source = :source AND symbol = :symbol ORDER BY ts"""

_READ_UPLOADED_BUCKETS = """
    WITH buckets AS (
        SELECT ts - ts % :size AS bucket, min(ts) AS first_bar, max(ts) AS last_bar,
               max(high) AS high, min(low) AS low,
               CASE WHEN count(volume) = count(*) THEN sum(volume) END AS volume,
               CASE WHEN count(vwap * volume) = count(*) THEN sum(vwap * volume) END
                   AS notional
        FROM uploaded_bars
        WHERE source = :source AND symbol = :symbol
        GROUP BY bucket
    )
    SELECT b.bucket, o.open, b.high, b.low, c.close, b.volume, NULL, NULL, b.notional,
           CASE WHEN b.volume > 0 THEN b.notional / b.volume END
    FROM buckets AS b
    JOIN uploaded_bars AS o ON o.source = :source AND o.symbol = :symbol
                           AND o.ts = b.first_bar
    JOIN uploaded_bars AS c ON c.source = :source AND c.symbol = :symbol
                           AND c.ts = b.last_bar
    ORDER BY b.bucket"""


# --------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------


def connect(path: str | os.PathLike, *, readonly: bool = False,
            busy_timeout_ms: int = BUSY_TIMEOUT_MS,
            check_same_thread: bool | None = None) -> sqlite3.Connection:
    """Open the database file in WAL mode, creating it and its schema unless read-only.

    Parameters
    ----------
    path : str or os.PathLike
        The database file. Its directory is created when missing (writable connections).
    readonly : bool, default False
        Open with ``mode=ro``: no schema changes, no writes (``sqlite3.OperationalError``
        "attempt to write a readonly database"). The file must exist and must have been
        initialised by a writable ``connect`` (which puts it in WAL mode).
    busy_timeout_ms : int, default 5000
        How long a statement waits for a lock held by another connection before raising
        ``sqlite3.OperationalError: database is locked``.
    check_same_thread : bool or None, default None
        None means False for read-only connections and True for writable ones. A reader the
        page caches (``st.cache_resource``) is used from several script threads, which
        Python's ``sqlite3`` allows only with ``check_same_thread=False``; SQLite itself
        is built serialised here (``sqlite3.threadsafety == 3``), so that is safe for reads.
        The writer belongs to one thread.

    Returns
    -------
    sqlite3.Connection
        In autocommit mode (``isolation_level=None``): every statement is its own
        transaction unless the caller issues ``BEGIN``; ``TickWriter.write``, ``prune`` and
        ``save_uploaded_bars`` run ``BEGIN IMMEDIATE`` ... ``COMMIT`` themselves.

    Notes
    -----
    Settings: ``journal_mode=WAL`` (stored in the file), ``synchronous=NORMAL`` (a power
    cut may lose the last transactions, never corrupts), ``busy_timeout``, a 64 MiB page
    cache (``CACHE_KIB``). With WAL a reader sees the last committed state and is never
    blocked by the writer.

    Raises ``ValueError`` for ``":memory:"`` (WAL needs a file), ``FileNotFoundError`` for
    a missing file opened read-only, ``RuntimeError`` when the file was written by a newer
    schema version.
    """
    path = os.fspath(path)
    if database_postgres.is_url(path):  # a server: see database_postgres
        return database_postgres.connect(path, readonly=readonly)
    if path == ":memory:" or not path:
        raise ValueError(f"path ({path!r}) must name a file: WAL mode needs one")
    if busy_timeout_ms < 0:
        raise ValueError(f"busy_timeout_ms ({busy_timeout_ms}) must be >= 0")
    if check_same_thread is None:
        check_same_thread = not readonly
    timeout_s = busy_timeout_ms / 1000
    if readonly:
        if not os.path.exists(path):
            raise FileNotFoundError(f"database {path!r} does not exist (opened read-only)")
        uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None,
                               check_same_thread=check_same_thread)
        _set_cache_size(conn)
        return conn
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None,
                           check_same_thread=check_same_thread)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"database {path!r} could not switch to WAL (mode {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _set_cache_size(conn)
        _create_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _set_cache_size(conn: sqlite3.Connection) -> None:
    # PRAGMA takes no parameters; CACHE_KIB is a module constant, not user input.
    conn.execute(f"PRAGMA cache_size = -{int(CACHE_KIB)}")


def _create_schema(conn: sqlite3.Connection, path: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA + KLINE_SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        version = conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        if int(version) == 1:  # written before bars_1m: build it from the 1 s bars, once
            started = time.perf_counter()
            minutes = _rebuild_minutes(conn)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                         (str(SCHEMA_VERSION),))
            version = SCHEMA_VERSION
            log.info("database %s: built %d minute bars from its 1 s bars in %.2f s (schema "
                     "version 1 -> %d)", path, minutes, time.perf_counter() - started,
                     SCHEMA_VERSION)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if int(version) != SCHEMA_VERSION:
        raise RuntimeError(
            f"database {path!r} has schema version {version}; this program reads version "
            f"{SCHEMA_VERSION}: use a new file (CRYPTO_DB_PATH) or the matching program")


def is_server(target: str | os.PathLike) -> bool:
    """True for a PostgreSQL URL (``database_postgres``), False for a SQLite file path."""
    return database_postgres.is_url(os.fspath(target))


def database_exists(target: str | os.PathLike) -> bool:
    """True when ``target`` is a PostgreSQL URL (the server answers at ``connect``) or an
    existing SQLite file: where callers used ``os.path.exists`` before a read-only open."""
    target = os.fspath(target)
    return database_postgres.is_url(target) or os.path.exists(target)


def database_size_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of the database: the file plus its ``-wal`` and ``-shm`` files.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; missing files count as 0. A PostgreSQL URL: the server's
        ``pg_database_size`` of that database (0, with a warning, when it cannot be asked).

    Returns
    -------
    int
    """
    path = os.fspath(path)
    if database_postgres.is_url(path):
        try:
            conn = connect(path, readonly=True)
            try:
                return database_postgres.database_size_bytes(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:  # the Health tab shows 0 rather than failing
            log.warning("size of %s unknown: %s", database_postgres.describe(path), exc)
            return 0
    total = 0
    for name in (path, path + "-wal", path + "-shm"):
        try:
            total += os.path.getsize(name)
        except FileNotFoundError:
            continue
    return total


# --------------------------------------------------------------------------------------
# Writing ticks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteStats:
    """What one ``TickWriter.write`` (or ``import_ticks``) did.

    Attributes
    ----------
    inserted : int
        Trades stored.
    duplicates : int
        Trades given but not stored because they were stored already or repeated in the
        batch (``len(trades) - inserted``).
    gaps_opened : int
        Gap rows recorded (a jump in trade ids).
    gaps_filled : int
        Gap rows removed because late trades (or placeholder ids) filled them completely.
        Shrinking or splitting a gap counts in neither.
    """

    inserted: int
    duplicates: int
    gaps_opened: int
    gaps_filled: int

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(self.inserted + other.inserted, self.duplicates + other.duplicates,
                          self.gaps_opened + other.gaps_opened,
                          self.gaps_filled + other.gaps_filled)


class TickWriter:
    """Stores trade batches with their 1 s bars and trade-id gaps, one transaction each.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection from ``connect``. The writer and its connection belong to one
        thread. Id tracking lives in the file (``trade_id_cursor``), so the writer holds no
        state of its own and a new writer carries on where the last one stopped.

    Notes
    -----
    Gap tracking, per symbol:

    - The highest trade id seen starts from ``trade_id_cursor`` (the last id this database
      saw, placeholders included) or, without a cursor row, from the highest stored id. So
      the first trade after a restart reveals the downtime as a gap.
    - An id jump ``new > last + 1`` records the gap ``(last + 1, new - 1)``. Ids are taken
      in sorted order within a batch, so trades that merely arrive out of order inside one
      batch never produce a gap.
    - An id ``<= last`` is late (or a duplicate). If it lies in a recorded gap - and its
      exchange time is not after ``to_ts``, the time of the trade that revealed the gap - it
      shrinks the gap (at an edge), splits it (inside) or deletes it (last missing id).
    - ``seen_ids`` (placeholder frames that consume ids, e.g. futures ``"X":"NA"``) count
      as seen without being stored, so they neither open false gaps nor leave them open.
    - New id sequence: a trade whose id is more than ``RESET_ID_DISTANCE`` (1000) below the
      highest id seen *and* whose exchange time is later than every trade seen cannot be a
      late trade of the same sequence (ids and times rise together), so tracking restarts
      at that id and no gap is recorded (a restarted simulated market, a different
      exchange account). A trade far below with an earlier time (a history import,
      a REST backfill) is late, not a reset. Recorded gaps of the old sequence stay.
      Because ``(symbol, trade_id)`` is unique, trades of a new sequence whose ids were
      already stored are dropped as duplicates (a warning is logged at the reset).

    The rows are inserted with ``executemany`` ``INSERT OR IGNORE`` and exactly the rows
    inserted are merged into ``bars_1s`` and ``bars_1m`` (see the module notes). If the
    transaction fails
    nothing changes, id tracking included, so the same batch can simply be written again.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def write(self, trades: Sequence[tuple], seen_ids: Iterable[tuple[str, int]] = ()
              ) -> WriteStats:
        """Store one batch of trades in one transaction.

        Parameters
        ----------
        trades : sequence of tuple
            ``(symbol UPPER, trade_id, ts, price, qty, is_buyer_maker, received_ms)``, in
            any order, duplicates allowed.
        seen_ids : iterable of (symbol, trade_id), optional
            Ids consumed by frames that were not stored (placeholder trades). They advance
            the gap tracking only.

        Returns
        -------
        WriteStats
        """
        trades = trades if isinstance(trades, list) else list(trades)
        seen = list(seen_ids)
        if not trades and not seen:
            return WriteStats(0, 0, 0, 0)
        ids_by_symbol = _ids_by_symbol(trades, seen)
        conn = self.conn
        if database_postgres.is_postgres(conn):  # + day partitions and per-symbol locks
            database_postgres.begin_write(conn, trades, ids_by_symbol)
        else:
            conn.execute("BEGIN IMMEDIATE")
        try:
            # Tracking starts from the state before this batch is inserted.
            bases = {symbol: self._tracked(symbol) for symbol in ids_by_symbol}
            inserted = _insert_ticks_and_bars(conn, trades)
            tracking, opened, filled = self._track_ids(ids_by_symbol, bases)
            conn.executemany(_UPSERT_CURSOR, [(symbol, last_id, last_ts) for symbol,
                                              (last_id, last_ts) in tracking.items()])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return WriteStats(inserted, len(trades) - inserted, opened, filled)

    def _tracked(self, symbol: str) -> tuple[int | None, int | None]:
        """(highest trade id seen, latest exchange time) before this batch, from the file.

        Read from ``trade_id_cursor`` on every batch (one primary-key seek) rather than
        cached, so a rolled-back batch leaves nothing behind and another writer's ids count.
        """
        row = self.conn.execute(
            "SELECT last_id, last_ts FROM trade_id_cursor WHERE symbol = ?", (symbol,)
        ).fetchone()
        if row is None:
            row = self.conn.execute(
                "SELECT trade_id, ts FROM ticks WHERE symbol = ? ORDER BY trade_id DESC LIMIT 1",
                (symbol,)).fetchone()
        return (row[0], row[1]) if row is not None else (None, None)

    def _track_ids(self, ids_by_symbol: dict[str, list[tuple[int, int | None]]],
                   bases: dict[str, tuple[int | None, int | None]]
                   ) -> tuple[dict[str, tuple[int, int | None]], int, int]:
        """Open and fill gaps for this batch; return the new tracking state and counts."""
        now = int(time.time() * 1000)
        tracking: dict[str, tuple[int, int | None]] = {}
        opened = filled = 0
        for symbol, entries in ids_by_symbol.items():
            last_id, last_ts = bases[symbol]
            for base_id, base_ts, segment in _split_sequences(symbol, entries, last_id,
                                                              last_ts):
                last_id, last_ts, seg_opened, seg_filled = self._track_segment(
                    symbol, segment, base_id, base_ts, now)
                opened += seg_opened
                filled += seg_filled
            tracking[symbol] = (last_id, last_ts)
        return tracking, opened, filled

    def _track_segment(self, symbol: str, entries: list[tuple[int, int | None]],
                       base_id: int | None, base_ts: int | None, now: int
                       ) -> tuple[int, int | None, int, int]:
        ids = sorted({trade_id for trade_id, _ in entries})
        if base_id is None:
            base_id = ids[0] - 1
        split = bisect.bisect_right(ids, base_id)
        late, new = ids[:split], ids[split:]
        stored_ts = [ts for trade_id, ts in entries if ts is not None and trade_id > base_id]
        last_ts = max(stored_ts) if stored_ts else base_ts
        if last_ts is not None and base_ts is not None:
            last_ts = max(last_ts, base_ts)
        opened = filled = 0
        consecutive = not new or new[-1] - base_id == len(new)
        ts_of = None if consecutive and not late else _ts_by_id(entries)
        if not consecutive:
            gap_rows = []
            prev_id, prev_ts = base_id, base_ts
            for trade_id in new:
                if trade_id > prev_id + 1:
                    gap_rows.append((symbol, prev_id + 1, trade_id - 1, now, prev_ts,
                                     ts_of.get(trade_id)))
                prev_id = trade_id
                prev_ts = ts_of.get(trade_id, prev_ts)
            self.conn.executemany(_INSERT_GAP, gap_rows)
            opened = len(gap_rows)
        if late:
            filled = self._fill_gaps(symbol, late, ts_of)
        return (new[-1] if new else base_id), last_ts, opened, filled

    def _fill_gaps(self, symbol: str, late: list[int], ts_of: dict[int, int]) -> int:
        """Carve late ids out of the recorded gaps; return how many gaps vanished."""
        gaps = self.conn.execute(
            "SELECT rowid, from_id, to_id, detected_at, from_ts, to_ts FROM gaps "
            "WHERE symbol = ? AND from_id <= ? AND to_id >= ?",
            (symbol, late[-1], late[0])).fetchall()
        filled = 0
        for rowid, from_id, to_id, detected_at, from_ts, to_ts in gaps:
            lo = bisect.bisect_left(late, from_id)
            hi = bisect.bisect_right(late, to_id)
            fillers = [trade_id for trade_id in late[lo:hi]
                       if to_ts is None or ts_of.get(trade_id) is None
                       or ts_of[trade_id] <= to_ts]
            if not fillers:
                continue
            pieces = []
            piece_from, piece_from_ts = from_id, from_ts
            for trade_id in fillers:
                filler_ts = ts_of.get(trade_id)
                if trade_id > piece_from:
                    pieces.append((symbol, piece_from, trade_id - 1, detected_at,
                                   piece_from_ts, to_ts if filler_ts is None else filler_ts))
                piece_from = trade_id + 1
                piece_from_ts = piece_from_ts if filler_ts is None else filler_ts
            if piece_from <= to_id:
                pieces.append((symbol, piece_from, to_id, detected_at, piece_from_ts, to_ts))
            self.conn.execute("DELETE FROM gaps WHERE rowid = ?", (rowid,))
            self.conn.executemany(_INSERT_GAP, pieces)
            if not pieces:
                filled += 1
        return filled


def _ids_by_symbol(trades: list[tuple], seen: list[tuple[str, int]]
                   ) -> dict[str, list[tuple[int, int | None]]]:
    """Group (trade_id, ts) by symbol in arrival order; placeholder ids have ts None."""
    by_symbol: dict[str, list[tuple[int, int | None]]] = {}
    for trade in trades:
        entries = by_symbol.get(trade[0])
        if entries is None:
            entries = by_symbol[trade[0]] = []
        entries.append((trade[1], trade[2]))
    for symbol, trade_id in seen:
        by_symbol.setdefault(symbol, []).append((trade_id, None))
    for symbol in by_symbol:
        if not isinstance(symbol, str) or not symbol or symbol != symbol.upper():
            raise ValueError(f"symbol ({symbol!r}) must be an upper-case string, e.g. 'BTCUSDT'")
    return by_symbol


def _split_sequences(symbol: str, entries: list[tuple[int, int | None]],
                     last_id: int | None, last_ts: int | None):
    """Yield (base_id, base_ts, entries) per id sequence, in arrival order."""
    segment: list[tuple[int, int | None]] = []
    base_id, base_ts = last_id, last_ts
    running_id, running_ts = last_id, last_ts
    for trade_id, ts in entries:
        if (running_id is not None and ts is not None
                and trade_id < running_id - RESET_ID_DISTANCE
                and (running_ts is None or ts > running_ts)):
            log.warning(
                "%s: trade id went back from %d to %d with a later exchange time: treating "
                "it as a new id sequence (no gap recorded); ids already stored for %s are "
                "ignored as duplicates", symbol, running_id, trade_id, symbol)
            if segment:
                yield base_id, base_ts, segment
            segment = []
            base_id, base_ts = None, None
            running_id, running_ts = trade_id, ts
        else:
            if running_id is None or trade_id > running_id:
                running_id = trade_id
            if ts is not None and (running_ts is None or ts > running_ts):
                running_ts = ts
        segment.append((trade_id, ts))
    if segment:
        yield base_id, base_ts, segment


def _ts_by_id(entries: list[tuple[int, int | None]]) -> dict[int, int]:
    return {trade_id: ts for trade_id, ts in entries if ts is not None}


def _aggregate_seconds(rows: Iterable[tuple]) -> dict[tuple[str, int], list]:
    """Aggregate trade tuples per (symbol, second) into bar lists.

    A bar list is ``[open, high, low, close, volume, buy_volume, trades, notional,
    first_ts, first_id, last_ts, last_id]``; open/close belong to the smallest/largest
    (ts, trade_id), whatever the order of ``rows``.
    """
    bars: dict[tuple[str, int], list] = {}
    for symbol, trade_id, ts, price, qty, is_buyer_maker, _ in rows:
        key = (symbol, ts - ts % 1000)
        bar = bars.get(key)
        if bar is None:
            bars[key] = [price, price, price, price, qty, 0.0 if is_buyer_maker else qty,
                         1, price * qty, ts, trade_id, ts, trade_id]
            continue
        if price > bar[1]:
            bar[1] = price
        elif price < bar[2]:
            bar[2] = price
        bar[4] += qty
        if not is_buyer_maker:
            bar[5] += qty
        bar[6] += 1
        bar[7] += price * qty
        if ts > bar[10] or (ts == bar[10] and trade_id > bar[11]):
            bar[3], bar[10], bar[11] = price, ts, trade_id
        elif ts < bar[8] or (ts == bar[8] and trade_id < bar[9]):
            bar[0], bar[8], bar[9] = price, ts, trade_id
    return bars


def _minutes_of(seconds: dict[tuple[str, int], list]) -> dict[tuple[str, int], list]:
    """Merge partial 1 s bars (``_aggregate_seconds``) into partial 1-minute bars.

    The same rules as the SQL merge: max, min and sums, open of the smallest and close of
    the largest (ts, trade_id), so the result does not depend on the order of ``seconds``.
    """
    minutes: dict[tuple[str, int], list] = {}
    for (symbol, second), bar in seconds.items():
        key = (symbol, second - second % 60_000)
        minute = minutes.get(key)
        if minute is None:
            minutes[key] = bar.copy()
            continue
        if bar[1] > minute[1]:
            minute[1] = bar[1]
        if bar[2] < minute[2]:
            minute[2] = bar[2]
        minute[4] += bar[4]
        minute[5] += bar[5]
        minute[6] += bar[6]
        minute[7] += bar[7]
        if (bar[10], bar[11]) > (minute[10], minute[11]):
            minute[3], minute[10], minute[11] = bar[3], bar[10], bar[11]
        if (bar[8], bar[9]) < (minute[8], minute[9]):
            minute[0], minute[8], minute[9] = bar[0], bar[8], bar[9]
    return minutes


def _bar_rows(bars: dict[tuple[str, int], list]) -> list[tuple]:
    return [(symbol, second, *bar) for (symbol, second), bar in bars.items()]


def _insert_rows(conn: sqlite3.Connection, trades: list[tuple]) -> None:
    """``INSERT OR IGNORE`` the trades: full chunks as multi-row statements, the rest
    row by row (one statement text per size keeps the statement cache small)."""
    full = len(trades) - len(trades) % TICK_CHUNK_ROWS
    chain = itertools.chain.from_iterable
    for start in range(0, full, TICK_CHUNK_ROWS):
        conn.execute(_INSERT_TICK_CHUNK, list(chain(trades[start:start + TICK_CHUNK_ROWS])))
    if full < len(trades):
        conn.executemany(_INSERT_TICK, trades[full:])


def _rebuild_minutes(conn: sqlite3.Connection, symbol: str | None = None,
                     start: int = _MIN_TS, end: int = _MAX_TS) -> int:
    """Replace the minute bars of ``symbol`` (None: all) with open in ``[start, end)`` by
    the aggregate of their 1 s bars; returns the minute bars written. ``start``/``end``
    must be minute opens (or the extremes)."""
    params = {"symbol": symbol, "start": start, "end": end}
    which = "" if symbol is None else "symbol = :symbol AND "
    conn.execute(f"DELETE FROM bars_1m WHERE {which}ts >= :start AND ts < :end", params)
    before = conn.total_changes
    conn.execute(_REBUILD_ALL_MINUTES if symbol is None else _REBUILD_MINUTES, params)
    return conn.total_changes - before


def _insert_ticks_and_bars(conn: sqlite3.Connection, trades: list[tuple]) -> int:
    """Insert the trades not stored yet and add exactly those to their 1 s bars.

    Common case: every row is new (``total_changes`` grows by the batch length), so the
    whole batch goes into the bars. Otherwise the insert is undone to a savepoint and
    redone with only the rows that are neither repeated in the batch nor stored already,
    so no trade is counted twice and no second has to be re-read from ``ticks``.
    """
    if database_postgres.is_postgres(conn):  # COPY + INSERT ... RETURNING the new rows
        trades = database_postgres.insert_new_ticks(conn, trades)
        _merge_bars(conn, trades)
        return len(trades)
    conn.execute("SAVEPOINT tick_batch")
    before = conn.total_changes
    _insert_rows(conn, trades)
    inserted = conn.total_changes - before
    if 0 < inserted < len(trades):
        conn.execute("ROLLBACK TO tick_batch")
        trades = _rows_not_stored(conn, trades)
        before = conn.total_changes
        _insert_rows(conn, trades)
        inserted = conn.total_changes - before
        if inserted != len(trades):  # only if the table's keys differ from the schema's
            raise RuntimeError(f"inserted {inserted} of {len(trades)} rows checked as new")
    _merge_bars(conn, trades if inserted else [])
    conn.execute("RELEASE tick_batch")
    return inserted


def _merge_bars(conn, trades: list[tuple]) -> None:
    """Add exactly ``trades`` (rows new to ``ticks``) to their 1 s and 1 min bars."""
    if not trades:
        return
    seconds = _aggregate_seconds(trades)
    if database_postgres.is_postgres(conn):  # one statement per table, not one per bar
        database_postgres.merge_bars(conn, _MERGE_BAR, _bar_rows(seconds))
        database_postgres.merge_bars(conn, _MERGE_BAR_1M, _bar_rows(_minutes_of(seconds)))
        return
    conn.executemany(_MERGE_BAR, _bar_rows(seconds))
    conn.executemany(_MERGE_BAR_1M, _bar_rows(_minutes_of(seconds)))


def _rows_not_stored(conn: sqlite3.Connection, trades: list[tuple]) -> list[tuple]:
    """The first occurrence of each (symbol, trade_id) that ``ticks`` does not hold yet."""
    unique: dict[tuple[str, int], tuple] = {}
    for trade in trades:
        unique.setdefault((trade[0], trade[1]), trade)
    ids_by_symbol: dict[str, list[int]] = {}
    for symbol, trade_id in unique:
        ids_by_symbol.setdefault(symbol, []).append(trade_id)
    for symbol, ids in ids_by_symbol.items():
        # One statement per symbol: the id list travels as one JSON parameter.
        stored = conn.execute(
            "SELECT trade_id FROM ticks WHERE symbol = ? "
            "AND trade_id IN (SELECT value FROM json_each(?))", (symbol, json.dumps(ids)))
        for (trade_id,) in stored:
            del unique[(symbol, trade_id)]
    return list(unique.values())


def import_ticks(conn: sqlite3.Connection, trades: Iterable[tuple], *,
                 batch_size: int = 10_000) -> WriteStats:
    """Bulk-store trades through ``TickWriter`` (same dedup, bars and gaps).

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection.
    trades : iterable of tuple
        Trade records as for ``TickWriter.write``; a generator is fine.
    batch_size : int, default 10000
        Trades per transaction.

    Returns
    -------
    WriteStats
        Totals over all batches.

    Notes
    -----
    Uses its own ``TickWriter``: while a collector writes the same symbols elsewhere, the
    two writers' gap tracking does not see each other's ids (ticks and bars stay right).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be >= 1")
    writer = TickWriter(conn)
    total = WriteStats(0, 0, 0, 0)
    iterator = iter(trades)
    while batch := list(itertools.islice(iterator, batch_size)):
        total = total + writer.write(batch)
    return total


# --------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------


def prune(conn: sqlite3.Connection, older_than_ms: int, *, max_rows: int = 5_000,
          symbol: str | None = None) -> int:
    """Delete up to ``max_rows`` ticks older than ``older_than_ms``, with their bars and gaps.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection (the writer's own is fine, between batches).
    older_than_ms : int
        Ticks with ``ts < older_than_ms`` (exchange time, epoch ms) are deleted.
    max_rows : int, default 5000
        At most this many ticks per call, oldest first, so the write lock is held for
        milliseconds and ingest never stalls.
    symbol : str or None, default None
        Only this symbol (any case); None means every symbol.

    Returns
    -------
    int
        Ticks deleted; 0 means nothing older is left. Call it in a loop with short sleeps.

    Notes
    -----
    A 1 s bar is deleted once none of its ticks is left (a bar whose second straddles the
    cutoff stays whole until then); a minute bar keeps exactly the 1 s bars left in it. Gaps are deleted when they end before the cutoff:
    ``coalesce(to_ts, detected_at) < older_than_ms``. Uploaded bars are never pruned.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows ({max_rows}) must be >= 1")
    if database_postgres.is_postgres(conn):  # whole day partitions, every symbol at once
        return database_postgres.prune(conn, older_than_ms)
    older_than_ms = int(older_than_ms)
    conn.execute("BEGIN IMMEDIATE")
    try:
        symbols = [symbol.upper()] if symbol is not None else _tick_symbols(conn)
        deleted = 0
        for name in symbols:
            if deleted >= max_rows:
                break
            deleted += _prune_symbol(conn, name, older_than_ms, max_rows - deleted)
        if symbol is None:
            conn.execute("DELETE FROM gaps WHERE coalesce(to_ts, detected_at) < ?",
                         (older_than_ms,))
        else:
            conn.execute("DELETE FROM gaps WHERE symbol = ? AND coalesce(to_ts, detected_at) < ?",
                         (symbols[0], older_than_ms))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted


def _tick_symbols(conn: sqlite3.Connection) -> list[str]:
    """Distinct symbols of ``ticks`` by index seeks (one per symbol, not a table scan)."""
    symbols: list[str] = []
    row = conn.execute("SELECT min(symbol) FROM ticks").fetchone()
    while row[0] is not None:
        symbols.append(row[0])
        row = conn.execute("SELECT min(symbol) FROM ticks WHERE symbol > ?", (row[0],)
                           ).fetchone()
    return symbols


def _prune_symbol(conn: sqlite3.Connection, symbol: str, older_than_ms: int,
                  budget: int) -> int:
    before = conn.total_changes
    # The budget-th oldest tick bounds the delete to a key range (no LIMIT on DELETE).
    boundary = conn.execute(
        "SELECT ts, trade_id FROM ticks WHERE symbol = ? AND ts < ? "
        "ORDER BY ts, trade_id LIMIT 1 OFFSET ?", (symbol, older_than_ms, budget - 1)
    ).fetchone()
    if boundary is None:
        conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts < ?", (symbol, older_than_ms))
    else:
        boundary_ts, boundary_id = boundary
        conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts < ?", (symbol, boundary_ts))
        conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts = ? AND trade_id <= ?",
                     (symbol, boundary_ts, boundary_id))
    deleted = conn.total_changes - before
    first_left = conn.execute(
        "SELECT ts FROM ticks WHERE symbol = ? ORDER BY ts LIMIT 1", (symbol,)).fetchone()
    bar_cutoff = older_than_ms
    if first_left is not None:
        bar_cutoff = min(bar_cutoff, first_left[0] - first_left[0] % 1000)
    conn.execute("DELETE FROM bars_1s WHERE symbol = ? AND ts < ?", (symbol, bar_cutoff))
    # Minute bars follow: whole minutes below the cutoff go, the minute it cuts is rebuilt
    # from the 1 s bars left in it.
    minute = bar_cutoff - bar_cutoff % 60_000
    conn.execute("DELETE FROM bars_1m WHERE symbol = ? AND ts < ?", (symbol, minute))
    if minute < bar_cutoff:
        _rebuild_minutes(conn, symbol, minute, minute + 60_000)
    return deleted


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _check_timeframe(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except (KeyError, TypeError):
        raise ValueError(f"timeframe ({timeframe!r}) must be one of "
                         f"{{{', '.join(repr(name) for name in TIMEFRAME_MS)}}}") from None


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


def _bars_frame(rows: list[tuple], *, trades_known: bool = True) -> pd.DataFrame:
    """Rows (ts, open, high, low, close, volume, buy_volume, trades, notional[, vwap]) -> bars.

    Without a 10th column vwap = notional / volume (NaN when volume is 0). NULLs become NaN.
    """
    width = len(rows[0]) if rows else 9
    # One float64 block: epoch ms (< 2**53) and counts are exact in float64. fromiter is
    # faster than np.array on tuples but cannot take None (NULL), which only uploads have.
    if not rows:
        values = np.empty((0, width), dtype=np.float64)
    elif trades_known:
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64,
                             count=len(rows) * width).reshape(-1, width)
    else:
        values = np.array(rows, dtype=np.float64)
    index = pd.Index(values[:, 0].astype(np.int64), name="ts")
    volume = values[:, 5]
    notional = values[:, 8]
    if width == 10:
        vwap = values[:, 9]
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            vwap = np.where(volume > 0, notional / volume, np.nan)
    trades = values[:, 7].astype(np.int64) if trades_known else values[:, 7]
    return pd.DataFrame({
        "open": values[:, 1], "high": values[:, 2], "low": values[:, 3],
        "close": values[:, 4], "volume": volume, "buy_volume": values[:, 6],
        "trades": trades, "notional": notional, "vwap": vwap,
    }, index=index)


def read_bars(conn: sqlite3.Connection, symbol: str, start_ms: int | None = None,
              end_ms: int | None = None, timeframe: str = "1s") -> pd.DataFrame:
    """Bars of one symbol from the stored 1 s bars, aggregated in SQL.

    Parameters
    ----------
    conn : sqlite3.Connection
    symbol : str
        Any case (stored upper-case).
    start_ms, end_ms : int or None
        Return the bars whose open time is in ``[start_ms, end_ms)`` (epoch ms); None means
        unbounded. Every returned bar covers its whole interval, even when ``start_ms`` is
        not aligned (the bucket containing ``start_ms`` is then left out).
    timeframe : {"1s", "5s", "10s", "30s", "1min", "5min", "15min", "1h"}, default "1s"

    Returns
    -------
    pandas.DataFrame
        Indexed by ``ts`` (int64 epoch ms of the bar open, ascending, aligned to the epoch in
        UTC), columns ``open, high, low, close, volume, buy_volume, trades, notional, vwap``
        (float64, ``trades`` int64). Intervals without trades are absent.

    Notes
    -----
    A bucket = all 1 s bars with ``ts - ts % size`` equal; open = open of its first 1 s
    bar, close = close of its last, high = max, low = min, volume, buy_volume, trades and
    notional = sums, vwap = notional / volume (NaN when volume is 0). Built from
    ``bars_1s`` only, never from raw ticks; at 1 min and coarser from ``bars_1m``, the same
    bars kept per minute at write time (1,440 rows a day instead of 86,400). The newest bar may still grow. At 1 min and
    coarser, minutes with REST klines (``klines_1m``) are joined in: see
    ``_read_bars_with_klines`` (a tick minute wins only when complete).
    """
    size = _check_timeframe(timeframe)
    start = _MIN_TS if start_ms is None else _ceil_to(int(start_ms), size)
    end = _MAX_TS if end_ms is None else _ceil_to(int(end_ms), size)
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ValueError(f"start_ms ({start_ms}) must not be after end_ms ({end_ms})")
    params = {"symbol": symbol.upper(), "start": start, "end": end, "size": size}
    if size >= 60_000 and _has_klines(conn, symbol, start, end):  # REST history: join
        return _read_bars_with_klines(conn, symbol, start, end, size)
    return _bars_frame(conn.execute(_tick_bars_sql(conn, size), params).fetchall())


def _tick_bars_sql(conn: sqlite3.Connection, size: int) -> str:
    """The read of tick-derived bars of ``size`` ms: whole minutes from ``bars_1m`` (when
    the file has it), anything else from ``bars_1s``; 1 s and 1 min as stored."""
    if size % 60_000 == 0 and _has_minute_bars(conn):
        return _READ_1M if size == 60_000 else _READ_MINUTE_BUCKETS
    return _READ_1S if size == 1000 else _READ_BUCKETS


def _has_minute_bars(conn: sqlite3.Connection) -> bool:
    """False only on a read-only connection to a file no writer has opened since before
    ``bars_1m`` existed: its minutes are then aggregated from the 1 s bars."""
    return _table_exists(conn, "bars_1m")


def read_bars_since(conn: sqlite3.Connection, symbol: str, after_ts: int,
                    timeframe: str = "1s") -> pd.DataFrame:
    """Bars that may have changed since ``after_ts``: for an incremental refresh.

    Parameters
    ----------
    conn : sqlite3.Connection
    symbol : str
    after_ts : int
        The newest time the caller has (e.g. the open of its last bar, epoch ms).
    timeframe : str, default "1s"
        As for ``read_bars``.

    Returns
    -------
    pandas.DataFrame
        ``read_bars`` from the open of the bucket containing ``after_ts``: the caller's
        last bar comes back again (it may have grown) followed by any newer ones. Replace
        the cached rows with ``ts >= result.index[0]``.
    """
    size = _check_timeframe(timeframe)
    after_ts = int(after_ts)
    return read_bars(conn, symbol, after_ts - after_ts % size, None, timeframe)


def latest_bar_ts(conn: sqlite3.Connection, symbol: str) -> int | None:
    """Open time (epoch ms) of the newest 1 s bar of ``symbol``, or None; one index seek.

    Notes
    -----
    That bar may still grow while its second lasts (or when late trades arrive): a cache
    keyed on this value should re-read its last bar with ``read_bars_since``.
    """
    row = conn.execute("SELECT max(ts) FROM bars_1s WHERE symbol = ?", (symbol.upper(),)
                       ).fetchone()
    return row[0]


def latest_bar_version(conn: sqlite3.Connection, symbol: str) -> tuple[int, int] | None:
    """``(open time, trade count)`` of the newest 1 s bar of ``symbol``, or None.

    Changes whenever a trade lands in the newest bar, not only when a new bar opens: the
    cache key for anything that shows the last price. One primary-key seek.
    """
    row = conn.execute("SELECT ts, trades FROM bars_1s WHERE symbol = ? ORDER BY ts DESC "
                       "LIMIT 1", (symbol.upper(),)).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def read_ticks(conn: sqlite3.Connection, symbol: str, start_ms: int,
               end_ms: int | None = None, limit: int | None = None, *,
               latest: bool = False) -> pd.DataFrame:
    """Stored trades of one symbol in ``[start_ms, end_ms)`` by exchange time.

    Parameters
    ----------
    conn : sqlite3.Connection
    symbol : str
        Any case.
    start_ms : int
        Inclusive, epoch ms.
    end_ms : int or None
        Exclusive; None means up to the newest.
    limit : int or None
        At most this many rows: the oldest ones, or the newest ones with ``latest=True``.
    latest : bool, default False

    Returns
    -------
    pandas.DataFrame
        Columns ``ts, trade_id`` (int64), ``price, qty`` (float64), ``is_buyer_maker``
        (int64), ordered by (ts, trade_id), default RangeIndex.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit ({limit}) must be >= 1 or None")
    end = _MAX_TS if end_ms is None else int(end_ms)
    sql = _READ_TICKS_NEWEST if latest else _READ_TICKS_OLDEST
    rows = conn.execute(sql, (symbol.upper(), int(start_ms), end,
                              _MAX_TS if limit is None else int(limit))).fetchall()
    if latest:
        rows.reverse()
    if rows:
        ts, trade_id, price, qty, is_buyer_maker = zip(*rows)
    else:
        ts = trade_id = price = qty = is_buyer_maker = ()
    return pd.DataFrame({
        "ts": np.array(ts, dtype=np.int64),
        "trade_id": np.array(trade_id, dtype=np.int64),
        "price": np.array(price, dtype=np.float64),
        "qty": np.array(qty, dtype=np.float64),
        "is_buyer_maker": np.array(is_buyer_maker, dtype=np.int64),
    })


def list_symbols(conn: sqlite3.Connection) -> pd.DataFrame:
    """Symbols with live data: DataFrame(symbol, first_ts, last_ts, trades).

    Notes
    -----
    From ``bars_1s`` (first_ts/last_ts = exchange time of the first/last stored trade),
    one covering scan of the 1 s bars (~86,400 rows per symbol per day), never of ticks.
    """
    rows = conn.execute(
        "SELECT symbol, min(first_ts), max(last_ts), sum(trades) FROM bars_1s "
        "GROUP BY symbol ORDER BY symbol").fetchall()
    return pd.DataFrame({
        "symbol": pd.Series([row[0] for row in rows], dtype=object),
        "first_ts": np.array([row[1] for row in rows], dtype=np.int64),
        "last_ts": np.array([row[2] for row in rows], dtype=np.int64),
        "trades": np.array([row[3] for row in rows], dtype=np.int64),
    })


# The distinct symbols of bars_1s by seeking its primary key (symbol, ts) once per symbol
# (a loose index scan: both SQLite and PostgreSQL answer each min() with one index seek),
# instead of a scan of every stored bar, which grows with the history kept.
SYMBOL_NAMES_SQL = """WITH RECURSIVE found(symbol) AS (
    SELECT min(symbol) FROM bars_1s
    UNION ALL
    SELECT (SELECT min(symbol) FROM bars_1s WHERE symbol > found.symbol) FROM found
    WHERE found.symbol IS NOT NULL)
SELECT symbol FROM found WHERE symbol IS NOT NULL"""


def symbol_names(conn: sqlite3.Connection) -> list[str]:
    """The symbols of ``list_symbols``, sorted, at the cost of a few index seeks per symbol
    (the page asks on every run; ``list_symbols`` aggregates every 1 s bar)."""
    return [row[0] for row in conn.execute(SYMBOL_NAMES_SQL).fetchall()]


def read_gaps(conn: sqlite3.Connection, symbol: str | None = None) -> pd.DataFrame:
    """Recorded missing trade-id ranges.

    Parameters
    ----------
    conn : sqlite3.Connection
    symbol : str or None
        One symbol (any case) or all.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol, from_id, to_id, missing, detected_at, from_ts, to_ts`` ordered by
        (symbol, from_id); ``missing = to_id - from_id + 1``; ``from_ts``/``to_ts`` are
        float64 with NaN when unknown.
    """
    if symbol is None:
        rows = conn.execute(_READ_GAPS + " ORDER BY symbol, from_id").fetchall()
    else:
        rows = conn.execute(_READ_GAPS + " WHERE symbol = ? ORDER BY from_id",
                            (symbol.upper(),)).fetchall()
    names = ("symbol", "from_id", "to_id", "missing", "detected_at", "from_ts", "to_ts")
    data = list(zip(*rows)) if rows else [()] * len(names)
    dtypes = (object, np.int64, np.int64, np.int64, np.int64, np.float64, np.float64)
    return pd.DataFrame({
        name: (pd.Series(list(values), dtype=object) if dtype is object
               else np.array([np.nan if v is None else v for v in values], dtype=dtype))
        for name, values, dtype in zip(names, data, dtypes)
    })


def count_open_gaps(conn: sqlite3.Connection) -> int:
    """Gap rows in the table: the open gaps (filled ones are deleted, shrunk or split ones
    count as what is left). The collector's ``gaps``/``gaps_open`` and the Health tab's
    gap list both mean exactly this."""
    return conn.execute("SELECT count(*) FROM gaps").fetchone()[0]


# --------------------------------------------------------------------------------------
# Uploaded bars
# --------------------------------------------------------------------------------------


def save_uploaded_bars(conn: sqlite3.Connection, source: str, bars_df: pd.DataFrame) -> int:
    """Store bars from a user file under ``source``, replacing what that source had.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection.
    source : str
        The file name; non-empty.
    bars_df : pandas.DataFrame
        Columns ``symbol, open, high, low, close`` and optional ``volume``, ``vwap``; the
        bar open ``ts`` (integer epoch ms, UTC) as a column or as the index named ``ts``.
        NaN volume/vwap are stored as unknown (NULL).

    Returns
    -------
    int
        Rows stored.

    Notes
    -----
    Symbols are stored upper-case, like live data. Rows must be unique per (symbol, ts)
    (clean the file first); OHLC must be finite. The replace is one transaction.
    """
    if not isinstance(source, str) or not source.strip():
        raise ValueError(f"source ({source!r}) must be a non-empty file name")
    frame = bars_df
    if "ts" not in frame.columns:
        if frame.index.name != "ts":
            raise ValueError("bars_df must have a 'ts' column or an index named 'ts'")
        frame = frame.reset_index()
    missing = [name for name in ("symbol", "open", "high", "low", "close")
               if name not in frame.columns]
    if missing:
        raise ValueError(f"bars_df is missing columns {missing}")
    if not pd.api.types.is_integer_dtype(frame["ts"]):
        raise ValueError(f"bars_df 'ts' must be integer epoch ms, got dtype {frame['ts'].dtype}")
    symbols = frame["symbol"].astype(str).str.upper()
    ohlc = frame[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    if not np.isfinite(ohlc).all():
        raise ValueError("bars_df has missing or infinite open/high/low/close values")
    keys = pd.DataFrame({"symbol": symbols, "ts": frame["ts"]})
    duplicated = int(keys.duplicated().sum())
    if duplicated:
        raise ValueError(f"bars_df has {duplicated} duplicate (symbol, ts) rows")
    n = len(frame)
    volume = (frame["volume"].to_numpy(dtype=np.float64) if "volume" in frame.columns
              else np.full(n, np.nan))
    vwap = (frame["vwap"].to_numpy(dtype=np.float64) if "vwap" in frame.columns
            else np.full(n, np.nan))
    rows = [
        (source, symbol, int(ts), o, h, lo, c,
         None if np.isnan(v) else v, None if np.isnan(w) else w)
        for symbol, ts, (o, h, lo, c), v, w in zip(
            symbols.tolist(), frame["ts"].tolist(), ohlc.tolist(), volume.tolist(),
            vwap.tolist())
    ]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM uploaded_bars WHERE source = ?", (source,))
        conn.executemany(
            "INSERT INTO uploaded_bars (source, symbol, ts, open, high, low, close, volume, "
            "vwap) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return n


def list_uploads(conn: sqlite3.Connection) -> pd.DataFrame:
    """Stored uploads: DataFrame(source, symbol, first_ts, last_ts, rows)."""
    rows = conn.execute(
        "SELECT source, symbol, min(ts), max(ts), count(*) FROM uploaded_bars "
        "GROUP BY source, symbol ORDER BY source, symbol").fetchall()
    return pd.DataFrame({
        "source": pd.Series([row[0] for row in rows], dtype=object),
        "symbol": pd.Series([row[1] for row in rows], dtype=object),
        "first_ts": np.array([row[2] for row in rows], dtype=np.int64),
        "last_ts": np.array([row[3] for row in rows], dtype=np.int64),
        "rows": np.array([row[4] for row in rows], dtype=np.int64),
    })


def read_uploaded_bars(conn: sqlite3.Connection, source: str, symbol: str,
                       timeframe: str | None = None) -> pd.DataFrame:
    """Uploaded bars in the ``read_bars`` shape, as stored or aggregated to ``timeframe``.

    Parameters
    ----------
    conn : sqlite3.Connection
    source : str
        The name given to ``save_uploaded_bars``.
    symbol : str
        Any case.
    timeframe : str or None, default None
        None returns the stored bars; otherwise one of the ``read_bars`` timeframes,
        aggregated like ``read_bars`` (buckets aligned to the epoch; a bar lands in the
        bucket containing its open, so a timeframe finer than the file returns the file's
        bars).

    Returns
    -------
    pandas.DataFrame
        Like ``read_bars``; ``trades`` and ``buy_volume`` are NaN (float64: a file does
        not know them), ``notional = vwap * volume`` and ``vwap`` are NaN unless the file
        had vwap (and volume) for every bar of the bucket.
    """
    params = {"source": source, "symbol": symbol.upper()}
    if timeframe is None:
        sql = _READ_UPLOADED
    else:
        params["size"] = _check_timeframe(timeframe)
        sql = _READ_UPLOADED_BUCKETS
    return _bars_frame(conn.execute(sql, params).fetchall(), trades_known=False)


# ======================================================================================
# Alert rules and events
# ======================================================================================
# Storage for alerts.py (rules, firings, the evaluator's per-rule state) and for the page
# (lists, toasts). Validation of what a rule means lives in alerts.py (alerts.validate_rule);
# these functions store what they are given and check only names and types of columns.

ALERT_RULE_FIELDS = ("name", "metric", "symbol", "y_symbol", "x_symbol", "timeframe", "window",
                     "z_window", "method", "log_prices", "comparison", "threshold",
                     "cooldown_s", "hysteresis", "enabled", "webhook_url")
# Editing one of these changes what the rule measures or when it triggers, so the trigger
# state (armed, last firing, previous value) is reset; a new name, webhook or cooldown keeps it.
_ALERT_STATE_FIELDS = frozenset(ALERT_RULE_FIELDS) - {"name", "webhook_url", "cooldown_s"}
ALERT_STATUS_FIELDS = ("state", "value", "checked_ms", "detail", "armed", "last_fired_ms",
                       "previous_value", "as_of_ts")
ALERT_EVENT_COLUMNS = ("id", "rule_id", "ts", "as_of_ts", "rule_name", "metric", "subject",
                       "comparison", "value", "threshold", "message", "delivered", "attempts",
                       "delivered_ms")
DELIVERY_NOT_REQUESTED = "not requested"
DELIVERY_PENDING = "pending"
DELIVERY_OK = "ok"
_EVALUATOR_LEASE_KEY = "alert_evaluator"

# Column names quoted in SQL: "window" is a reserved word in PostgreSQL (SQLite accepts it).
_QUOTED_RULE_COLUMNS = {name: f'"{name}"' for name in ALERT_RULE_FIELDS}
_ALERT_RULE_COLUMNS_SQL = ", ".join(_QUOTED_RULE_COLUMNS.values())
# RETURNING id (SQLite >= 3.35 and PostgreSQL) instead of cursor.lastrowid, which only
# sqlite3 has.
_INSERT_ALERT_RULE = (f"INSERT INTO alert_rules ({_ALERT_RULE_COLUMNS_SQL}, created_ms, "
                      f"updated_ms) VALUES ({', '.join('?' * len(ALERT_RULE_FIELDS))}, ?, ?) "
                      "RETURNING id")
_LIST_ALERT_RULES = f"""SELECT r.id, {', '.join('r.' + c for c in _QUOTED_RULE_COLUMNS.values())},
        r.created_ms, r.updated_ms, s.state, s.value, s.checked_ms, s.detail, s.armed,
        s.last_fired_ms, s.previous_value, s.as_of_ts,
        (SELECT count(*) FROM alert_events AS e WHERE e.rule_id = r.id) AS events
    FROM alert_rules AS r LEFT JOIN alert_status AS s ON s.rule_id = r.id"""
_UPSERT_ALERT_STATUS = f"""INSERT INTO alert_status (rule_id, {', '.join(ALERT_STATUS_FIELDS)})
    VALUES (?, {', '.join('?' * len(ALERT_STATUS_FIELDS))})
    ON CONFLICT (rule_id) DO UPDATE SET
    {', '.join(f'{f} = excluded.{f}' for f in ALERT_STATUS_FIELDS)}"""
_INSERT_ALERT_EVENT = f"""INSERT INTO alert_events ({', '.join(ALERT_EVENT_COLUMNS[1:])})
    VALUES ({', '.join('?' * (len(ALERT_EVENT_COLUMNS) - 1))}) RETURNING id"""
# The lease row is taken over only by its owner or once it has expired: one statement, so two
# processes cannot both win.
_CLAIM_LEASE = """INSERT INTO meta (key, value) VALUES (:key, :value)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    WHERE json_extract(meta.value, '$.owner') = :owner
       OR json_extract(meta.value, '$.until_ms') < :now"""

_RULE_DTYPES = {"id": np.int64, "window": np.int64, "z_window": np.int64,
                "threshold": np.float64, "cooldown_s": np.float64, "hysteresis": np.float64,
                "log_prices": bool, "enabled": bool, "created_ms": np.int64,
                "updated_ms": np.int64, "value": np.float64, "checked_ms": np.float64,
                "armed": np.float64, "last_fired_ms": np.float64, "previous_value": np.float64,
                "as_of_ts": np.float64, "events": np.int64}
_EVENT_DTYPES = {"id": np.int64, "rule_id": np.int64, "ts": np.int64, "as_of_ts": np.float64,
                 "value": np.float64, "threshold": np.float64, "attempts": np.int64,
                 "delivered_ms": np.float64}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` unless the caller already opened a transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.owned = False

    def __enter__(self) -> sqlite3.Connection:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.owned = True
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.owned:
            return
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _typed_frame(rows: list[tuple], columns: Sequence[str], dtypes: dict) -> pd.DataFrame:
    """Rows -> DataFrame; NULL -> NaN in float columns, None in object columns."""
    data = list(zip(*rows)) if rows else [()] * len(columns)
    frame = {}
    for name, values in zip(columns, data):
        dtype = dtypes.get(name, object)
        if dtype is object:
            frame[name] = pd.Series(list(values), dtype=object)
        elif dtype is np.float64:
            frame[name] = np.array([np.nan if v is None else v for v in values], dtype=dtype)
        else:
            frame[name] = np.array(list(values), dtype=dtype)
    return pd.DataFrame(frame)


def _alert_rule_values(rule) -> dict:
    """The storable fields of a rule given as a mapping or a dataclass (alerts.AlertRule)."""
    if dataclasses.is_dataclass(rule) and not isinstance(rule, type):
        fields = dataclasses.asdict(rule)
    elif isinstance(rule, Mapping):
        fields = dict(rule)
    else:
        raise ValueError(f"rule ({type(rule).__name__}) must be a mapping or an AlertRule")
    missing = [name for name in ALERT_RULE_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"rule is missing fields {missing}")
    return fields


def _alert_rule_row(fields: Mapping) -> list:
    row = []
    for name in ALERT_RULE_FIELDS:
        value = fields[name]
        if name in ("log_prices", "enabled"):
            value = int(bool(value))
        elif isinstance(value, np.generic):  # numpy scalars from a DataFrame row
            value = value.item()
        row.append(value)
    return row


def save_alert_rule(conn: sqlite3.Connection, rule) -> int:
    """Store a new alert rule and return its id.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection.
    rule : alerts.AlertRule or mapping
        Every field of ``ALERT_RULE_FIELDS``; validate it first with
        ``alerts.validate_rule`` (or call ``alerts.create_rule``). ``id`` must be absent or
        None.

    Returns
    -------
    int
        The new rule id.
    """
    fields = _alert_rule_values(rule)
    if fields.get("id") is not None:
        raise ValueError(f"rule id ({fields['id']!r}) must be None for a new rule; "
                         "use update_alert_rule to change a stored rule")
    now = _now_ms()
    cursor = conn.execute(_INSERT_ALERT_RULE, (*_alert_rule_row(fields), now, now))
    return int(cursor.fetchall()[0][0])


def save_alert_rules_once(conn: sqlite3.Connection, key: str, rules: Sequence) -> list[int]:
    """Store ``rules`` unless rules were stored under ``key`` before; one transaction.

    Parameters
    ----------
    conn : sqlite3.Connection
    key : str
        A marker kept in ``meta`` (e.g. ``"alert_defaults:BTCUSDT/ETHUSDT"``). It stays when
        the rules are deleted, so deleted ready-made rules do not come back.
    rules : sequence of alerts.AlertRule or mappings

    Returns
    -------
    list of int
        Ids of the rules stored now; empty when ``key`` was already present.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key ({key!r}) must be a non-empty string")
    rows = [_alert_rule_row(_alert_rule_values(rule)) for rule in rules]
    now = _now_ms()
    with _Transaction(conn):
        inserted = conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                (key, str(now))).rowcount
        if not inserted:
            return []
        return [int(conn.execute(_INSERT_ALERT_RULE, (*row, now, now)).fetchall()[0][0])
                for row in rows]


def update_alert_rule(conn: sqlite3.Connection, rule_id: int, **fields) -> None:
    """Change fields of a stored rule; resets its trigger state when the trigger changed.

    Parameters
    ----------
    conn : sqlite3.Connection
    rule_id : int
    **fields
        Names from ``ALERT_RULE_FIELDS``. Validate the edited rule first
        (``alerts.edit_rule`` does both).

    Notes
    -----
    ``updated_ms`` is set on every call with a real change. When a field that decides what is
    measured or when it fires changes (all but ``name``, ``webhook_url`` and ``cooldown_s``),
    the rule's ``alert_status`` row is deleted: the rule starts armed, without a previous
    value, as if new. Values equal to the stored ones change nothing, so a form that submits
    every field does not re-arm a rule.
    """
    unknown = sorted(set(fields) - set(ALERT_RULE_FIELDS))
    if unknown:
        raise ValueError(f"unknown alert rule fields {unknown}; allowed: "
                         f"{', '.join(ALERT_RULE_FIELDS)}")
    if not fields:
        return
    names = list(fields)
    with _Transaction(conn):
        current = conn.execute(
            f"SELECT {', '.join(_QUOTED_RULE_COLUMNS[n] for n in names)} FROM alert_rules "
            "WHERE id = ?", (int(rule_id),)).fetchone()
        if current is None:
            raise ValueError(f"rule_id ({rule_id!r}) does not exist")
        new_values = dict(zip(ALERT_RULE_FIELDS, _alert_rule_row(
            {name: fields.get(name) for name in ALERT_RULE_FIELDS})))
        changed = [name for name, old in zip(names, current) if new_values[name] != old]
        if not changed:
            return
        # Column names come from ALERT_RULE_FIELDS (checked above), never from user text.
        assignments = ", ".join(f"{_QUOTED_RULE_COLUMNS[name]} = ?" for name in changed)
        conn.execute(f"UPDATE alert_rules SET {assignments}, updated_ms = ? WHERE id = ?",
                     (*[new_values[name] for name in changed], _now_ms(), int(rule_id)))
        if _ALERT_STATE_FIELDS.intersection(changed):
            conn.execute("DELETE FROM alert_status WHERE rule_id = ?", (int(rule_id),))


def set_alert_rule_enabled(conn: sqlite3.Connection, rule_id: int, enabled: bool) -> None:
    """Enable or disable a rule; a change re-arms it (see ``update_alert_rule``)."""
    update_alert_rule(conn, rule_id, enabled=bool(enabled))


def delete_alert_rule(conn: sqlite3.Connection, rule_id: int) -> bool:
    """Delete a rule and its status; its events stay (with the rule's name copied in them).

    Returns
    -------
    bool
        Whether the rule existed.
    """
    with _Transaction(conn):
        deleted = conn.execute("DELETE FROM alert_rules WHERE id = ?", (int(rule_id),)).rowcount
        conn.execute("DELETE FROM alert_status WHERE rule_id = ?", (int(rule_id),))
    return bool(deleted)


def list_alert_rules(conn: sqlite3.Connection, *, enabled_only: bool = False) -> pd.DataFrame:
    """Stored rules with their latest status, ordered by id.

    Parameters
    ----------
    conn : sqlite3.Connection
        Read-only connections work.
    enabled_only : bool, default False

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, every name of ``ALERT_RULE_FIELDS``, ``created_ms``, ``updated_ms``,
        then the status: ``state`` ("disabled" for a disabled rule, "not checked yet" before
        the evaluator saw an enabled rule, else what the evaluator wrote: "waiting for data",
        "armed", "cooling down", "disarmed", "error"), ``value``, ``checked_ms``,
        ``detail``, ``armed``, ``last_fired_ms``, ``previous_value``, ``as_of_ts``
        (float64, NaN when unknown) and ``events`` (firings stored for the rule).
        ``log_prices`` and ``enabled`` are bool; symbols None where not used.
    """
    sql = _LIST_ALERT_RULES + (" WHERE r.enabled = 1" if enabled_only else "") + " ORDER BY r.id"
    rows = conn.execute(sql).fetchall()
    columns = ("id", *ALERT_RULE_FIELDS, "created_ms", "updated_ms", "state", "value",
               "checked_ms", "detail", "armed", "last_fired_ms", "previous_value", "as_of_ts",
               "events")
    frame = _typed_frame(rows, columns, _RULE_DTYPES)
    enabled = frame["enabled"].to_numpy(dtype=bool)
    state = frame["state"].where(frame["state"].notna(), "not checked yet")
    frame["state"] = state.where(enabled, "disabled").astype(object)
    frame["detail"] = frame["detail"].where(frame["detail"].notna(), "").astype(object)
    return frame


def write_alert_status(conn: sqlite3.Connection, rule_id: int, *, state: str, detail: str,
                       checked_ms: int, value: float | None = None, armed: bool = True,
                       last_fired_ms: int | None = None, previous_value: float | None = None,
                       as_of_ts: int | None = None) -> None:
    """Store the evaluator's latest verdict and trigger state for one rule (upsert).

    ``value``/``previous_value`` that are NaN are stored as NULL.
    """
    def nullable(number):
        if number is None:
            return None
        number = float(number)
        return None if np.isnan(number) else number

    conn.execute(_UPSERT_ALERT_STATUS, (
        int(rule_id), str(state), nullable(value), int(checked_ms), str(detail), int(bool(armed)),
        None if last_fired_ms is None else int(last_fired_ms), nullable(previous_value),
        None if as_of_ts is None else int(as_of_ts)))


def read_alert_status(conn: sqlite3.Connection) -> dict[int, dict]:
    """Every rule's stored status: ``{rule_id: {state, value, checked_ms, detail, armed,
    last_fired_ms, previous_value, as_of_ts}}`` (``armed`` bool, NULL -> None)."""
    rows = conn.execute(
        f"SELECT rule_id, {', '.join(ALERT_STATUS_FIELDS)} FROM alert_status").fetchall()
    result = {}
    for row in rows:
        status = dict(zip(ALERT_STATUS_FIELDS, row[1:]))
        status["armed"] = bool(status["armed"])
        result[int(row[0])] = status
    return result


def insert_alert_event(conn: sqlite3.Connection, *, rule_id: int, ts: int, value: float,
                       threshold: float, message: str, rule_name: str, metric: str,
                       subject: str, comparison: str, as_of_ts: int | None = None,
                       delivered: str = DELIVERY_NOT_REQUESTED) -> int:
    """Store one firing of a rule and return the event id.

    Parameters
    ----------
    conn : sqlite3.Connection
    rule_id : int
    ts : int
        Firing time, epoch ms.
    value, threshold : float
        The metric value that fired and the rule's threshold then.
    message : str
        The line shown to the user (and sent to the webhook).
    rule_name, metric, subject, comparison : str
        Copies of the rule as it was, so the history reads right after edits or deletion.
    as_of_ts : int, optional
        Open of the bar the value belongs to.
    delivered : str, default "not requested"
        ``"pending"`` when a webhook will be tried (``set_alert_event_delivery`` records the
        result).
    """
    cursor = conn.execute(_INSERT_ALERT_EVENT, (
        int(rule_id), int(ts), None if as_of_ts is None else int(as_of_ts), str(rule_name),
        str(metric), str(subject), str(comparison), float(value), float(threshold),
        str(message), str(delivered), 0, None))
    return int(cursor.fetchall()[0][0])


def set_alert_event_delivery(conn: sqlite3.Connection, event_id: int, delivered: str, *,
                             attempts: int, delivered_ms: int) -> None:
    """Record a webhook result on an event: ``"ok"`` or ``"failed: <reason>"``."""
    conn.execute("UPDATE alert_events SET delivered = ?, attempts = ?, delivered_ms = ? "
                 "WHERE id = ?", (str(delivered), int(attempts), int(delivered_ms),
                                  int(event_id)))


def list_alert_events(conn: sqlite3.Connection, *, since_id: int | None = None,
                      limit: int | None = 200, rule_id: int | None = None) -> pd.DataFrame:
    """Stored alert events, newest first.

    Parameters
    ----------
    conn : sqlite3.Connection
        Read-only connections work.
    since_id : int, optional
        Only events with ``id > since_id`` (a page keeps the largest id it has shown and
        toasts what is newer).
    limit : int or None, default 200
        At most this many (the newest); None = all.
    rule_id : int, optional
        Only this rule's events.

    Returns
    -------
    pandas.DataFrame
        Columns ``ALERT_EVENT_COLUMNS``: ``id, rule_id, ts`` (int64 epoch ms), ``as_of_ts``
        (float64), ``rule_name, metric, subject, comparison``, ``value, threshold``
        (float64), ``message``, ``delivered`` ("not requested", "pending", "ok" or
        "failed: reason"), ``attempts`` (int64), ``delivered_ms`` (float64, NaN until a
        webhook result is recorded).
    """
    if limit is not None and (isinstance(limit, bool) or int(limit) < 1):
        raise ValueError(f"limit ({limit!r}) must be >= 1 or None")
    clauses, params = [], []
    if since_id is not None:
        clauses.append("id > ?")
        params.append(int(since_id))
    if rule_id is not None:
        clauses.append("rule_id = ?")
        params.append(int(rule_id))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    params.append(_MAX_TS if limit is None else int(limit))
    rows = conn.execute(f"SELECT {', '.join(ALERT_EVENT_COLUMNS)} FROM alert_events{where} "
                        "ORDER BY id DESC LIMIT ?", params).fetchall()
    return _typed_frame(rows, ALERT_EVENT_COLUMNS, _EVENT_DTYPES)


def latest_alert_event_id(conn: sqlite3.Connection) -> int:
    """The newest event id (0 when there is none): where a new page starts its toasts."""
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0])


def mark_pending_deliveries_failed(conn: sqlite3.Connection, reason: str) -> int:
    """Mark every ``"pending"`` delivery as ``"failed: <reason>"``; returns how many.

    For an evaluator that starts after a stop: webhooks queued in a previous run were lost.
    """
    return conn.execute("UPDATE alert_events SET delivered = ? WHERE delivered = ?",
                        (f"failed: {reason}", DELIVERY_PENDING)).rowcount


def first_bar_ts(conn: sqlite3.Connection, symbol: str) -> int | None:
    """Open time (epoch ms) of the oldest stored 1 s bar of ``symbol``, or None; one seek."""
    row = conn.execute("SELECT min(ts) FROM bars_1s WHERE symbol = ?", (symbol.upper(),)
                       ).fetchone()
    return row[0]


def claim_alert_evaluator(conn: sqlite3.Connection, owner: str, now_ms: int,
                          ttl_ms: int) -> str | None:
    """Take or renew the lease that lets one evaluator write alerts to this file.

    Parameters
    ----------
    conn : sqlite3.Connection
    owner : str
        The evaluator's id (unique per evaluator object).
    now_ms : int
    ttl_ms : int
        The lease lasts until ``now_ms + ttl_ms`` unless renewed.

    Returns
    -------
    str or None
        The owner holding the lease after the call: ``owner`` when it was taken or renewed,
        another id when a live evaluator (in this or another process) holds it.

    Notes
    -----
    One evaluator per process is guaranteed by ``alerts.start_evaluator``; the lease covers
    two processes (two Streamlit servers) on one database, which would otherwise fire every
    alert twice.

    SQLite: a row in ``meta`` that expires; an evaluator that dies without releasing blocks
    others for ``ttl_ms``.

    PostgreSQL (many pages and collectors on one server): a session-level advisory lock held
    by ``conn``'s session, so ``conn`` must be the evaluator's own connection, kept for as
    long as it evaluates. ``now_ms`` and ``ttl_ms`` are not used: the server ends the lock
    with the session - ``release_alert_evaluator``, the connection closed, the process killed
    or its machine gone (once TCP notices) - and a standby takes it at its next call. The
    holder's id is kept in ``meta`` only to answer "who evaluates".
    """
    if database_postgres.is_postgres(conn):
        return _claim_evaluator_lock(conn, owner)
    value = json.dumps({"owner": owner, "until_ms": int(now_ms) + int(ttl_ms)})
    conn.execute(_CLAIM_LEASE, {"key": _EVALUATOR_LEASE_KEY, "value": value, "owner": owner,
                                "now": int(now_ms)})
    row = conn.execute("SELECT json_extract(value, '$.owner') FROM meta WHERE key = ?",
                       (_EVALUATOR_LEASE_KEY,)).fetchone()
    return row[0] if row else None


def release_alert_evaluator(conn: sqlite3.Connection, owner: str) -> None:
    """Give the lease up (only when ``owner`` holds it; on PostgreSQL: when ``conn``'s
    session holds the lock, after rolling back a transaction left open)."""
    if database_postgres.is_postgres(conn):
        _release_evaluator_lock(conn, owner)
        return
    conn.execute("DELETE FROM meta WHERE key = ? AND json_extract(value, '$.owner') = ?",
                 (_EVALUATOR_LEASE_KEY, owner))


# PostgreSQL's evaluator lease: a session-level advisory lock on the two-int key space
# (``pg_locks.objsubid = 2``), apart from the bigint keys database_postgres takes for schema
# DDL and per-symbol writers. Advisory locks are per database: one evaluator per database.
_EVALUATOR_LOCK_KEY = (0x7E1C, 0xA1E7)
_EVALUATOR_LOCK_HOLDER = """SELECT pid, pid = pg_backend_pid() FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid::bigint = ? AND objid::bigint = ?"""
_UPSERT_META = """INSERT INTO meta (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value"""


def _claim_evaluator_lock(conn, owner: str) -> str | None:
    """``claim_alert_evaluator`` on PostgreSQL: the lock held by this session or taken now.

    Never takes the lock twice (advisory locks nest: a second take would need a second
    unlock), so ``pg_locks`` is asked first. Returns ``owner``, the holder's id from ``meta``,
    ``"postgresql backend PID"`` before a new holder has written its id, or None when the
    lock was released between the look and the try (the next call takes it).
    """
    holder = conn.execute(_EVALUATOR_LOCK_HOLDER, _EVALUATOR_LOCK_KEY).fetchone()
    if holder is not None and holder[1]:
        return owner
    if holder is None:
        taken, pid = conn.execute("SELECT pg_try_advisory_lock(?::integer, ?::integer), "
                                  "pg_backend_pid()", _EVALUATOR_LOCK_KEY).fetchone()
        if taken:
            conn.execute(_UPSERT_META, (_EVALUATOR_LEASE_KEY,
                                        json.dumps({"owner": owner, "pid": pid})))
            return owner
        holder = conn.execute(_EVALUATOR_LOCK_HOLDER, _EVALUATOR_LOCK_KEY).fetchone()
        if holder is None:
            return None
    _, stored = _stored_evaluator_lease(conn)
    if stored.get("pid") == holder[0] and stored.get("owner"):
        return stored["owner"]
    return f"postgresql backend {holder[0]}"


def _release_evaluator_lock(conn, owner: str) -> None:
    if conn.in_transaction:  # a failed statement left one open: the unlock would fail too
        conn.execute("ROLLBACK")
    holder = conn.execute(_EVALUATOR_LOCK_HOLDER, _EVALUATOR_LOCK_KEY).fetchone()
    if holder is None or not holder[1]:
        return
    value, stored = _stored_evaluator_lease(conn)
    if stored.get("owner") == owner:
        conn.execute("DELETE FROM meta WHERE key = ? AND value = ?",
                     (_EVALUATOR_LEASE_KEY, value))
    conn.execute("SELECT pg_advisory_unlock(?::integer, ?::integer)", _EVALUATOR_LOCK_KEY)


def _stored_evaluator_lease(conn) -> tuple[str | None, dict]:
    """The lease's ``meta`` value as stored and parsed (``{}`` when absent or unreadable)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?",
                       (_EVALUATOR_LEASE_KEY,)).fetchone()
    value = row[0] if row else None
    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return value, {}
    return value, parsed if isinstance(parsed, dict) else {}


# --------------------------------------------------------------------------------------
# Paper-trading positions (issue 14; logic in paper.py)
# --------------------------------------------------------------------------------------

# One row per paper position, from the click to the close. Prices: *_ref_* are the traded
# prices of the fills' trades, *_fill_* the prices after slippage; qty_* are signed units
# (long spread: +y, -beta*x). *_after_* are the newest stored trade (ts, trade_id) of each
# leg when an order was placed: the fill is the first trade after it.
PAPER_POSITION_FIELDS = (
    "y_symbol", "x_symbol", "side", "notional", "beta", "timeframe", "window", "z_window",
    "method", "log_prices", "fee_bps", "slippage_bps", "exit_z", "stop_z", "max_holding_s",
    "status", "requested_ms", "z_at_request",
    "entry_after_ts_y", "entry_after_id_y", "entry_after_ts_x", "entry_after_id_x",
    "entry_ts_y", "entry_ts_x", "entry_ref_y", "entry_ref_x", "qty_y", "qty_x",
    "entry_fill_y", "entry_fill_x", "entry_fee",
    "close_requested_ms", "close_reason", "z_at_close",
    "exit_after_ts_y", "exit_after_id_y", "exit_after_ts_x", "exit_after_id_x",
    "exit_ts_y", "exit_ts_x", "exit_ref_y", "exit_ref_x", "exit_fill_y", "exit_fill_x",
    "exit_fee", "gross_pnl", "fees", "slippage_cost", "pnl", "closed_ms", "last_error",
    "notify",
)
_PAPER_TEXT_FIELDS = frozenset({"y_symbol", "x_symbol", "side", "timeframe", "method",
                                "status", "close_reason", "last_error"})
_PAPER_INT_FIELDS = frozenset({"window", "z_window", "log_prices", "requested_ms",
                               "entry_after_ts_y", "entry_after_id_y", "entry_after_ts_x",
                               "entry_after_id_x", "entry_ts_y", "entry_ts_x",
                               "close_requested_ms", "exit_after_ts_y", "exit_after_id_y",
                               "exit_after_ts_x", "exit_after_id_x", "exit_ts_y",
                               "exit_ts_x", "closed_ms", "notify"})


def _paper_column_type(name: str) -> str:
    if name in _PAPER_TEXT_FIELDS:
        return "TEXT"
    return "INTEGER" if name in _PAPER_INT_FIELDS else "REAL"


_PAPER_SCHEMA = ("CREATE TABLE IF NOT EXISTS paper_positions (id INTEGER PRIMARY KEY, "
                 + ", ".join(f"{name} {_paper_column_type(name)}"
                             for name in PAPER_POSITION_FIELDS) + ")")


def _column_names(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns of ``table`` (empty when it does not exist)."""
    if database_postgres.is_postgres(conn):
        return database_postgres.column_names(conn, table)
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}  # our names only


def ensure_paper_tables(conn: sqlite3.Connection) -> None:
    """Create the paper-position table if missing, and add the columns a file written by
    an older version lacks (idempotent; a writable connection)."""
    conn.execute(_PAPER_SCHEMA)
    present = _column_names(conn, "paper_positions")
    for name in PAPER_POSITION_FIELDS:
        if name not in present:  # names and types come from the constants above
            conn.execute(f"ALTER TABLE paper_positions ADD COLUMN {name} "
                         f"{_paper_column_type(name)}")
    conn.execute("CREATE INDEX IF NOT EXISTS paper_positions_status ON paper_positions "
                 "(status, id)")


def insert_paper_position(conn: sqlite3.Connection, **fields) -> int:
    """Store a new position (fields: names of ``PAPER_POSITION_FIELDS``); its id."""
    unknown = sorted(set(fields) - set(PAPER_POSITION_FIELDS))
    if unknown:
        raise ValueError(f"unknown paper position fields {unknown}")
    ensure_paper_tables(conn)
    names = list(fields)
    cursor = conn.execute(f"INSERT INTO paper_positions ({', '.join(names)}) VALUES "
                          f"({', '.join('?' for _ in names)}) RETURNING id",
                          [fields[n] for n in names])
    return int(cursor.fetchall()[0][0])


def update_paper_position(conn: sqlite3.Connection, position_id: int, *,
                          expect_status: str | None = None, **fields) -> bool:
    """Change fields of one position; with ``expect_status`` only while it has that status
    (two writers racing to fill or close the same position: one wins). True if changed."""
    unknown = sorted(set(fields) - set(PAPER_POSITION_FIELDS))
    if unknown or not fields:
        raise ValueError(f"unknown or no paper position fields {unknown}")
    ensure_paper_tables(conn)
    sets = ", ".join(f"{name} = ?" for name in fields)
    params = [*fields.values(), int(position_id)]
    where = "id = ?"
    if expect_status is not None:
        where += " AND status = ?"
        params.append(expect_status)
    cursor = conn.execute(f"UPDATE paper_positions SET {sets} WHERE {where}", params)
    return cursor.rowcount == 1


def list_paper_positions(conn: sqlite3.Connection, *, statuses: Sequence[str] | None = None,
                         limit: int | None = None, position_id: int | None = None
                         ) -> pd.DataFrame:
    """Positions, newest first: columns ``id`` + ``PAPER_POSITION_FIELDS``.

    Reads only (a read-only connection will do): without the table, an empty frame; columns
    a table from an older version lacks read as missing values.
    """
    present = _column_names(conn, "paper_positions")
    clauses, params = [], []
    if statuses is not None:
        clauses.append(f"status IN ({', '.join('?' for _ in statuses)})")
        params.extend(statuses)
    if position_id is not None:
        clauses.append("id = ?")
        params.append(int(position_id))
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    params.append(_MAX_TS if limit is None else int(limit))
    columns = ("id", *PAPER_POSITION_FIELDS)
    rows = []
    if present:  # names come from PAPER_POSITION_FIELDS, never from input
        selected = ", ".join(name if name in present else "NULL" for name in columns)
        rows = conn.execute(f"SELECT {selected} FROM paper_positions{where} "
                            "ORDER BY id DESC LIMIT ?", params).fetchall()
    frame = pd.DataFrame(rows, columns=list(columns))
    for name in columns:
        if name in _PAPER_TEXT_FIELDS:
            frame[name] = frame[name].astype(object)
        elif name != "id" and name not in _PAPER_INT_FIELDS:
            frame[name] = frame[name].astype(np.float64)
    return frame


def has_paper_positions(conn: sqlite3.Connection, statuses: Sequence[str]) -> bool:
    """Whether any position has one of ``statuses`` (False without the table): one lookup
    in the status index, for a caller that would otherwise read the positions into a
    frame (``list_paper_positions``) only to find none."""
    if "status" not in _column_names(conn, "paper_positions"):
        return False
    marks = ", ".join("?" for _ in statuses)
    return conn.execute(f"SELECT 1 FROM paper_positions WHERE status IN ({marks}) LIMIT 1",
                        tuple(statuses)).fetchone() is not None


def newest_trade(conn: sqlite3.Connection, symbol: str) -> tuple[int, int, float] | None:
    """``(ts, trade_id, price)`` of the newest stored trade of ``symbol``, or None."""
    return conn.execute("SELECT ts, trade_id, price FROM ticks WHERE symbol = ? "
                        "ORDER BY ts DESC, trade_id DESC LIMIT 1",
                        (symbol.upper(),)).fetchone()


def first_trade_after(conn: sqlite3.Connection, symbol: str, after_ts: int, after_id: int
                      ) -> tuple[int, int, float] | None:
    """The first stored trade later than ``(after_ts, after_id)`` in (ts, trade_id) order:
    ``(ts, trade_id, price)``, or None while there is none. One index seek."""
    return conn.execute("SELECT ts, trade_id, price FROM ticks WHERE symbol = ? AND "
                        "(ts > ? OR (ts = ? AND trade_id > ?)) ORDER BY ts, trade_id LIMIT 1",
                        (symbol.upper(), int(after_ts), int(after_ts), int(after_id))
                        ).fetchone()


# --------------------------------------------------------------------------------------
# REST backfill: kline-derived 1m bars, gap notes, the ledger the Backfiller writes through
# --------------------------------------------------------------------------------------
#
# ``klines_1m`` holds Binance's 1-minute klines fetched over REST, apart from the tick-derived
# ``bars_1s``. Reads at 1m and coarser join the two per minute (``read_bars``): a minute built
# from ticks wins over its kline only when it is complete - its traded volume reaches the
# kline's - so a partly recorded minute (the first minute of a recording, a minute with a
# gap) shows the exchange's bar, and the live minute (no closed kline yet) shows the ticks.
# ``gap_notes`` keeps why a gap is still open (or that REST repaired it) for the Health tab.
# ``meta.history_version`` grows whenever REST stores the past, so caches that top up from
# the newest bar know to read their whole window again.

KLINE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS klines_1m (
        symbol TEXT NOT NULL,
        ts INTEGER NOT NULL,              -- kline open, epoch ms, multiple of 60000
        open REAL NOT NULL,
        high REAL NOT NULL,
        low REAL NOT NULL,
        close REAL NOT NULL,
        volume REAL NOT NULL,             -- base asset volume
        buy_volume REAL NOT NULL,         -- taker-buy base volume
        trades INTEGER NOT NULL,          -- Binance's count of (raw) trades
        notional REAL NOT NULL,           -- quote asset volume
        PRIMARY KEY (symbol, ts)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS gap_notes (
        symbol TEXT NOT NULL,
        from_id INTEGER NOT NULL,
        to_id INTEGER NOT NULL,
        repaired INTEGER NOT NULL,        -- 1: REST filled the gap; 0: why it stays open
        reason TEXT NOT NULL,
        noted_ms INTEGER NOT NULL,        -- local epoch ms
        PRIMARY KEY (symbol, from_id, to_id)
    ) WITHOUT ROWID""",
)

# A tick minute is complete when its volume reaches the kline's (relative tolerance: sums of
# decimal quantities in floating point differ in the last bits).
KLINE_VOLUME_TOLERANCE = 1e-9
_HISTORY_VERSION_KEY = "history_version"


def save_klines(conn: sqlite3.Connection, symbol: str, rows: Iterable[Sequence]) -> int:
    """Store closed 1-minute klines (replacing the same minutes); returns rows written.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection.
    symbol : str
        Any case.
    rows : iterable of sequences
        ``(open_ts, open, high, low, close, volume, close_ts, quote_volume, trades,
        taker_buy_base_volume)`` as ``binance_rest.parse_klines`` returns them.
    """
    values = [(symbol.upper(), int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]),
               float(r[5]), float(r[9]), int(r[8]), float(r[7])) for r in rows]
    if not values:
        return 0
    with _Transaction(conn):
        conn.executemany(_UPSERT_KLINES, values)
        _bump_history_version(conn)
    return len(values)


# An upsert, not INSERT OR REPLACE: the same SQL on both backends.
_UPSERT_KLINES = """INSERT INTO klines_1m (symbol, ts, open, high, low, close, volume,
    buy_volume, trades, notional) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (symbol, ts) DO UPDATE SET open = excluded.open, high = excluded.high,
    low = excluded.low, close = excluded.close, volume = excluded.volume,
    buy_volume = excluded.buy_volume, trades = excluded.trades, notional = excluded.notional"""


def _bump_history_version(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
                 "SET value = CAST(meta.value AS INTEGER) + 1", (_HISTORY_VERSION_KEY,))


def history_version(conn: sqlite3.Connection) -> int:
    """A number that grows whenever REST stores past klines or trades (0: never)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_HISTORY_VERSION_KEY,)
                       ).fetchone()
    return int(row[0]) if row else 0


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    if database_postgres.is_postgres(conn):
        return database_postgres.table_exists(conn, name)
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def read_klines(conn: sqlite3.Connection, symbol: str, start_ms: int | None = None,
                end_ms: int | None = None) -> pd.DataFrame:
    """Stored klines of one symbol with open in ``[start_ms, end_ms)``, in the bar layout."""
    if not _table_exists(conn, "klines_1m"):
        return _bars_frame([])
    rows = conn.execute(
        "SELECT ts, open, high, low, close, volume, buy_volume, trades, notional FROM klines_1m "
        "WHERE symbol = ? AND ts >= ? AND ts < ? ORDER BY ts",
        (symbol.upper(), _MIN_TS if start_ms is None else int(start_ms),
         _MAX_TS if end_ms is None else int(end_ms))).fetchall()
    return _bars_frame(rows)


def _has_klines(conn: sqlite3.Connection, symbol: str, start: int, end: int) -> bool:
    if not _table_exists(conn, "klines_1m"):  # a file written before this table existed
        return False
    return conn.execute("SELECT 1 FROM klines_1m WHERE symbol = ? AND ts >= ? AND ts < ? "
                        "LIMIT 1", (symbol.upper(), start, end)).fetchone() is not None


def _read_bars_with_klines(conn: sqlite3.Connection, symbol: str, start: int, end: int,
                           size: int) -> pd.DataFrame:
    """``read_bars`` at ``size`` >= 1 min from tick minutes joined with kline minutes.

    Per minute: the tick-derived bar when it is complete (volume >= the kline's, within
    ``KLINE_VOLUME_TOLERANCE``) or when there is no kline, else the kline. Coarser buckets
    are then built from those minutes exactly as from 1 s bars (open of the first, close of
    the last, max, min, sums).
    """
    params = {"symbol": symbol.upper(), "start": start, "end": end, "size": 60_000}
    ticks = _bars_frame(conn.execute(_tick_bars_sql(conn, 60_000), params).fetchall())
    klines = read_klines(conn, symbol, start, end)
    kline_volume = klines["volume"].reindex(ticks.index)
    complete = ~(ticks["volume"] < kline_volume * (1 - KLINE_VOLUME_TOLERANCE))
    minutes = pd.concat([ticks[complete], klines.drop(ticks.index[complete], errors="ignore")])
    minutes = minutes.sort_index()
    if size == 60_000 or minutes.empty:
        return minutes
    bucket = minutes.index - minutes.index % size
    grouped = minutes.groupby(bucket)
    bars = pd.DataFrame({
        "open": grouped["open"].first(), "high": grouped["high"].max(),
        "low": grouped["low"].min(), "close": grouped["close"].last(),
        "volume": grouped["volume"].sum(), "buy_volume": grouped["buy_volume"].sum(),
        "trades": grouped["trades"].sum().astype(np.int64),
        "notional": grouped["notional"].sum(),
    })
    bars.index = pd.Index(bars.index.astype(np.int64), name="ts")
    with np.errstate(divide="ignore", invalid="ignore"):
        bars["vwap"] = np.where(bars["volume"] > 0, bars["notional"] / bars["volume"], np.nan)
    return bars


def last_stored_trade(conn: sqlite3.Connection, symbol: str,
                      received_before_ms: int | None = None) -> tuple[int, int] | None:
    """(highest stored trade id, its exchange time) of ``symbol``, or None.

    With ``received_before_ms``: among trades received before that local time (an earlier
    run's), walking down the id index from the newest - a short walk past this run's rows.
    """
    if received_before_ms is None:
        row = conn.execute("SELECT trade_id, ts FROM ticks WHERE symbol = ? "
                           "ORDER BY trade_id DESC LIMIT 1", (symbol.upper(),)).fetchone()
    else:
        row = conn.execute("SELECT trade_id, ts FROM ticks WHERE symbol = ? AND received_ms < ? "
                           "ORDER BY trade_id DESC LIMIT 1",
                           (symbol.upper(), int(received_before_ms))).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def open_gaps(conn: sqlite3.Connection, symbols: Iterable[str]
              ) -> list[tuple[str, int, int, int | None, int | None]]:
    """Open gaps of ``symbols`` as ``(symbol, from_id, to_id, from_ts, to_ts)``, newest first."""
    names = [s.upper() for s in symbols]
    if not names:
        return []
    if database_postgres.is_postgres(conn):
        return database_postgres.open_gaps(conn, names)
    rows = conn.execute(
        "SELECT symbol, from_id, to_id, from_ts, to_ts FROM gaps WHERE symbol IN "
        "(SELECT value FROM json_each(?)) ORDER BY from_id DESC", (json.dumps(names),)
    ).fetchall()
    return [tuple(row) for row in rows]


def note_gap(conn: sqlite3.Connection, symbol: str, from_id: int, to_id: int, reason: str,
             *, repaired: bool = False) -> None:
    """Record why a gap stays open, or that REST repaired it (shown in the Health tab)."""
    conn.execute(
        "INSERT INTO gap_notes (symbol, from_id, to_id, repaired, reason, noted_ms) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (symbol, from_id, to_id) DO UPDATE SET "
        "repaired = excluded.repaired, reason = excluded.reason, noted_ms = excluded.noted_ms",
        (symbol.upper(), int(from_id), int(to_id), int(repaired), reason, _now_ms()))


def read_gaps_with_reasons(conn: sqlite3.Connection) -> pd.DataFrame:
    """``read_gaps`` plus ``reason``: the latest note overlapping each open gap ('' if none)."""
    gaps = read_gaps(conn)
    if not _table_exists(conn, "gap_notes") or gaps.empty:
        return gaps.assign(reason=pd.Series([""] * len(gaps), dtype=object))
    notes = conn.execute("SELECT symbol, from_id, to_id, reason FROM gap_notes "
                         "WHERE repaired = 0 ORDER BY noted_ms").fetchall()
    reasons = []
    for symbol, from_id, to_id in zip(gaps["symbol"], gaps["from_id"], gaps["to_id"]):
        found = ""
        for n_symbol, n_from, n_to, reason in notes:
            if n_symbol == symbol and n_from <= to_id and n_to >= from_id:
                found = reason
        reasons.append(found)
    return gaps.assign(reason=pd.Series(reasons, dtype=object))


def read_repaired_gaps(conn: sqlite3.Connection) -> pd.DataFrame:
    """Gaps REST filled: ``symbol, from_id, to_id, missing, noted_ms, reason``, newest first."""
    names = ("symbol", "from_id", "to_id", "missing", "noted_ms", "reason")
    if not _table_exists(conn, "gap_notes"):
        return pd.DataFrame({name: [] for name in names})
    rows = conn.execute("SELECT symbol, from_id, to_id, to_id - from_id + 1, noted_ms, reason "
                        "FROM gap_notes WHERE repaired = 1 ORDER BY noted_ms DESC").fetchall()
    return pd.DataFrame.from_records(rows, columns=list(names))


class BackfillLedger:
    """The database side of ``binance_rest.Backfiller``: reads and writes on its own
    connection, opened lazily in the thread that uses it.

    Trades go through ``TickWriter`` like streamed ones (same dedup by (symbol, trade_id),
    same 1 s bars, late ids carve the recorded gaps), in their own transactions.
    """

    # Readers re-read whole windows and recompute cached views when history_version
    # changes: tell them at most this often while pages stream in (a page rerun must not
    # recompute everything twice a second during a backfill), and once more when a phase
    # ends (``mark_history``).
    HISTORY_BUMP_EVERY_S = 5.0

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._bumped_at = 0.0
        self._unannounced = False
        self._write_lock = threading.Lock()  # freeze() waits for a write in progress
        self._frozen = False

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def _exists(self) -> bool:
        """Reads and notes never create the file (a feed that never connected leaves none)."""
        return self._conn is not None or database_exists(self.path)

    def last_trade(self, symbol: str, received_before_ms: int | None = None
                   ) -> tuple[int, int] | None:
        if not self._exists():
            return None
        return last_stored_trade(self.conn, symbol, received_before_ms)

    def open_gaps(self, symbols) -> list[tuple]:
        return open_gaps(self.conn, symbols) if self._exists() else []

    def freeze(self) -> None:
        """Store nothing more (any thread): the owner is about to read the final counts."""
        with self._write_lock:
            self._frozen = True

    def store_trades(self, rows: list[tuple]) -> tuple[int, int, int]:
        """(inserted, duplicates, gaps filled) of one batch through ``TickWriter``;
        (0, 0, 0) once frozen."""
        with self._write_lock:
            if self._frozen:
                return 0, 0, 0
            stats = TickWriter(self.conn).write(rows)
        if stats.inserted:
            self._unannounced = True
            if time.monotonic() - self._bumped_at >= self.HISTORY_BUMP_EVERY_S:
                self.mark_history()
        return stats.inserted, stats.duplicates, stats.gaps_filled

    def mark_history(self) -> None:
        """Announce stored past trades to readers (``history_version``) if any are new."""
        if self._unannounced and self._exists():
            _bump_history_version(self.conn)
            self._unannounced = False
            self._bumped_at = time.monotonic()

    def store_klines(self, symbol: str, rows: list[tuple]) -> int:
        with self._write_lock:
            return 0 if self._frozen else save_klines(self.conn, symbol, rows)

    def note_gap(self, symbol: str, from_id: int, to_id: int, reason: str,
                 repaired: bool = False) -> None:
        if self._exists():
            note_gap(self.conn, symbol, from_id, to_id, reason, repaired=repaired)

    def close(self) -> None:
        if self._conn is not None:
            self.mark_history()
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------------------
# Pair watchlist (issue 16): pairs pinned from the Pairs tab, shared by every page
# --------------------------------------------------------------------------------------

WATCHLIST_COLUMNS = ("y_symbol", "x_symbol", "timeframe", "beta", "half_life", "eg_qvalue",
                     "added_ms")
_WATCHLIST_SCHEMA = """CREATE TABLE IF NOT EXISTS watchlist (
    y_symbol TEXT NOT NULL,           -- dependent leg, upper case
    x_symbol TEXT NOT NULL,           -- independent leg, upper case
    timeframe TEXT NOT NULL,          -- bar size the pair was screened at, e.g. 1min
    beta REAL,                        -- screen's values when pinned (NULL: unknown)
    half_life REAL,                   -- bars of that timeframe
    eg_qvalue REAL,
    added_ms INTEGER NOT NULL,        -- when pinned (local clock), the list's order
    PRIMARY KEY (y_symbol, x_symbol)
) WITHOUT ROWID"""
_WATCHLIST_DTYPES = {"beta": np.float64, "half_life": np.float64, "eg_qvalue": np.float64,
                     "added_ms": np.int64}


def _watchlist_pair(y_symbol: str, x_symbol: str) -> tuple[str, str]:
    names = []
    for label, value in (("y_symbol", y_symbol), ("x_symbol", x_symbol)):
        if not (isinstance(value, str) and value.strip()):
            raise ValueError(f"{label} ({value!r}) must be a non-empty symbol")
        names.append(value.strip().upper())
    if names[0] == names[1]:
        raise ValueError(f"y_symbol and x_symbol ({names[0]!r}) must differ")
    return names[0], names[1]


def _optional_float(name: str, value) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({value!r}) must be a number or None") from None
    return number if np.isfinite(number) else None


def pin_pair(conn: sqlite3.Connection, y_symbol: str, x_symbol: str, *, timeframe: str,
             beta=None, half_life=None, eg_qvalue=None, now_ms: int | None = None) -> None:
    """Pin a pair to the watchlist, or refresh its screen values if it is pinned already.

    Parameters
    ----------
    conn : sqlite3.Connection
        A writable connection (the table is created on first use).
    y_symbol, x_symbol : str
        Dependent and independent leg (stored upper case). (A, B) and (B, A) are different
        entries: the legs mean different regressions.
    timeframe : str
        Bar size the pair was screened at (one of ``analytics.TIMEFRAME_MS``).
    beta, half_life, eg_qvalue : float, optional
        The screen's values when pinned (non-finite is stored as NULL).
    now_ms : int, optional
        Pin time (default the local clock); kept when the pair is pinned again.
    """
    y_name, x_name = _watchlist_pair(y_symbol, x_symbol)
    if timeframe not in TIMEFRAME_MS:
        raise ValueError(f"timeframe ({timeframe!r}) must be one of {list(TIMEFRAME_MS)}")
    values = (y_name, x_name, timeframe, _optional_float("beta", beta),
              _optional_float("half_life", half_life), _optional_float("eg_qvalue", eg_qvalue),
              _now_ms() if now_ms is None else int(now_ms))
    with _Transaction(conn):
        conn.execute(_WATCHLIST_SCHEMA)
        conn.execute(
            "INSERT INTO watchlist (y_symbol, x_symbol, timeframe, beta, half_life, "
            "eg_qvalue, added_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (y_symbol, x_symbol) DO UPDATE SET timeframe = excluded.timeframe, "
            "beta = excluded.beta, half_life = excluded.half_life, "
            "eg_qvalue = excluded.eg_qvalue", values)


def unpin_pair(conn: sqlite3.Connection, y_symbol: str, x_symbol: str) -> bool:
    """Remove a pair from the watchlist; False when it was not pinned."""
    y_name, x_name = _watchlist_pair(y_symbol, x_symbol)
    if not _table_exists(conn, "watchlist"):
        return False
    with _Transaction(conn):
        cursor = conn.execute("DELETE FROM watchlist WHERE y_symbol = ? AND x_symbol = ?",
                              (y_name, x_name))
    return cursor.rowcount > 0


def list_watchlist(conn: sqlite3.Connection) -> pd.DataFrame:
    """Pinned pairs in the order they were pinned, columns ``WATCHLIST_COLUMNS``.

    Works on a read-only connection; empty (with the columns) before anything was pinned.
    """
    rows = []
    if _table_exists(conn, "watchlist"):
        rows = conn.execute(f"SELECT {', '.join(WATCHLIST_COLUMNS)} FROM watchlist "
                            "ORDER BY added_ms, y_symbol, x_symbol").fetchall()
    return _typed_frame(rows, WATCHLIST_COLUMNS, _WATCHLIST_DTYPES)
