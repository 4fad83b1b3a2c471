"""Binance REST market data for backfill and gap repair: a paced client and the Backfiller.

The WebSocket streams never replay what a client missed. Binance's REST API serves the same
aggregate trades (by id or by time) and 1-minute klines, so this module fetches

* at start, the **last hours of 1-minute klines** (the 1m/5m views and their analytics) and
  the **last minutes of aggregate trades** (stored in ``ticks`` exactly like streamed ones:
  1 s bars and every analytic are there at once), newest first, so the most recent minutes
  are usable after the first few requests;
* after every reconnect (and at start, when the database already holds trades of a symbol),
  the **missing aggregate trades by id**, ``fromId`` = first missing id, up to the id that
  revealed the gap.

It imports nothing of the project: the caller hands the :class:`Backfiller` a *ledger* (the
database side, ``database.BackfillLedger``) with the methods listed there. Everything runs on
the Backfiller's own thread: REST never blocks the WebSocket receive thread or the page.

Binance facts relied on (USD-M futures docs and spot docs, checked late 2026)
------------------------------------------------------------------------------
Endpoints (GET, public, no key). Futures base ``https://fapi.binance.com``, spot
``https://api.binance.com``:

=====================  ======================  ==========================================
what                   futures / spot path     request weight
=====================  ======================  ==========================================
aggregate trades       /fapi/v1/aggTrades      20 (futures); 4 on /api/v3/aggTrades (spot)
klines                 /fapi/v1/klines         futures by limit: <100: 1, <500: 2,
                                               <=1000: 5, >1000: 10; spot: 2
server time            /fapi/v1/time           1 (spot /api/v3/time: 1)
exchange info          /fapi/v1/exchangeInfo   1 (spot /api/v3/exchangeInfo: 20)
=====================  ======================  ==========================================

* ``aggTrades`` params: ``symbol`` (upper case), ``fromId`` (inclusive), ``startTime`` and
  ``endTime`` (inclusive, ms; both together must be < 1 hour apart, else error -1127),
  ``limit`` (default 500, max 1000). No ``fromId``/time: the most recent trades. Rows are
  ``{"a": id, "p": "price", "q": "qty", "f": first trade id, "l": last trade id, "T": ms,
  "m": buyer is maker}`` (spot adds ``"M"``), ascending by ``a`` - the same fields as the
  ``@aggTrade`` stream event, so a trade from REST and from the stream is the same row
  ``(symbol, a, T, p, q, m)``. Aggregate ids are consecutive per symbol; futures history
  has rare single-id skips (those gaps cannot be filled and are kept with their reason).
* ``klines`` params: ``symbol``, ``interval`` (``1m``), ``startTime``, ``endTime``,
  ``limit`` (futures max 1500, spot max 1000). Row: ``[open time, "open", "high", "low",
  "close", "volume", close time, "quote volume", trades, "taker buy base volume",
  "taker buy quote volume", "0"]``. The last row may be the still-open minute: only rows
  whose close time has passed are stored.
* Limits: request weight per minute per IP, futures 2,400, spot 6,000, announced in
  ``exchangeInfo.rateLimits`` (``REQUEST_WEIGHT``/``MINUTE``). Every response carries
  ``X-MBX-USED-WEIGHT-1M`` (the weight used in the current minute; spot also
  ``-1m``). This client keeps the used weight under ``budget_fraction`` (80 %) of the
  announced limit, pacing by the header rather than by its own guess, and waits for the
  next minute when a request would cross it.
* HTTP 429: over the limit; wait ``Retry-After`` seconds, then go on with half the budget.
  HTTP 418: the IP is banned for ``Retry-After`` seconds (2 minutes to 3 days) for ignoring
  429s: stop REST entirely until then (:class:`RestBanned`). 5xx, timeouts, refused
  connections and unreadable bodies: retry with full-jitter exponential backoff, a bounded
  number of times. Other 4xx (``{"code": -1121, "msg": "Invalid symbol."}``): no retry.
* Futures aggTrades served by time reach back about 48 h; gap repair is by id.

Symbols are checked against ``^[A-Z0-9]{2,20}$`` before they reach a URL, and every
parameter is URL-encoded.
"""

from __future__ import annotations

import http.client
import logging
import math
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import orjson

log = logging.getLogger("binance_rest")

DEFAULT_FUTURES_REST_URL = "https://fapi.binance.com"
DEFAULT_SPOT_REST_URL = "https://api.binance.com"
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")

AGG_TRADES_LIMIT = 1000  # max rows per aggTrades request (futures and spot)
KLINES_LIMIT = {"futures": 1500, "spot": 1000}
DEFAULT_WEIGHT_LIMIT = {"futures": 2400, "spot": 6000}
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
MINUTE_MS = 60_000


def check_symbol(symbol: str) -> str:
    """Upper-case ``symbol`` after checking it can only be a Binance symbol.

    >>> check_symbol("btcusdt")
    'BTCUSDT'
    """
    upper = str(symbol).strip().upper()
    if not SYMBOL_PATTERN.match(upper):
        raise ValueError(f"symbol {symbol!r} is not valid: use 2-20 letters or digits")
    return upper


def paths(market_kind: str) -> dict[str, str]:
    """REST paths of ``"futures"`` (``/fapi/v1``) or ``"spot"`` (``/api/v3``)."""
    if market_kind not in ("futures", "spot"):
        raise ValueError(f"market_kind ({market_kind!r}) must be 'futures' or 'spot'")
    prefix = "/fapi/v1" if market_kind == "futures" else "/api/v3"
    return {name: f"{prefix}/{name}" for name in ("aggTrades", "klines", "time", "exchangeInfo")}


def agg_trades_weight(market_kind: str) -> int:
    return 20 if market_kind == "futures" else 4


def klines_weight(market_kind: str, limit: int) -> int:
    if market_kind == "spot":
        return 2
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def backoff_delay(failures: int, rng: random.Random, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**failures)].

    Jitter spreads the retries of many clients after an exchange-wide drop, and the cap
    keeps a long outage from turning into hour-long waits. Used by the REST retries here
    and by the collector's WebSocket reconnects (``collector.backoff_delay``).
    """
    ceiling = min(cap, base * (2.0 ** min(failures, 30)))
    return rng.uniform(0.0, ceiling)


def parse_duration(text: str | float | int) -> float:
    """Seconds of ``"90s"``, ``"30m"``, ``"6h"``, ``"1d"`` or a bare number of seconds.

    >>> parse_duration("30m"), parse_duration("0"), parse_duration("1.5h")
    (1800.0, 0.0, 5400.0)
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
        if match is None:
            raise ValueError(f"duration {text!r} is not valid: use e.g. 0, 90s, 30m, 6h or 1d")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600,
                                           "d": 86400}[match.group(2)]
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"duration {text!r} must be >= 0")
    return seconds


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class RestError(RuntimeError):
    """A request that did not give a usable answer (after retries where they apply)."""


class RestRejected(RestError):
    """A 4xx answer other than 429/418: the request itself is wrong; never retried."""

    def __init__(self, status: int, code: int | None, message: str):
        super().__init__(f"HTTP {status} (code {code}): {message}")
        self.status, self.code = status, code


class RestBanned(RestError):
    """HTTP 418: this IP is banned until ``until`` (epoch s); no request before then."""

    def __init__(self, until: float):
        super().__init__(f"REST banned by the server (HTTP 418) until "
                         f"{time.strftime('%H:%M:%S', time.gmtime(until))} UTC")
        self.until = until


class RestStopped(RestError):
    """The owner asked the client to stop while it waited or retried."""


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


@dataclass
class RestStats:
    """What a client did so far (read by anyone, written by the client's thread)."""

    requests: int = 0
    weight: int = 0  # request weight spent (by the table above)
    retries: int = 0
    throttled: int = 0  # 429 answers
    paced_s: float = 0.0  # seconds spent waiting for weight budget or Retry-After
    last_used_weight: int = 0  # the server's X-MBX-USED-WEIGHT-1M of the last answer
    last_error: str = ""
    weight_log: list = field(default_factory=list)  # (monotonic s, weight) of each request

    def weight_per_minute(self) -> float:
        """Weight spent over the last 60 s (or since the first request, if sooner)."""
        now = time.monotonic()
        recent = [(t, w) for t, w in self.weight_log if now - t <= 60.0]
        return float(sum(w for _, w in recent))


class RestClient:
    """Paced, retrying GET client for Binance's public market-data endpoints.

    Parameters
    ----------
    base_url : str
        ``scheme://host[:port]``, e.g. ``https://fapi.binance.com`` or ``http://127.0.0.1:P``.
    market_kind : {"futures", "spot"}
        Which path layout (``/fapi/v1`` or ``/api/v3``) and weights apply.
    timeout : float, default 10
        Seconds per request (connect and read).
    max_retries : int, default 5
        Retries of a 5xx, timeout, refused connection, unreadable body or 429 before
        :class:`RestError` is raised.
    backoff_base, backoff_cap : float
        Full-jitter exponential backoff between retries: uniform in
        ``[0, min(cap, base * 2**attempt)]`` seconds.
    budget_fraction : float, default 0.8
        Share of the announced weight limit this client may use per minute.
    window_s : float, default 60
        Length of the weight window (Binance's is the minute; tests shorten it).
    stop : threading.Event, optional
        Set it to make waits end at once with :class:`RestStopped`.
    """

    def __init__(self, base_url: str, market_kind: str = "futures", *, timeout: float = 10.0,
                 max_retries: int = 5, backoff_base: float = 0.5, backoff_cap: float = 30.0,
                 budget_fraction: float = 0.8, window_s: float = 60.0,
                 stop: threading.Event | None = None, seed: int | None = None):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"REST URL {base_url!r} must be http(s)://host[:port]")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.market_kind = market_kind
        self.paths = paths(market_kind)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.budget_fraction = budget_fraction
        self.window_s = window_s
        self.weight_limit = DEFAULT_WEIGHT_LIMIT[market_kind]
        self.stop = stop or threading.Event()
        self.stats = RestStats()
        self.banned_until = 0.0
        self._rng = random.Random(seed)
        self._window = -1  # index of the weight window the counters belong to
        self._used = 0  # weight used in that window (server's figure when it sends one)
        self._paused_until = 0.0  # after a 429: no request before this (epoch s)
        self._lock = threading.Lock()

    # -- endpoints ----------------------------------------------------------------------

    def server_time(self) -> int:
        """The server's clock, epoch ms (``{"serverTime": ms}``)."""
        answer = self.get(self.paths["time"], {}, weight=1)
        if not isinstance(answer, dict) or type(answer.get("serverTime")) is not int:
            raise RestError(f"unexpected time answer: {str(answer)[:100]}")
        return answer["serverTime"]

    def load_weight_limit(self) -> int:
        """Read the per-minute ``REQUEST_WEIGHT`` limit from exchangeInfo (keeps the default
        when the answer has none) and return it."""
        weight = 1 if self.market_kind == "futures" else 20
        answer = self.get(self.paths["exchangeInfo"], {}, weight=weight)
        for limit in (answer.get("rateLimits") or []) if isinstance(answer, dict) else []:
            if (isinstance(limit, dict) and limit.get("rateLimitType") == "REQUEST_WEIGHT"
                    and limit.get("interval") == "MINUTE" and limit.get("intervalNum") == 1
                    and type(limit.get("limit")) is int and limit["limit"] > 0):
                self.weight_limit = limit["limit"]
        return self.weight_limit

    def agg_trades(self, symbol: str, *, from_id: int | None = None,
                   start_ms: int | None = None, end_ms: int | None = None,
                   limit: int = AGG_TRADES_LIMIT) -> list[tuple]:
        """Aggregate trades as ``(SYMBOL, a, T, price, qty, m, received_ms)`` tuples.

        The tuple is the collector's trade tuple (``received_ms`` = when the page arrived),
        so REST rows go through the same write path as streamed ones.
        """
        symbol = check_symbol(symbol)
        if not 1 <= limit <= AGG_TRADES_LIMIT:
            raise ValueError(f"limit ({limit}) must be in [1, {AGG_TRADES_LIMIT}]")
        if from_id is not None and (start_ms is not None or end_ms is not None):
            raise ValueError("fromId and a time window are not combined (Binance's advice)")
        params: dict[str, int | str] = {"symbol": symbol, "limit": int(limit)}
        if from_id is not None:
            params["fromId"] = int(from_id)
        if start_ms is not None:
            params["startTime"] = int(start_ms)
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        return self.get(self.paths["aggTrades"], params,
                        weight=agg_trades_weight(self.market_kind),
                        parse=lambda answer: parse_agg_trades(answer, symbol, _now_ms()))

    def klines(self, symbol: str, start_ms: int, end_ms: int | None = None,
               limit: int | None = None) -> list[tuple]:
        """1-minute klines ``(open_ts, open, high, low, close, volume, close_ts, quote_volume,
        trades, taker_buy_base_volume)`` from ``start_ms``, ascending."""
        symbol = check_symbol(symbol)
        limit = KLINES_LIMIT[self.market_kind] if limit is None else int(limit)
        params: dict[str, int | str] = {"symbol": symbol, "interval": "1m",
                                        "startTime": int(start_ms), "limit": limit}
        if end_ms is not None:
            params["endTime"] = int(end_ms)
        return self.get(self.paths["klines"], params,
                        weight=klines_weight(self.market_kind, limit), parse=parse_klines)

    # -- transport ------------------------------------------------------------------------

    def get(self, path: str, params: dict, *, weight: int, parse=None):
        """GET ``path`` with ``params``; the JSON answer (through ``parse`` if given, whose
        :class:`RestError` counts as a damaged answer and is retried). Paces, retries."""
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        attempt = 0
        while True:
            self._wait_for_budget(weight)
            try:
                answer = self._request_once(url, weight)
                return answer if parse is None else parse(answer)
            except (RestRejected, RestBanned, RestStopped):
                raise
            except RestError as exc:  # retryable: 5xx, timeout, refused, unreadable, 429
                self.stats.last_error = str(exc)
                if attempt >= self.max_retries:
                    raise RestError(f"{path}: giving up after {attempt + 1} attempts: "
                                    f"{exc}") from None
                if not getattr(exc, "throttled", False):
                    delay = backoff_delay(attempt, self._rng, self.backoff_base,
                                          self.backoff_cap)
                    self.stats.retries += 1
                    log.info("REST %s failed (%s); retry in %.2f s", path, exc, delay)
                    self._sleep(delay)
                attempt += 1

    def _request_once(self, url: str, weight: int):
        request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                       "User-Agent": "pairs-dashboard"})
        self.stats.requests += 1
        self.stats.weight += weight
        self.stats.weight_log = [(t, w) for t, w in self.stats.weight_log
                                 if time.monotonic() - t <= 60.0] + [(time.monotonic(), weight)]
        self._charge(weight)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
                self._note_used_weight(response.headers)
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            self._note_used_weight(exc.headers)
            self._raise_for_status(exc.code, exc.headers, body)
            raise AssertionError("unreachable")  # _raise_for_status always raises
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RestError(f"{type(reason).__name__}: {reason}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RestError(f"unreadable answer ({len(body)} bytes): {exc}") from None

    def _raise_for_status(self, status: int, headers, body: bytes) -> None:
        retry_after = _retry_after_s(headers)
        if status == 418:
            self.banned_until = time.time() + (retry_after if retry_after is not None else 120)
            raise RestBanned(self.banned_until)
        if status == 429:
            self.stats.throttled += 1
            wait = retry_after if retry_after is not None else 60.0
            with self._lock:
                self._paused_until = max(self._paused_until, time.time() + wait)
                # Go on more slowly: half the budget from now on (not below a quarter).
                self.budget_fraction = max(0.25, self.budget_fraction / 2)
            error = RestError(f"HTTP 429 (over the weight limit); waiting {wait:g} s")
            error.throttled = True
            raise error
        if status >= 500:
            raise RestError(f"HTTP {status}")
        code, message = None, body[:200].decode("utf-8", "replace")
        try:
            answer = orjson.loads(body)
            if isinstance(answer, dict):
                code, message = answer.get("code"), str(answer.get("msg", message))
        except orjson.JSONDecodeError:
            pass  # a non-JSON error page: its text is the message
        raise RestRejected(status, code, message)

    # -- pacing ---------------------------------------------------------------------------

    def _current_window(self) -> int:
        return int(time.time() // self.window_s)

    def _charge(self, weight: int) -> None:
        with self._lock:
            window = self._current_window()
            if window != self._window:
                self._window, self._used = window, 0
            self._used += weight

    def _note_used_weight(self, headers) -> None:
        value = headers.get(WEIGHT_HEADER) if headers is not None else None
        if value is None and headers is not None:
            value = headers.get(WEIGHT_HEADER.replace("1M", "1m"))
        try:
            used = int(value)
        except (TypeError, ValueError):
            return
        self.stats.last_used_weight = used
        with self._lock:
            window = self._current_window()
            if window != self._window:
                self._window = window
            self._used = used  # the server knows best (other clients on this IP count)

    def _wait_for_budget(self, weight: int) -> None:
        """Sleep until the request fits: after a ban, a 429 pause, or a full window."""
        if self.banned_until > time.time():
            raise RestBanned(self.banned_until)
        while True:
            now = time.time()
            with self._lock:
                pause = self._paused_until - now
                window = int(now // self.window_s)
                used = self._used if window == self._window else 0
                budget = self.weight_limit * self.budget_fraction
            if pause > 0:
                self._sleep(pause)
                continue
            if used + weight <= budget or used == 0:
                return
            # Wait for the next window (plus a little: clocks differ by milliseconds).
            self._sleep((window + 1) * self.window_s - now + 0.05)

    def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self.stats.paced_s += seconds
        if self.stop.wait(seconds):
            raise RestStopped("stopped")


def _retry_after_s(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_agg_trades(answer, symbol: str, received_ms: int) -> list[tuple]:
    """Check an aggTrades answer row by row; trade tuples in ascending id order.

    Raises :class:`RestError` (retryable: a damaged answer) when the answer is not a list
    of well-typed rows. Rows with a non-positive price or quantity are not market trades
    and are left out (their ids then stay gaps, as for the stream).
    """
    if not isinstance(answer, list):
        raise RestError(f"aggTrades answer is not a list: {str(answer)[:100]}")
    try:  # one pass to read, one to check: ~2x faster than checking inside the first
        rows = [(symbol, row["a"], row["T"], float(row["p"]), float(row["q"]), row["m"],
                 received_ms) for row in answer]
    except (KeyError, TypeError, ValueError):
        raise RestError("malformed aggTrades row: missing or non-numeric field") from None
    for row in rows:
        if type(row[1]) is not int or type(row[2]) is not int or type(row[5]) is not bool:
            raise RestError(f"malformed aggTrades row: {row[1:6]!r}")
    trades = [(s, a, t, p, q, 1 if m else 0, r) for s, a, t, p, q, m, r in rows
              if 0.0 < p < math.inf and 0.0 < q < math.inf]
    if any(trades[i][1] >= trades[i + 1][1] for i in range(len(trades) - 1)):
        trades.sort(key=lambda t: t[1])
    return trades


def parse_klines(answer) -> list[tuple]:
    """Check a klines answer; ``(open_ts, o, h, l, c, volume, close_ts, quote_volume,
    trades, taker_buy_base)`` tuples. Raises :class:`RestError` on a damaged answer."""
    if not isinstance(answer, list):
        raise RestError(f"klines answer is not a list: {str(answer)[:100]}")
    rows = []
    for row in answer:
        try:
            rows.append((int(row[0]), float(row[1]), float(row[2]), float(row[3]),
                         float(row[4]), float(row[5]), int(row[6]), float(row[7]),
                         int(row[8]), float(row[9])))
        except (IndexError, TypeError, ValueError):
            raise RestError(f"malformed kline row: {str(row)[:100]}") from None
    return rows


# --------------------------------------------------------------------------------------
# Backfill and gap repair
# --------------------------------------------------------------------------------------

MAX_REPAIR_IDS = 500_000  # larger gaps are left open (about 500 requests, minutes of weight)
REPAIR_RETRY_S = (5.0, 300.0)  # backoff of a gap whose repair failed for a network reason


@dataclass
class SymbolProgress:
    """Backfill progress of one symbol, for the page's progress bar."""

    klines: int = 0
    trades: int = 0  # rows fetched from REST (stored or already there)
    fraction: float = 0.0  # 0..1 of the trades window covered
    state: str = "waiting"  # waiting | klines | trades | done | failed | off
    detail: str = ""


class Backfiller:
    """Fetch the past over REST on its own thread: klines, then trades, then gap repair.

    Parameters
    ----------
    client : RestClient
    symbols : iterable of str
    ledger
        The database side; must offer ``last_trade(symbol, received_before_ms) -> (id, ts)
        | None`` (highest aggregate id stored before that local time), ``open_gaps(symbols) -> [(symbol, from_id, to_id, from_ts,
        to_ts)]``, ``store_trades(rows) -> (inserted, duplicates, gaps_filled)``,
        ``store_klines(symbol, rows) -> int``, ``note_gap(symbol, from_id, to_id, reason,
        repaired=False)``, ``mark_history()`` (tell readers that past trades were stored) and
        ``close()``. It is used only from the Backfiller's thread.
    trade_history_s : float
        Aggregate trades of this many seconds before now are fetched at start (0 = none).
    kline_history_s : float
        1-minute klines of this many seconds before now are fetched at start (0 = none).
    repair : bool, default True
        Keep repairing gaps after the start (after every reconnect; ``wake()`` nudges it).
    trades_by_id : bool, default True
        False for a raw ``@trade`` stream: its trade ids are not aggregate ids, so neither
        trades nor gaps can come from ``aggTrades`` (klines still can).
    poll_s : float, default 1
        How often the gap table is looked at between ``wake()`` calls.
    started_ms : int, optional
        Local time the recording started (default: now). Trades received before it are an
        earlier run's: the newest of them is where the start-up walk stops (the stream may
        have stored trades of this run before the walk begins).
    urgent_s : float, default 900
        The newest this many seconds of trades are fetched as fast as REST answers, and
        readers are told the moment every symbol has them (``mark_history``): the views a
        page opens on first. Pages older than that are paced by ``pace``.
    first_s : float, default 180
        Readers are told once before that, the moment every symbol has its newest
        ``first_s`` of trades: 1 s bars get their z-score from 120 bars at the default
        60-bar windows, so a page shows it while the rest of ``urgent_s`` comes in.
    trades_after : threading.Event, optional
        The trade walk waits (after the klines) until this is set, at most
        ``trades_after_s`` seconds: the page's process sets it when its first page run is
        over, so that the walk does not compete for the CPU and the GIL with serving the
        browser its scripts and the page's first run (``services.page_served``).
    trades_after_s : float, default 3
        The longest wait for ``trades_after`` (a server started with no browser yet).
    pace : float, default 1
        Share of wall time the walk may spend on pages older than ``urgent_s`` (fetching,
        parsing and storing them): after such a page it waits ``(1 - pace) / pace`` times
        as long as the page took (rate-limit waits not counted). ``1`` = no waiting. On a
        loopback market the walk otherwise takes a whole core (and the GIL) while a page
        starts; against Binance the weight limit spreads an hour over minutes anyway.
    """

    def __init__(self, client: RestClient, symbols, ledger, *, trade_history_s: float,
                 kline_history_s: float, repair: bool = True, trades_by_id: bool = True,
                 poll_s: float = 1.0, started_ms: int | None = None,
                 urgent_s: float = 900.0, first_s: float = 180.0, pace: float = 1.0,
                 trades_after: threading.Event | None = None, trades_after_s: float = 3.0):
        if not 0 < pace <= 1:
            raise ValueError(f"pace must be in (0, 1], not {pace!r}")
        self.client = client
        self.symbols = [check_symbol(s) for s in symbols]
        self.ledger = ledger
        self.trade_history_ms = int(trade_history_s * 1000)
        self.kline_history_ms = int(kline_history_s * 1000)
        self.repair = repair
        self.trades_by_id = trades_by_id
        self.poll_s = poll_s
        self.urgent_ms = int(urgent_s * 1000)
        self.first_ms = int(min(first_s, urgent_s) * 1000)
        self.pace = pace
        self.trades_after = trades_after
        self.trades_after_s = trades_after_s
        self.started_ms = _now_ms() if started_ms is None else int(started_ms)
        self.progress = {s: SymbolProgress() for s in self.symbols}
        # new | klines | waiting for the page | trades | repairing | banned | failed | stopped
        self.state = "new"
        self.detail = ""
        self.backfilled = 0  # rows stored from REST (new rows only)
        self.duplicates = 0  # rows REST delivered that were stored already (the overlap)
        self.gaps_repaired = 0  # gap rows closed completely by REST trades
        self.gaps_unrepairable: dict[tuple[str, int, int], str] = {}
        self._retry_at: dict[tuple[str, int, int], tuple[float, float]] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_s = 0.0
        self.trades_from_ms: int | None = None  # exchange time the trade backfill starts at
        self.initial_done_s: float | None = None  # seconds from start to the end of backfill

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Backfiller:
        self.started_s = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rest-backfill", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.client.stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the gaps now (the collector calls this after every reconnect)."""
        self._wake.set()

    def health(self) -> dict:
        """Progress and counters for the page (no locks: plain reads)."""
        stats = self.client.stats
        return {
            "state": self.state,
            "detail": self.detail,
            "rest_url": self.client.base_url,
            "trades_by_id": self.trades_by_id,
            "backfilled": self.backfilled,
            "gaps_repaired": self.gaps_repaired,
            "gaps_unrepairable": len(self.gaps_unrepairable),
            "requests": stats.requests,
            "weight": stats.weight,
            "weight_per_minute": stats.weight_per_minute(),
            "weight_limit": self.client.weight_limit,
            "used_weight_1m": stats.last_used_weight,
            "throttled": stats.throttled,
            "retries": stats.retries,
            "last_error": stats.last_error,
            "initial_done_s": self.initial_done_s,
            "pace": self.pace,
            "symbols": {s: {"klines": p.klines, "trades": p.trades,
                            "fraction": round(p.fraction, 3), "state": p.state,
                            "detail": p.detail} for s, p in self.progress.items()},
        }

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._initial()
            self.ledger.mark_history()
            self.initial_done_s = time.monotonic() - self.started_s
            while self.repair and self.trades_by_id and not self.client.stop.is_set():
                self.state = "repairing"
                self._repair_gaps()
                self.ledger.mark_history()
                self._wake.wait(self.poll_s)
                self._wake.clear()
            self.state = "stopped" if self.client.stop.is_set() else "done"
        except RestStopped:
            self.state = "stopped"
        except RestBanned as exc:
            self.state, self.detail = "banned", str(exc)
            log.error("%s: REST stopped until then", exc)
            self._note_open_gaps(str(exc))
        except Exception as exc:  # a bug, not a network condition: say so loudly
            log.exception("REST backfill thread crashed")
            self.state, self.detail = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.ledger.close()

    def _initial(self) -> None:
        try:
            self.client.load_weight_limit()
            now_ms = self.client.server_time()
        except (RestRejected, RestError) as exc:
            if isinstance(exc, (RestBanned, RestStopped)):
                raise
            self.state, self.detail = "failed", f"REST unreachable: {exc}"
            for progress in self.progress.values():
                progress.state, progress.detail = "failed", self.detail
            log.warning("no REST backfill: %s", exc)
            self._note_open_gaps(self.detail)
            return
        if self.kline_history_ms > 0:
            self.state = "klines"
            for symbol in self.symbols:
                self._backfill_klines(symbol, now_ms)
        if self.trades_by_id and self.trade_history_ms > 0:
            self._wait_for_the_page()
            self.state = "trades"
            self._backfill_trades(now_ms)
        for progress in self.progress.values():
            if progress.state not in ("failed",):
                progress.state = "done"
                progress.fraction = 1.0

    def _wait_for_the_page(self) -> None:
        """Until ``trades_after`` is set, at most ``trades_after_s`` (or until stopped)."""
        if self.trades_after is None:
            return
        self.state = "waiting for the page"
        deadline = time.monotonic() + self.trades_after_s
        while not self.trades_after.wait(0.05):  # short waits: a stop is seen at once
            if self.client.stop.is_set():
                raise RestStopped("stopped")
            if time.monotonic() >= deadline:
                return

    def _backfill_klines(self, symbol: str, now_ms: int) -> None:
        progress = self.progress[symbol]
        progress.state = "klines"
        start = (now_ms - self.kline_history_ms) // MINUTE_MS * MINUTE_MS
        try:
            while start < now_ms:
                rows = self.client.klines(symbol, start, now_ms)
                closed = [row for row in rows if row[6] < now_ms]
                if closed:
                    self.ledger.store_klines(symbol, closed)
                    progress.klines += len(closed)
                if len(rows) < KLINES_LIMIT[self.client.market_kind] or not rows:
                    break
                start = rows[-1][0] + MINUTE_MS
        except RestRejected as exc:
            progress.state, progress.detail = "failed", f"klines: {exc}"
            log.warning("klines of %s: %s", symbol, exc)
        except RestError as exc:
            if isinstance(exc, (RestBanned, RestStopped)):
                raise
            progress.detail = f"klines: {exc}"
            log.warning("klines of %s: %s", symbol, exc)

    def _backfill_trades(self, now_ms: int) -> None:
        """Walk every symbol's aggregate ids from the newest down to the window start.

        One page per symbol in turn, so both legs of a pair reach back equally far and the
        newest minutes are usable first. Stops at the window start, at the highest id
        stored before (a restart: what lies between is a gap the tracker records and the
        walk fills from the top), or at the first id REST does not have. Then each symbol
        walks up from its newest REST page until it meets stored trades (the stream's) or
        the present: the stream may have started after that page, and on an empty database
        the writer has no earlier id to measure a gap from.
        """
        start_ms = self.trades_from_ms = now_ms - self.trade_history_ms
        # readers are told when every symbol reaches back to each of these, oldest last
        announce_from_ms = sorted({now_ms - self.first_ms, now_ms - self.urgent_ms},
                                  reverse=True)
        walks = {}
        for symbol in self.symbols:
            last = self.ledger.last_trade(symbol, self.started_ms)
            floor_id = last[0] if last is not None and last[1] >= start_ms else None
            walks[symbol] = _Walk(symbol, floor_id, start_ms, now_ms)
            self.progress[symbol].state = "trades"
        while walks:
            while announce_from_ms and all(w.oldest_ms <= announce_from_ms[0]
                                           for w in walks.values()):
                self.ledger.mark_history()  # a page's views re-read the past now
                announce_from_ms.pop(0)
            for symbol in list(walks):
                walk = walks[symbol]
                step_started = time.monotonic() - self.client.stats.paced_s
                try:
                    finished = self._walk_step(walk)
                    if finished:
                        self._leave_older_gap(walk)
                        self._walk_up(walk)
                except (RestBanned, RestStopped):
                    raise
                except RestError as exc:  # the repair loop takes over what is missing
                    self.progress[symbol].detail = f"trades: {exc}"
                    self.progress[symbol].state = "failed"
                    finished = True
                if finished:
                    del walks[symbol]
                elif not announce_from_ms and self.pace < 1:  # past the urgent window
                    self._pace_after(step_started)

    def _pace_after(self, step_started: float) -> None:
        """Wait ``(1 - pace) / pace`` times the page's own time (``step_started``: monotonic
        time minus the client's rate-limit waits then, which are not the page's work)."""
        took = time.monotonic() - self.client.stats.paced_s - step_started
        self.client.stop.wait(took * (1 - self.pace) / self.pace)

    def _walk_up(self, walk: _Walk) -> None:
        """From above the newest REST page up to the first stored trade or the present."""
        cursor = walk.top_id
        while cursor is not None and not self.client.stop.is_set():
            rows = self.client.agg_trades(walk.symbol, from_id=cursor + 1,
                                          limit=AGG_TRADES_LIMIT)
            if not rows:
                return
            duplicates = self._store(rows)
            self.progress[walk.symbol].trades += len(rows)
            if duplicates or len(rows) < AGG_TRADES_LIMIT:
                return
            cursor = rows[-1][1]

    def _leave_older_gap(self, walk: _Walk) -> None:
        """A gap just below the walk's lowest id is older than the window: keep it, say why."""
        if walk.lowest_id is None:
            return
        window = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(walk.start_ms / 1000))
        for gap in self.ledger.open_gaps([walk.symbol]):
            if gap[2] == walk.lowest_id - 1:
                self._give_up(gap[:3], f"older than the backfill window (from {window} UTC)")

    def _walk_step(self, walk: _Walk) -> bool:
        progress = self.progress[walk.symbol]
        if walk.lowest_id is None:
            rows = self.client.agg_trades(walk.symbol, limit=AGG_TRADES_LIMIT)
        else:
            bottom = walk.lowest_id - AGG_TRADES_LIMIT
            if walk.floor_id is not None:
                bottom = max(bottom, walk.floor_id + 1)
            if bottom >= walk.lowest_id:
                return True
            rows = self.client.agg_trades(walk.symbol, from_id=bottom,
                                          limit=walk.lowest_id - bottom)
        if not rows:
            return True
        rows = [r for r in rows if r[2] >= walk.start_ms
                and (walk.lowest_id is None or r[1] < walk.lowest_id)]
        if rows:
            self._store(rows)
            progress.trades += len(rows)
            if walk.top_id is None:
                walk.top_id = rows[-1][1]
            walk.lowest_id = rows[0][1]
            walk.oldest_ms = rows[0][2]
            span = max(1, walk.end_ms - walk.start_ms)
            progress.fraction = min(1.0, max(0.0, (walk.end_ms - rows[0][2]) / span))
        reached_window = not rows or rows[0][2] <= walk.start_ms
        reached_floor = walk.floor_id is not None and walk.lowest_id <= walk.floor_id + 1
        return reached_window or reached_floor

    def _store(self, rows: list[tuple]) -> int:
        """Store REST trades through the ledger and count them; returns the duplicates."""
        inserted, duplicates, gaps_filled = self.ledger.store_trades(rows)
        self.backfilled += inserted
        self.duplicates += duplicates
        self.gaps_repaired += gaps_filled
        return duplicates

    # -- gap repair -------------------------------------------------------------------------

    def _repair_gaps(self) -> None:
        for symbol, from_id, to_id, _from_ts, _to_ts in self.ledger.open_gaps(self.symbols):
            if self.client.stop.is_set():
                return
            key = (symbol, from_id, to_id)
            if key in self.gaps_unrepairable:
                continue
            retry = self._retry_at.get(key)
            if retry is not None and time.monotonic() < retry[0]:
                continue
            missing = to_id - from_id + 1
            if missing > MAX_REPAIR_IDS:
                self._give_up(key, f"too large for REST repair ({missing:,} ids > "
                                   f"{MAX_REPAIR_IDS:,})")
                continue
            try:
                fetched = self._repair_one(symbol, from_id, to_id)
            except (RestBanned, RestStopped):
                raise
            except RestError as exc:
                delay = REPAIR_RETRY_S[0] if retry is None else min(REPAIR_RETRY_S[1],
                                                                     retry[1] * 2)
                self._retry_at[key] = (time.monotonic() + delay, delay)
                self.ledger.note_gap(symbol, from_id, to_id, f"REST failed: {exc}")
                continue
            remaining = [g for g in self.ledger.open_gaps([symbol])
                         if g[1] <= to_id and g[2] >= from_id]
            if not remaining:
                self.ledger.note_gap(symbol, from_id, to_id,
                                     f"repaired over REST ({fetched:,} trades)", repaired=True)
            for gap in remaining:  # REST has no trades with these ids: they never existed
                self._give_up(gap[:3], "REST has no trades with these ids")

    def _repair_one(self, symbol: str, from_id: int, to_id: int) -> int:
        """Fetch ids ``from_id..to_id`` by id and store them; returns trades fetched."""
        fetched = 0
        cursor = from_id
        while cursor <= to_id and not self.client.stop.is_set():
            rows = self.client.agg_trades(symbol, from_id=cursor,
                                          limit=min(AGG_TRADES_LIMIT, to_id - cursor + 1))
            if not rows:
                return fetched
            wanted = [r for r in rows if r[1] <= to_id]
            if wanted:
                self._store(wanted)
                self.progress[symbol].trades += len(wanted)
                fetched += len(wanted)
            cursor = rows[-1][1] + 1
        return fetched

    def _give_up(self, key: tuple[str, int, int], reason: str) -> None:
        self.gaps_unrepairable[key] = reason
        self.ledger.note_gap(key[0], key[1], key[2], reason)

    def _note_open_gaps(self, reason: str) -> None:
        try:
            for symbol, from_id, to_id, _from_ts, _to_ts in self.ledger.open_gaps(self.symbols):
                self.ledger.note_gap(symbol, from_id, to_id, reason)
        except Exception:
            log.exception("could not note the reason of the open gaps")


@dataclass
class _Walk:
    """State of one symbol's newest-first walk over aggregate ids."""

    symbol: str
    floor_id: int | None  # highest id stored before the backfill (stop above it)
    start_ms: int
    end_ms: int
    lowest_id: int | None = None
    top_id: int | None = None  # highest id of the first (newest) page
    oldest_ms: float = math.inf  # exchange time of the oldest trade the walk has stored
