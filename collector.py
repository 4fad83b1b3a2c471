"""Binance trade collector: WebSocket feed -> bounded queue -> SQLite writer.

This module owns getting trades into the database and nothing else. Three parts, kept apart
so each can be read (and tested) on its own:

* **Parsing** - ``parse_frame`` turns one WebSocket message into a trade tuple (or says why
  it is not one). Pure; knows Binance's frame shapes and nothing about sockets.
* **Supervision** - ``Collector._receive_loop`` opens the connection, reads, and reconnects
  after any close, error or silence with capped, fully jittered exponential backoff over the
  connections that failed to open or died before delivering data (one that delivered data
  resets it: the next attempt comes within ``BACKOFF_BASE_S``). It knows nothing about
  message shapes. Many symbols are split over connections (``plan_connections``), each with
  its own receive thread feeding the same queue.
* **Writing** - ``Collector._writer_loop`` owns the only SQLite write connection and drains
  the queue into one transaction per batch through ``database.TickWriter`` (dedup, 1 s bars
  and gap tracking happen there).

The receive thread never waits on SQLite: it only parses and appends to a ``deque``. The
queue is bounded (``queue_max``); when it is full, new trades are dropped and counted in
``dropped`` (their ids then show up as gaps, and the start and end of the overflow are logged),
so memory stays bounded whatever the database does.

When the database cannot take a batch (disk full, locked beyond the busy timeout, I/O error)
the writer appends it to the spill journal (``spill.py``: ``<db>.spill`` next to the database
or in ``spill_dir``) and keeps draining the queue into it; once the database accepts writes
again the journal is replayed in order through the same ``TickWriter`` path. Only a batch the
journal cannot take either is dropped (logged at ERROR once a second). Accounting identity,
true at every exit::

    received == stored + duplicates + rejected + filtered + spilled + dropped

where ``spilled`` counts this run's trades still waiting in the journal.

One collector per process: ``start(settings)`` returns the running collector if there is one,
even after Streamlit re-imports this module (the registry lives on the ``sys`` module, which
is never re-imported). ``stop()`` stops reading, drains the queue, commits and joins.

Headless use (record for hours without a browser; the alert rules stored in the database
are evaluated alongside unless ``--no-alerts``)::

    python collector.py --feed demo --symbols btcusdt,ethusdt --duration 60

The last stdout line is a JSON summary with ``received, stored, duplicates, rejected,
filtered, spilled, dropped, reconnects`` and more. Exit codes: 0 = every received trade is in
the database (or was a duplicate, rejected or filtered); 2 = could not start (bad setting, the
database is written by another process); 3 = trades were dropped or are still in the spill
journal (a restart with the same ``--db`` and ``--spill-dir`` replays them).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import logging
import math
import os
import random
import signal
import sqlite3
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass

import writer_lock  # standard library only

if __name__ == "__main__":  # refuse a locked --db before the heavy imports below (seconds)
    writer_lock.exit_if_locked(sys.argv[1:])

import orjson
import websocket

import binance_rest
import database
import database_postgres
import market
import spill
from config import DEFAULT_FUTURES_URL, DEFAULT_SPOT_URL, ConfigError, Settings, default_db_path

log = logging.getLogger("collector")

# Binance cuts every connection at 24 h; reconnect on our own terms a little before that.
MAX_CONNECTION_AGE_S = 23.5 * 3600
HEALTHY_RESET_S = 60.0  # a connection up this long resets the backoff
BACKOFF_BASE_S = 1.0  # first retry lands within [0, 1] s
BACKOFF_CAP_S = 60.0
RECV_POLL_S = 0.5  # socket timeout: how often the reader checks silence and stop requests
# websocket-client asks the socket for exactly the bytes it needs next (2-byte header, length,
# payload): three recv calls per frame, each dropping and retaking the GIL. Asking for a chunk
# lets its own frame buffer keep the rest: ~20 frames per call (bench_ingest: receive CPU per
# frame -55 to -65 %). Small enough that the buffer's copy of the remainder stays cheap.
RECV_CHUNK_BYTES = 4096
WRITER_POLL_S = 0.02
# A short queue is written once its oldest trade is this old instead of ``flush_interval``:
# at Binance's usual rates a trade reaches the database (and the page) in ~50 ms, not 250;
# under load the queue is long and batches stay large. Short = under a tenth of a batch.
QUICK_FLUSH_S = 0.05
PRUNE_EVERY_S = 60.0
SPILL_RETRY_S = 1.0  # while the database refuses writes, try it again this often
RETRY_BUSY_TIMEOUT_MS = 200  # ... waiting this long for a lock (5 s when it works)
REPLAY_SLICE_S = 0.5  # replay the journal at most this long per turn, then take new trades
ALARM_LOG_EVERY_S = 1.0  # drops are logged at most once a second, with the running count
QUEUE_WARN_FRACTION = 0.5  # a queue fuller than this is "growing" (WARNING, amber sidebar)
QUEUE_CALM_FRACTION = 0.1  # ... until it is back below this
EXIT_OK, EXIT_CANNOT_START, EXIT_NOT_ALL_STORED = 0, 2, 3
ATTEMPT_WINDOW_S = 300.0  # Binance spot: 300 connection attempts per 5 minutes per IP ...
MAX_ATTEMPTS_PER_WINDOW = 150  # ... of which this collector uses at most half


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------


class FrameKind(enum.Enum):
    TRADE = "trade"  # payload: trade tuple
    FILTERED = "filtered"  # payload: (symbol, trade_id) of a non-market print (NA, ADL, ...)
    CONTROL = "control"  # {"result": null, "id": 1}
    ERROR = "error"  # {"code": 2, "msg": "..."}
    SHUTDOWN = "shutdown"  # spot {"e": "serverShutdown"}: reconnect at once
    IGNORED = "ignored"  # a well-formed event of a kind we do not collect


class MalformedFrame(ValueError):
    """A frame that is not valid JSON or lacks a required, well-typed field."""


def parse_frame(message: bytes | str, received_ms: int) -> tuple[FrameKind, object]:
    """Classify one WebSocket text message and extract the trade it carries.

    Accepts raw frames and combined-stream frames (``{"stream": ..., "data": {...}}``), the
    ``trade`` and ``aggTrade`` events of spot and futures, control replies and error frames.
    Unknown fields are ignored. A futures trade frame looks like::

        {"e": "trade",       # event type ("aggTrade" for aggregated trades)
         "E": 1765788195123,  # event time, ms
         "T": 1765788195120,  # trade time, ms: the time the bar uses
         "s": "BTCUSDT",
         "t": 6613467015,     # trade id ("a" = aggregate id for aggTrade)
         "p": "89761.30", "q": "0.004",   # decimal strings
         "X": "MARKET",       # futures only: MARKET | INSURANCE_FUND | ADL | NA
         "m": true}           # buyer is the maker, i.e. the taker sold

    Returns
    -------
    (FrameKind, payload)
        For ``TRADE`` the payload is the trade tuple ``(symbol, trade_id, ts, price, qty,
        is_buyer_maker, received_ms)``. Prints that are not market trades (``X`` other than
        ``MARKET``, price or quantity not positive: Binance's ``NA`` placeholders carry
        p = q = "0") come back as ``FILTERED`` with ``(symbol, trade_id)`` so that their ids
        still count as seen.

    Raises
    ------
    MalformedFrame
        Not JSON, not an object, or a trade missing a field or carrying a wrong type.
    """
    try:
        frame = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from None
    if not isinstance(frame, dict):
        raise MalformedFrame(f"not a JSON object: {type(frame).__name__}")
    event = frame.get("data", frame) if "stream" in frame else frame
    if not isinstance(event, dict):
        raise MalformedFrame("combined frame whose 'data' is not an object")
    kind = event.get("e")
    if kind == "trade":
        id_field = "t"
    elif kind == "aggTrade":
        id_field = "a"
    elif kind == "serverShutdown":
        return FrameKind.SHUTDOWN, event
    elif "result" in event and "id" in event:
        return FrameKind.CONTROL, event
    elif "code" in event and "msg" in event:
        return FrameKind.ERROR, event
    elif isinstance(kind, str):
        return FrameKind.IGNORED, kind
    else:
        raise MalformedFrame("no event type ('e') in frame")

    try:
        symbol = event["s"]
        trade_id = event[id_field]
        ts = event["T"]
        price = float(event["p"])
        qty = float(event["q"])
        buyer_is_maker = event["m"]
    except KeyError as exc:
        raise MalformedFrame(f"{kind} frame without field {exc.args[0]!r}") from None
    except (TypeError, ValueError):
        raise MalformedFrame(f"{kind} frame with a non-numeric price or quantity") from None
    if not isinstance(symbol, str) or not symbol:
        raise MalformedFrame(f"{kind} frame with symbol {symbol!r}")
    if type(trade_id) is not int or type(ts) is not int:
        raise MalformedFrame(f"{kind} frame with non-integer id or time")
    if type(buyer_is_maker) is not bool:
        raise MalformedFrame(f"{kind} frame with non-boolean 'm'")
    if not (math.isfinite(price) and math.isfinite(qty)):
        raise MalformedFrame(f"{kind} frame with a non-finite price or quantity")
    symbol = symbol.upper()
    if event.get("X", "MARKET") != "MARKET" or price <= 0.0 or qty <= 0.0:
        return FrameKind.FILTERED, (symbol, trade_id)
    return FrameKind.TRADE, (symbol, trade_id, ts, price, qty, int(buyer_is_maker), received_ms)


def stream_url(base: str, market_kind: str, stream: str, symbols) -> str:
    """The combined-stream URL for ``symbols`` on ``base``.

    Futures streams are routed since 2026-04: ``aggTrade`` lives under ``/market``, raw
    ``trade`` under ``/public``; an unrouted futures connection is acknowledged and then
    silent. Spot uses the plain ``/stream`` path.

    >>> stream_url("wss://fstream.binance.com", "futures", "aggTrade", ["btcusdt", "ethusdt"])
    'wss://fstream.binance.com/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade'
    >>> stream_url("wss://stream.binance.com:9443", "spot", "trade", ["btcusdt"])
    'wss://stream.binance.com:9443/stream?streams=btcusdt@trade'
    """
    names = "/".join(f"{symbol.lower()}@{stream}" for symbol in symbols)
    if market_kind == "futures":
        path = "/market/stream" if stream == "aggTrade" else "/public/stream"
    else:
        path = "/stream"
    return f"{base.rstrip('/')}{path}?streams={names}"


# Binance documents 1024 streams per connection for spot and USD-M futures (developers.
# binance.com, "WebSocket Market Streams"); futures docs said 200 until recently, and the
# options API still does, so futures connections carry at most 200. URLs stay below 8,000
# characters: a common server limit (a 95 KB URL got "414 Request-URI Too Long").
MAX_STREAMS_PER_CONNECTION = {"spot": 1024, "futures": 200}
MAX_URL_CHARS = 8000
MAX_CONNECTIONS = 10


def plan_connections(base: str, market_kind: str, stream: str, symbols) -> list[tuple]:
    """Split ``symbols`` into groups, one WebSocket connection each, in order.

    Each group stays within ``MAX_STREAMS_PER_CONNECTION[market_kind]`` streams and its
    combined-stream URL within ``MAX_URL_CHARS``. Raises ``ConfigError`` when that takes
    more than ``MAX_CONNECTIONS`` connections.

    >>> [len(g) for g in plan_connections("wss://x", "futures", "aggTrade",
    ...                                   [f"s{i}usdt" for i in range(450)])]
    [200, 200, 50]
    """
    limit = MAX_STREAMS_PER_CONNECTION[market_kind]
    prefix = len(stream_url(base, market_kind, stream, []))
    groups: list[tuple] = []
    current: list[str] = []
    length = prefix
    for symbol in symbols:
        name_length = len(symbol) + 1 + len(stream) + (1 if current else 0)  # "sym@stream/"
        if current and (len(current) >= limit or length + name_length > MAX_URL_CHARS):
            groups.append(tuple(current))
            current, length = [], prefix
            name_length -= 1
        current.append(symbol)
        length += name_length
    if current:
        groups.append(tuple(current))
    if len(groups) > MAX_CONNECTIONS:
        raise ConfigError(f"{len(symbols)} symbols need {len(groups)} connections; at most "
                          f"{MAX_CONNECTIONS} per collector: use several collectors")
    return groups or [()]


backoff_delay = binance_rest.backoff_delay  # one formula for reconnects and REST retries


# --------------------------------------------------------------------------------------
# Health
# --------------------------------------------------------------------------------------


class SymbolActivity:
    """Per-symbol counters kept by the receive thread: last trade time and a trades/s rate."""

    WINDOW_S = 10

    __slots__ = ("last_trade_ms", "last_received_ms", "received", "_second", "_count",
                 "_recent")

    def __init__(self) -> None:
        self.last_trade_ms = 0
        self.last_received_ms = 0
        self.received = 0
        self._second = 0
        self._count = 0
        self._recent: collections.deque = collections.deque(maxlen=self.WINDOW_S)

    def record(self, trade_ms: int, received_ms: int) -> None:
        second = received_ms // 1000
        if second != self._second:
            self._roll(second)
        self._count += 1
        self.received += 1
        if trade_ms > self.last_trade_ms:
            self.last_trade_ms = trade_ms
        self.last_received_ms = received_ms

    def _roll(self, second: int) -> None:
        if self._second:
            self._recent.append(self._count)
            # Seconds without a single trade count as zeros in the rate.
            for _ in range(min(second - self._second - 1, self.WINDOW_S)):
                self._recent.append(0)
        self._second = second
        self._count = 0

    def trades_per_second(self, at_ms: int) -> float:
        """Trades per second over the last complete seconds (up to ten)."""
        recent = list(self._recent)
        idle = at_ms // 1000 - self._second - 1
        if idle > 0:
            recent = (recent + [self._count] + [0] * min(idle, self.WINDOW_S))[-self.WINDOW_S:]
        return sum(recent) / len(recent) if recent else 0.0


class State(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"
    READ_ONLY = "read-only"  # another process writes the database: nothing to collect here


@dataclass(frozen=True)
class Endpoint:
    """Where the receive thread connects and what that feed is called on screen."""

    feed: str  # effective feed: binance-futures, binance-spot, demo, replay
    base: str  # e.g. wss://fstream.binance.com or ws://127.0.0.1:PORT
    market_kind: str  # "futures" | "spot": URL layout and frame dialect
    stream: str
    symbols: tuple[str, ...]
    db_path: str
    builtin_market: bool

    @property
    def url(self) -> str:
        return stream_url(self.base, self.market_kind, self.stream, self.symbols)


# --------------------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------------------


class Collector:
    """Receive thread + writer thread for one feed; see the module docstring.

    Use ``start(settings)`` (module level) in applications: it keeps one per process.
    Tests may build ``Collector(settings)`` directly and call ``.start()`` / ``.stop()``.
    ``backoff_base`` / ``backoff_cap`` / ``healthy_reset`` exist so that tests can run the
    reconnect policy in milliseconds; the defaults are the production values.
    """

    def __init__(self, settings: Settings, *, backoff_base: float = BACKOFF_BASE_S,
                 backoff_cap: float = BACKOFF_CAP_S, healthy_reset: float = HEALTHY_RESET_S,
                 max_connection_age: float = MAX_CONNECTION_AGE_S, seed: int | None = None,
                 trades_after: threading.Event | None = None):
        self.settings = settings
        # The REST trade backfill waits for this (at most a few seconds): the page's
        # process sets it after its first page run (binance_rest.Backfiller).
        self.trades_after = trades_after
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.healthy_reset = healthy_reset
        self.max_connection_age = max_connection_age
        self._rng = random.Random(seed)
        self.state = State.NEW
        self._stop_requested = threading.Event()
        self._reader_done = threading.Event()
        # Trades and placeholder markers, in the order they arrived (see _placeholder_marker).
        self._queue: collections.deque = collections.deque()
        self._ws: websocket.WebSocket | None = None
        self._market: market.MarketServer | None = None
        self._receive_thread: threading.Thread | None = None
        self._writer_thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()
        self._reconnect_requested = threading.Event()
        self.endpoint: Endpoint | None = None
        self.fallback_reason = ""
        self.read_only_reason = ""  # why the state is READ_ONLY (names file and process)
        # Many symbols: this object's receive thread carries ``_group`` (None = all symbols)
        # and each further group has a "link", a Collector that runs only a receive thread
        # into this one's queue (see ``_plan_links``). Counters are summed in ``health()``.
        self._group: tuple[str, ...] | None = None
        self._links: list[Collector] = []
        self._retired_links: list[Collector] = []  # stopped links: their counts still count
        self._is_link = False
        self._writer_lock: database.WriterLock | None = None
        self._backfiller: binance_rest.Backfiller | None = None
        self._backfill_final: dict | None = None
        # Counters: each written by exactly one thread, read by anyone without locks.
        # received = trades + filtered prints + rejected frames; see the accounting identity.
        self.received = 0
        self.rejected = 0
        self.filtered = 0
        self.ignored = 0
        self.dropped_queue_full = 0  # receive thread: the queue was full
        self.dropped_spill_failed = 0  # writer: neither the database nor the journal took them
        self.dropped_at_stop = 0  # stop(): the writer did not finish in time
        self.stored = 0
        self.duplicates = 0
        self.recovered = 0  # trades of an earlier run's journal stored by this run
        self.gaps_open = 0  # gap rows in the table (refreshed after writes that change them)
        self.gaps_opened = 0  # gaps this run detected
        self.gaps_filled = 0  # gaps late trades (or journal replays) closed completely
        self.batches = 0
        self.write_errors = 0
        self.last_write_error = ""
        self.db_failing_since_ms = 0  # the database refuses writes since then (0 = it takes them)
        self.last_drop_ms = 0
        self.queue_growing = False
        self.spill_path = ""
        self._journal: spill.SpillJournal | None = None  # spilled, journal_pending: its counts
        self._overflow_started = 0.0
        self._overflow_first_drop = 0
        self._last_drop_log = 0.0
        self._last_journal_error = 0.0
        self._writer_deadline = math.inf
        self._gaps_counted_at = 0.0
        self._attempts: collections.deque = collections.deque()  # monotonic connect times
        self.reconnects = 0
        self.connections = 0
        self.queue_high_water = 0
        self.last_close_reason = ""
        self.last_error_frame = ""
        self.last_lag_ms = 0  # receive time - event time of the latest frame
        self.last_commit_ms = 0
        self.connected_since_ms = 0
        self.started_ms = 0
        self.retry_delays: list[float] = []  # the backoff delays actually slept (last 100)
        self.commit_latencies_ms: collections.deque = collections.deque(maxlen=100_000)
        self.symbols: dict[str, SymbolActivity] = {}
        self._last_reject_log = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Collector:
        """Start the threads (and the built-in market for demo/replay). Idempotent."""
        with self._lifecycle_lock:
            if self.state is not State.NEW:
                return self
            self.started_ms = now_ms()
            # The lock first: a refused start must be quick and must not start a market.
            if not self._take_writer_lock(self._initial_db_path()):
                return self
            self.endpoint = self._initial_endpoint()
            self.spill_path = spill.journal_path(self.db_path, self.settings.spill_dir)
            self.symbols = {s.upper(): SymbolActivity() for s in self.settings.symbols}
            self._start_backfill()
            self.state = State.CONNECTING
            self._writer_thread = threading.Thread(target=self._writer_loop,
                                                   name="collector-writer", daemon=True)
            self._receive_thread = threading.Thread(target=self._receive_loop,
                                                    name="collector-receive", daemon=True)
            self._replan_links()
            self._writer_thread.start()
            self._receive_thread.start()
            return self

    def stop(self, timeout: float = 5.0) -> dict:
        """Stop reading, write everything queued, commit, join the threads.

        Returns the final ``health()`` snapshot. Safe to call more than once.
        """
        deadline = time.monotonic() + timeout
        with self._lifecycle_lock:
            if self.state in (State.NEW, State.STOPPED):
                self.state = State.STOPPED
                return self.health()
            self._writer_deadline = deadline  # replaying past it is left to the next start
            self._stop_requested.set()
            ws = self._ws
            if ws is not None:
                ws.abort()  # wakes the reader out of recv() at once
            self._stop_links(max(0.1, deadline - time.monotonic()))
            if self._receive_thread is not None:
                self._receive_thread.join(max(0.1, deadline - time.monotonic()))
            if self._writer_thread is not None:
                # Room for one last write that waits out the busy timeout, then spills.
                self._writer_thread.join(max(0.1, deadline - time.monotonic())
                                         + database.BUSY_TIMEOUT_MS / 1000 + 1.0)
                if self._writer_thread.is_alive():
                    self._account_lost_in_flight()
            self._stop_backfill()
            if self._market is not None:
                self._market.stop()
                self._market = None
            self._release_writer_lock()
            self.state = State.STOPPED
        _forget(self)
        return self.health()

    @property
    def running(self) -> bool:
        return self.state not in (State.NEW, State.STOPPED)

    # -- many symbols: one connection per group ---------------------------------------------

    def _url(self) -> str:
        """The URL of this object's own connection: its group, or every symbol."""
        endpoint = self.endpoint
        return stream_url(endpoint.base, endpoint.market_kind, endpoint.stream,
                          self._group or endpoint.symbols)

    def _replan_links(self) -> None:
        """Split the endpoint's symbols over connections (``plan_connections``): this
        object's receive thread takes the first group, a link per further group the rest.
        Called at start, after a fallback to the built-in market and when symbols change;
        old links stop first (the caller reconnects this object's own connection)."""
        self._stop_links(2.0)
        endpoint = self.endpoint
        groups = plan_connections(endpoint.base, endpoint.market_kind, endpoint.stream,
                                  endpoint.symbols)
        self._group = groups[0] if len(groups) > 1 else None
        for number, group in enumerate(groups[1:], start=1):
            link = Collector(self.settings, backoff_base=self.backoff_base,
                             backoff_cap=self.backoff_cap, healthy_reset=self.healthy_reset,
                             max_connection_age=self.max_connection_age,
                             seed=self._rng.randrange(2**32))
            link._is_link = True
            link.endpoint, link._group, link.started_ms = endpoint, group, self.started_ms
            # Shared with this object: the queue goes to its writer, the per-symbol activity
            # to its health, connection attempts to one budget.
            link._queue = self._queue
            link.symbols, link._attempts = self.symbols, self._attempts
            link.state = State.CONNECTING
            link._receive_thread = threading.Thread(target=link._receive_loop,
                                                    name=f"collector-receive-{number}",
                                                    daemon=True)
            self._links.append(link)
            link._receive_thread.start()
        if self._links:
            log.info("%d symbols over %d connections (at most %d streams each)",
                     len(endpoint.symbols), len(groups),
                     MAX_STREAMS_PER_CONNECTION[endpoint.market_kind])

    def _stop_links(self, timeout: float) -> None:
        """Stop every link's receive thread; their counters stay for ``health()``."""
        links = self._links
        for link in links:
            link._stop_requested.set()
            ws = link._ws
            if ws is not None:
                ws.abort()
        deadline = time.monotonic() + timeout
        for link in links:
            if link._receive_thread is not None:
                link._receive_thread.join(max(0.1, deadline - time.monotonic()))
            link.state = State.STOPPED
        self._retired_links.extend(links)
        self._links = []

    def _initial_db_path(self) -> str:
        """The file ``_initial_endpoint`` will write, known before any market starts."""
        s = self.settings
        if s.feed in ("demo", "replay") and not s.explicit_db_path:
            return default_db_path(s.feed, s.replay_file)
        return s.db_path

    def _take_writer_lock(self, db_path: str) -> bool:
        """Hold ``db_path``'s writer lock (releasing any other); False = read-only now.

        Refused when another process writes that file: the collector then stops collecting
        (state READ_ONLY, ``read_only_reason`` names the file and the process) and the page
        keeps showing the file through its read-only connections.
        A PostgreSQL URL takes no lock: many collectors may write one server database.
        """
        if self._writer_lock is not None and self._writer_lock.db_path == db_path:
            return True
        self._release_writer_lock()
        if database_postgres.is_url(db_path):
            return True
        try:
            self._writer_lock = database.WriterLock.acquire(db_path)
        except database.WriterLockError as exc:
            self.read_only_reason = str(exc)
            log.error("%s", exc)
            s = self.settings
            endpoint = self.endpoint or Endpoint(
                feed=s.feed, base="", market_kind=s.market_kind, stream=s.stream,
                symbols=s.symbols, db_path=db_path, builtin_market=False)
            self.endpoint = dataclasses.replace(endpoint, db_path=db_path)
            self.state = State.READ_ONLY
            self._stop_requested.set()
            if self._market is not None:
                self._market.stop()
                self._market = None
            return False
        return True

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    def _account_lost_in_flight(self) -> None:
        """The writer is stuck (a hung disk): what it still holds is counted as dropped."""
        counts = self.health()
        accounted = (counts["stored"] + counts["duplicates"] + counts["rejected"]
                     + counts["filtered"] + counts["spilled"] + counts["dropped"])
        self.dropped_at_stop = max(0, counts["received"] - accounted)
        log.error("writer did not finish within the stop timeout: %d trades in flight are "
                  "lost (neither stored nor spilled)", self.dropped_at_stop)

    @property
    def dropped(self) -> int:
        """Trades received but neither stored nor spilled: queue full, journal unwritable,
        or still in flight when a stop timed out. Their ids show up as gaps."""
        return self.dropped_queue_full + self.dropped_spill_failed + self.dropped_at_stop

    @property
    def spilled(self) -> int:
        """This run's trades waiting in the spill journal (received, not yet stored)."""
        return self._journal.new_trades if self._journal is not None else 0

    @property
    def journal_pending(self) -> int:
        """Trades waiting in the spill journal, this run's and earlier runs'."""
        return self._journal.pending_trades if self._journal is not None else 0

    @property
    def gaps(self) -> int:
        """Open gaps: the rows of the ``gaps`` table (what the Health tab lists)."""
        return self.gaps_open

    @property
    def db_path(self) -> str:
        """The database this collector writes (changes once if 'auto' falls back)."""
        return self.endpoint.db_path if self.endpoint else self.settings.db_path

    def set_symbols(self, symbols) -> tuple[str, ...]:
        """Collect ``symbols`` from now on (validated); reconnects with the new stream list.

        Raises ``ConfigError`` naming a malformed symbol. Whether a well-formed symbol exists
        only shows once data arrives: the page reports a symbol with no trades after a few
        seconds as "no trades".
        """
        settings = self.settings.with_changes(symbols=symbols)
        if settings.symbols == self.settings.symbols:
            return settings.symbols
        self.settings = settings
        for symbol in settings.symbols:
            self.symbols.setdefault(symbol.upper(), SymbolActivity())
        if self.endpoint is not None:
            self.endpoint = dataclasses.replace(self.endpoint, symbols=settings.symbols)
            self._replan_links()
            self._restart_backfill()
        self.request_reconnect("symbols changed")
        return settings.symbols

    def request_reconnect(self, reason: str = "requested") -> None:
        """Close the current connection; the receive loop reconnects without backoff."""
        self.last_close_reason = reason
        self._reconnect_requested.set()
        ws = self._ws
        if ws is not None:
            ws.abort()

    # -- REST backfill and gap repair (issue 11; binance_rest.Backfiller) -----------------
    #
    # At start the Backfiller fetches the last ``settings.backfill`` of aggregate trades and
    # ``settings.backfill_klines`` of 1-minute klines on its own thread, writing through
    # ``database.BackfillLedger`` (the same TickWriter path: dedup by (symbol, trade_id)).
    # Afterwards it watches the gaps table: every reconnect (``_after_connect``) and every
    # id jump the writer records is repaired by id when REST still has those trades.

    def rest_base(self) -> str | None:
        """The REST base the backfill uses: the setting, else the built-in market's own
        base, else Binance's default for the feed. None with a WebSocket override but no
        REST URL: Binance's REST would not serve that server's trades (ids would not meet)."""
        s = self.settings
        if s.rest_url:
            return s.rest_url.rstrip("/")
        endpoint = self.endpoint
        if endpoint is not None and endpoint.builtin_market:
            parts = urllib.parse.urlsplit(endpoint.base)
            return f"http://{parts.netloc}"
        if s.ws_url:
            return None
        kind = endpoint.market_kind if endpoint is not None else s.market_kind
        return (binance_rest.DEFAULT_SPOT_REST_URL if kind == "spot"
                else binance_rest.DEFAULT_FUTURES_REST_URL)

    def _market_past(self, feed: str, db_path: str) -> dict:
        """How much past the built-in market simulates for REST: the backfill windows, but
        never overlapping simulated trades an earlier demo run left in ``db_path``."""
        s = self.settings
        if feed != "demo":  # a replay serves what it has streamed (its own past)
            return {"rest_weight_limit": market.DEMO_REST_WEIGHT_LIMIT}
        trades_s, klines_s = s.backfill, s.backfill_klines
        if database.database_exists(db_path):
            try:
                conn = database.connect(db_path, readonly=True)
                try:
                    newest = max((database.latest_bar_ts(conn, sym) or 0) for sym in s.symbols)
                finally:
                    conn.close()
            except (sqlite3.DatabaseError, FileNotFoundError):
                newest = 0
            if newest:
                since_s = max(0.0, (now_ms() - newest) / 1000 - 1)
                trades_s, klines_s = min(trades_s, since_s), min(klines_s, since_s)
        return {"history_s": trades_s, "kline_history_s": max(0.0, klines_s - trades_s),
                "rest_weight_limit": market.DEMO_REST_WEIGHT_LIMIT}

    def _start_backfill(self, started_ms: int | None = None) -> None:
        """A Backfiller for the current endpoint; trades stored before ``started_ms``
        (default: the collector's start) count as an earlier run's (its walk stops there)."""
        s = self.settings
        base = self.rest_base()
        if base is None:
            self._backfill_final = {"state": "off", "symbols": {}, "backfilled": 0,
                                    "gaps_repaired": 0, "detail": "no REST URL for the "
                                    "WebSocket override (set BINANCE_REST_URL / --rest-url)"}
            log.info("no REST backfill or gap repair: %s", self._backfill_final["detail"])
            return
        client = binance_rest.RestClient(base, self.endpoint.market_kind)
        self._backfiller = binance_rest.Backfiller(
            client, self.endpoint.symbols, database.BackfillLedger(self.db_path),
            trade_history_s=s.backfill, kline_history_s=s.backfill_klines,
            trades_by_id=s.stream == "aggTrade", pace=s.backfill_pace or 1.0,
            trades_after=self.trades_after,
            started_ms=self.started_ms if started_ms is None else started_ms).start()
        log.info("REST backfill from %s: %g s of trades, %g s of 1m klines%s", client.base_url,
                 s.backfill, s.backfill_klines,
                 "" if s.stream == "aggTrade" else " (raw @trade ids: no trade backfill or "
                 "gap repair, klines only)")

    def _stop_backfill(self) -> None:
        backfiller, self._backfiller = self._backfiller, None
        if backfiller is None:
            return
        backfiller.stop()
        # After freeze() no page is stored any more (one being written finishes first), so
        # the counts taken next include every row the thread stored.
        backfiller.ledger.freeze()
        self._backfill_final = backfiller.health()
        try:  # REST may have filled gaps since the writer last counted them
            if database.database_exists(self.db_path):
                conn = database.connect(self.db_path, readonly=True)
                try:
                    self.gaps_open = database.count_open_gaps(conn)
                finally:
                    conn.close()
        except sqlite3.DatabaseError as exc:
            log.warning("could not recount the open gaps: %s", exc)

    def _restart_backfill(self) -> None:
        """New endpoint or symbols: a new Backfiller for them (the old one stops)."""
        if self.state is not State.NEW and not self._stop_requested.is_set():
            self._stop_backfill()
            self._start_backfill(started_ms=now_ms())  # what is stored now needs no walk

    def _after_connect(self) -> None:
        """A reconnect: let the gap repair look at the gap the new connection reveals."""
        if self._backfiller is not None and self.connections > 1:
            self._backfiller.wake()

    def _backfill_health(self) -> dict:
        backfiller = self._backfiller
        if backfiller is not None:
            return backfiller.health()
        return self._backfill_final or {"state": "off", "symbols": {}, "backfilled": 0,
                                        "gaps_repaired": 0}

    # -- endpoint selection -------------------------------------------------------------

    def _initial_endpoint(self) -> Endpoint:
        s = self.settings
        if s.feed in ("demo", "replay"):
            return self._builtin_endpoint(s.feed, s.db_path if s.explicit_db_path else None)
        base = s.ws_url or (DEFAULT_SPOT_URL if s.feed == "binance-spot" else DEFAULT_FUTURES_URL)
        feed = "binance-futures" if s.feed == "auto" else s.feed
        return Endpoint(feed=feed, base=base, market_kind=s.market_kind, stream=s.stream,
                        symbols=s.symbols, db_path=s.db_path, builtin_market=False)

    def _builtin_endpoint(self, feed: str, db_path: str | None) -> Endpoint:
        s = self.settings
        if feed == "replay":
            source = market.ReplaySource(s.replay_file, speed=s.replay_speed)
        else:
            source = market.SimulatedMarket([sym.upper() for sym in s.symbols], seed=s.demo_seed)
        db_path = db_path or default_db_path(feed, s.replay_file)
        self._market = market.MarketServer(source, kind="futures",
                                           **self._market_past(feed, db_path))
        base = self._market.start()
        return Endpoint(feed=feed, base=base, market_kind="futures", stream=s.stream,
                        symbols=s.symbols, db_path=db_path, builtin_market=True)

    def _fall_back_to_demo(self, reason: str) -> None:
        """Feed 'auto' heard nothing from Binance: switch to the simulated market.

        Runs on the receive thread before any trade was queued, so the writer (which opens
        its database lazily) has written nothing to the futures file.
        """
        self.fallback_reason = reason
        log.warning("no data from Binance (%s): switching to the built-in simulated market",
                    reason)
        db_path = None
        if self.settings.explicit_db_path and not database_postgres.is_url(
                self.settings.db_path):  # never mix simulated ticks into a real file
            stem, ext = os.path.splitext(self.settings.db_path)
            db_path = f"{stem}-demo{ext or '.db'}"
        if not self._take_writer_lock(db_path or default_db_path("demo")):
            return  # another process records the demo already: show its file read-only
        self.endpoint = self._builtin_endpoint("demo", db_path)
        self.spill_path = spill.journal_path(self.db_path, self.settings.spill_dir)
        self._replan_links()
        self.failures = 0
        self._restart_backfill()

    # -- receive thread -----------------------------------------------------------------

    def _receive_loop(self) -> None:
        self.failures = 0
        first_attempt = True
        try:
            while not self._stop_requested.is_set():
                if not first_attempt:
                    self._wait_before_retry()
                    if self._stop_requested.is_set():
                        break
                    if self._check_auto_fallback():
                        self._reconnect_requested.clear()  # connecting right now anyway
                    if self._stop_requested.is_set():  # e.g. the fallback found demo locked
                        break
                    self.reconnects += 1
                first_attempt = False
                self._run_connection()
                self._check_auto_fallback()
        except Exception:  # a bug, not a network condition: say so loudly, keep the writer
            log.exception("receive thread crashed")
            self.last_close_reason = "receive thread crashed (see log)"
        finally:
            self._reader_done.set()

    def _wait_before_retry(self) -> None:
        self.state = State.RECONNECTING
        if self._reconnect_requested.is_set():
            self._reconnect_requested.clear()
            return
        delay = backoff_delay(self.failures, self._rng, self.backoff_base, self.backoff_cap)
        if self._auto_pending():  # never sleep past the moment 'auto' gives up on Binance
            delay = min(delay, max(0.0, self._fallback_at_ms() - now_ms()) / 1000)
        delay = max(delay, self._attempt_budget_wait())
        self.failures += 1
        self.retry_delays = (self.retry_delays + [delay])[-100:]
        self._stop_requested.wait(delay)

    def _attempt_budget_wait(self) -> float:
        """Seconds until another connection attempt fits the budget (0 if it does now).

        Backoff resets after every connection that delivered data, so a link that flaps
        forever would reconnect about once a second; Binance bans an IP above 300 attempts in
        5 minutes. At most MAX_ATTEMPTS_PER_WINDOW attempts per ATTEMPT_WINDOW_S keep us
        well below that whatever the pattern.
        """
        attempts = self._attempts
        cutoff = time.monotonic() - ATTEMPT_WINDOW_S
        while attempts and attempts[0] < cutoff:
            attempts.popleft()
        if len(attempts) < MAX_ATTEMPTS_PER_WINDOW:
            return 0.0
        return attempts[0] - cutoff

    def _auto_pending(self) -> bool:
        """Feed 'auto', still on Binance, and nothing received from it yet."""
        return (self.settings.feed == "auto" and not self.endpoint.builtin_market
                and self.received == self.rejected and not self._is_link)

    def _fallback_at_ms(self) -> float:
        return self.started_ms + self.settings.auto_fallback * 1000

    def _check_auto_fallback(self) -> bool:
        """Switch 'auto' to the built-in market once its wait is over; True if it did."""
        if self._auto_pending() and now_ms() >= self._fallback_at_ms():
            self._fall_back_to_demo(self.last_close_reason or "no data")
            self._reconnect_requested.set()  # the demo connection needs no backoff
            return True
        return False

    def _connect_timeout(self) -> float:
        if self.settings.feed == "auto" and not self.endpoint.builtin_market:
            return max(1.0, self.settings.auto_fallback / 2)
        return 10.0

    def _run_connection(self) -> None:
        """One connection's life: connect, read until it ends, record why it ended."""
        self.state = State.CONNECTING if self.connections == 0 else State.RECONNECTING
        self._attempts.append(time.monotonic())
        self._reconnect_requested.clear()  # the URL below already has what was requested
        try:
            ws = websocket.create_connection(self._url(), timeout=self._connect_timeout(),
                                             skip_utf8_validation=True,
                                             enable_multithread=True)
        except Exception as exc:  # refused, DNS failure, bad handshake, timeout
            self.last_close_reason = f"connect failed: {type(exc).__name__}: {exc}"
            log.info("%s (%s)", self.last_close_reason, self._url())
            return
        _read_in_chunks(ws)
        self._ws = ws
        # stop() or set_symbols() ran while we were connecting: they found no socket to abort
        if self._stop_requested.is_set() or self._reconnect_requested.is_set():
            ws.abort()
        self.connections += 1
        self._after_connect()
        self.connected_since_ms = now_ms()
        self.state = State.CONNECTED
        log.info("connected to %s", self._url())
        data_before = self.received - self.rejected
        try:
            self.last_close_reason = self._read_until_closed(ws)
        except Exception as exc:
            self.last_close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._ws = None
            ws.shutdown()
            self.connected_since_ms = 0
        if self.received - self.rejected > data_before:
            # The link works and the server serves: a drop now is routine (Binance cuts
            # connections; flapping links), so the next attempt comes within BACKOFF_BASE_S.
            # Only connections that fail to open or die before delivering anything escalate.
            self.failures = 0
        if self._stop_requested.is_set():
            self.last_close_reason = "stopped"
        log.info("connection closed: %s", self.last_close_reason)

    def _read_until_closed(self, ws: websocket.WebSocket) -> str:
        """Read frames until the connection ends; return the reason it ended."""
        ws.settimeout(RECV_POLL_S)
        settings = self.settings
        silence_ms = settings.silence_timeout * 1000
        max_age_ms = self.max_connection_age * 1000
        fallback_at_ms = self._fallback_at_ms() if self._auto_pending() else math.inf
        opened_ms = now_ms()
        last_data_ms = opened_ms
        queue = self._queue
        queue_max = settings.queue_max
        growing_depth = queue_max * QUEUE_WARN_FRACTION
        symbols = self.symbols
        text = websocket.ABNF.OPCODE_TEXT
        control = (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG)
        while not self._stop_requested.is_set():
            try:
                # control_frame=True: return after answering a ping, so a server that keeps
                # pinging but sends no data still lets the silence watchdog run.
                opcode, message = ws.recv_data(control_frame=True)
            except websocket.WebSocketTimeoutException:
                opcode, message = None, None
            except websocket.WebSocketConnectionClosedException:
                return "connection closed by peer (no close frame)"
            except OSError as exc:
                return f"socket error: {exc}"
            received_ms = now_ms()
            if opcode is None or opcode in control:
                pass
            elif opcode == text:
                try:
                    kind, payload = parse_frame(message, received_ms)
                except MalformedFrame as exc:
                    self._reject(str(exc))
                    continue
                if kind is FrameKind.TRADE:
                    last_data_ms = received_ms
                    self.received += 1
                    if len(queue) >= queue_max:
                        self._drop_queue_full(received_ms)
                    else:
                        if self._overflow_started and len(queue) < queue_max // 2:
                            self._overflow_ended()  # only once the queue really drained
                        queue.append(payload)
                        depth = len(queue)
                        if depth > self.queue_high_water:
                            self.queue_high_water = depth
                        if depth > growing_depth and not self.queue_growing:
                            self._watch_queue()  # a writer stuck in a write cannot look
                    activity = symbols.get(payload[0])
                    if activity is None:
                        activity = symbols[payload[0]] = SymbolActivity()
                    activity.record(payload[2], received_ms)
                    self.last_lag_ms = received_ms - payload[2]
                elif kind is FrameKind.FILTERED:
                    last_data_ms = received_ms
                    self.received += 1
                    self.filtered += 1
                    # Queued with the trades (never dropped: it is no trade), so the writer
                    # sees its id in arrival order: ahead of trades still queued, it would
                    # make them look late and open a gap for ids that were never missing.
                    queue.append((*payload, None, None, None, None, received_ms))
                elif kind is FrameKind.SHUTDOWN:
                    return "server announced shutdown (serverShutdown)"
                elif kind is FrameKind.ERROR:
                    self.last_error_frame = orjson.dumps(payload).decode()
                    log.warning("error frame from server: %s", self.last_error_frame)
                elif kind is FrameKind.IGNORED:
                    self.ignored += 1
            elif opcode == websocket.ABNF.OPCODE_CLOSE:
                return f"server closed: {_close_reason(message)}"
            else:
                self._reject(f"binary or unexpected frame (opcode {opcode})")
            if received_ms > fallback_at_ms and self.received == self.rejected:
                return f"connected but no data within {settings.auto_fallback:g} s"
            if received_ms - last_data_ms > silence_ms:
                return f"no data for {settings.silence_timeout:g} s (silence watchdog)"
            if received_ms - opened_ms > max_age_ms:
                self._reconnect_requested.set()  # planned: no backoff
                return "planned reconnect before Binance's 24 h cut"
            if self.failures and received_ms - opened_ms > self.healthy_reset * 1000:
                self.failures = 0
        return "stopped"

    def _reject(self, reason: str) -> None:
        self.received += 1  # a frame that may have been a trade: in the identity as rejected
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_reject_log >= 1.0:  # at most one line a second
            self._last_reject_log = now
            log.warning("rejected frame (%d so far): %s", self.rejected, reason)

    def _drop_queue_full(self, received_ms: int) -> None:
        """The queue is full: drop this trade, count it, say so when an overflow starts."""
        self.dropped_queue_full += 1
        self.last_drop_ms = received_ms
        if not self._overflow_started:
            self._overflow_started = time.monotonic()
            self._overflow_first_drop = self.dropped_queue_full
            log.error("queue full (%d trades waiting for the database): dropping new trades "
                      "(%d dropped so far; their ids will show as gaps)",
                      len(self._queue), self.dropped_queue_full)

    def _overflow_ended(self) -> None:
        lost = self.dropped_queue_full - self._overflow_first_drop + 1
        log.warning("queue has room again: %d trades dropped in %.1f s of overflow (%d in all)",
                    lost, time.monotonic() - self._overflow_started, self.dropped_queue_full)
        self._overflow_started = 0.0

    # -- writer thread ------------------------------------------------------------------

    def _writer_loop(self) -> None:
        """Drain the queue into the database; spill to the journal while it refuses writes.

        Order is kept: while the journal holds anything, new batches go behind it and the
        journal is replayed first (at most ``REPLAY_SLICE_S`` per turn, so the queue keeps
        moving). The database is retried every ``SPILL_RETRY_S`` while it fails.
        """
        store: database.TickWriter | None = None
        batch: list = []
        seen: list = []
        retry_at = 0.0
        last_prune = time.monotonic()
        try:
            if not self._auto_pending_db():
                self._open_journal()  # replays what an earlier run left, before new trades
            while True:
                stopping = self._stop_requested.is_set()
                failing = self.db_failing_since_ms != 0
                if (store is not None and not failing and self.settings.retention_days > 0
                        and not stopping and time.monotonic() - last_prune > PRUNE_EVERY_S):
                    last_prune = time.monotonic()
                    self._prune_step(store.conn)
                self._watch_queue()
                if not batch:
                    batch = _without_placeholders(self._take_batch(force=stopping or failing),
                                                  seen)
                journal = self._journal
                backlog = journal is not None and not journal.empty
                may_try = time.monotonic() >= retry_at and not (stopping and failing)
                if not batch and not seen and not (backlog and may_try):
                    # A reader stuck in a slow connect must not keep the writer from closing.
                    # Links (other connections) are joined before ``_links`` empties.
                    if (stopping and not self._queue and not self._links
                            and (self._reader_done.is_set() or self._ws is None)):
                        break
                    time.sleep(WRITER_POLL_S)
                    continue
                if (batch or seen) and journal is None:
                    journal = self._open_journal()
                    backlog = journal is not None and not journal.empty
                if may_try:
                    try:
                        if store is None:
                            store = database.TickWriter(database.connect(self.db_path))
                            self._refresh_gap_count(store.conn)
                        if backlog:
                            self._replay_journal(store, journal)
                        if (journal is None or journal.empty) and (batch or seen):
                            self._count_write(store.write(batch, seen_ids=seen), batch,
                                              store.conn)
                            batch, seen = [], []
                        if failing:
                            self._database_recovered(store.conn)
                    except (sqlite3.Error, OSError) as exc:  # full, locked, I/O error
                        retry_at = time.monotonic() + SPILL_RETRY_S
                        self._database_failed(exc, store)
                if batch or seen:
                    self._spill(batch, seen)
                    batch, seen = [], []
                if (stopping and not self._queue and not self._links
                        and time.monotonic() > self._writer_deadline):
                    break  # out of time for replaying: the rest stays safe in the journal
        except Exception:
            log.exception("writer thread crashed")
            self.last_close_reason = "writer crashed (see log)"
        finally:
            _close_store(store)
            if self._journal is not None:
                self._journal.close()

    def _auto_pending_db(self) -> bool:
        """'auto' has not settled on a database yet (it may still fall back to the demo)."""
        return self.endpoint is not None and self._auto_pending()

    def _open_journal(self) -> spill.SpillJournal | None:
        """The spill journal of the current database, opened once; None if it cannot be."""
        path = spill.journal_path(self.db_path, self.settings.spill_dir)
        self.spill_path = path
        try:
            self._journal = spill.SpillJournal.open(path, self.db_path)
        except OSError as exc:
            now = time.monotonic()
            if now - self._last_journal_error >= ALARM_LOG_EVERY_S:  # retried per batch
                self._last_journal_error = now
                log.error("spill journal %s cannot be opened (%s): trades the database "
                          "refuses will be dropped", path, exc)
            return None
        if self._journal.inherited_trades:
            log.warning("spill journal %s holds %d trades of an earlier run: replaying them "
                        "into %s", path, self._journal.inherited_trades, self.db_path)
        return self._journal

    def _replay_journal(self, store: database.TickWriter, journal: spill.SpillJournal) -> None:
        """Write journal rows into the database, oldest first, for up to REPLAY_SLICE_S."""
        until = time.monotonic() + REPLAY_SLICE_S
        while not journal.empty and time.monotonic() < until:
            trades, seen, inherited, end = journal.read(self.settings.batch_size)
            result = store.write(trades, seen_ids=seen)
            journal.consumed(end, len(trades), inherited)
            if inherited:
                self.recovered += result.inserted
                self._count_gaps(result, store.conn)
            else:
                self._count_write(result, trades, store.conn)
            if journal.empty:
                log.warning("spill journal %s replayed into %s: empty again", journal.path,
                            self.db_path)

    def _count_write(self, result: database.WriteStats, trades: list,
                     conn: sqlite3.Connection) -> None:
        committed_ms = now_ms()
        self.stored += result.inserted
        self.duplicates += result.duplicates
        self.batches += 1
        self.last_commit_ms = committed_ms
        if trades:
            self.commit_latencies_ms.append(committed_ms - trades[0][6])
        self._count_gaps(result, conn)

    def _count_gaps(self, result: database.WriteStats, conn: sqlite3.Connection) -> None:
        """Keep ``gaps_open`` equal to the table: recount when a gap opened or closed, and
        at least once a second (late trades can also split a gap in two)."""
        self.gaps_opened += result.gaps_opened
        self.gaps_filled += result.gaps_filled
        if (result.gaps_opened or result.gaps_filled
                or time.monotonic() - self._gaps_counted_at > 1.0):
            self._refresh_gap_count(conn)

    def _refresh_gap_count(self, conn: sqlite3.Connection) -> None:
        """gaps_open := the rows of the gaps table."""
        self.gaps_open = database.count_open_gaps(conn)
        self._gaps_counted_at = time.monotonic()

    def _spill(self, batch: list, seen: list) -> None:
        """Append to the journal; drop (counted, logged, later a gap) only if that fails."""
        journal = self._journal or self._open_journal()
        try:
            if journal is None:
                raise OSError(f"spill journal {self.spill_path} is not open")
            journal.append(batch, seen)
        except OSError as exc:
            self.dropped_spill_failed += len(batch)
            self.last_drop_ms = now_ms()
            now = time.monotonic()
            if now - self._last_drop_log >= ALARM_LOG_EVERY_S:
                self._last_drop_log = now
                log.error("spill journal %s cannot be written (%s): %d trades dropped so far "
                          "(recorded as gaps once the database takes writes)",
                          self.spill_path, exc, self.dropped_spill_failed)
            return

    def _database_failed(self, exc: Exception, store: database.TickWriter | None) -> None:
        """Note the failure; while it lasts, retries wait only briefly for a lock, so a
        database locked for minutes costs one busy timeout, not one per retry."""
        self.write_errors += 1
        self.last_write_error = f"{type(exc).__name__}: {exc}"
        if store is not None:
            _set_busy_timeout(store.conn, RETRY_BUSY_TIMEOUT_MS)
        if not self.db_failing_since_ms:
            self.db_failing_since_ms = now_ms()
            log.warning("database %s refuses writes (%s): spilling trades to %s until it "
                        "takes them again", self.db_path, self.last_write_error, self.spill_path)

    def _database_recovered(self, conn: sqlite3.Connection) -> None:
        _set_busy_timeout(conn, database.BUSY_TIMEOUT_MS)
        log.warning("database %s takes writes again after %.1f s (%d write errors); %d "
                    "trades left in the spill journal %s", self.db_path,
                    (now_ms() - self.db_failing_since_ms) / 1000, self.write_errors,
                    self.journal_pending, self.spill_path)
        self.db_failing_since_ms = 0

    def _watch_queue(self) -> None:
        """Log when the queue starts growing (the writer falls behind) and when it calms.

        The writer calls this between batches; the receive thread too when the queue passes
        the growing mark, since a writer stuck in a long write never gets to look."""
        depth = len(self._queue)
        limit = self.settings.queue_max
        if not self.queue_growing and depth > limit * QUEUE_WARN_FRACTION:
            self.queue_growing = True
            log.warning("queue growing: %d of %d trades waiting for the database", depth,
                        limit)
        elif self.queue_growing and depth < limit * QUEUE_CALM_FRACTION:
            self.queue_growing = False
            log.warning("queue back to %d trades waiting", depth)

    def _take_batch(self, force: bool) -> list:
        """Pop up to ``batch_size`` trades once the batch is full or old enough: its oldest
        trade older than ``flush_interval``, or than ``QUICK_FLUSH_S`` while the queue is
        short (see the constant)."""
        queue = self._queue
        depth = len(queue)
        if depth == 0:
            return []
        size = self.settings.batch_size
        wait_s = self.settings.flush_interval
        if depth < size // 10:
            wait_s = min(wait_s, QUICK_FLUSH_S)
        oldest_age_ms = now_ms() - queue[0][6]
        if depth < size and oldest_age_ms < wait_s * 1000 and not force:
            return []
        return [queue.popleft() for _ in range(min(depth, size))]

    def _prune_step(self, conn: sqlite3.Connection) -> None:
        """Delete ticks older than the retention, a few thousand rows per transaction."""
        retention_ms = int(self.settings.retention_days * 86_400_000)
        try:
            for symbol in list(self.symbols):
                latest = database.latest_bar_ts(conn, symbol)
                if latest is None:
                    continue
                cutoff = latest - retention_ms
                while not self._stop_requested.is_set():
                    deleted = database.prune(conn, cutoff, symbol=symbol)
                    # Ingest first: leave the rest for the next round if trades are waiting.
                    if deleted == 0 or len(self._queue) > self.settings.batch_size:
                        break
        except sqlite3.OperationalError as exc:  # busy: retention can wait a minute
            log.warning("retention pruning postponed: %s", exc)

    # -- health ---------------------------------------------------------------------------

    def health(self) -> dict:
        """A snapshot of the collector's state for the page; no locks taken."""
        at = now_ms()
        endpoint = self.endpoint
        symbols = {}
        for name, activity in list(self.symbols.items()):
            last = activity.last_trade_ms
            symbols[name] = {
                "last_trade_ms": last or None,
                "last_trade_age_s": (at - last) / 1000 if last else None,
                "trades_per_s": round(activity.trades_per_second(at), 2),
                "received": activity.received,
            }
        links = self._links + self._retired_links

        def total(name: str) -> int:  # receive-side counters of every connection
            return getattr(self, name) + sum(getattr(link, name) for link in links)

        last_drop_ms = max([self.last_drop_ms] + [link.last_drop_ms for link in links])
        return {
            "state": self.state.value,
            "connected": self.state is State.CONNECTED,
            "requested_feed": self.settings.feed,
            "feed": endpoint.feed if endpoint else self.settings.feed,
            "builtin_market": bool(endpoint and endpoint.builtin_market),
            "fallback_reason": self.fallback_reason,
            "read_only_reason": self.read_only_reason,
            "url": self._url() if endpoint else "",
            "connections_planned": 1 + len(self._links),
            "links": [{"symbols": len(link._group or ()), "state": link.state.value,
                       "last_close_reason": link.last_close_reason} for link in self._links],
            "db_path": self.db_path,
            "stream": self.settings.stream,
            "symbols": symbols,
            "queue_depth": len(self._queue),
            "queue_high_water": self.queue_high_water,
            "queue_max": self.settings.queue_max,
            "received": total("received"),
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": total("rejected"),
            "filtered": total("filtered"),
            "ignored": total("ignored"),
            "dropped": self.dropped + sum(link.dropped_queue_full for link in links),
            "spilled": self.spilled,
            "recovered": self.recovered,
            "journal_pending": self.journal_pending,
            "spill_path": self.spill_path,
            "db_failing_since_ms": self.db_failing_since_ms or None,
            "last_write_error": self.last_write_error,
            "last_drop_ms": last_drop_ms or None,
            "queue_growing": self.queue_growing,
            "gaps": self.gaps,
            "gaps_open": self.gaps_open,
            "backfill": (backfill := self._backfill_health()),
            "backfilled": backfill["backfilled"],
            "gaps_repaired": backfill["gaps_repaired"],
            "gaps_opened": self.gaps_opened,
            "gaps_filled": self.gaps_filled,
            "reconnects": total("reconnects"),
            "connections": total("connections"),
            "last_close_reason": self.last_close_reason,
            "last_error_frame": self.last_error_frame,
            "lag_ms": self.last_lag_ms,
            "batches": self.batches,
            "write_errors": self.write_errors,
            "last_commit_ms": self.last_commit_ms or None,
            # max, not a sort: health() runs on every page refresh, the deque holds 100,000
            "commit_latency_ms_max_recent": max(self.commit_latencies_ms, default=None),
            "connected_since_ms": self.connected_since_ms or None,
            "started_ms": self.started_ms,
        }


def _read_in_chunks(ws: websocket.WebSocket) -> None:
    """Make ``ws`` read the socket ``RECV_CHUNK_BYTES`` at a time (see the constant).

    websocket-client's frame buffer calls ``recv(n)`` for the ``n`` bytes it lacks and keeps
    whatever more it gets for the next frame, so returning up to a chunk is safe: frames,
    control frames and timeouts behave as before (the socket is only read when the buffer
    is short, with the same timeout).
    """
    read = ws._recv  # the client's socket read (closes and raises on a dead socket)
    ws.frame_buffer.recv = lambda wanted: read(max(wanted, RECV_CHUNK_BYTES))


def _set_busy_timeout(conn: sqlite3.Connection, milliseconds: int) -> None:
    if database_postgres.is_postgres(conn):  # SQLite's file lock wait; a server has none
        return
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")
    except sqlite3.Error as exc:  # the next write will tell whether the connection is usable
        log.warning("could not set the busy timeout: %s", exc)


def _close_store(store: database.TickWriter | None) -> None:
    """Close a writer's connection, ignoring the errors of a database that is failing."""
    if store is not None:
        try:
            store.conn.close()
        except sqlite3.Error as exc:
            log.warning("closing the database connection failed: %s", exc)
    return None


def _without_placeholders(batch: list, seen: list) -> list:
    """The trades of a taken batch; placeholder markers' ``(symbol, id)`` go to ``seen``.

    A placeholder marker is a queue row whose price (index 3) is None: a frame that consumed
    a trade id without being a trade (futures ``"X":"NA"``). Its id only advances the gap
    tracking, in the same write as the trades that arrived around it.
    """
    trades = [row for row in batch if row[3] is not None]
    if len(trades) != len(batch):
        seen.extend((row[0], row[1]) for row in batch if row[3] is None)
    return trades


def _close_reason(message: bytes) -> str:
    if message and len(message) >= 2:
        code = int.from_bytes(message[:2], "big")
        text = message[2:].decode("utf-8", "replace")
        return f"{code} {text}".strip()
    return "no status"


# --------------------------------------------------------------------------------------
# One collector per process
# --------------------------------------------------------------------------------------

# Streamlit re-imports changed modules, which would re-create a module-level singleton and
# start a second collector; the ``sys`` module is never re-imported, so the registry lives
# there.
_PROCESS = sys.__dict__.setdefault("_pairs_dashboard_collector", {"lock": threading.Lock(),
                                                                  "collector": None})


def start(settings: Settings | None = None, *,
          trades_after: threading.Event | None = None) -> Collector:
    """Start this process's collector, or return the one already running.

    A running collector is returned as it is even when ``settings`` differ; call ``stop()``
    first to change feed or database. ``trades_after``: see ``Collector``.
    """
    with _PROCESS["lock"]:
        current = _PROCESS["collector"]
        if current is not None and current.running:
            return current
        collector = Collector(settings or Settings.from_env(), trades_after=trades_after)
        _PROCESS["collector"] = collector
        return collector.start()


def running_collector() -> Collector | None:
    """The collector running in this process, if any."""
    current = _PROCESS["collector"]
    return current if current is not None and current.running else None


def stop(timeout: float = 5.0) -> dict | None:
    """Stop this process's collector (if one runs) and return its final health."""
    current = _PROCESS["collector"]
    return current.stop(timeout) if current is not None else None


def _forget(collector: Collector) -> None:
    with _PROCESS["lock"]:
        if _PROCESS["collector"] is collector:
            _PROCESS["collector"] = None


# --------------------------------------------------------------------------------------
# Headless CLI
# --------------------------------------------------------------------------------------

SUMMARY_KEYS = ("received", "stored", "duplicates", "rejected", "filtered", "ignored",
                "spilled", "dropped", "recovered", "journal_pending", "gaps", "gaps_open",
                "gaps_opened", "gaps_filled", "reconnects", "batches", "write_errors",
                "backfilled", "gaps_repaired")


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Record Binance trades into SQLite without a browser. Flags override the "
                    "CRYPTO_* environment variables.")
    parser.add_argument("--feed", help="auto | binance-futures | binance-spot | demo | replay")
    parser.add_argument("--symbols", help="comma-separated, e.g. btcusdt,ethusdt")
    parser.add_argument("--stream", help="aggTrade | trade")
    parser.add_argument("--ws-url", dest="ws_url", help="base URL override, e.g. ws://127.0.0.1:9000")
    parser.add_argument("--db", dest="db_path", help="SQLite file (default data/<feed>.db) "
                        "or postgresql://user@host:port/dbname")
    parser.add_argument("--silence-timeout", dest="silence_timeout", type=float,
                        help="seconds without data before reconnecting (default 30)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--replay-file", dest="replay_file", help="NDJSON or CSV trades to replay")
    parser.add_argument("--replay-speed", dest="replay_speed", type=float,
                        help="1 = real time, N = N times faster, 0 = as fast as possible")
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--flush-interval", dest="flush_interval", type=float)
    parser.add_argument("--retention-days", dest="retention_days", type=float)
    parser.add_argument("--seed", dest="demo_seed", type=int, help="seed of the built-in market")
    parser.add_argument("--spill-dir", dest="spill_dir",
                        help="where the spill journal goes while the database refuses writes "
                             "(default: next to the database)")
    parser.add_argument("--rest-url", dest="rest_url",
                        help="REST base for backfill and gap repair, scheme://host:port "
                             "(default: Binance's, or the --ws-url host, or the built-in "
                             "market's)")
    parser.add_argument("--backfill", dest="backfill",
                        help="aggregate trades of the last DURATION fetched over REST at "
                             "start, e.g. 90s, 30m, 6h; 0 = off (default 60m); gaps are "
                             "repaired after every reconnect either way")
    parser.add_argument("--backfill-klines", dest="backfill_klines",
                        help="1-minute klines of the last DURATION fetched at start "
                             "(default 24h; 0 = off)")
    parser.add_argument("--no-alerts", dest="alerts", action="store_false",
                        help="do not evaluate the alert rules stored in the database")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("duration", "log_level", "alerts")}
    try:
        settings = Settings.from_env(**overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop_event = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_event.set())
    try:
        collector = Collector(settings).start()
    except ConfigError as exc:  # a symbol list no connection plan can carry
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    if collector.state is State.READ_ONLY:  # another process writes this database
        print(f"error: {collector.read_only_reason}", file=sys.stderr)
        return EXIT_CANNOT_START
    log.info("recording %s into %s (spill journal, used only while the database refuses "
             "writes: %s)", collector._url(), collector.db_path, collector.spill_path)
    evaluator = None
    if args.alerts:
        # Imported here: the alert engine sits above the collector (alerts -> analytics,
        # database); only this entry point, like the page, starts both side by side.
        import alerts
        evaluator = alerts.start_evaluator(lambda: collector.db_path)
    deadline = time.monotonic() + args.duration if args.duration else math.inf
    while not stop_event.is_set() and time.monotonic() < deadline:
        if settings.feed == "replay" and _replay_complete(collector):
            log.info("replay finished")
            break
        stop_event.wait(0.2)
    final = collector.stop()
    if evaluator is not None:
        evaluator.stop()
    summary = {key: int(final[key]) for key in SUMMARY_KEYS}
    summary.update(feed=final["feed"], db_path=final["db_path"],
                   spill_path=final["spill_path"],
                   database_failing=int(bool(final["db_failing_since_ms"])))
    print(orjson.dumps(summary).decode(), flush=True)
    return _exit_code(summary)


def _exit_code(summary: dict) -> int:
    """0 when every received trade ended in the database (or was a duplicate, rejected or
    filtered); EXIT_NOT_ALL_STORED when some were dropped or wait in the spill journal, or
    the database still refused writes at the stop."""
    if summary["database_failing"]:
        log.error("stopped while the database %s refused writes", summary["db_path"])
    if (summary["dropped"] or summary["spilled"] or summary["journal_pending"]
            or summary["database_failing"]):
        log.error("stopped with %d trades dropped and %d waiting in the spill journal %s "
                  "(%d of them from earlier runs): a restart with the same --db and "
                  "--spill-dir replays the journal", summary["dropped"],
                  summary["journal_pending"], summary["spill_path"],
                  summary["journal_pending"] - summary["spilled"])
        return EXIT_NOT_ALL_STORED
    return EXIT_OK


def _replay_complete(collector: Collector) -> bool:
    """True once the replay server sent everything and the writer stored it all."""
    server = collector._market
    return (server is not None and server.source_done
            and collector.received > 0
            and not collector._queue
            and collector.stored + collector.duplicates + collector.rejected
            + collector.filtered + collector.dropped >= collector.received)


if __name__ == "__main__":
    sys.exit(main())
