"""Built-in loopback market that speaks Binance's trade-stream WebSocket frames.

No machine here reaches Binance, so the offline demo, every test and every benchmark connect
to this server instead. A collector connects to it exactly as to
``wss://fstream.binance.com`` (futures) or ``wss://stream.binance.com:9443`` (spot): same
paths, same frames, same control messages.

    >>> with MarketServer(SimulatedMarket(seed=1, speed=0), max_trades=1000) as market:
    ...     url = market.url + "/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"
    ...     # connect any WebSocket client to ``url``

Paths (``kind="futures"``; spot serves only the unrouted forms, the routed ones are 404)
    ``/ws/<s1>[/<s2>...]``                 raw frames, one stream or several
    ``/stream?streams=<s1>/<s2>``          combined: ``{"stream":"btcusdt@trade","data":{...}}``
    ``/market/ws/...``, ``/market/stream?streams=...``   routed futures forms
    ``/public/ws/...``, ``/public/stream?streams=...``   routed futures forms
    ``/ws`` and ``/stream`` without streams are accepted; subscribe with ``SUBSCRIBE``.
    Any other path is refused during the handshake with HTTP 404.

Streams
    ``<symbol>@trade`` and ``<symbol>@aggTrade`` with a lower-case symbol carry data. Like
    Binance, a stream for a symbol the source does not have, a stream name in another case or
    a stream type this market does not produce (``@kline_1m`` ...) is accepted and stays
    silent. A :class:`SimulatedMarket` adds any valid symbol on request (``solusdt@trade``
    starts a new random walk); a :class:`ReplaySource` only has the symbols of its file.
    With ``strict_routing=True`` (futures) the server behaves like Binance after the
    2026-04-23 routing change: ``@aggTrade`` only on ``/market``, ``@trade`` only on
    ``/public``; elsewhere the subscription is acknowledged and then silent.

Frames (decimal strings for ``p`` and ``q``, integers for ids and times)
    futures trade   ``{"e":"trade","E":..,"T":..,"s":"BTCUSDT","t":..,"p":"63113.20","q":"0.001",``
                    ``"X":"MARKET","m":false}``
    spot trade      ``{"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..,"M":true}``
    aggTrade        ``{"e":"aggTrade","E":..,"s":..,"a":..,"p":..,"q":..,"f":..,"l":..,"T":..,``
                    ``"m":..}``
                    (spot adds ``"M":true``)
    Every simulated or replayed fill is its own aggregate trade (``f == l == t``); ``a`` is a
    per-symbol counter of market trades. Placeholders (``"X":"NA"``, ``p`` "0", ``q`` "0")
    consume a trade id and appear only in futures ``@trade``; spot and ``@aggTrade`` skip
    them, which leaves a single-id gap in ``t``/``f`` (as in real futures data). Futures
    prices carry ``max(2, tick decimals)`` decimals (Binance's ``pricePrecision``: BTCUSDT
    "87123.40"), quantities the lot decimals; spot carries 8 decimals for both, as Binance
    spot does. Numbers are formatted with fixed decimals from values on the tick/lot grid.
    ``E`` is the simulated clock when the frame is sent (``E >= T``); at full speed ``E == T``.

Clock and pacing
    ``speed=1`` emits trades in real time; with ``SimulatedMarket(start_ms=None)`` ``T`` is the
    wall clock. ``speed=N`` runs the source clock N times faster. ``speed=0`` sends as fast as
    the slowest subscribed client reads (the source waits for clients: backpressure, no drop)
    and the source clock stands still while nobody is subscribed. At ``speed > 0`` the source
    runs whether or not anyone listens (a reconnecting client misses what happened
    meanwhile) and a client whose unsent backlog exceeds ``max_client_buffer`` bytes is cut
    (TCP abort: the client sees 1006) and counted in ``slow_client_disconnects``.

Implementation notes
    websockets (asyncio API) does the handshake, control frames (ping/pong/close) and the
    control messages. Data frames are encoded once per trade and stream with orjson, framed
    once (server frames are unmasked and uncompressed, so the bytes on the wire are the same
    for every client) and written to each client's transport in one ``write`` per batch.
    That keeps the server at a few microseconds per frame, so a benchmark measures the
    collector, not this module.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import enum
import http
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
import pandas as pd
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosedError
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.protocol import State

logger = logging.getLogger(__name__)
_QUIET_WS_LOGGER = logging.getLogger(__name__ + ".websockets")
_QUIET_WS_LOGGER.setLevel(logging.WARNING)

KINDS = ("futures", "spot")
STREAM_TYPES = ("trade", "aggTrade")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
DATA_STREAM_PATTERN = re.compile(r"^([a-z0-9]{2,20})@(trade|aggTrade)$")
STREAM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9!_]+@[A-Za-z0-9_@]+$")

SPOT_DECIMALS = 8
MEDIAN_NOTIONAL_USDT = 300.0  # median trade size of the simulation, in quote currency
SIZE_LOG_SIGMA = 1.2  # dispersion of log trade sizes (lognormal)
OTHER_VOL_BPS = 2.5  # 1-second volatility of symbols beyond the pair, basis points
OTHER_CORRELATION = 0.7  # their correlation with the leader's returns
# Planted universe (``universe_symbols``): symbols named G<group><letter>USDT share their
# group's factor, each with its own stationary spread, so every pair inside a group is
# cointegrated; the group factors are correlated with the leader like the other symbols.
UNIVERSE_MEMBER_PATTERN = re.compile(r"^G([1-9])([A-Z])USDT$")
UNIVERSE_LOADINGS = (1.0, 0.8, 1.25, 1.1, 0.9, 1.4)  # by letter A, B, C, ... (cycled)
UNIVERSE_HALF_LIFE_S = 30.0  # spread half-life of group g: (g + 1) times this
UNIVERSE_SPREAD_STD_BPS = 10.0  # stationary standard deviation of each member's spread
DEFAULT_RATE = 10.0  # trades per second of a symbol missing from the table


@dataclass(frozen=True)
class Instrument:
    """Exchange facts of one symbol used by the simulation and the frame formatter.

    Parameters
    ----------
    symbol : str
        Upper-case symbol, e.g. ``"BTCUSDT"``.
    level : float
        Price the simulation starts at (quote currency).
    tick : float
        Price grid step (Binance ``tickSize``).
    lot : float
        Quantity grid step (Binance ``stepSize``).
    rate : float
        Mean number of trades per second in the simulation.
    """

    symbol: str
    level: float
    tick: float
    lot: float
    rate: float

    @property
    def price_decimals(self) -> int:
        """Decimals of a futures price string (Binance ``pricePrecision``, at least 2)."""
        return max(2, _decimals_of(self.tick))

    @property
    def qty_decimals(self) -> int:
        """Decimals of a futures quantity string (the lot's decimals)."""
        return _decimals_of(self.lot)


# level, tick, lot, trades/s — USD-M futures values (tick/lot from exchangeInfo, trade
# rates from /work/shared/notes/binance-streams.md "Volume").
_INSTRUMENTS = {
    "BTCUSDT": (87_000.0, 0.1, 0.001, 40.0),
    "ETHUSDT": (3_000.0, 0.01, 0.001, 70.0),
    "SOLUSDT": (140.0, 0.01, 0.01, 25.0),
    "BNBUSDT": (600.0, 0.01, 0.01, 10.0),
    "XRPUSDT": (2.0, 0.0001, 0.1, 20.0),
}


def instrument(symbol: str) -> Instrument:
    """Tick, lot, start level and trade rate of ``symbol``.

    Parameters
    ----------
    symbol : str
        Symbol in any case (``"btcusdt"`` or ``"BTCUSDT"``).

    Returns
    -------
    Instrument
        From a small table (BTC, ETH, SOL, BNB, XRP against USDT); any other symbol gets a
        level of 100, a tick of ``10**(floor(log10(level)) - 4)`` and a lot worth about 10
        USDT rounded down to a power of ten.
    """
    symbol = symbol.upper()
    if symbol in _INSTRUMENTS:
        level, tick, lot, rate = _INSTRUMENTS[symbol]
        return Instrument(symbol, level, tick, lot, rate)
    level = 100.0
    tick = 10.0 ** (math.floor(math.log10(level)) - 4)
    lot = 10.0 ** math.floor(math.log10(10.0 / level))
    return Instrument(symbol, level, tick, lot, DEFAULT_RATE)


def _decimals_of(step: float) -> int:
    """Decimals needed to write multiples of a power-of-ten ``step`` (0.001 -> 3)."""
    return max(0, round(-math.log10(step)))


def _decimals_needed(values: np.ndarray, at_most: int = SPOT_DECIMALS) -> int:
    """Smallest number of decimals (<= ``at_most``) that writes every value exactly."""
    for decimals in range(at_most + 1):
        if np.array_equal(np.round(values, decimals), values):
            return decimals
    return at_most


def _normalise_symbol(symbol: str, name: str = "symbol") -> str:
    upper = str(symbol).strip().upper()
    if not SYMBOL_PATTERN.match(upper):
        raise ValueError(f"{name} {symbol!r} is not valid: use 2-20 letters or digits")
    return upper


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------
# Trades in columns
# ---------------------------------------------------------------------------------------


@dataclass
class _Trades:
    """A run of trades in emission order, one numpy array per field.

    ``code`` indexes ``symbols``; ``agg_id`` is -1 on placeholders (``na``).
    """

    symbols: tuple[str, ...]
    code: np.ndarray
    trade_id: np.ndarray
    agg_id: np.ndarray
    ts: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    maker: np.ndarray
    na: np.ndarray

    _COLUMNS = ("code", "trade_id", "agg_id", "ts", "price", "qty", "maker", "na")

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls, symbols: tuple[str, ...]) -> _Trades:
        return cls(
            symbols,
            np.empty(0, np.int16),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            np.empty(0, np.float64),
            np.empty(0, np.float64),
            np.empty(0, bool),
            np.empty(0, bool),
        )

    def select(self, index: slice | np.ndarray) -> _Trades:
        return _Trades(self.symbols, *(getattr(self, c)[index] for c in self._COLUMNS))

    @classmethod
    def concat(cls, parts: list[_Trades], symbols: tuple[str, ...]) -> _Trades:
        if not parts:
            return cls.empty(symbols)
        if len(parts) == 1:
            return cls(symbols, *(getattr(parts[0], c) for c in cls._COLUMNS))
        return cls(
            symbols,
            *(np.concatenate([getattr(p, c) for p in parts]) for c in cls._COLUMNS),
        )

    def sorted_by_time(self) -> _Trades:
        """Stable sort on ``ts``: trades of one millisecond keep their relative order."""
        return self.select(np.argsort(self.ts, kind="stable"))

    def to_frame(self) -> pd.DataFrame:
        """Records as a DataFrame (see :meth:`SimulatedMarket.generate` for the columns)."""
        return pd.DataFrame(
            {
                "symbol": pd.Categorical.from_codes(self.code, categories=list(self.symbols)),
                "trade_id": self.trade_id,
                "ts": self.ts,
                "price": self.price,
                "qty": self.qty,
                "is_buyer_maker": self.maker.astype(np.int8),
                "status": pd.Categorical.from_codes(
                    self.na.astype(np.int8), categories=["MARKET", "NA"]
                ),
            }
        )


def _market_count_cut(trades: _Trades, market_trades: int) -> int:
    """Length of the prefix of ``trades`` holding ``market_trades`` non-placeholder trades."""
    cumulative = np.cumsum(~trades.na)
    if len(cumulative) == 0 or cumulative[-1] <= market_trades:
        return len(trades)
    return int(np.searchsorted(cumulative, market_trades, side="left")) + 1


# ---------------------------------------------------------------------------------------
# Recorded files
# ---------------------------------------------------------------------------------------

_TIME_COLUMNS = ("ts", "timestamp", "time")
_QTY_COLUMNS = ("qty", "size", "quantity")
_ZONE_SUFFIX = r"(?:Z|[+-]\d\d:?\d\d)$"


def read_trade_file(path: str | Path) -> pd.DataFrame:
    """Read a recorded trade file into trade records, in file order.

    Parameters
    ----------
    path : str or Path
        ``.ndjson``/``.jsonl``: one object per line, ``{"symbol","ts","price","size"}`` (the
        browser tick collector's format). ``.csv``: a ``symbol`` and a ``price`` column, a
        quantity column named ``qty``, ``size`` or ``quantity``, and a time column named
        ``ts``, ``timestamp`` or ``time``. Times are epoch milliseconds (numbers) or ISO-8601
        strings with a zone (``Z`` or ``+00:00``); naive strings are refused because their
        zone is unknown.

    Returns
    -------
    pandas.DataFrame
        Columns ``symbol`` (categorical, upper case), ``trade_id`` (int64), ``ts`` (int64
        epoch ms), ``price``, ``qty`` (float64), ``is_buyer_maker`` (nullable Int8, <NA> when
        the file has no ``is_buyer_maker``/``m`` column) and ``status`` (categorical
        ``"MARKET"``/``"NA"``).

    Notes
    -----
    The files carry no trade ids: ids are assigned per symbol in file order starting at 1.
    Identical rows are distinct real trades and are all kept. A price of 0 marks a futures
    ``"X":"NA"`` placeholder: its status is ``"NA"`` and its quantity 0; it is not a trade
    and must not reach a bar. Sub-millisecond digits of ISO times are truncated.

    Raises
    ------
    ValueError
        Unknown extension, missing column, empty or missing value, negative price or
        quantity, time without a zone, numeric time that is not epoch milliseconds.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        raw = _read_ndjson(path)
    elif suffix == ".csv":
        raw = pd.read_csv(path)
    else:
        raise ValueError(f"path {str(path)!r}: unknown extension {suffix!r}, use .ndjson or .csv")
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if raw.empty:
        raise ValueError(f"path {str(path)!r} holds no trades")
    time_column = _pick_column(raw, _TIME_COLUMNS, path)
    qty_column = _pick_column(raw, _QTY_COLUMNS, path)
    for column in ("symbol", "price", time_column, qty_column):
        if column not in raw.columns:
            raise ValueError(f"path {str(path)!r} has no {column!r} column")
        missing = raw[column].isna().to_numpy()
        if missing.any():
            row = int(np.argmax(missing)) + 1
            raise ValueError(f"path {str(path)!r}: column {column!r} is empty in data row {row}")

    symbol = raw["symbol"].astype(str).str.strip().str.upper()
    price = pd.to_numeric(raw["price"], errors="raise").to_numpy(np.float64)
    qty = pd.to_numeric(raw[qty_column], errors="raise").to_numpy(np.float64)
    if (price < 0).any() or (qty < 0).any():
        raise ValueError(f"path {str(path)!r}: negative price or quantity")
    placeholder = price == 0
    qty = np.where(placeholder, 0.0, qty)
    frame = pd.DataFrame(
        {
            "symbol": pd.Categorical(symbol, categories=list(dict.fromkeys(symbol))),
            "trade_id": np.zeros(len(raw), np.int64),
            "ts": _epoch_ms(raw[time_column], path),
            "price": price,
            "qty": qty,
            "is_buyer_maker": _buyer_maker_column(raw, path),
            "status": pd.Categorical.from_codes(
                placeholder.astype(np.int8), categories=["MARKET", "NA"]
            ),
        }
    )
    frame["trade_id"] = frame.groupby("symbol", sort=False, observed=True).cumcount() + 1
    return frame


def _read_ndjson(path: Path) -> pd.DataFrame:
    records = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"path {str(path)!r}: line {number} is not JSON ({exc})") from None
    return pd.DataFrame.from_records(records)


def _pick_column(raw: pd.DataFrame, candidates: tuple[str, ...], path: Path) -> str:
    for name in candidates:
        if name in raw.columns:
            return name
    raise ValueError(
        f"path {str(path)!r} has none of the columns {', '.join(candidates)}; "
        f"it has {', '.join(raw.columns)}"
    )


def _epoch_ms(column: pd.Series, path: Path) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(np.float64)
        # 2001-09-09 .. 2286-11-20 in ms; seconds or microseconds fall outside.
        if (values < 1e12).any() or (values >= 1e13).any():
            raise ValueError(
                f"path {str(path)!r}: numeric times must be epoch milliseconds, "
                f"got {values[0]!r}"
            )
        return values.astype(np.int64)
    text = column.astype(str).str.strip()
    zoned = text.str.contains(_ZONE_SUFFIX, regex=True).to_numpy()
    if not zoned.all():
        row = int(np.argmin(zoned)) + 1
        raise ValueError(
            f"path {str(path)!r}: time {text.iloc[row - 1]!r} in data row {row} has no zone; "
            "write it with Z or +00:00"
        )
    parsed = pd.to_datetime(text, utc=True, format="ISO8601")
    return parsed.dt.as_unit("ms").astype("int64").to_numpy()


def _buyer_maker_column(raw: pd.DataFrame, path: Path) -> pd.api.extensions.ExtensionArray:
    for name in ("is_buyer_maker", "m"):
        if name not in raw.columns:
            continue
        column = raw[name]
        if pd.api.types.is_bool_dtype(column) or column.isin([0, 1]).all():
            return pd.array(column.astype(np.int8), dtype="Int8")
        raise ValueError(f"path {str(path)!r}: column {name!r} must hold true/false or 0/1")
    return pd.array([pd.NA] * len(raw), dtype="Int8")


# ---------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------


def _check_speed(speed: float) -> float:
    speed = float(speed)
    if not (speed >= 0 and math.isfinite(speed)):
        raise ValueError(f"speed ({speed!r}) must be a finite number >= 0 (0 = full speed)")
    return speed


def universe_symbols(groups: int = 3, group_size: int = 3, noise: int = 6) -> list[str]:
    """Symbols of a simulated universe with planted cointegrated groups (lower case).

    Parameters
    ----------
    groups : int, default 3
        Planted groups (1-9): ``g1ausdt, g1busdt, ...`` share group 1's factor.
    group_size : int, default 3
        Members per group (2-26).
    noise : int, default 6
        Symbols ``n01usdt, ...``: random walks correlated with BTC, cointegrated with
        nothing.

    Returns
    -------
    list of str
        ``btcusdt, ethusdt`` (the cointegrated default pair) followed by the group members
        and the noise symbols, e.g. for ``CRYPTO_SYMBOLS`` or ``market.py --symbols``.
    """
    if not 1 <= groups <= 9:
        raise ValueError(f"groups ({groups!r}) must be between 1 and 9")
    if not 2 <= group_size <= 26:
        raise ValueError(f"group_size ({group_size!r}) must be between 2 and 26")
    if not 0 <= noise <= 99:
        raise ValueError(f"noise ({noise!r}) must be between 0 and 99")
    members = [f"g{g}{chr(ord('a') + k)}usdt" for g in range(1, groups + 1)
               for k in range(group_size)]
    return ["btcusdt", "ethusdt", *members, *(f"n{k:02d}usdt" for k in range(1, noise + 1))]


def _ou_path(level: float, phi: float, shocks: np.ndarray) -> np.ndarray:
    """An Ornstein-Uhlenbeck path by its exact discretisation ``s[k] = phi s[k-1] + shocks[k]``
    (``Var(shocks) = std^2 (1 - phi^2)`` keeps it stationary), from ``s[-1] = level``.
    A stationary Gaussian OU process is time-reversible: the same recursion runs it
    backwards. (A plain loop: ~10 ms for a day of 1 s steps, cheaper than importing scipy.)"""
    path = np.empty(len(shocks))
    for k, shock in enumerate(shocks.tolist()):
        level = phi * level + shock
        path[k] = level
    return path


def _correlated_steps(leader_steps: np.ndarray, leader_vol: float, own: np.ndarray,
                      dt: float) -> np.ndarray:
    """Log steps of a symbol beyond the pair over grid steps of ``dt`` seconds:
    ``OTHER_VOL_BPS`` per second, correlated ``OTHER_CORRELATION`` with the leader's steps
    (whose 1-second volatility is ``leader_vol``); ``own`` are its standard normal draws."""
    vol = OTHER_VOL_BPS / 1e4
    return OTHER_CORRELATION * (vol / leader_vol) * leader_steps + math.sqrt(
        1 - OTHER_CORRELATION**2
    ) * vol * math.sqrt(dt) * own


@dataclass
class _SymbolState:
    instrument: Instrument
    role: str  # "leader", "follower", "member" (of a planted group) or "other"
    rate: float
    rng_trades: np.random.Generator
    rng_path: np.random.Generator | None
    log_price: float
    next_id: int | None = None
    next_agg: int | None = None
    group: int = 0  # planted group of a "member"
    loading: float = 1.0  # a member's loading on its group factor
    spread: float = 0.0  # a member's own OU spread, log units


@dataclass
class _Chunk:
    start_ms: int
    leader_steps: np.ndarray
    leader_log: np.ndarray
    spread: np.ndarray
    trades: _Trades
    group_logs: dict = field(default_factory=dict)  # planted group -> factor path


class SimulatedMarket:
    """A seeded market whose first two symbols form a cointegrated pair in log prices.

    Parameters
    ----------
    symbols : iterable of str, default ("BTCUSDT", "ETHUSDT")
        ``symbols[0]`` is the leader, a random walk in log price; ``symbols[1]`` (the
        follower) satisfies ``log y = alpha + beta * log x + s``; further symbols are random
        walks correlated with the leader, except planted group members named
        ``G<g><letter>USDT`` (see :func:`universe_symbols` and Notes). More symbols can be
        added later with :meth:`add_symbol` (the server does so when a client subscribes
        to one).
    seed : int, optional
        Seed of every random stream. ``None`` draws one; it is kept in ``seed``.
    rates : mapping of str to float, optional
        Trades per second per symbol; defaults from :func:`instrument` (BTC 40, ETH 70).
    beta : float, default 1.2
        Hedge ratio of log prices (follower on leader).
    half_life_s : float, default 90
        Half-life of the Ornstein-Uhlenbeck spread ``s``, seconds.
    spread_std_bps : float, default 15
        Stationary standard deviation of ``s``, basis points of log price.
    leader_vol_bps : float, default 1.5
        Standard deviation of the leader's 1-second log return, basis points.
    start_ms : int, optional
        Simulated time of the first trade, epoch ms; ``None`` = the wall clock when the
        simulation begins (first :meth:`generate` or server start).
    speed : float, default 1
        Read by :class:`MarketServer`: 1 = real time, N = N times faster, 0 = as fast as
        clients read.
    first_trade_id : int, optional
        First trade id and aggregate id of every symbol; ``None`` = ``start_ms * 100``, so
        that ids of a later run never repeat those of an earlier one (as long as the
        simulation does not outrun the wall clock by more than 100 trades per ms per symbol).
    na_probability : float, default 0.003
        Probability that an arrival is an ``"X":"NA"`` placeholder instead of a trade.

    Attributes
    ----------
    beta, alpha : float
        ``log y = alpha + beta * log x + s``; ``alpha`` puts the follower at its table level
        when the spread is 0.
    half_life_s, ou_theta, ou_sigma, spread_std : float
        ``ds = -ou_theta * s dt + ou_sigma dW`` with ``ou_theta = ln 2 / half_life_s`` (per
        second), ``spread_std = ou_sigma / sqrt(2 ou_theta)`` (log units; 15 bps = 0.0015).
        The spread starts at a draw from its stationary law, so ``|s| > 2 spread_std``
        happens about 4.6 % of the time, an excursion every few half-lives.
    leader_vol : float
        Leader log-return standard deviation per sqrt(second).
    pair : tuple of (str, str or None)
        (leader, follower).

    Notes
    -----
    Time runs on a grid of ``GRID_MS``; trades arrive as a Poisson process per symbol (ms
    resolution, several per ms allowed), buy or sell with probability 1/2, at the bid
    (buyer is maker) or one tick above it, with lognormal sizes (median about 300 USDT) on
    the lot grid. Everything is generated in chunks of ``CHUNK_MS`` of simulated time, each
    symbol with its own random streams, so the same seed and start give the same trades
    whatever the caller's pacing, and adding a symbol changes nothing for the others.
    Symbols added after the start begin at the moment they are added (that part is not
    reproducible from the seed alone).

    Planted universe: a symbol named ``G<g><letter>USDT`` (g = 1..9) follows
    ``log p = log level + b * F_g + s``, where ``F_g`` is group g's factor (a random walk
    correlated ``OTHER_CORRELATION`` with the leader, ``OTHER_VOL_BPS`` per second), ``b``
    the letter's loading (``UNIVERSE_LOADINGS``: A 1.0, B 0.8, C 1.25, ...) and ``s`` the
    member's own OU spread (half-life ``(g + 1) * UNIVERSE_HALF_LIFE_S`` seconds, standard
    deviation ``UNIVERSE_SPREAD_STD_BPS``). Any two members of a group are therefore
    cointegrated in log prices with ``beta = b_y / b_x``; members of different groups and
    all other symbols are not.

    With the defaults, an OLS of log ETH on log BTC over one hour of 1 s last prices lands
    within about 0.1 of ``beta`` (one standard deviation over seeds); longer windows do
    better. AR(1) half-life estimates from 1 s last prices are biased low when trade rates
    are a few per second, because the two legs' last trades are up to a second apart.
    """

    GRID_MS = 100
    CHUNK_MS = 10_000

    def __init__(
        self,
        symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"),
        *,
        seed: int | None = None,
        rates: Mapping[str, float] | None = None,
        beta: float = 1.2,
        half_life_s: float = 90.0,
        spread_std_bps: float = 15.0,
        leader_vol_bps: float = 1.5,
        start_ms: int | None = None,
        speed: float = 1.0,
        first_trade_id: int | None = None,
        na_probability: float = 0.003,
    ) -> None:
        if isinstance(symbols, str):
            symbols = symbols.split(",")
        names = list(dict.fromkeys(_normalise_symbol(s, "symbols item") for s in symbols))
        if not names:
            raise ValueError("symbols (empty) must name at least one symbol")
        rates = rates or {}
        self._rates = {_normalise_symbol(k, "rates key"): float(v) for k, v in rates.items()}
        for name, rate in self._rates.items():
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(f"rates[{name!r}] ({rate!r}) must be a positive number")
        if not math.isfinite(beta):
            raise ValueError(f"beta ({beta!r}) must be finite")
        if not half_life_s > 0:
            raise ValueError(f"half_life_s ({half_life_s!r}) must be > 0")
        if not spread_std_bps >= 0:
            raise ValueError(f"spread_std_bps ({spread_std_bps!r}) must be >= 0")
        if not leader_vol_bps > 0:
            raise ValueError(f"leader_vol_bps ({leader_vol_bps!r}) must be > 0")
        if not 0 <= na_probability < 1:
            raise ValueError(f"na_probability ({na_probability!r}) must be in [0, 1)")
        if first_trade_id is not None and first_trade_id < 1:
            raise ValueError(f"first_trade_id ({first_trade_id!r}) must be >= 1")
        self.speed = _check_speed(speed)
        self.seed = int(np.random.SeedSequence().entropy if seed is None else seed)
        self.start_ms = None if start_ms is None else int(start_ms)
        self.first_trade_id = first_trade_id
        self.na_probability = float(na_probability)
        self.beta = float(beta)
        self.half_life_s = float(half_life_s)
        self.ou_theta = math.log(2.0) / self.half_life_s
        self.spread_std = spread_std_bps / 1e4
        self.ou_sigma = self.spread_std * math.sqrt(2.0 * self.ou_theta)
        self.leader_vol = leader_vol_bps / 1e4
        leader = instrument(names[0])
        follower = instrument(names[1]) if len(names) > 1 else None
        self.pair = (leader.symbol, follower.symbol if follower else None)
        self.alpha = (
            math.log(follower.level) - self.beta * math.log(leader.level) if follower else 0.0
        )

        self._rng_leader = self._rng(0, leader.symbol)
        self._rng_spread = self._rng(1, "spread")
        self._spread = float(self._rng_spread.normal(0.0, self.spread_std))
        self._group_levels: dict[int, float] = {}  # planted group factor, log units
        self._group_rngs: dict[int, np.random.Generator] = {}
        self._states: dict[str, _SymbolState] = {}
        for index, name in enumerate(names):
            role = "leader" if index == 0 else "follower" if index == 1 else "other"
            self._add_state(name, role)
        self._begun = False
        self._next_chunk_ms = 0
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._cursor = 0  # rows of the first buffered chunk already handed out
        self._last_handed_ms = -1
        self._position_ms = 0  # where the next generate() window starts

    # -- public -------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols simulated so far, in the order they were added (upper case)."""
        return tuple(self._states)

    @property
    def rates(self) -> dict[str, float]:
        """Trades per second of each simulated symbol."""
        return {name: state.rate for name, state in self._states.items()}

    @property
    def exhausted(self) -> bool:
        """Always False: a simulation never runs out of trades."""
        return False

    @property
    def origin_ms(self) -> int:
        """Simulated time the server clock starts from (``start_ms``)."""
        self.begin()
        return self.start_ms

    def begin(self, now_ms: int | None = None) -> None:
        """Fix ``start_ms`` (to ``now_ms`` or the wall clock) and the first ids. Idempotent."""
        if self._begun:
            return
        if self.start_ms is None:
            self.start_ms = _now_ms() if now_ms is None else int(now_ms)
        if self.first_trade_id is None:
            self.first_trade_id = self.start_ms * 100
        for state in self._states.values():
            state.next_id = state.next_agg = self.first_trade_id
        self._next_chunk_ms = self._position_ms = self.start_ms
        self._begun = True

    def add_symbol(self, symbol: str) -> bool:
        """Simulate ``symbol`` from now on (correlated with the leader). Returns True.

        Returns False only for a name that cannot be a symbol (2-20 letters or digits).
        """
        try:
            name = _normalise_symbol(symbol)
        except ValueError:
            return False
        if name in self._states:
            return True
        state = self._add_state(name, "other")
        if self._begun:
            state.next_id = state.next_agg = self.first_trade_id
            self._add_to_buffered_chunks(state)
        return True

    def generate(self, duration_s: float) -> pd.DataFrame:
        """Trades of the next ``duration_s`` simulated seconds, without a server.

        Parameters
        ----------
        duration_s : float
            Length of the window, > 0. The first call starts at ``start_ms``; each call
            continues where the previous one stopped (call repeatedly to stream a long day
            in pieces).

        Returns
        -------
        pandas.DataFrame
            One row per arrival in time order: ``symbol`` (categorical), ``trade_id``,
            ``ts`` (epoch ms), ``price``, ``qty``, ``is_buyer_maker`` (int8 0/1), ``status``
            (categorical ``"MARKET"``/``"NA"``; placeholders have price and qty 0). The same
            rows a :class:`MarketServer` streams for the same seed and start.

        Notes
        -----
        Vectorised per 10 s chunk: a day of BTC and ETH (9.5 million rows) takes about 5 s
        on this 2-core machine, a 330 MB frame and 1.3 GB peak memory; generate an hour at a
        time to stay small.
        """
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration_s ({duration_s!r}) must be a positive number")
        self.begin()
        end_ms = self._position_ms + round(duration_s * 1000)
        trades = self.take(end_ms - 1, limit=None)
        self._position_ms = end_ms
        return trades.to_frame()

    def take(self, until_ms: int, limit: int | None) -> _Trades:
        """Hand out the next trades with ``ts <= until_ms``, at most ``limit`` of them."""
        self.begin()
        limit = sys.maxsize if limit is None else limit
        self._fill(until_ms, limit)
        parts: list[_Trades] = []
        taken = 0
        while self._chunks and taken < limit:
            chunk = self._chunks[0]
            ts = chunk.trades.ts
            stop = self._cursor + int(
                np.searchsorted(ts[self._cursor :], until_ms, side="right")
            )
            stop = min(stop, self._cursor + limit - taken)
            if stop > self._cursor:
                parts.append(chunk.trades.select(slice(self._cursor, stop)))
                taken += stop - self._cursor
            if stop == len(ts) and chunk.start_ms + self.CHUNK_MS <= until_ms + 1:
                self._chunks.popleft()
                self._cursor = 0
            else:
                self._cursor = stop
                break
        trades = _Trades.concat(parts, self.symbols)
        if len(trades):
            self._last_handed_ms = int(trades.ts[-1])
        return trades

    def next_ts(self) -> int | None:
        """Time of the next trade to hand out (generating ahead if needed)."""
        self.begin()
        start = self._cursor
        for chunk in self._chunks:
            if start < len(chunk.trades):
                return int(chunk.trades.ts[start])
            start = 0
        while True:
            chunk = self._next_chunk()
            self._chunks.append(chunk)
            if len(chunk.trades):
                return int(chunk.trades.ts[0])

    def decimals(self, symbol: str) -> tuple[int, int]:
        """(price, quantity) decimals of futures frames for ``symbol``."""
        state = self._states[symbol]
        return state.instrument.price_decimals, state.instrument.qty_decimals

    def __repr__(self) -> str:
        return (
            f"SimulatedMarket(symbols={self.symbols!r}, seed={self.seed}, beta={self.beta}, "
            f"half_life_s={self.half_life_s}, start_ms={self.start_ms}, speed={self.speed})"
        )

    # -- generation ---------------------------------------------------------------------

    def _rng(self, stream: int, name: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream, zlib.crc32(name.encode())])

    def _add_state(self, name: str, role: str) -> _SymbolState:
        info = instrument(name)
        member = UNIVERSE_MEMBER_PATTERN.match(name) if role == "other" else None
        state = _SymbolState(
            instrument=info,
            role="member" if member else role,
            rate=self._rates.get(name, info.rate),
            rng_trades=self._rng(3, name),
            rng_path=self._rng(2, name) if role == "other" else None,
            log_price=math.log(info.level),
        )
        if member:
            state.group = int(member.group(1))
            letter = ord(member.group(2)) - ord("A")
            state.loading = UNIVERSE_LOADINGS[letter % len(UNIVERSE_LOADINGS)]
            state.spread = float(state.rng_path.normal(0.0, UNIVERSE_SPREAD_STD_BPS / 1e4))
        self._states[name] = state
        return state

    def _group_factor(self, group: int, chunk: _Chunk) -> np.ndarray:
        """Group ``group``'s factor over ``chunk`` (log change since the group began)."""
        if group not in chunk.group_logs:
            if group not in self._group_rngs:
                self._group_rngs[group] = self._rng(4, f"group{group}")
                self._group_levels[group] = 0.0
            own = self._group_rngs[group].standard_normal(len(chunk.leader_steps))
            steps = _correlated_steps(chunk.leader_steps, self.leader_vol, own,
                                      self.GRID_MS / 1000.0)
            path = self._group_levels[group] + np.cumsum(steps)
            self._group_levels[group] = float(path[-1])
            chunk.group_logs[group] = path
        return chunk.group_logs[group]

    def _member_spread(self, state: _SymbolState, steps: int) -> np.ndarray:
        """A member's own OU spread over ``steps`` grid steps (exact discretisation)."""
        dt = self.GRID_MS / 1000.0
        theta = math.log(2.0) / ((state.group + 1) * UNIVERSE_HALF_LIFE_S)
        phi = math.exp(-theta * dt)
        std = UNIVERSE_SPREAD_STD_BPS / 1e4
        shocks = state.rng_path.standard_normal(steps) * (std * math.sqrt(1 - phi * phi))
        spread = _ou_path(state.spread, phi, shocks)
        state.spread = float(spread[-1])
        return spread

    def _fill(self, until_ms: int, rows: int) -> None:
        buffered = sum(len(c.trades) for c in self._chunks) - self._cursor
        while buffered < rows and self._next_chunk_ms <= until_ms:
            chunk = self._next_chunk()
            self._chunks.append(chunk)
            buffered += len(chunk.trades)

    def _next_chunk(self) -> _Chunk:
        steps = self.CHUNK_MS // self.GRID_MS
        dt = self.GRID_MS / 1000.0
        leader_steps = self._rng_leader.standard_normal(steps) * (self.leader_vol * math.sqrt(dt))
        leader_state = self._states[self.pair[0]]
        leader_log = leader_state.log_price + np.cumsum(leader_steps)
        leader_state.log_price = float(leader_log[-1])
        phi = math.exp(-self.ou_theta * dt)
        eta = self._rng_spread.standard_normal(steps) * (self.spread_std * math.sqrt(1 - phi * phi))
        spread = _ou_path(self._spread, phi, eta)
        self._spread = float(spread[-1])
        chunk = _Chunk(self._next_chunk_ms, leader_steps, leader_log, spread, None)
        parts = [
            self._symbol_trades(code, state, chunk, after_ms=None)
            for code, state in enumerate(self._states.values())
        ]
        chunk.trades = _Trades.concat(parts, self.symbols).sorted_by_time()
        self._next_chunk_ms += self.CHUNK_MS
        return chunk

    def _log_path(self, state: _SymbolState, chunk: _Chunk) -> np.ndarray:
        if state.role == "leader":
            return chunk.leader_log
        if state.role == "follower":
            return self.alpha + self.beta * chunk.leader_log + chunk.spread
        if state.role == "member":
            factor = self._group_factor(state.group, chunk)
            base = math.log(state.instrument.level)
            return base + state.loading * factor + self._member_spread(state, len(factor))
        own = state.rng_path.standard_normal(len(chunk.leader_steps))
        steps = _correlated_steps(chunk.leader_steps, self.leader_vol, own,
                                  self.GRID_MS / 1000.0)
        path = state.log_price + np.cumsum(steps)
        state.log_price = float(path[-1])
        return path

    def _symbol_trades(
        self, code: int, state: _SymbolState, chunk: _Chunk, after_ms: int | None
    ) -> _Trades:
        info = state.instrument
        log_path = self._log_path(state, chunk)
        rng = state.rng_trades
        count = int(rng.poisson(state.rate * self.CHUNK_MS / 1000.0))
        offsets = np.sort(rng.integers(0, self.CHUNK_MS, count))
        maker = rng.random(count) < 0.5
        log_sizes = rng.normal(
            math.log(MEDIAN_NOTIONAL_USDT / (info.level * info.lot)), SIZE_LOG_SIGMA, count
        )
        na = rng.random(count) < self.na_probability
        mid = np.exp(log_path[offsets // self.GRID_MS])
        # Sellers hit the bid (buyer is maker), buyers lift the ask one tick higher.
        price_ticks = np.floor(mid / info.tick) + (~maker)
        lots = np.maximum(1.0, np.rint(np.exp(log_sizes)))
        price = np.where(na, 0.0, np.round(price_ticks * info.tick, info.price_decimals))
        qty = np.where(na, 0.0, np.round(lots * info.lot, info.qty_decimals))
        ts = chunk.start_ms + offsets
        if after_ms is not None:
            keep = ts > after_ms
            ts, maker, na, price, qty = ts[keep], maker[keep], na[keep], price[keep], qty[keep]
        kept = len(ts)
        trade_id = state.next_id + np.arange(kept, dtype=np.int64)
        state.next_id += kept
        market = ~na
        agg_id = np.where(market, state.next_agg + np.cumsum(market) - 1, -1).astype(np.int64)
        state.next_agg += int(market.sum())
        return _Trades(
            (), np.full(kept, code, np.int16), trade_id, agg_id, ts.astype(np.int64),
            price, qty, maker, na,
        )

    def _add_to_buffered_chunks(self, state: _SymbolState) -> None:
        code = len(self._states) - 1
        for index, chunk in enumerate(self._chunks):
            start = self._cursor if index == 0 else 0
            extra = self._symbol_trades(code, state, chunk, after_ms=self._last_handed_ms)
            rest = chunk.trades.select(slice(start, None))
            chunk.trades = _Trades.concat([rest, extra], self.symbols).sorted_by_time()
            if index == 0:
                self._cursor = 0
        for chunk in self._chunks:
            chunk.trades.symbols = self.symbols


class ReplaySource:
    """Replay a recorded trade file (see :func:`read_trade_file`) at a chosen speed.

    Parameters
    ----------
    path : str or Path
        ``.ndjson`` or ``.csv`` recording.
    speed : float, default 1
        1 = the recorded pace, N = N times faster (gaps divided by N), 0 = full speed.
    loop : bool, default False
        Start over at the end, forever. Each lap is shifted in time by the recording's span
        plus one second, and ids continue, so time and ids keep increasing.

    Notes
    -----
    Trades go out in file order (the order the recorder received them) with their recorded
    times; pacing follows the running maximum of the times because recordings interleave
    symbols with small backward steps. Ids: per symbol from 1 in file order
    (``trade_id``); aggregate ids count market trades per symbol from 1. The side is not
    recorded: frames say ``"m":false``. Rows with price 0 go out as ``"X":"NA"`` placeholders
    on every futures stream, ``aggTrade`` included (see ``MarketServer``), so that a collector
    can account for every row of the file.
    """

    def __init__(self, path: str | Path, *, speed: float = 1.0, loop: bool = False) -> None:
        self.path = str(path)
        self.speed = _check_speed(speed)
        self.loop = bool(loop)
        frame = read_trade_file(path)
        self.records = frame
        self._symbols = tuple(frame["symbol"].cat.categories)
        codes = frame["symbol"].cat.codes.to_numpy(np.int16)
        na = (frame["status"] == "NA").to_numpy()
        market = pd.Series(~na)
        agg_id = market.groupby(codes).cumsum().to_numpy(np.int64)
        ts = frame["ts"].to_numpy(np.int64)
        self._trades = _Trades(
            self._symbols,
            codes,
            frame["trade_id"].to_numpy(np.int64),
            np.where(na, -1, agg_id),
            ts,
            frame["price"].to_numpy(np.float64),
            frame["qty"].to_numpy(np.float64),
            np.zeros(len(frame), bool),
            na,
        )
        self._schedule = np.maximum.accumulate(ts)
        self._lap_ms = int(self._schedule[-1] - ts[0]) + 1000
        self._rows_per_symbol = np.bincount(codes, minlength=len(self._symbols))
        self._market_per_symbol = np.bincount(codes[~na], minlength=len(self._symbols))
        self._decimals = {}
        for code, name in enumerate(self._symbols):
            rows = (codes == code) & ~na
            info = instrument(name)
            self._decimals[name] = (
                max(info.price_decimals, _decimals_needed(self._trades.price[rows])),
                max(info.qty_decimals, _decimals_needed(self._trades.qty[rows])),
            )
        self._lap = 0
        self._cursor = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        """Symbols of the file (upper case), in order of first appearance."""
        return self._symbols

    @property
    def exhausted(self) -> bool:
        """True once every row has been handed out (never with ``loop=True``)."""
        return not self.loop and self._cursor >= len(self._trades)

    @property
    def origin_ms(self) -> int:
        """Recorded time of the first row."""
        return int(self._schedule[0])

    def begin(self, now_ms: int | None = None) -> None:
        """Nothing to fix: a replay keeps its recorded times."""

    def add_symbol(self, symbol: str) -> bool:
        """True when the file has ``symbol``; a replay cannot invent symbols."""
        return str(symbol).upper() in self._symbols

    def next_ts(self) -> int | None:
        """Scheduled time of the next row, None at the end."""
        self._wrap()
        if self._cursor >= len(self._trades):
            return None
        return int(self._schedule[self._cursor]) + self._lap * self._lap_ms

    def take(self, until_ms: int, limit: int | None) -> _Trades:
        """Hand out the next rows scheduled at or before ``until_ms``, at most ``limit``."""
        self._wrap()
        offset = self._lap * self._lap_ms
        stop = int(np.searchsorted(self._schedule, until_ms - offset, side="right"))
        if limit is not None:
            stop = min(stop, self._cursor + limit)
        stop = max(stop, self._cursor)
        trades = self._trades.select(slice(self._cursor, stop))
        self._cursor = stop
        if self._lap:
            trades.ts = trades.ts + offset
            trades.trade_id = trades.trade_id + self._lap * self._rows_per_symbol[trades.code]
            trades.agg_id = np.where(
                trades.na, -1, trades.agg_id + self._lap * self._market_per_symbol[trades.code]
            )
        return trades

    def decimals(self, symbol: str) -> tuple[int, int]:
        """(price, quantity) decimals of futures frames: the table's, more if the data needs."""
        return self._decimals[symbol]

    def _wrap(self) -> None:
        if self.loop and self._cursor >= len(self._trades):
            self._lap += 1
            self._cursor = 0

    def __repr__(self) -> str:
        return f"ReplaySource({self.path!r}, speed={self.speed}, loop={self.loop})"


# ---------------------------------------------------------------------------------------
# Paths, frames
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a request path asks for.

    Attributes
    ----------
    prefix : str
        ``""`` (unrouted), ``"market"`` or ``"public"``.
    combined : bool
        True for ``/stream?streams=...`` (frames wrapped with their stream name).
    streams : tuple of str
        Stream names in the path, duplicates removed, order kept.
    """

    prefix: str
    combined: bool
    streams: tuple[str, ...]


def parse_path(path: str, kind: str = "futures") -> Route | None:
    """Parse a Binance stream path; None when the server should answer 404.

    Parameters
    ----------
    path : str
        Request target, e.g. ``"/market/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade"``.
    kind : {"futures", "spot"}
        Spot has no ``/market`` or ``/public`` routes.

    Returns
    -------
    Route or None
    """
    parts = urlsplit(path)
    segments = parts.path.split("/")[1:]
    prefix = ""
    if kind == "futures" and segments and segments[0] in ("market", "public"):
        prefix = segments.pop(0)
    if not segments:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    if segments[0] == "ws":
        streams = [s for s in segments[1:] if s]
        if parts.query or len(streams) != len(segments) - 1:
            return None
        combined = False
    elif segments == ["stream"]:
        if set(query) - {"streams"} or len(query.get("streams", [])) > 1:
            return None
        value = query.get("streams", [""])[0]
        streams = [s for s in value.split("/") if s]
        combined = True
    else:
        return None
    if not all(STREAM_NAME_PATTERN.match(s) for s in streams):
        return None
    return Route(prefix, combined, tuple(dict.fromkeys(streams)))


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, uncompressed WebSocket text frame carrying ``payload``.

    Notes
    -----
    RFC 6455 section 5.2: FIN + opcode 1, then the payload length in 7 bits, or 126 + 16 bits,
    or 127 + 64 bits. Frames from a server are never masked.
    """
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 65536:
        header = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + size.to_bytes(8, "big")
    return header + payload


class _Connection(ServerConnection):
    """A websockets connection that also holds its subscriptions and a writable flag."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.route: Route = Route("", False, ())
        self.streams: dict[str, None] = {}
        self.writable = asyncio.Event()
        self.writable.set()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.writable.clear()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.writable.set()


@dataclass(eq=False)
class _Group:
    """Connections with the same deliverable streams share one encoded batch."""

    clients: list[_Connection] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)


class ServerState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


_FULL_SPEED_BATCH = 1000  # trades per write at speed 0
_REALTIME_BATCH = 5000  # at most this many trades per write when pacing
_PACE_HIGH = 512 * 1024  # transport buffer above which full speed waits for the client
_PACE_LOW = 128 * 1024
_FAR_FUTURE_MS = 2**62


class MarketServer:
    """Serve a trade source over WebSocket on 127.0.0.1 in a background thread.

    Parameters
    ----------
    source : SimulatedMarket or ReplaySource
        Where the trades come from; its ``speed`` sets the pace.
    host : str, default "127.0.0.1"
    port : int, default 0
        0 = a free port, chosen when :meth:`start` binds.
    kind : {"futures", "spot"}
        Frame dialect and path layout.
    max_trades : int, optional
        Stop after this many market trades (placeholders are extra and not counted).
    wait_for_subscriber : bool, optional
        Start the source only once a client is subscribed to a stream with data. Default:
        True for a replay (its first rows are meant to be seen), at speed 0 or with
        ``max_trades`` (the count is meant for someone); a live simulation at speed > 0
        runs from :meth:`start`, like an exchange.
    strict_routing : bool, default False
        Futures only: deliver ``@aggTrade`` only on ``/market`` and ``@trade`` only on
        ``/public``; other routes acknowledge and stay silent, like Binance since 2026-04-23.
    max_client_buffer : int, default 8 MiB
        At speed > 0, a client with more unsent bytes than this is disconnected.
    ping_interval, ping_timeout : float, optional
        Keepalive; default spot 20 s / 60 s, futures 180 s / 600 s, as Binance.

    Attributes
    ----------
    url : str
        ``"ws://127.0.0.1:PORT"`` once started.
    connections_accepted, frames_sent, total_trades, placeholders_sent,
    slow_client_disconnects, rejected_handshakes : int
        Counters; ``total_trades`` counts market trades taken from the source (sent to
        whoever was subscribed), ``frames_sent`` data frames written to clients.
    open_connections : int
    replay_placeholders : bool
        True for a ReplaySource: its zero-price rows also go out on futures aggTrade
        streams, as aggTrade events with ``"X":"NA"`` (a deviation from Binance, whose
        aggTrade never carries placeholders) so that a collector can count every row of
        the replayed file (issue 15: 51,313 rows reported as 51,281 received, 0 filtered).
    error : BaseException or None
        Why the source pump stopped, if it failed.

    Notes
    -----
    Control messages: ``SUBSCRIBE``/``UNSUBSCRIBE`` answer ``{"result":null,"id":..}``,
    ``LIST_SUBSCRIPTIONS`` ``{"result":[..],"id":..}``; other methods ``{"code":2,..}``,
    unreadable JSON ``{"code":3,..}``. :meth:`stop` closes clients with 1001 (going away),
    :meth:`drop_connections` cuts their TCP connections without a close frame (1006).
    """

    def __init__(
        self,
        source: SimulatedMarket | ReplaySource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        kind: str = "futures",
        max_trades: int | None = None,
        wait_for_subscriber: bool | None = None,
        strict_routing: bool = False,
        max_client_buffer: int = 8 * 1024 * 1024,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        history_s: float = 0.0,
        kline_history_s: float = 0.0,
        rest_weight_limit: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind ({kind!r}) must be one of {', '.join(KINDS)}")
        if max_trades is not None and max_trades < 0:
            raise ValueError(f"max_trades ({max_trades!r}) must be >= 0")
        if not 0 <= port <= 65535:
            raise ValueError(f"port ({port!r}) must be in [0, 65535]")
        if max_client_buffer < 64 * 1024:
            raise ValueError(f"max_client_buffer ({max_client_buffer!r}) must be >= 65536")
        self.source = source
        self.host = host
        self.kind = kind
        self.max_trades = max_trades
        if wait_for_subscriber is None:
            wait_for_subscriber = (
                isinstance(source, ReplaySource) or source.speed == 0 or max_trades is not None
            )
        self.wait_for_subscriber = bool(wait_for_subscriber)
        self.strict_routing = bool(strict_routing) and kind == "futures"
        self.max_client_buffer = int(max_client_buffer)
        default_ping = (20.0, 60.0) if kind == "spot" else (180.0, 600.0)
        self.ping_interval = default_ping[0] if ping_interval is None else ping_interval
        self.ping_timeout = default_ping[1] if ping_timeout is None else ping_timeout
        self._requested_port = port
        self.port: int | None = None
        self.state = ServerState.NEW
        self.error: BaseException | None = None

        self.connections_accepted = 0
        self.frames_sent = 0
        self.total_trades = 0
        self.placeholders_sent = 0
        # A replay is an accounting of a file: its placeholder rows also go out on aggTrade
        # streams (Binance's aggTrade never carries them; its trade stream does), marked
        # "X":"NA" with aggregate id 0 (a placeholder is no aggregate; a replay's aggregate
        # ids start at 1, so 0 is always "already seen" to a collector's id tracking and can
        # neither open nor fill a gap), so that a collector counts them as filtered.
        self.replay_placeholders = isinstance(source, ReplaySource)
        self.slow_client_disconnects = 0
        self.rejected_handshakes = 0

        # REST side (see "REST: the past" below): what happened before the stream began.
        if not (history_s >= 0 and kline_history_s >= 0):
            raise ValueError("history_s and kline_history_s must be >= 0")
        self.history_ms = int(history_s * 1000)
        self.kline_history_ms = int(kline_history_s * 1000)
        self.past = _PastStore()
        self.rest = _RestSide(self, rest_weight_limit)
        self._live_origin_ms: int | None = None  # simulated time the stream starts at
        self._live_started: float | None = None  # monotonic time the stream started
        self._last_emitted_ms: int | None = None
        self._last_fold_ms = 0

        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._all_sent = threading.Event()
        self._source_done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None
        self._clients: set[_Connection] = set()
        self._groups: list[_Group] = []
        # symbol -> (frames of a group, stream type, stream name if combined else None)
        self._plan: dict[str, list[tuple[list[bytes], str, str | None]]] = {}
        self._formats: dict[str, tuple[str, str]] = {}

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, ``ws://HOST:PORT`` (append a path such as ``/ws/btcusdt@trade``)."""
        if self.port is None:
            raise RuntimeError("the server has not been started: call start() first")
        return f"ws://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    @property
    def source_done(self) -> bool:
        """True once ``max_trades`` were taken or a replay ran out."""
        return self._source_done

    def start(self) -> str:
        """Bind, start the server thread and return :attr:`url` once it is listening."""
        if self.state is not ServerState.NEW:
            raise RuntimeError(f"cannot start a MarketServer that is {self.state.value}")
        sock = socket.create_server((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"market-server-{self.port}", daemon=True
        )
        self.state = ServerState.RUNNING
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("market server did not start within 10 s")
        if self.error is not None:
            self.state = ServerState.STOPPED
            raise RuntimeError(f"market server failed to start: {self.error!r}") from self.error
        return self.url

    def stop(self, timeout: float = 2.0) -> None:
        """Close all connections (1001), stop the source and join the thread. Idempotent."""
        if self.state is ServerState.NEW:
            self.state = ServerState.STOPPED
            return
        if self.state is ServerState.STOPPED:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("stop() must be called from outside the server thread")
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop_requested.set)
            except RuntimeError:
                logger.debug("server loop already closed")
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("market server thread did not stop within %.1f s", timeout)
        self.state = ServerState.STOPPED

    def __enter__(self) -> MarketServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_until_sent(self, timeout: float | None = None) -> bool:
        """Wait until the source is done and every client's buffer is flushed to the kernel.

        Returns False on timeout (or when the source never ends: a simulation without
        ``max_trades``, a looping replay).
        """
        return self._all_sent.wait(timeout)

    def drop_connections(self) -> int:
        """Cut every client's TCP connection without a close frame; returns how many."""
        if self.state is not ServerState.RUNNING or self._loop is None:
            return 0
        future = asyncio.run_coroutine_threadsafe(self._abort_clients(), self._loop)
        return future.result(timeout=2)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "unbound"
        return f"MarketServer({self.source!r}, {where}, kind={self.kind!r}, {self.state.value})"

    # -- REST: the past ---------------------------------------------------------------------

    def _prepare_past(self) -> None:
        """Simulate or read the history served over REST, before the stream begins (on the
        server thread, before the pump starts and before any request is answered).

        A simulation starts ``history_s`` (rounded down to a whole minute) before its live
        start, hands those trades to the past store, and adds ``kline_history_s`` of
        simulated klines before them; the stream then begins at the live start with the
        next ids, so REST and stream meet without a hole. A replay's first ``history_s`` of
        recorded time become its past in the same way.
        """
        if self.history_ms <= 0 and self.kline_history_ms <= 0:
            return
        source = self.source
        if isinstance(source, SimulatedMarket):
            live = source.start_ms if source.start_ms is not None else _now_ms()
            history_start = (live - self.history_ms) // MINUTE_MS * MINUTE_MS
            source.start_ms = history_start
            kline_ms = self.kline_history_ms // MINUTE_MS * MINUTE_MS
            if kline_ms > 0:  # from the simulation's initial state: before any take()
                for symbol, rows in simulate_past_klines(source, history_start,
                                                         kline_ms).items():
                    self.past.add_klines(symbol, rows)
            source.begin()
        else:
            live = source.origin_ms + self.history_ms
        self.past.add_trades(source.take(live - 1, None))
        self._live_origin_ms = live

    def _begin_live(self) -> int:
        """Start the source's clock; the simulated time the stream starts at."""
        if self._live_origin_ms is None:
            self.source.begin(_now_ms())
            self._live_origin_ms = self.source.origin_ms
        return self._live_origin_ms

    def clock_ms(self) -> int:
        """The market's "now" (REST ``serverTime``): the source clock, or the wall clock
        before the source starts. At full speed: the time of the last trade sent."""
        if self._live_started is None:
            return self._live_origin_ms if self._live_origin_ms is not None else _now_ms()
        if self.source.speed == 0:
            return self._last_emitted_ms or self._live_origin_ms
        elapsed = time.monotonic() - self._live_started
        return self._live_origin_ms + int(elapsed * 1000 * self.source.speed)

    def _remember(self, trades: _Trades) -> None:
        """Keep streamed trades for REST; fold those older than KEEP_TRADES_MS into klines."""
        if not len(trades):
            return
        self.past.add_trades(trades)
        last = int(trades.ts[-1])
        self._last_emitted_ms = last
        if last - self._last_fold_ms > MINUTE_MS:
            self._last_fold_ms = last
            self.past.fold_old_trades(last - max(KEEP_TRADES_MS, self.history_ms))

    def _rest_response(self, request: Request) -> Response:
        try:
            status, body, extra = self.rest.answer(request.path)
        except Exception:  # a bug here must not look like a network problem
            logger.exception("REST request %s failed", request.path)
            status, body, extra = 500, _error(-1000, "internal error"), {}
        headers = Headers([("Content-Type", "application/json"), ("Connection", "close"),
                           ("Content-Length", str(len(body))), *extra.items()])
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    # -- server thread ------------------------------------------------------------------

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except Exception as exc:  # reported to start() or kept in .error
            logger.exception("market server thread failed")
            self.error = exc
            sock.close()
        finally:
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        self._subscribed = asyncio.Event()
        server = await serve(
            self._handle,
            sock=sock,
            process_request=self._check_path,
            compression=None,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=1.0,
            max_size=2**16,
            write_limit=(_PACE_HIGH, _PACE_LOW),
            create_connection=_Connection,
            logger=_QUIET_WS_LOGGER,  # REST answers are HTTP responses: not worth a log line
        )
        self._ready.set()
        # The simulated past is generated here, on the server's loop before it serves
        # anything (about a second for an hour of BTC and ETH): start() returns at once and
        # connections wait in the listen backlog meanwhile.
        self._prepare_past()
        pump = asyncio.create_task(self._pump(), name="market-pump")
        await self._stop_requested.wait()
        pump.cancel()
        await self._shut_down(server)
        try:
            await pump
        except asyncio.CancelledError:
            logger.debug("source pump cancelled")

    async def _shut_down(self, server: Server) -> None:
        server.close(code=1001)
        try:
            async with asyncio.timeout(1.5):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("clients did not close in time; aborting their connections")
            await self._abort_clients()
            for connection in list(server.all_connections):
                connection.transport.abort()

    async def _abort_clients(self) -> int:
        clients = list(self._clients)
        for connection in clients:
            connection.transport.abort()
        return len(clients)

    def _check_path(self, connection: _Connection, request: Request) -> Response | None:
        if request.path.startswith(tuple(REST_PATHS)):  # plain HTTP GET: REST, not a socket
            return self._rest_response(request)
        route = parse_path(request.path, self.kind)
        if route is None:
            self.rejected_handshakes += 1
            response = connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
            return response
        connection.route = route
        connection.streams = dict.fromkeys(route.streams)
        return None

    async def _handle(self, connection: _Connection) -> None:
        self.connections_accepted += 1
        self._clients.add(connection)
        self._rebuild_plan()
        try:
            async for message in connection:
                reply = self._answer(connection, message)
                await connection.send(reply, text=True)
        except ConnectionClosedError as exc:
            logger.debug("client %s closed abnormally: %s", connection.remote_address, exc)
        finally:
            self._clients.discard(connection)
            self._rebuild_plan()

    def _answer(self, connection: _Connection, message: str | bytes) -> bytes:
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return orjson.dumps({"code": 3, "msg": f"Invalid JSON: {exc}"})
        if not isinstance(request, dict):
            return orjson.dumps({"code": 3, "msg": "Invalid JSON: expected an object"})
        request_id = request.get("id")
        method = request.get("method")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            params = request.get("params")
            if not isinstance(params, list) or not all(
                isinstance(p, str) and STREAM_NAME_PATTERN.match(p) for p in params
            ):
                return orjson.dumps(
                    {"code": 2, "msg": "Invalid request: params must be stream names",
                     "id": request_id}
                )
            for name in params:
                if method == "SUBSCRIBE":
                    connection.streams[name] = None
                else:
                    connection.streams.pop(name, None)
            self._rebuild_plan()
            return orjson.dumps({"result": None, "id": request_id})
        if method == "LIST_SUBSCRIPTIONS":
            return orjson.dumps({"result": list(connection.streams), "id": request_id})
        return orjson.dumps(
            {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": request_id}
        )

    # -- subscriptions ------------------------------------------------------------------

    def _deliverable(self, connection: _Connection) -> frozenset[tuple[str, str, str | None]]:
        """(symbol, stream type, name for the combined wrapper) this connection receives."""
        wanted = set()
        for name in connection.streams:
            match = DATA_STREAM_PATTERN.match(name)
            if match is None:
                continue
            symbol, stream_type = match.group(1).upper(), match.group(2)
            if self.strict_routing:
                required = "market" if stream_type == "aggTrade" else "public"
                if connection.route.prefix != required:
                    continue
            if not self.source.add_symbol(symbol):
                continue
            wanted.add((symbol, stream_type, name if connection.route.combined else None))
        return frozenset(wanted)

    def _rebuild_plan(self) -> None:
        groups: dict[frozenset, _Group] = {}
        for connection in self._clients:
            if connection.state is not State.OPEN:
                continue
            key = self._deliverable(connection)
            if key:
                groups.setdefault(key, _Group()).clients.append(connection)
        plan: dict[str, list[tuple[list[bytes], str, str | None]]] = {}
        for key, group in groups.items():
            for symbol, stream_type, wrapper in sorted(key, key=repr):
                plan.setdefault(symbol, []).append((group.frames, stream_type, wrapper))
                if symbol not in self._formats:
                    self._formats[symbol] = self._number_formats(symbol, self.kind)
        self._groups = list(groups.values())
        self._plan = plan
        if groups:
            self._subscribed.set()
        else:
            self._subscribed.clear()

    def _number_formats(self, symbol: str, kind: str) -> tuple[str, str]:
        """printf formats of a symbol's price and quantity on ``kind``'s wire (stream, or
        the REST path's market): spot writes 8 decimals, futures the tick and lot's."""
        if kind == "spot":
            return f"%.{SPOT_DECIMALS}f", f"%.{SPOT_DECIMALS}f"
        price_decimals, qty_decimals = self.source.decimals(symbol)
        return f"%.{price_decimals}f", f"%.{qty_decimals}f"

    # -- source pump --------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            await self._pump_trades()
            self._source_done = True
            await self._wait_flushed()
            self._all_sent.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("market source pump failed")
            self.error = exc

    async def _pump_trades(self) -> None:
        source = self.source
        loop = asyncio.get_running_loop()
        if self.wait_for_subscriber:
            await self._subscribed.wait()
        origin_ms = self._begin_live()
        started = self._live_started = loop.time()
        while True:
            remaining = None if self.max_trades is None else self.max_trades - self.total_trades
            if remaining == 0:
                return
            if source.speed == 0:
                if self.wait_for_subscriber and not self._subscribed.is_set():
                    await self._subscribed.wait()
                clock_ms = None
                trades = source.take(_FAR_FUTURE_MS, _FULL_SPEED_BATCH)
                limit = _FULL_SPEED_BATCH
            else:
                clock_ms = origin_ms + int((loop.time() - started) * 1000.0 * source.speed)
                trades = source.take(clock_ms, _REALTIME_BATCH)
                limit = _REALTIME_BATCH
            taken = len(trades)
            if remaining is not None:
                trades = trades.select(slice(0, _market_count_cut(trades, remaining)))
            if len(trades):
                self._emit(trades, clock_ms)
            if remaining is not None and self.max_trades == self.total_trades:
                return
            if source.exhausted:
                return
            if source.speed == 0:
                await self._wait_writable()
            elif taken < limit:
                next_ms = source.next_ts()
                if next_ms is None:
                    return
                delay = (next_ms - clock_ms) / 1000.0 / source.speed
                await asyncio.sleep(min(max(delay, 0.002), 0.05))
            else:
                await asyncio.sleep(0)

    async def _wait_writable(self) -> None:
        """Full speed: let every subscribed client's backlog drain below the low mark."""
        for group in self._groups:
            for connection in group.clients:
                if not connection.writable.is_set():
                    await connection.writable.wait()
        await asyncio.sleep(0)  # let control messages and new connections in

    async def _wait_flushed(self) -> None:
        while any(
            c.state is State.OPEN and c.transport.get_write_buffer_size() > 0
            for c in self._clients
        ):
            await asyncio.sleep(0.005)

    def _emit(self, trades: _Trades, clock_ms: int | None) -> None:
        """Encode each trade once per subscribed stream variant and write one batch per group."""
        self._remember(trades)
        market = int((~trades.na).sum())
        self.total_trades += market
        self.placeholders_sent += len(trades) - market
        plan = self._plan
        if not plan:
            return
        futures = self.kind == "futures"
        symbols = trades.symbols
        formats = self._formats
        dumps = orjson.dumps
        fragment = orjson.Fragment
        columns = zip(
            trades.code.tolist(), trades.trade_id.tolist(), trades.agg_id.tolist(),
            trades.ts.tolist(), trades.price.tolist(), trades.qty.tolist(),
            trades.maker.tolist(), trades.na.tolist(),
        )
        for code, trade_id, agg_id, ts, price, qty, maker, na in columns:
            symbol = symbols[code]
            outputs = plan.get(symbol)
            if outputs is None:
                continue
            event_ms = ts if clock_ms is None or clock_ms < ts else clock_ms
            if na:
                price_text = qty_text = "0"
            else:
                price_format, qty_format = formats[symbol]
                price_text, qty_text = price_format % price, qty_format % qty
            payloads: dict[str, bytes | None] = {}
            wired: dict[tuple[str, str | None], bytes] = {}
            for frames, stream_type, wrapper in outputs:
                wire = wired.get((stream_type, wrapper))
                if wire is None:
                    if stream_type not in payloads:
                        payloads[stream_type] = _event_payload(
                            dumps, futures, stream_type, event_ms, ts, symbol, trade_id,
                            0 if na else agg_id, price_text, qty_text, maker, na,
                            self.replay_placeholders,
                        )
                    payload = payloads[stream_type]
                    if payload is None:
                        continue
                    if wrapper is not None:
                        payload = dumps({"stream": wrapper, "data": fragment(payload)})
                    wire = wired[(stream_type, wrapper)] = text_frame(payload)
                frames.append(wire)
        for group in self._groups:
            if group.frames:
                self._write(group, b"".join(group.frames), len(group.frames))
                group.frames.clear()

    def _write(self, group: _Group, data: bytes, count: int) -> None:
        for connection in group.clients:
            if connection.state is not State.OPEN:
                continue
            transport = connection.transport
            transport.write(data)
            self.frames_sent += count
            if self.source.speed > 0 and transport.get_write_buffer_size() > self.max_client_buffer:
                self.slow_client_disconnects += 1
                logger.warning(
                    "client %s is %d bytes behind (limit %d): disconnecting it",
                    connection.remote_address, transport.get_write_buffer_size(),
                    self.max_client_buffer,
                )
                transport.abort()


def _event_payload(
    dumps, futures: bool, stream_type: str, event_ms: int, ts: int, symbol: str,
    trade_id: int, agg_id: int, price: str, qty: str, maker: bool, na: bool,
    na_on_aggregates: bool = False,
) -> bytes | None:
    """JSON of one event in Binance's key order; None when the stream skips placeholders.

    ``na_on_aggregates`` (replays only): a futures placeholder also goes out on aggTrade,
    as an aggTrade event with ``"X":"NA"`` appended (not a Binance event: see
    ``MarketServer.replay_placeholders``)."""
    if stream_type == "trade":
        if futures:
            return dumps(
                {"e": "trade", "E": event_ms, "T": ts, "s": symbol, "t": trade_id, "p": price,
                 "q": qty, "X": "NA" if na else "MARKET", "m": maker}
            )
        if na:
            return None
        return dumps(
            {"e": "trade", "E": event_ms, "s": symbol, "t": trade_id, "p": price, "q": qty,
             "T": ts, "m": maker, "M": True}
        )
    if na and not (futures and na_on_aggregates):
        return None
    event = {"e": "aggTrade", "E": event_ms, "s": symbol, "a": agg_id, "p": price, "q": qty,
             "f": trade_id, "l": trade_id, "T": ts, "m": maker}
    if not futures:
        event["M"] = True
    if na:
        event["X"] = "NA"
    return dumps(event)


# ---------------------------------------------------------------------------------------
# REST: the past, served like Binance's aggTrades / klines
# ---------------------------------------------------------------------------------------

MINUTE_MS = 60_000
REST_PATHS = {"/fapi/v1/": "futures", "/api/v3/": "spot"}
BINANCE_WEIGHT_LIMITS = {"futures": 2400, "spot": 6000}
DEMO_REST_WEIGHT_LIMIT = 120_000  # the built-in demo announces (and allows) 50x Binance's
BAN_AFTER_429S = 5  # requests answered 429 within one minute before the IP gets a 418
BAN_S = 120
KEEP_TRADES_MS = 2 * 3_600_000  # trades older than this (and the history) become klines


def _rest_weight(prefix_kind: str, endpoint: str, limit: int) -> int:
    """Binance's request weights (see binance_rest's docstring for the table)."""
    if endpoint == "aggTrades":
        return 20 if prefix_kind == "futures" else 4
    if endpoint == "klines":
        if prefix_kind == "spot":
            return 2
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if endpoint == "exchangeInfo":
        return 1 if prefix_kind == "futures" else 20
    return 1


def simulate_past_klines(source: SimulatedMarket, end_ms: int, duration_ms: int
                         ) -> dict[str, np.ndarray]:
    """1-minute klines of the ``duration_ms`` before ``end_ms`` that lead into ``source``.

    The paths are simulated backwards on a 1 s grid from the state the simulation starts
    in: the leader's log price as a random walk (``leader_vol``), the follower as
    ``alpha + beta * leader + s`` with the Ornstein-Uhlenbeck spread run backwards (a
    stationary Gaussian OU process is time-reversible, so the same recursion serves),
    further symbols as random walks correlated with the leader. Per minute: open, high,
    low, close of the 60 one-second points on the tick grid; a Poisson number of trades at
    the symbol's rate; volume = trades x the mean trade size (lognormal sizes, median
    ``MEDIAN_NOTIONAL_USDT``) with 10 % noise; taker-buy volume about half of it.

    Returns
    -------
    dict of str to numpy.ndarray
        Per symbol, an (n, 9) float64 array: open time, open, high, low, close, volume,
        taker-buy volume, trades, quote volume. ``end_ms`` and ``duration_ms`` are whole
        minutes.
    """
    minutes = duration_ms // MINUTE_MS
    if minutes <= 0:
        return {}
    seconds = minutes * 60
    rng = np.random.default_rng([source.seed, 9, 1])
    # Backwards from the start: point k is the value k seconds before end_ms (k = 1..seconds).
    leader_steps = rng.standard_normal(seconds) * source.leader_vol
    leader_start = source._states[source.pair[0]].log_price
    leader = leader_start - np.cumsum(leader_steps)
    phi = math.exp(-source.ou_theta)
    eta = rng.standard_normal(seconds) * (source.spread_std * math.sqrt(1 - phi * phi))
    spread = _ou_path(source._spread, phi, eta)
    out = {}
    opens = end_ms - (np.arange(minutes, 0, -1) * MINUTE_MS)  # ascending
    mean_notional = MEDIAN_NOTIONAL_USDT * math.exp(SIZE_LOG_SIGMA**2 / 2)
    for name, state in source._states.items():
        info = state.instrument
        if name == source.pair[0]:
            path = leader
        elif name == source.pair[1]:
            path = source.alpha + source.beta * leader + spread
        else:
            own = rng.standard_normal(seconds)
            steps = _correlated_steps(leader_steps, source.leader_vol, own, 1.0)
            start = state.log_price
            if state.role == "member":
                start = math.log(info.level) + state.spread
            path = start - np.cumsum(steps)
        # Ascending time: reverse, then 60 points per minute.
        prices = np.floor(np.exp(path[::-1]) / info.tick) * info.tick
        prices = np.round(prices, info.price_decimals).reshape(minutes, 60)
        trades = rng.poisson(state.rate * 60, minutes).astype(np.float64)
        close = prices[:, -1]
        volume = np.round(trades * mean_notional / close * np.exp(rng.normal(0, 0.1, minutes))
                          / info.lot) * info.lot
        volume = np.round(np.maximum(volume, info.lot), info.qty_decimals)
        buy = np.round(volume * rng.uniform(0.4, 0.6, minutes) / info.lot) * info.lot
        buy = np.round(buy, info.qty_decimals)
        notional = volume * prices.mean(axis=1)
        out[name] = np.column_stack([opens, prices[:, 0], prices.max(axis=1),
                                     prices.min(axis=1), close, volume, buy, trades, notional])
    return out


class _PastStore:
    """What a :class:`MarketServer` has to say about the past, per symbol.

    Trades (aggregate id, trade id, time, price, qty, buyer-is-maker) of the simulated or
    replayed history and of everything streamed since, in time order; klines computed from
    them on request; older minutes as stored klines (simulated before the history, or
    folded from trades older than ``KEEP_TRADES_MS`` so memory stays bounded).
    """

    _DTYPES = (np.int64, np.int64, np.int64, np.float64, np.float64, bool)  # agg id, trade
    # id, time, price, qty, buyer is maker

    def __init__(self) -> None:
        # Per symbol: column buffers with spare capacity and the rows used, so that a
        # streamed batch costs a copy of its own rows, not of the whole history.
        self._buffers: dict[str, list[np.ndarray]] = {}
        self._sizes: dict[str, int] = {}
        self._klines: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def add_trades(self, trades: _Trades) -> None:
        """Record market trades (placeholders are left out, as in Binance's aggTrades)."""
        if not len(trades):
            return
        keep = ~trades.na
        codes = trades.code[keep]
        columns = (trades.agg_id[keep], trades.trade_id[keep], trades.ts[keep],
                   trades.price[keep], trades.qty[keep], trades.maker[keep])
        with self._lock:
            for code in np.unique(codes).tolist():
                rows = codes == code
                self._append(trades.symbols[code], [column[rows] for column in columns])

    def _append(self, symbol: str, columns: list[np.ndarray]) -> None:
        size, added = self._sizes.get(symbol, 0), len(columns[0])
        buffers = self._buffers.get(symbol)
        if buffers is None or size + added > len(buffers[0]):
            capacity = max(4096, 2 * (size + added))
            grown = [np.empty(capacity, dtype) for dtype in self._DTYPES]
            for new, old in zip(grown, buffers or []):
                new[:size] = old[:size]
            self._buffers[symbol] = buffers = grown
        for buffer, column in zip(buffers, columns):
            buffer[size:size + added] = column
        self._sizes[symbol] = size + added

    def add_klines(self, symbol: str, rows: np.ndarray) -> None:
        with self._lock:
            old = self._klines.get(symbol)
            self._klines[symbol] = rows if old is None else np.vstack([old, rows])

    def has(self, symbol: str) -> bool:
        return symbol in self._sizes or symbol in self._klines

    def trades(self, symbol: str) -> tuple[np.ndarray, ...] | None:
        """The symbol's trade columns (views of the used rows; later appends never change
        what a view shows, and folding allocates new buffers)."""
        with self._lock:
            buffers = self._buffers.get(symbol)
            if buffers is None:
                return None
            size = self._sizes[symbol]
            return tuple(buffer[:size] for buffer in buffers)

    def fold_old_trades(self, before_ms: int) -> None:
        """Turn trades of whole minutes before ``before_ms`` into stored klines."""
        cut = before_ms - before_ms % MINUTE_MS
        for symbol in list(self._buffers):
            trades = self.trades(symbol)
            if trades is None or not len(trades[2]) or trades[2][0] >= cut:
                continue
            stop = int(np.searchsorted(trades[2], cut, side="left"))
            self.add_klines(symbol, _minute_bars(tuple(column[:stop] for column in trades)))
            with self._lock:
                rest = [column[stop:].copy() for column in trades]
                del self._buffers[symbol]
                self._sizes[symbol] = 0
                self._append(symbol, rest)

    def klines(self, symbol: str, start_ms: int, end_ms: int, limit: int) -> np.ndarray:
        """Minute bars with open in [start_ms, end_ms]: stored ones, then from trades."""
        stored = self._klines.get(symbol)
        parts = []
        if stored is not None and len(stored):
            opens = stored[:, 0]
            parts.append(stored[(opens >= start_ms) & (opens <= end_ms)])
        trades = self.trades(symbol)
        if trades is not None and len(trades[2]):
            ts = trades[2]
            lo = int(np.searchsorted(ts, start_ms - start_ms % MINUTE_MS, side="left"))
            hi = int(np.searchsorted(ts, end_ms - end_ms % MINUTE_MS + MINUTE_MS, side="left"))
            if hi > lo:
                parts.append(_minute_bars(tuple(column[lo:hi] for column in trades)))
        if not parts:
            return np.empty((0, 9))
        rows = np.vstack(parts)
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
        return rows[:limit]


def _minute_bars(trades: tuple[np.ndarray, ...]) -> np.ndarray:
    """(n, 9) minute bars (open time, o, h, l, c, volume, taker-buy volume, trades,
    quote volume) of time-ordered trade columns."""
    _agg, _tid, ts, price, qty, maker = trades
    if not len(ts):
        return np.empty((0, 9))
    minute = ts - ts % MINUTE_MS
    starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
    ends = np.r_[starts[1:], len(ts)] - 1
    return np.column_stack([
        minute[starts], price[starts], np.maximum.reduceat(price, starts),
        np.minimum.reduceat(price, starts), price[ends], np.add.reduceat(qty, starts),
        np.add.reduceat(np.where(maker, 0.0, qty), starts), (ends - starts + 1).astype(float),
        np.add.reduceat(price * qty, starts)])


class _RestSide:
    """Answers the REST paths of a :class:`MarketServer` (runs on the server's loop).

    Paths: ``/fapi/v1/`` and ``/api/v3/`` + ``aggTrades``, ``klines`` (interval ``1m``),
    ``time``, ``exchangeInfo``, ``ping``. Parameters, limits, errors and row layouts are
    Binance's (``binance_rest``'s docstring lists them); weights are counted per wall-clock
    minute and reported in ``X-MBX-USED-WEIGHT-1M``. With ``weight_limit`` set, a request
    over it gets 429 with ``Retry-After`` (seconds to the next minute), and more than
    ``BAN_AFTER_429S`` such requests in one minute a 418 ban of ``BAN_S`` seconds, as
    Binance does to clients that ignore 429s.
    """

    def __init__(self, server: MarketServer, weight_limit: int | None) -> None:
        self.server = server
        self.weight_limit = weight_limit
        self.requests = 0
        self.throttled = 0
        self.banned = 0
        self._minute = -1
        self._used = 0
        self._over = 0
        self._banned_until = 0.0

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        """(HTTP status, JSON body, extra headers) for one GET request target."""
        self.requests += 1
        parts = urlsplit(path)
        kind = endpoint = None
        for prefix, prefix_kind in REST_PATHS.items():
            if parts.path.startswith(prefix):
                kind, endpoint = prefix_kind, parts.path[len(prefix):]
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        now = time.time()
        if now < self._banned_until:
            self.banned += 1
            return 418, _error(-1003, "Way too many requests; IP banned."), {
                "Retry-After": str(max(1, math.ceil(self._banned_until - now)))}
        try:
            limit = int(query.get("limit", 500))  # Binance's default for both
        except ValueError:
            return 400, _error(-1100, "Illegal characters found in parameter 'limit'."), {}
        weight = _rest_weight(kind or "futures", endpoint or "", limit)
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self._used, self._over = minute, 0, 0
        self._used += weight
        headers = {"X-MBX-USED-WEIGHT-1M": str(self._used)}
        if self.weight_limit is not None and self._used > self.weight_limit:
            self._over += 1
            self.throttled += 1
            if self._over > BAN_AFTER_429S:
                self._banned_until = now + BAN_S
                return 418, _error(-1003, "Way too many requests; IP banned."), {
                    **headers, "Retry-After": str(BAN_S)}
            retry = max(1, math.ceil((minute + 1) * 60 - now))
            return 429, _error(-1003, "Too many requests."), {**headers,
                                                              "Retry-After": str(retry)}
        handler = {"aggTrades": self._agg_trades, "klines": self._klines, "time": self._time,
                   "exchangeInfo": self._exchange_info, "ping": lambda q, k: (200, b"{}")
                   }.get(endpoint)
        if handler is None:
            return 404, _error(-1000, f"Unknown path {parts.path}"), headers
        try:
            status, body = handler(query, kind)
        except _BadRequest as exc:
            status, body = 400, _error(exc.code, exc.message)
        return status, body, headers

    def _symbol(self, query: dict) -> str:
        symbol = query.get("symbol", "")
        known = symbol in self.server.source.symbols or self.server.past.has(symbol)
        if not SYMBOL_PATTERN.match(symbol) or not known:
            raise _BadRequest(-1121, "Invalid symbol.")
        return symbol

    def _time(self, query: dict, kind: str) -> tuple[int, bytes]:
        return 200, orjson.dumps({"serverTime": self.server.clock_ms()})

    def _exchange_info(self, query: dict, kind: str) -> tuple[int, bytes]:
        limit = self.weight_limit or BINANCE_WEIGHT_LIMITS[kind]
        return 200, orjson.dumps({
            "timezone": "UTC", "serverTime": self.server.clock_ms(),
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                            "intervalNum": 1, "limit": limit}],
            "symbols": [{"symbol": s, "status": "TRADING"} for s in self.server.source.symbols],
        })

    def _agg_trades(self, query: dict, kind: str) -> tuple[int, bytes]:
        symbol = self._symbol(query)
        limit = min(max(_int_param(query, "limit", 500), 1), 1000)
        from_id = _int_param(query, "fromId", None)
        start = _int_param(query, "startTime", None)
        end = _int_param(query, "endTime", None)
        if start is not None and end is not None and end - start >= 3_600_000:
            raise _BadRequest(-1127, "More than 1 hours between startTime and endTime.")
        trades = self.server.past.trades(symbol)
        if trades is None or not len(trades[0]):
            return 200, b"[]"
        agg, tid, ts, price, qty, maker = trades
        if from_id is not None:
            lo = int(np.searchsorted(agg, from_id, side="left"))
            hi = lo + limit
        elif start is not None or end is not None:
            lo = 0 if start is None else int(np.searchsorted(ts, start, side="left"))
            hi = len(ts) if end is None else int(np.searchsorted(ts, end, side="right"))
            if start is None:
                lo = max(lo, hi - limit)
            hi = min(hi, lo + limit)
        else:
            hi = len(ts)
            lo = max(0, hi - limit)
        price_format, qty_format = self.server._number_formats(symbol, kind)
        spot = kind == "spot"
        rows = []
        for a, t, when, p, q, m in zip(agg[lo:hi].tolist(), tid[lo:hi].tolist(),
                                       ts[lo:hi].tolist(), price[lo:hi].tolist(),
                                       qty[lo:hi].tolist(), maker[lo:hi].tolist()):
            row = {"a": a, "p": price_format % p, "q": qty_format % q, "f": t, "l": t,
                   "T": when, "m": m}
            if spot:
                row["M"] = True
            rows.append(row)
        return 200, orjson.dumps(rows)

    def _klines(self, query: dict, kind: str) -> tuple[int, bytes]:
        symbol = self._symbol(query)
        if query.get("interval") != "1m":
            raise _BadRequest(-1120, "Invalid interval.")
        limit = min(max(_int_param(query, "limit", 500), 1), 1500 if kind == "futures" else 1000)
        start = _int_param(query, "startTime", None)
        end = _int_param(query, "endTime", None)
        now = self.server.clock_ms()
        end = now if end is None else end
        if start is None:
            start = end - end % MINUTE_MS - (limit - 1) * MINUTE_MS
        rows = self.server.past.klines(symbol, start, end, limit)
        price_format, qty_format = self.server._number_formats(symbol, kind)
        out = []
        for o_ts, o, h, low, c, v, buy, n, quote in rows.tolist():
            open_ms = int(o_ts)
            out.append([open_ms, price_format % o, price_format % h, price_format % low,
                        price_format % c, qty_format % v, open_ms + MINUTE_MS - 1,
                        "%.8f" % quote, int(n), qty_format % buy, "%.8f" % (buy * c), "0"])
        return 200, orjson.dumps(out)


class _BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _error(code: int, message: str) -> bytes:
    return orjson.dumps({"code": code, "msg": message})


def _int_param(query: dict, name: str, default):
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(-1100, f"Illegal characters found in parameter '{name}'.") from None



# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Loopback market speaking Binance trade-stream frames. Prints its base "
        "URL (ws://127.0.0.1:PORT) as the first line of stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--kind", choices=KINDS, default="futures")
    parser.add_argument("--symbols", default="btcusdt,ethusdt",
                        help="simulated symbols, the first two form the pair (not with --replay)")
    parser.add_argument("--universe", action="store_true",
                        help="add universe_symbols(): 3 planted cointegrated groups of 3 "
                        "(g1ausdt...) and 6 noise symbols (n01usdt...)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed", type=float, default=1.0, help="1 real time, N faster, 0 full")
    parser.add_argument("--start-ms", type=int, default=None, help="simulated start, epoch ms")
    parser.add_argument("--max-trades", type=int, default=None)
    parser.add_argument("--na-probability", type=float, default=None,
                        help="placeholder share (default 0.003 futures, 0 spot)")
    parser.add_argument("--replay", default=None, help=".ndjson or .csv recording to replay")
    parser.add_argument("--loop", action="store_true", help="replay forever")
    parser.add_argument("--strict-routing", action="store_true")
    parser.add_argument("--history", type=float, default=3600.0,
                        help="seconds of trades before the start served over REST "
                        "(aggTrades, klines), default 3600; 0 = only what was streamed")
    parser.add_argument("--kline-history", type=float, default=86400.0,
                        help="seconds of simulated 1-minute klines before those trades "
                        "(default 86400)")
    parser.add_argument("--rest-weight-limit", type=int, default=None,
                        help="request weight per minute announced and enforced with 429/418 "
                        "(default: announce Binance's, enforce none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a market until SIGINT/SIGTERM, or until its trades are sent and clients left.

    The second exit applies when the source can end: ``--max-trades`` or a replay without
    ``--loop``. Counters go to stderr at exit.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.replay:
        source = ReplaySource(args.replay, speed=args.speed, loop=args.loop)
    else:
        na_probability = args.na_probability
        if na_probability is None:
            na_probability = 0.0 if args.kind == "spot" else 0.003
        symbols = [s for s in args.symbols.split(",") if s.strip()]
        if args.universe:
            symbols += [s for s in universe_symbols() if s not in symbols]
        source = SimulatedMarket(
            symbols, seed=args.seed,
            speed=args.speed, start_ms=args.start_ms, na_probability=na_probability,
        )
    server = MarketServer(
        source, host=args.host, port=args.port, kind=args.kind, max_trades=args.max_trades,
        strict_routing=args.strict_routing, history_s=args.history,
        kline_history_s=0.0 if args.replay else args.kline_history,
        rest_weight_limit=args.rest_weight_limit,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    url = server.start()
    print(url, flush=True)
    started = time.perf_counter()
    finished_at = None
    try:
        while not stop.wait(0.05):
            if server.error is not None:
                break
            if server.wait_until_sent(0) and server.open_connections == 0:
                break
            if finished_at is None and server.source_done:
                finished_at = time.perf_counter()
    finally:
        server.stop()
    elapsed = (finished_at or time.perf_counter()) - started
    print(
        f"market: {server.total_trades} trades, {server.frames_sent} frames, "
        f"{server.connections_accepted} connections, {server.slow_client_disconnects} slow "
        f"disconnects, {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 1 if server.error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
