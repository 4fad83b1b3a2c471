"""SQLite storage: ticks, 1-second bars, trade-id gaps and uploaded bars.

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
- ``gaps(symbol, from_id, to_id, detected_at, from_ts, to_ts)`` - missing trade ids, both
  ends inclusive; ``detected_at`` is local epoch ms; ``from_ts`` is the exchange time of the
  trade just before the gap and ``to_ts`` of the trade that revealed it (NULL when unknown).
- ``trade_id_cursor(symbol, last_id, last_ts)`` - highest trade id seen per symbol, written
  in the same transaction as the ticks, so a restart measures the downtime gap from the last
  id really seen (placeholder ids included), not from the last id stored.
- ``uploaded_bars(source, symbol, ts, open, high, low, close, volume, vwap)`` - bars from
  user files, kept apart from live data, ``PRIMARY KEY (source, symbol, ts)``.
- ``meta(key, value)`` - ``schema_version``.

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
import itertools
import json
import logging
import os
import pathlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5_000
# Page cache per connection (KiB, as a negative cache_size): a day of one symbol's 1 s bars
# is ~10 MB, so repeated bucket reads stay in memory (~15 % faster warm reads than 2 MiB).
CACHE_KIB = 65_536

TIMEFRAME_MS = {
    "1s": 1_000,
    "5s": 5_000,
    "10s": 10_000,
    "30s": 30_000,
    "1min": 60_000,
    "5min": 300_000,
    "15min": 900_000,
    "1h": 3_600_000,
}
BAR_COLUMNS = ("open", "high", "low", "close", "volume", "buy_volume", "trades", "notional",
               "vwap")
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
_MERGE_BAR = _BAR_VALUES + """
    ON CONFLICT (symbol, ts) DO UPDATE SET
        open = CASE WHEN (excluded.first_ts, excluded.first_id) < (first_ts, first_id)
                    THEN excluded.open ELSE open END,
        first_ts = CASE WHEN (excluded.first_ts, excluded.first_id) < (first_ts, first_id)
                        THEN excluded.first_ts ELSE first_ts END,
        first_id = CASE WHEN (excluded.first_ts, excluded.first_id) < (first_ts, first_id)
                        THEN excluded.first_id ELSE first_id END,
        close = CASE WHEN (excluded.last_ts, excluded.last_id) > (last_ts, last_id)
                     THEN excluded.close ELSE close END,
        last_ts = CASE WHEN (excluded.last_ts, excluded.last_id) > (last_ts, last_id)
                       THEN excluded.last_ts ELSE last_ts END,
        last_id = CASE WHEN (excluded.last_ts, excluded.last_id) > (last_ts, last_id)
                       THEN excluded.last_id ELSE last_id END,
        high = max(high, excluded.high),
        low = min(low, excluded.low),
        volume = volume + excluded.volume,
        buy_volume = buy_volume + excluded.buy_volume,
        trades = trades + excluded.trades,
        notional = notional + excluded.notional"""

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
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                     (str(SCHEMA_VERSION),))
        version = conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if int(version) != SCHEMA_VERSION:
        raise RuntimeError(
            f"database {path!r} has schema version {version}; this program reads version "
            f"{SCHEMA_VERSION}: use a new file (CRYPTO_DB_PATH) or the matching program")


def database_size_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of the database: the file plus its ``-wal`` and ``-shm`` files.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; missing files count as 0.

    Returns
    -------
    int
    """
    path = os.fspath(path)
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
    inserted are merged into ``bars_1s`` (see the module notes). If the transaction fails
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


def _bar_rows(bars: dict[tuple[str, int], list]) -> list[tuple]:
    return [(symbol, second, *bar) for (symbol, second), bar in bars.items()]


def _insert_ticks_and_bars(conn: sqlite3.Connection, trades: list[tuple]) -> int:
    """Insert the trades not stored yet and add exactly those to their 1 s bars.

    Common case: every row is new (``total_changes`` grows by the batch length), so the
    whole batch goes into the bars. Otherwise the insert is undone to a savepoint and
    redone with only the rows that are neither repeated in the batch nor stored already,
    so no trade is counted twice and no second has to be re-read from ``ticks``.
    """
    conn.execute("SAVEPOINT tick_batch")
    before = conn.total_changes
    conn.executemany(_INSERT_TICK, trades)
    inserted = conn.total_changes - before
    if 0 < inserted < len(trades):
        conn.execute("ROLLBACK TO tick_batch")
        trades = _rows_not_stored(conn, trades)
        before = conn.total_changes
        conn.executemany(_INSERT_TICK, trades)
        inserted = conn.total_changes - before
        if inserted != len(trades):  # only if the table's keys differ from the schema's
            raise RuntimeError(f"inserted {inserted} of {len(trades)} rows checked as new")
    if inserted:
        conn.executemany(_MERGE_BAR, _bar_rows(_aggregate_seconds(trades)))
    conn.execute("RELEASE tick_batch")
    return inserted


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
    cutoff stays whole until then). Gaps are deleted when they end before the cutoff:
    ``coalesce(to_ts, detected_at) < older_than_ms``. Uploaded bars are never pruned.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows ({max_rows}) must be >= 1")
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
    ``bars_1s`` only, never from raw ticks. The newest bar may still grow.
    """
    size = _check_timeframe(timeframe)
    start = _MIN_TS if start_ms is None else _ceil_to(int(start_ms), size)
    end = _MAX_TS if end_ms is None else _ceil_to(int(end_ms), size)
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ValueError(f"start_ms ({start_ms}) must not be after end_ms ({end_ms})")
    params = {"symbol": symbol.upper(), "start": start, "end": end, "size": size}
    sql = _READ_1S if size == 1000 else _READ_BUCKETS
    return _bars_frame(conn.execute(sql, params).fetchall())


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
                              -1 if limit is None else int(limit))).fetchall()
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
