"""PostgreSQL storage: the tables of ``database`` on a server, for many collectors and pages.

A database URL (``postgresql://user@host:port/dbname``) given wherever a SQLite path is
accepted (``database.connect``, ``collector.py --db``, ``CRYPTO_DB_PATH``) selects this
backend. Everything outside the storage layer keeps calling the same ``database.*``
functions: ``database.connect`` returns a ``PgConnection`` here, a pooled psycopg 3
connection with sqlite3's calling convention (``execute(sql, params)`` with ``?`` and
``:name`` placeholders, ``executemany``, ``in_transaction``, ``close``), so the portable SQL
of ``database`` runs unchanged; the few functions whose SQL differs ask ``is_postgres(conn)``
and call the PostgreSQL version in this module.

Why an adapter and not a second copy of every function: most statements (reads, gap
tracking, cursors, upserts with ``ON CONFLICT``) are the same SQL in both dialects; only the
placeholder style differs. The adapter translates exactly that, plus a short fixed list
(``translate``: ``BEGIN IMMEDIATE``, ``INSERT OR IGNORE``, the reserved column name
``window``, and SQLite's column types in ``database``'s own ``CREATE TABLE`` / ``ALTER
TABLE``); anything else that is SQLite-only (``PRAGMA``, ``json_each``, ``sqlite_master``,
the savepoint-and-redo insert, row-by-row pruning) is dispatched explicitly.

Errors are raised as the DB-API classes of the ``sqlite3`` module (``OperationalError`` for
a lost server or a missing table, ``IntegrityError``, ``DatabaseError`` otherwise) with the
psycopg error chained as ``__cause__``: the project's handlers (``except sqlite3.Error`` in
the collector's spill logic, the page's "no schema yet") then cover both backends.

Schema (``SCHEMA``): the same tables and columns as SQLite's, in the connection's default
schema, in PostgreSQL types (``bigint`` epoch ms and ids, ``double precision`` prices).

- ``ticks(symbol, trade_id, ts, price, qty, is_buyer_maker, received_ms)`` is range-
  partitioned by day on ``ts`` (``ticks_YYYYMMDD``, UTC days): partitions are created
  ``PARTITIONS_AHEAD`` days ahead at the first writable connection and on demand for any day
  a batch touches, and retention drops whole partitions (``prune``) instead of deleting rows.
  A partitioned table's unique key must contain the partition key, so the primary key is
  ``(symbol, ts, trade_id)``: a re-sent trade has the same exchange time and id, so it is
  still stored once - unique per ``(symbol, trade_id)`` in effect. An index on
  ``(symbol, trade_id)`` serves the writer's "highest id stored" look-up.
- ``bars_1s``, ``bars_1m``, ``gaps`` (plus an identity ``rowid`` the gap carving deletes by),
  ``trade_id_cursor``, ``meta``, ``klines_1m``, ``gap_notes``, ``uploaded_bars`` and the alert
  tables as in SQLite; ``paper_positions`` and ``watchlist`` come from ``database``'s own
  DDL, translated, when first used.

Write path (``TickWriter.write`` on a ``PgConnection``): the batch's day partitions exist
(``ensure_partitions``), ``BEGIN``, an advisory transaction lock per symbol (``begin_write``:
writers of the same symbols - a standby pair - take turns per batch; writers of disjoint
symbols never wait), COPY into a temporary table, then one
``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING`` (``insert_new_ticks``) whose
returned rows - exactly the trades new to the table - are aggregated into 1 s and 1 min
bars by ``database``'s own code and merged by one upsert per table (``merge_bars``), then
gap tracking and the id cursor, all in the same transaction. A trade re-sent by a reconnect or received
by both collectors of a standby pair is returned by neither second insert, so it never
counts twice, whichever collector stored it first.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
import sqlite3
import threading
import weakref
import zlib
from collections.abc import Iterable, Sequence

from config import DATABASE_URL_PREFIXES as URL_PREFIXES  # what Settings takes as a server

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
PARTITIONS_AHEAD = 2          # days after today created with the schema
POOL_MAX_SIZE = 20            # connections per URL per process (writer, backfill, page reads)
POOL_TIMEOUT_S = 10.0         # how long connect waits for a connection (server down: error)
_SCHEMA_LOCK_KEY = 0x7E1C_0001  # advisory lock serialising schema and partition DDL

# The columns bars_1s, bars_1m and klines_1m share (bars add the first/last trade after them).
_OHLCV_COLUMNS = """
        symbol text NOT NULL,
        ts bigint NOT NULL,
        open double precision NOT NULL,
        high double precision NOT NULL,
        low double precision NOT NULL,
        close double precision NOT NULL,
        volume double precision NOT NULL,
        buy_volume double precision NOT NULL,
        trades integer NOT NULL,
        notional double precision NOT NULL"""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key text PRIMARY KEY,
        value text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS ticks (
        symbol text NOT NULL,              -- upper case, e.g. BTCUSDT
        trade_id bigint NOT NULL,
        ts bigint NOT NULL,                -- exchange trade time, epoch ms (partition key)
        price double precision NOT NULL,
        qty double precision NOT NULL,
        is_buyer_maker integer NOT NULL,   -- 1: the seller was the taker
        received_ms bigint NOT NULL,       -- local receive time, epoch ms
        PRIMARY KEY (symbol, ts, trade_id)
    ) PARTITION BY RANGE (ts)""",
    "CREATE INDEX IF NOT EXISTS ticks_symbol_trade_id ON ticks (symbol, trade_id)",
    *(f"""CREATE TABLE IF NOT EXISTS {table} ({_OHLCV_COLUMNS},
        first_ts bigint NOT NULL,
        first_id bigint NOT NULL,
        last_ts bigint NOT NULL,
        last_id bigint NOT NULL,
        PRIMARY KEY (symbol, ts))""" for table in ("bars_1s", "bars_1m")),
    """CREATE TABLE IF NOT EXISTS gaps (
        rowid bigint GENERATED ALWAYS AS IDENTITY,  -- SQLite's implicit rowid, made explicit
        symbol text NOT NULL,
        from_id bigint NOT NULL,
        to_id bigint NOT NULL,
        detected_at bigint NOT NULL,
        from_ts bigint,
        to_ts bigint)""",
    "CREATE INDEX IF NOT EXISTS gaps_symbol_from_id ON gaps (symbol, from_id)",
    """CREATE TABLE IF NOT EXISTS trade_id_cursor (
        symbol text PRIMARY KEY,
        last_id bigint NOT NULL,
        last_ts bigint)""",
    """CREATE TABLE IF NOT EXISTS uploaded_bars (
        source text NOT NULL,
        symbol text NOT NULL,
        ts bigint NOT NULL,
        open double precision NOT NULL,
        high double precision NOT NULL,
        low double precision NOT NULL,
        close double precision NOT NULL,
        volume double precision,
        vwap double precision,
        PRIMARY KEY (source, symbol, ts))""",
    f"""CREATE TABLE IF NOT EXISTS klines_1m ({_OHLCV_COLUMNS},
        PRIMARY KEY (symbol, ts))""",
    """CREATE TABLE IF NOT EXISTS gap_notes (
        symbol text NOT NULL,
        from_id bigint NOT NULL,
        to_id bigint NOT NULL,
        repaired integer NOT NULL,
        reason text NOT NULL,
        noted_ms bigint NOT NULL,
        PRIMARY KEY (symbol, from_id, to_id))""",
    """CREATE TABLE IF NOT EXISTS alert_rules (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name text NOT NULL, metric text NOT NULL, symbol text, y_symbol text,
        x_symbol text, timeframe text NOT NULL, "window" bigint NOT NULL,
        z_window bigint NOT NULL, method text NOT NULL, log_prices integer NOT NULL,
        comparison text NOT NULL, threshold double precision NOT NULL,
        cooldown_s double precision NOT NULL, hysteresis double precision NOT NULL,
        enabled integer NOT NULL, webhook_url text, created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alert_events (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        rule_id bigint NOT NULL, ts bigint NOT NULL, as_of_ts bigint,
        rule_name text NOT NULL, metric text NOT NULL, subject text NOT NULL,
        comparison text NOT NULL, value double precision NOT NULL,
        threshold double precision NOT NULL, message text NOT NULL,
        delivered text NOT NULL, attempts integer NOT NULL DEFAULT 0, delivered_ms bigint)""",
    "CREATE INDEX IF NOT EXISTS alert_events_rule_id ON alert_events (rule_id, id)",
    """CREATE TABLE IF NOT EXISTS alert_status (
        rule_id bigint PRIMARY KEY, state text NOT NULL, value double precision,
        checked_ms bigint NOT NULL, detail text NOT NULL, armed integer NOT NULL,
        last_fired_ms bigint, previous_value double precision, as_of_ts bigint)""",
)

TICK_INSERT_COLUMNS = "symbol, trade_id, ts, price, qty, is_buyer_maker, received_ms"

# Exactly the rows new to ``ticks`` come back: a trade stored already (by this or another
# writer) or repeated in the batch is neither inserted nor returned; of repeats inside the
# batch the first to arrive is the one stored, as SQLite's INSERT OR IGNORE does.
_INSERT_NEW_TICKS = f"""
    INSERT INTO ticks ({TICK_INSERT_COLUMNS})
    SELECT DISTINCT ON (symbol, trade_id) {TICK_INSERT_COLUMNS} FROM incoming_ticks
    ORDER BY symbol, trade_id, arrival
    ON CONFLICT DO NOTHING
    RETURNING {TICK_INSERT_COLUMNS}"""


def is_url(target) -> bool:
    """True when ``target`` is a PostgreSQL URL rather than a SQLite file path."""
    return isinstance(target, str) and target.startswith(URL_PREFIXES)


def is_postgres(conn) -> bool:
    """True for a connection from this module (``database.connect`` of a URL)."""
    return isinstance(conn, PgConnection)


def describe(url: str) -> str:
    """``host:port/dbname`` of a URL, without user or password: for logs and file names."""
    rest = url.split("://", 1)[1]
    rest = rest.rsplit("@", 1)[-1]
    return rest.split("?", 1)[0]


# --------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------

_POOLS: dict[str, object] = {}
_POOLS_LOCK = threading.Lock()
_SCHEMA_READY: set[str] = set()          # URLs whose schema this process created/checked
_PARTITION_DAYS: dict[str, set[int]] = {}  # URL -> day starts (epoch ms) known to exist


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """sqlite3 placeholders (``?``, ``:name``) -> psycopg's (``%s``, ``%(name)s``).

    Also ``BEGIN IMMEDIATE`` -> ``BEGIN`` (PostgreSQL locks rows, not the file), a leading
    ``INSERT OR IGNORE`` -> ``INSERT ... ON CONFLICT DO NOTHING``, the column name
    ``window`` quoted (a reserved word there) and SQLite column types in ``CREATE TABLE`` /
    ``ALTER TABLE`` (``_translate_ddl``). A literal ``%`` (the modulo in bucket reads) is
    doubled first. ``::`` casts are left alone.

    >>> translate("SELECT ts - ts % :size FROM t WHERE a = ? AND b::text = ?")
    'SELECT ts - ts %% %(size)s FROM t WHERE a = %s AND b::text = %s'
    >>> translate('SELECT r.window, "window", z_window FROM alert_rules AS r')
    'SELECT r."window", "window", z_window FROM alert_rules AS r'
    """
    sql = sql.replace("%", "%%").replace("BEGIN IMMEDIATE", "BEGIN")
    if sql.lstrip().startswith(("CREATE TABLE", "ALTER TABLE")):
        sql = _translate_ddl(sql)
    if sql.lstrip().startswith("INSERT OR IGNORE"):
        sql = sql.replace("INSERT OR IGNORE", "INSERT", 1) + " ON CONFLICT DO NOTHING"
    sql = sql.replace("?", "%s")
    # "window" (a column of alert rules and paper positions) is reserved in PostgreSQL.
    sql = re.sub(r'(?<![\w"])window(?![\w"])', '"window"', sql)
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", sql)


def _translate_ddl(sql: str) -> str:
    """SQLite's upper-case column types in ``database``'s own DDL -> PostgreSQL's.

    ``INTEGER PRIMARY KEY`` (SQLite's rowid alias) becomes an identity column; ``INTEGER``
    becomes ``bigint`` (epoch ms do not fit PostgreSQL's 4-byte integer), ``REAL`` becomes
    ``double precision`` (PostgreSQL's ``real`` has 4 bytes), ``WITHOUT ROWID`` is dropped.

    >>> _translate_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL, n INTEGER "
    ...                "NOT NULL) WITHOUT ROWID")
    'CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x double precision, n bigint NOT NULL)'
    """
    sql = sql.replace("INTEGER PRIMARY KEY", "bigint GENERATED BY DEFAULT AS IDENTITY "
                                             "PRIMARY KEY")
    sql = re.sub(r"\bINTEGER\b", "bigint", sql)
    sql = re.sub(r"\bREAL\b", "double precision", sql)
    return re.sub(r"\)\s*WITHOUT ROWID\s*$", ")", sql)


def column_names(conn: PgConnection, table: str) -> set[str]:
    """The columns of ``table`` in the connection's schema (empty: no such table)."""
    rows = conn.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = ? AND table_schema = current_schema()",
                        (table,)).fetchall()
    return {row[0] for row in rows}


def _as_sqlite_error(exc: Exception) -> sqlite3.Error:
    """The sqlite3 DB-API class for a psycopg error (see the module notes)."""
    import psycopg

    if isinstance(exc, psycopg.IntegrityError):
        cls = sqlite3.IntegrityError
    elif isinstance(exc, (psycopg.OperationalError, psycopg.ProgrammingError,
                          psycopg.errors.ReadOnlySqlTransaction)):
        # lost server, missing table, a write on a read-only connection: the same class as
        # SQLite's "no such table" and "attempt to write a readonly database"
        cls = sqlite3.OperationalError
    else:
        cls = sqlite3.DatabaseError
    return cls(f"PostgreSQL: {exc}")


class PgConnection:
    """A psycopg connection from the URL's pool, called like a ``sqlite3.Connection``.

    Autocommit, like ``database.connect``'s SQLite connections: every statement is its own
    transaction unless the caller issues ``BEGIN``. ``close()`` gives the connection back to
    the pool (rolled back if a transaction was left open). A connection that broke (server
    restarted) is replaced by a fresh one at the next statement outside a transaction, so a
    long-lived writer recovers by itself.
    """

    backend = "postgresql"

    def __init__(self, url: str, pool, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._pool = pool
        self.raw = self._getconn()

    def _getconn(self):
        import psycopg

        try:
            raw = self._pool.getconn(timeout=POOL_TIMEOUT_S)
            if self.readonly:  # writes fail, as on a SQLite mode=ro connection
                try:
                    raw.execute("SET default_transaction_read_only = on")
                except BaseException:
                    self._pool.putconn(raw)
                    raise
            return raw
        except psycopg.Error as exc:
            raise _as_sqlite_error(exc) from exc

    def _usable(self):
        if self.raw is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        if self.raw.broken or self.raw.closed:
            self._pool.putconn(self.raw)  # the pool discards a broken connection
            self.raw = None
            self.raw = self._getconn()
        return self.raw

    def execute(self, sql: str, params=()):
        """Run one statement; returns the cursor (``fetchone``, ``fetchall``, iteration)."""
        import psycopg

        raw = self._usable()
        try:
            return raw.execute(translate(sql), params if params is not None else ())
        except psycopg.Error as exc:
            raise _as_sqlite_error(exc) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence]):
        import psycopg

        rows = list(rows)
        raw = self._usable()
        cursor = raw.cursor()
        if rows:
            try:
                cursor.executemany(translate(sql), rows)
            except psycopg.Error as exc:
                raise _as_sqlite_error(exc) from exc
        return cursor

    @property
    def in_transaction(self) -> bool:
        """Inside ``BEGIN`` (including a failed transaction that still needs ROLLBACK)."""
        from psycopg.pq import TransactionStatus

        if self.raw is None or self.raw.broken:
            return False
        return self.raw.info.transaction_status in (TransactionStatus.INTRANS,
                                                    TransactionStatus.INERROR,
                                                    TransactionStatus.ACTIVE)

    def close(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            self._pool.putconn(raw)


def _reset_session(raw) -> None:
    """A connection handed back to the pool: nothing of its session reaches the next user
    (a reader's read-only mode, an advisory lock left held by mistake)."""
    raw.execute("RESET ALL")
    raw.execute("SELECT pg_advisory_unlock_all()")


def _pool_for(url: str):
    from psycopg_pool import ConnectionPool

    with _POOLS_LOCK:
        pool = _POOLS.get(url)
        if pool is None:
            pool = ConnectionPool(url, min_size=1, max_size=POOL_MAX_SIZE,
                                  kwargs={"autocommit": True}, open=True,
                                  check=ConnectionPool.check_connection,
                                  reset=_reset_session, timeout=POOL_TIMEOUT_S,
                                  name=describe(url))
            _POOLS[url] = pool
        return pool


def connect(url: str, *, readonly: bool = False) -> PgConnection:
    """A pooled connection to ``url``; creates the schema at the first writable one.

    ``readonly``: no schema creation, and the session refuses writes
    (``default_transaction_read_only``) like SQLite's ``mode=ro``.
    """
    conn = PgConnection(url, _pool_for(url), readonly=readonly)
    if not readonly and url not in _SCHEMA_READY:
        try:
            create_schema(conn)
        except BaseException:
            conn.close()
            raise
        _SCHEMA_READY.add(url)
    return conn


def close_pools(url: str | None = None) -> None:
    """Close the pool of ``url`` (None: every pool of this process) and forget what this
    process knew about its database (tests, benchmarks; a process exit does it too)."""
    with _POOLS_LOCK:
        urls = list(_POOLS) if url is None else [url]
        pools = [_POOLS.pop(name) for name in urls if name in _POOLS]
        for name in urls:
            _SCHEMA_READY.discard(name)
            _PARTITION_DAYS.pop(name, None)
    for pool in pools:
        pool.close()


def create_schema(conn: PgConnection, *, schema_version: int = 2) -> None:
    """Create the tables (idempotent; concurrent processes serialise on an advisory lock)
    and the tick partitions of today and ``PARTITIONS_AHEAD`` days after."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))
        for statement in SCHEMA:
            conn.execute(statement)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                     "ON CONFLICT (key) DO NOTHING", (str(schema_version),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    today = _day_start(int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000))
    ensure_partitions(conn, [today + i * DAY_MS for i in range(PARTITIONS_AHEAD + 1)])


# --------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------


def _day_start(ts: int) -> int:
    return ts - ts % DAY_MS


def partition_name(day_start_ms: int) -> str:
    """``ticks_YYYYMMDD`` of the UTC day starting at ``day_start_ms``."""
    day = datetime.datetime.fromtimestamp(day_start_ms / 1000, tz=datetime.timezone.utc)
    return f"ticks_{day:%Y%m%d}"


def ensure_partitions(conn: PgConnection, day_starts: Iterable[int]) -> None:
    """Create the missing day partitions (outside any transaction: DDL commits by itself).

    Known days are remembered per process, so a batch costs nothing once its day exists.
    """
    known = _PARTITION_DAYS.setdefault(conn.url, set())
    missing = sorted(set(day_starts) - known)
    if not missing:
        return
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK_KEY,))
        for start in missing:
            # Names and bounds come from integers computed here, never from user text.
            conn.execute(f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF "
                         f"ticks FOR VALUES FROM ({int(start)}) TO ({int(start) + DAY_MS})")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    known.update(missing)


def list_partitions(conn: PgConnection) -> list[tuple[str, int, int]]:
    """``(name, from_ms, to_ms)`` of every partition of ``ticks``, oldest first."""
    rows = conn.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ticks'::regclass"
    ).fetchall()
    parts = []
    for name, bound in rows:
        if bound is None:  # dropped by another connection while this query ran: gone
            continue
        # "FOR VALUES FROM ('1765497600000') TO ('1765584000000')"
        low, high = (int(v) for v in re.findall(r"\('?(-?\d+)'?\)", bound))
        parts.append((name, low, high))
    return sorted(parts, key=lambda part: part[1])


# --------------------------------------------------------------------------------------
# Writing ticks
# --------------------------------------------------------------------------------------


def begin_write(conn: PgConnection, trades: Sequence[tuple], symbols: Iterable[str]) -> None:
    """Open a ``TickWriter`` batch: partitions for its days, ``BEGIN``, symbol locks.

    The advisory transaction locks (released by COMMIT/ROLLBACK) make writers of the same
    symbol take turns per batch, so the id cursor and the gaps they read and write stay
    consistent; they are taken in one sorted order, so two writers never deadlock.
    """
    ensure_partitions(conn, {_day_start(trade[2]) for trade in trades})
    _ensure_staging(conn)  # before BEGIN: created once per session, not once per batch
    conn.execute("BEGIN")
    keys = sorted({zlib.crc32(f"ticks:{symbol}".encode()) for symbol in symbols})
    conn.execute("SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(?::bigint[]) AS k "
                 "ORDER BY 1) AS ordered", (keys,))


# The session's staging tables for COPY: emptied at every COMMIT, so one set serves every batch.
_STAGING_TABLES = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_ticks (LIKE ticks, "
    "arrival bigint GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS",
    *(f"CREATE TEMPORARY TABLE IF NOT EXISTS incoming_{table} (LIKE {table}) "
      "ON COMMIT DELETE ROWS" for table in ("bars_1s", "bars_1m")),
)
_STAGED_SESSIONS: "weakref.WeakSet" = weakref.WeakSet()  # raw connections holding them


def _ensure_staging(conn: PgConnection):
    """The raw connection, with the staging tables created unless this session has them.

    Recorded only when created outside a transaction: a rolled-back ``CREATE TEMPORARY
    TABLE`` vanishes, so inside one the (cheap, idempotent) DDL is simply run again next
    time. A replaced (broken) connection is a new object, so it creates its own.
    """
    raw = conn._usable()
    if raw not in _STAGED_SESSIONS:
        for statement in _STAGING_TABLES:
            conn.execute(statement)
        if not conn.in_transaction:
            _STAGED_SESSIONS.add(raw)
    return raw


def insert_new_ticks(conn: PgConnection, trades: Sequence[tuple]) -> list[tuple]:
    """COPY the batch into a temporary table and insert what ``ticks`` lacks; returns exactly
    the inserted rows (each (symbol, trade_id) once). Runs inside the caller's transaction:
    the table is emptied at COMMIT, and a rolled-back batch's rows vanish with it."""
    import psycopg

    raw = _ensure_staging(conn)
    try:
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY incoming_ticks ({TICK_INSERT_COLUMNS}) FROM STDIN") as copy:
                for symbol, trade_id, ts, price, qty, maker, received in trades:
                    copy.write_row((symbol, trade_id, ts, price, qty, int(maker), received))
            cursor.execute(_INSERT_NEW_TICKS)
            return cursor.fetchall()
    except psycopg.Error as exc:
        # Perhaps a partition this process knows was dropped by another one's retention:
        # forget the known days, so the retry of this batch creates what it needs.
        _PARTITION_DAYS.pop(conn.url, None)
        raise _as_sqlite_error(exc) from exc


_BAR_VALUES_CLAUSE = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def merge_bars(conn: PgConnection, merge_sql: str, rows: list[tuple]) -> None:
    """Run ``database``'s bar upsert (``merge_sql``) for all ``rows`` in one statement.

    The rows are COPYed into a temporary table shaped like the target (``incoming_bars_1s``
    / ``incoming_bars_1m``) and the same ON CONFLICT merge reads them with a SELECT instead
    of its VALUES row: one round trip per table instead of one upsert per bar (a batch of
    sparse trades touches ~one second per trade), and COPY instead of per-parameter
    dumping. ``rows`` hold one bar per (symbol, ts), as one upsert statement requires.
    """
    if not rows:
        return
    table = re.match(r"\s*INSERT INTO (bars_1[sm])\b", merge_sql)
    if table is None or _BAR_VALUES_CLAUSE not in merge_sql:
        raise ValueError("merge_sql is not database's bar upsert with one VALUES row")
    staging = f"incoming_{table.group(1)}"  # one of two fixed names
    import psycopg

    raw = _ensure_staging(conn)
    try:
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {staging} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    except psycopg.Error as exc:
        raise _as_sqlite_error(exc) from exc
    conn.execute(merge_sql.replace(_BAR_VALUES_CLAUSE, f"SELECT * FROM {staging}", 1))
    conn.execute(f"DELETE FROM {staging}")  # a second merge in this transaction starts empty


# --------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------


def prune(conn: PgConnection, older_than_ms: int) -> int:
    """Drop the day partitions that end at or before ``older_than_ms``, with their bars and
    the gaps that ended before; returns the ticks dropped (0: nothing older is left).

    Whole days only: the partition holding ``older_than_ms`` stays until the cutoff passes
    its end. Every symbol's ticks of a day live in its partition, so this is database-wide;
    bars and gaps older than the first day kept go with them (``ts`` of bars < that day).
    """
    older_than_ms = int(older_than_ms)
    doomed = [(name, low, high) for name, low, high in list_partitions(conn)
              if high <= older_than_ms]
    if not doomed:
        return 0
    keep_from = max(high for _, _, high in doomed)
    dropped = 0
    conn.execute("BEGIN")
    try:
        for name, _, _ in doomed:
            dropped += conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            conn.execute(f"DROP TABLE {name}")  # names from the catalog, not user text
        conn.execute("DELETE FROM bars_1s WHERE ts < ?", (keep_from,))
        conn.execute("DELETE FROM bars_1m WHERE ts < ?", (keep_from,))
        conn.execute("DELETE FROM gaps WHERE coalesce(to_ts, detected_at) < ?", (keep_from,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    _PARTITION_DAYS.get(conn.url, set()).difference_update(low for _, low, _ in doomed)
    log.info("retention: dropped %d day partitions of ticks (%d ticks) before %d",
             len(doomed), dropped, keep_from)
    return dropped


# --------------------------------------------------------------------------------------
# Statements whose SQL differs from SQLite's
# --------------------------------------------------------------------------------------


def table_exists(conn: PgConnection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]


def open_gaps(conn: PgConnection, names: list[str]) -> list[tuple]:
    rows = conn.execute("SELECT symbol, from_id, to_id, from_ts, to_ts FROM gaps "
                        "WHERE symbol = ANY(?) ORDER BY from_id DESC", (names,)).fetchall()
    return [tuple(row) for row in rows]


def database_size_bytes(conn: PgConnection) -> int:
    """Bytes the server uses for the connection's database (tables, indexes, partitions)."""
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def spill_name(url: str) -> str:
    """A file name for the collector's spill journal of ``url`` (``host_port_dbname``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", describe(url)) or "postgresql"

