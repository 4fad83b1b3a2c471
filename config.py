"""Settings for the whole product, read once from the environment.

Every knob has an environment variable, a default next to it, and (for the headless
collector) a CLI flag that overrides the variable. ``Settings`` is immutable and validated
in its constructor, so a bad value stops the program at start with a message naming the
variable and the value, instead of failing an hour later inside a thread.

    >>> s = Settings.from_env({"CRYPTO_FEED": "demo", "CRYPTO_SYMBOLS": "BTCUSDT,solusdt"})
    >>> s.feed, s.symbols, s.db_path
    ('demo', ('btcusdt', 'solusdt'), 'data/demo.db')
"""

from __future__ import annotations

import dataclasses
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field

from binance_rest import parse_duration

FEEDS = ("auto", "binance-futures", "binance-spot", "demo", "replay")
STREAMS = ("aggTrade", "trade")
SYMBOL_PATTERN = re.compile(r"^[a-z0-9]{2,20}$")
# Symbols one collector takes. Binance allows 1024 streams per connection (spot and USD-M
# futures; the collector uses at most 200 per futures connection, the older documented
# limit, and keeps URLs under 8,000 characters), so 1000 symbols need at most 5 connections:
# a few connection attempts per reconnect round, far from the 300 per 5 minutes per IP
# that gets an address banned. More symbols: several collectors, each with its own --db.
MAX_SYMBOLS = 1000

DEFAULT_FUTURES_URL = "wss://fstream.binance.com"
DEFAULT_SPOT_URL = "wss://stream.binance.com:9443"
DEFAULT_SYMBOLS = ("btcusdt", "ethusdt")
DATA_DIR = "data"
DATABASE_URL_PREFIXES = ("postgresql://", "postgres://")  # a server, not a SQLite file

# Environment variable -> Settings field. The CLI flags of collector.py use the field names.
ENV_VARS = {
    "CRYPTO_FEED": "feed",
    "CRYPTO_SYMBOLS": "symbols",
    "CRYPTO_STREAM": "stream",
    "BINANCE_WS_URL": "ws_url",
    "CRYPTO_DB_PATH": "db_path",        # a SQLite file or a postgresql:// URL
    "CRYPTO_DB_URL": "db_path",         # the same; wins when both are set
    "CRYPTO_REPLAY_FILE": "replay_file",
    "CRYPTO_REPLAY_SPEED": "replay_speed",
    "CRYPTO_BATCH_SIZE": "batch_size",
    "CRYPTO_FLUSH_INTERVAL": "flush_interval",
    "CRYPTO_SILENCE_TIMEOUT": "silence_timeout",
    "CRYPTO_RETENTION_DAYS": "retention_days",
    "CRYPTO_QUEUE_MAX": "queue_max",
    "CRYPTO_AUTO_FALLBACK": "auto_fallback",
    "CRYPTO_DEMO_SEED": "demo_seed",
    "CRYPTO_UPLOAD_DB": "upload_db_path",
    "CRYPTO_UPLOAD_MAX_MB": "upload_max_mb",
    "CRYPTO_DISPLAY_TZ": "display_tz",
    "BINANCE_REST_URL": "rest_url",
    "CRYPTO_BACKFILL": "backfill",
    "CRYPTO_BACKFILL_KLINES": "backfill_klines",
    "CRYPTO_BACKFILL_PACE": "backfill_pace",
    "CRYPTO_SPILL_DIR": "spill_dir",
}


class ConfigError(ValueError):
    """A setting has a value the program cannot run with; the message names it."""


def parse_symbols(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Split ``"BTCUSDT, ethusdt"`` into ``("btcusdt", "ethusdt")``, validating each.

    Raises ConfigError naming the first symbol that does not match ``^[a-z0-9]{2,20}$``
    after lower-casing, or when the list is empty. Duplicates are dropped, order kept.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    symbols: list[str] = []
    for item in items:
        symbol = str(item).strip().lower()
        if not symbol:
            continue
        if not SYMBOL_PATTERN.match(symbol):
            raise ConfigError(
                f"symbol {item.strip()!r} is not valid: use 2-20 letters or digits, "
                "e.g. btcusdt"
            )
        if symbol not in symbols:
            symbols.append(symbol)
    if not symbols:
        raise ConfigError("no symbols given: set CRYPTO_SYMBOLS, e.g. btcusdt,ethusdt")
    return tuple(symbols)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Validated, immutable settings. Build with ``Settings.from_env()``.

    Fields left as ``None`` are resolved in ``__post_init__``: ``stream`` defaults to
    ``aggTrade`` (the documented futures trade stream) except on spot, where ``trade`` is
    the documented one; ``db_path`` defaults to one file per feed under ``data/`` so that
    simulated ticks never mix with real ones (``auto`` starts on the futures file and the
    collector moves to ``data/demo.db`` if it falls back to the built-in market).
    """

    feed: str = "auto"
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    stream: str | None = None
    ws_url: str | None = None
    db_path: str | None = None
    replay_file: str | None = None
    replay_speed: float = 1.0  # 1 = real time, N = N times faster, 0 = as fast as possible
    batch_size: int = 1000  # rows per transaction at most
    flush_interval: float = 0.25  # seconds: a partial batch is written once it is this old
    silence_timeout: float = 30.0  # seconds without a data frame -> reconnect
    retention_days: float = 7.0  # 0 keeps everything
    queue_max: int = 100_000  # trades buffered between reader and writer
    auto_fallback: float = 10.0  # seconds 'auto' waits for Binance data before the demo
    demo_seed: int | None = None  # seed of the built-in market; None = a new one each start
    # Uploads live apart from the feeds: data/uploads.db, or with the live database on a
    # PostgreSQL server (a URL) that same database, so every dashboard of the desk sees them.
    upload_db_path: str | None = None
    upload_max_mb: float = 200.0  # larger uploaded files are refused before parsing (MB = 1e6 B)
    display_tz: str = "UTC"  # the page's default display zone (IANA name)
    # REST backfill (binance_rest.py): Binance's REST base (None: the feed's default, the
    # WebSocket override's host, or the built-in market's own), seconds of aggregate trades
    # and of 1-minute klines fetched at start ("30m", "6h" or seconds; 0 = none).
    rest_url: str | None = None
    backfill: float | str = 3600.0
    backfill_klines: float | str = 86400.0
    # Share of wall time the trade backfill may take for trades older than its newest 15
    # minutes (those come at full speed), so a page starting meanwhile keeps the CPU and
    # the GIL. None: 1 (full speed) for a headless collector, services.PAGE_BACKFILL_PACE
    # when the page's process starts it.
    backfill_pace: float | None = None
    spill_dir: str | None = None  # spill journal directory; None = next to the database
    explicit_db_path: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.feed not in FEEDS:
            raise ConfigError(f"CRYPTO_FEED={self.feed!r} is not one of {', '.join(FEEDS)}")
        object.__setattr__(self, "symbols", parse_symbols(self.symbols))
        if len(self.symbols) > MAX_SYMBOLS:
            raise ConfigError(
                f"CRYPTO_SYMBOLS has {len(self.symbols)} symbols; one collector takes at most "
                f"{MAX_SYMBOLS} (Binance limits streams per connection and connection attempts "
                "per IP): split them over several collectors, each with its own --db")
        stream = self.stream or ("trade" if self.feed == "binance-spot" else "aggTrade")
        if stream not in STREAMS:
            raise ConfigError(f"CRYPTO_STREAM={stream!r} is not one of {', '.join(STREAMS)}")
        object.__setattr__(self, "stream", stream)
        if self.ws_url is not None and not re.match(r"^wss?://[^\s/]+", self.ws_url):
            raise ConfigError(
                f"BINANCE_WS_URL={self.ws_url!r} must start with ws:// or wss:// and a host"
            )
        if self.feed == "replay" and not self.replay_file:
            raise ConfigError("CRYPTO_FEED='replay' needs CRYPTO_REPLAY_FILE (a .ndjson or .csv)")
        if self.replay_file and self.feed == "replay" and not os.path.isfile(self.replay_file):
            raise ConfigError(f"CRYPTO_REPLAY_FILE={self.replay_file!r} does not exist")
        _check_range("CRYPTO_REPLAY_SPEED", self.replay_speed, 0, 1e6)
        _check_range("CRYPTO_BATCH_SIZE", self.batch_size, 1, 100_000)
        _check_range("CRYPTO_FLUSH_INTERVAL", self.flush_interval, 0.01, 10)
        _check_range("CRYPTO_SILENCE_TIMEOUT", self.silence_timeout, 0.1, 3600)
        _check_range("CRYPTO_RETENTION_DAYS", self.retention_days, 0, 36_500)
        _check_range("CRYPTO_QUEUE_MAX", self.queue_max, 100, 10_000_000)
        _check_range("CRYPTO_AUTO_FALLBACK", self.auto_fallback, 0.1, 600)
        _check_range("CRYPTO_UPLOAD_MAX_MB", self.upload_max_mb, 0.001, 100_000)
        if self.backfill_pace is not None:
            _check_range("CRYPTO_BACKFILL_PACE", self.backfill_pace, 0.01, 1)
        try:
            zoneinfo.ZoneInfo(self.display_tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"CRYPTO_DISPLAY_TZ={self.display_tz!r} is not an IANA time zone "
                              "such as UTC or Europe/London") from None
        if self.rest_url is not None and not re.match(r"^https?://[^\s/]+/?$", self.rest_url):
            raise ConfigError(f"BINANCE_REST_URL={self.rest_url!r} must be http(s)://host[:port]")
        for var, name in (("CRYPTO_BACKFILL", "backfill"),
                          ("CRYPTO_BACKFILL_KLINES", "backfill_klines")):
            try:
                object.__setattr__(self, name, parse_duration(getattr(self, name)))
            except ValueError as exc:
                raise ConfigError(f"{var}: {exc}") from None
            _check_range(var, getattr(self, name), 0, 30 * 86400)
        object.__setattr__(self, "explicit_db_path", self.db_path is not None)
        if self.db_path is None:
            object.__setattr__(self, "db_path", default_db_path(self.feed, self.replay_file))
        if self.upload_db_path is None:
            object.__setattr__(self, "upload_db_path",
                               self.db_path if self.db_path.startswith(DATABASE_URL_PREFIXES)
                               else os.path.join(DATA_DIR, "uploads.db"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        ``overrides`` use field names (``feed=``, ``symbols=`` ...); a value of ``None``
        means "not given" so that argparse results can be passed straight through.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for var, name in ENV_VARS.items():
            raw = environ.get(var)
            if raw is not None and raw.strip() != "":
                values[name] = _convert(var, name, raw.strip(), types[name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def market_kind(self) -> str:
        """``"spot"`` or ``"futures"``: which frame dialect and URL layout the feed uses."""
        return "spot" if self.feed == "binance-spot" else "futures"

    @property
    def upload_max_bytes(self) -> int:
        """``upload_max_mb`` in bytes, as the upload parsers take it (``max_bytes=``)."""
        return int(self.upload_max_mb * 1_000_000)

    @property
    def uses_builtin_market(self) -> bool:
        """True when ticks come from the simulated market or a replay, never from Binance."""
        return self.feed in ("demo", "replay")

    def with_changes(self, **changes) -> Settings:
        """A copy with some fields replaced (validated again). A default database path
        stays a default one (derived again: it follows a changed feed)."""
        current = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not self.explicit_db_path and "db_path" not in changes:
            current["db_path"] = None
        current.pop("explicit_db_path")
        current.update(changes)
        return Settings(**current)


def default_db_path(feed: str, replay_file: str | None = None) -> str:
    """One database per feed: ``data/binance-futures.db``, ``data/demo.db`` ...

    A replay gets one file per recording (``data/replay-<file name>.db``): recordings carry
    no trade ids, so ids are numbered from 1 per file and two files must not share a table.
    """
    name = "binance-futures" if feed == "auto" else feed
    if feed == "replay" and replay_file:
        stem = os.path.splitext(os.path.basename(replay_file))[0]
        name = "replay-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    return os.path.join(DATA_DIR, f"{name}.db")


def _check_range(var: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ConfigError(f"{var}={value!r} is out of range [{low}, {high}]")


def _convert(var: str, name: str, raw: str, type_name: str) -> object:
    if name in ("symbols", "backfill", "backfill_klines"):  # parsed in Settings
        return raw
    try:
        if "float" in type_name:
            return float(raw)
        if "int" in type_name:
            return int(raw)
    except ValueError:
        kind = "a number" if "float" in type_name else "a whole number"
        raise ConfigError(f"{var}={raw!r} is not {kind}") from None
    return raw
