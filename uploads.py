"""Parse and validate files that users upload: their own OHLC bars and recorded trade ticks.

A silently corrupted series is the worst outcome for a quant, so every data row either
becomes an accepted bar/trade or is listed in ``rejected`` with its line number (header =
line 1) and a plain-words reason, and every assumption the parser had to make is listed in
``warnings``. Problems that make the whole file untrustworthy (a required column missing,
epoch units mixed, several timeframes and no choice) give ``ok=False`` and an ``error``.

Pure module: pandas, numpy, pyarrow (pandas' text storage), orjson and the standard
library only; the only I/O is reading the bytes, text or path it is given.

Decisions (each one is tested in tests/test_uploads.py)
-------------------------------------------------------
- Epoch numbers: a value in [9.467e8, 4.102e9) is seconds, in [9.467e11, 4.102e12)
  milliseconds; both ranges are 2000-01-01 .. 2100-01-01, so they cannot overlap. A column
  in microseconds or nanoseconds, or one mixing seconds with milliseconds (or numbers with
  date strings), is a fatal error: guessing per row could shift bars by a factor of 1000.
  A number in none of the ranges is a rejected row.
- ISO-8601 strings: with a zone (``Z``, ``+05:30``, `` UTC``) they are converted to UTC;
  naive ones are wall-clock time in ``naive_timezone`` (always said in ``warnings``).
  Local times that do not exist or are ambiguous at a DST change are rejected, not moved.
  Nothing but ISO-8601 is read: ``01/02/2025`` could be day-first or month-first.
- Times finer than a millisecond are floored to the millisecond, with a warning.
- Duplicate (symbol, time): the first row owns the time; later rows are rejected with
  "duplicate time of line N", even when line N was itself rejected for another reason —
  nobody can tell which of two bars for one interval is right.
- Row order: a row earlier than the previous accepted row of its symbol is REJECTED
  ("out of order: time earlier than line N"), never sorted into place: a typo in a date
  stays visible instead of becoming a bar weeks away. Exception: a symbol whose rows all go
  newest-first (a common spreadsheet export) is read in reverse, with a warning.
- Bars off the file's grid (``ts % timeframe`` unlike the symbol's usual phase) are real
  data: kept, counted in ``n_misaligned`` and named in a warning; so are bars closer to
  each other than one bar (a file mixing bar sizes).
- vwap 0.0 (a placeholder in real files), non-numeric, or outside [low, high] -> NaN with
  a warning; a bad vwap never rejects a bar.
- Ticks: identical rows are distinct trades (the files carry no trade ids) and are never
  de-duplicated. ``trade_id`` = 1, 2, ... per symbol over accepted trades in file order, so
  the same file always gets the same ids. Rows with price == 0 and size == 0 (futures
  ``"X":"NA"`` placeholders) are counted in ``n_filtered_zero`` and dropped. An unknown
  taker side is ``<NA>`` in the nullable Int8 column ``is_buyer_maker``;
  ``to_trade_tuples`` writes it as 0 because the trade record needs an int, which makes
  the buy/sell imbalance of such an upload meaningless: the upload says so
  (``side_known=False`` and a warning). Caveat for storage: ids restart at 1 in every file,
  so two different files of one symbol can only be told apart by ``ts``.
- Symbols follow the live rule (``^[a-z0-9]{2,20}$`` after lower-casing, as
  config.SYMBOL_PATTERN): anything else (``=cmd|' /C calc'!A0``, ``btc-usdt``) is a rejected
  row. A symbol ends up in SQL parameters, URLs and exported CSV cells.
- Never raise on content: every file gives a result or an ``error`` naming the problem.
  Encodings are sniffed (UTF-8/16/32, byte-order mark or not; a non-UTF-8 one is named in
  ``warnings``); a file that breaks in its encoding is an error with the byte position.
  NDJSON is strict JSON (orjson): NaN/Infinity, 1e400, lone ``\\ud800`` escapes and
  nesting deeper than 1,024 are rejected lines with the reason. A defect of this module
  becomes an "internal error ..." message instead of a traceback (the fuzz test in
  tests/test_upload_fuzz.py asserts it never happens).
- Bounded memory: a file over ``max_bytes`` is refused before it is read; a CSV without
  quotes is read 1 MB at a time and keeps only the columns validation reads, numbers as
  float64 and symbols dictionary-encoded (``_read_unquoted_csv``); the text of the few cells
  a message quotes is read again from the bytes. No Python object per cell anywhere (quoted
  CSV keeps Arrow text). A file of more than 20,000 rows none of whose first 10,000 rows is
  valid is refused after them instead of listing a million reasons.

Seen in the real sample files: the spot 1m/5m bar files end with bars whose ``low`` is 0.0
(a trade aggregation that let price-0 placeholders in); those rows are rejected as "low 0.0
is not positive", and the 5m file's 38 off-grid rows are 1-minute bars from the same source.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import zoneinfo
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv

from config import SYMBOL_PATTERN

__all__ = [
    "OhlcUpload",
    "TickUpload",
    "parse_ohlc_csv",
    "parse_tick_file",
    "to_trade_tuples",
    "timeframe_to_ms",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "PLAUSIBLE_START_MS",
    "PLAUSIBLE_END_MS",
]

# Every time must fall in [2000-01-01, 2100-01-01): outside it a value is a typo or a unit
# mistake, and the window keeps the epoch-unit ranges below apart.
PLAUSIBLE_START_MS = 946_684_800_000
PLAUSIBLE_END_MS = 4_102_444_800_000
_EPOCH_UNITS_PER_MS = {"s": 1e-3, "ms": 1.0, "us": 1e3, "ns": 1e6}
_EPOCH_UNIT_NAMES = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
}

TIME_ALIASES = ("timestamp", "time", "ts", "date", "datetime", "open_time")
OHLC_COLUMNS = ("open", "high", "low", "close")
VOLUME_ALIASES = ("volume", "vol", "qty")
PRICE_ALIASES = ("price", "close")
TIMEFRAME_ALIASES = ("timeframe", "interval")
TICK_TIME_ALIASES = ("ts", "timestamp", "time", "datetime")
TICK_QTY_ALIASES = ("size", "qty", "quantity", "amount")
TICK_SIDE_ALIASES = ("is_buyer_maker", "isbuyermaker")
_NDJSON_KEYS = {
    "symbol": ("symbol",),
    "time": ("ts", "timestamp", "time"),
    "price": ("price",),
    "qty": ("size", "qty", "quantity"),
    "side": ("is_buyer_maker", "isBuyerMaker"),
}

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "vwap")
TRADE_COLUMNS = ("symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker")

# A zone designator after hh:mm[:ss[.fff]]: Z, +05:30, +0530 or +05.
_ZONE_SUFFIX = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"
_UTC_WORD_SUFFIX = r"\s*(?:UTC|GMT|utc|gmt)$"
_TIMEFRAME_PATTERN = re.compile(
    r"^\s*(\d+)\s*(ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|t|h|hr|hour|hours"
    r"|d|day|days)\s*$"
)
_TIMEFRAME_UNIT_MS = {
    **dict.fromkeys(("ms",), 1),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1_000),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes", "t"), 60_000),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3_600_000),
    **dict.fromkeys(("d", "day", "days"), 86_400_000),
}
# A vwap may miss low/high by the float noise of its own division (88080.19999999998).
_VWAP_RELATIVE_TOLERANCE = 1e-9
_RAW_LINE_LIMIT = 300
# Symbols follow the live collector's rule (config.SYMBOL_PATTERN, imported above): a
# symbol from a file ends up in URLs, SQL parameters and exported CSV cells.
_SYMBOL_RULE = "' is not valid: use 2-20 letters or digits, e.g. BTCUSDT"
# Uploads larger than this are refused before reading (Streamlit's own default upload cap
# is 200 MB too); config.Settings.upload_max_mb overrides it for the page.
DEFAULT_MAX_UPLOAD_BYTES = 200_000_000
_SIDE_VALUES = {"true": 1, "1": 1, "false": 0, "0": 0}


class _BadArgument(ValueError):
    """An invalid argument (not a problem of the file): raised to the caller."""


class _UploadError(Exception):
    """A problem that makes the whole file unusable; the message is shown to the user."""

    def __init__(self, message: str, n_rows: int = 0):
        super().__init__(message)
        self.n_rows = n_rows


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True, eq=False)
class OhlcUpload:
    """Outcome of ``parse_ohlc_csv``: accepted bars, rejected rows and why.

    Attributes
    ----------
    bars : DataFrame
        Accepted rows sorted by (symbol, ts), RangeIndex, columns ``symbol`` (str, upper
        case), ``ts`` (int64 epoch ms UTC of the bar open), ``open``, ``high``, ``low``,
        ``close``, ``volume``, ``vwap`` (float64; volume and vwap NaN when absent/unusable).
    rejected : DataFrame
        One row per rejected line, sorted by ``row``: ``row`` (int64, 1-based line number in
        the file, header = 1), ``reason`` (str; several reasons joined by "; ") and the raw
        cells under the file's own column names (``raw_<name>`` if a name is row/reason).
    n_rows : int
        Data rows in the file (blank lines not counted);
        ``n_rows == n_accepted + n_rejected + n_skipped``.
    n_accepted, n_rejected : int
    n_skipped : int
        Rows of other timeframes left out because ``timeframe`` picked one.
    n_duplicates : int
        Rows rejected (also) as "duplicate time of line N".
    n_misaligned : int
        Rows with a readable time off their symbol's bar grid; they are kept unless
        rejected for another reason.
    symbols : tuple of str
        Symbols with at least one accepted bar, sorted.
    timeframe_ms : int or None
        Median spacing of consecutive bars when every symbol agrees, else None (also with
        fewer than two bars per symbol).
    timeframe_ms_by_symbol : dict of str to int
    time_format : str
        How the time column was read: "epoch s", "epoch ms", "ISO-8601 with zone",
        "ISO-8601 naive (<zone>)", or two of the ISO forms joined by " + ".
    warnings : tuple of str
        Plain-words notes about assumptions and suspicious content.
    ok : bool
        True when there is no fatal error and at least one bar was accepted.
    error : str or None
        Why ``ok`` is False.
    filename : str
    """

    bars: pd.DataFrame
    rejected: pd.DataFrame
    n_rows: int
    n_accepted: int
    n_rejected: int
    n_skipped: int
    n_duplicates: int
    n_misaligned: int
    symbols: tuple[str, ...]
    timeframe_ms: int | None
    timeframe_ms_by_symbol: dict[str, int]
    time_format: str
    warnings: tuple[str, ...]
    ok: bool
    error: str | None
    filename: str

    def bars_for_symbol(self, symbol: str) -> pd.DataFrame:
        """Bars of one symbol in the project's bar layout.

        Parameters
        ----------
        symbol : str
            Symbol in any case, e.g. "btcusdt".

        Returns
        -------
        DataFrame
            Indexed by ``ts`` (int64 epoch ms of the bar open, ascending), columns open,
            high, low, close, volume, buy_volume, trades, notional, vwap.

        Notes
        -----
        An uploaded bar does not know its taker-buy volume or its trade count, so
        ``buy_volume`` and ``trades`` are NaN; ``notional = vwap * volume`` (NaN unless
        both are known).
        """
        wanted = str(symbol).strip().upper()
        if wanted not in self.symbols:
            raise ValueError(
                f"symbol ({symbol!r}) is not in this upload (symbols: {', '.join(self.symbols)})"
            )
        one = self.bars[self.bars["symbol"] == wanted]
        out = one.set_index("ts")[["open", "high", "low", "close", "volume"]].copy()
        out["buy_volume"] = np.nan
        out["trades"] = np.nan
        out["notional"] = one["vwap"].to_numpy() * one["volume"].to_numpy()
        out["vwap"] = one["vwap"].to_numpy()
        return out


@dataclass(frozen=True, eq=False)
class TickUpload:
    """Outcome of ``parse_tick_file``: accepted trades, rejected lines and counts.

    Attributes
    ----------
    trades : DataFrame
        Accepted trades in file order, RangeIndex, columns ``symbol`` (str, upper case),
        ``trade_id`` (int64: 1, 2, ... per symbol in file order), ``ts`` (int64 epoch ms
        UTC, exchange trade time), ``price``, ``qty`` (float64), ``is_buyer_maker``
        (nullable Int8: 1, 0, or <NA> when the file does not say).
    rejected : DataFrame
        ``line`` (int64, 1-based line number; in CSV the header is line 1), ``reason``
        (str) and ``raw`` (the line's content, at most 300 characters).
    n_rows : int
        Non-blank data lines; ``n_rows == n_accepted + n_rejected + n_filtered_zero``.
    n_accepted, n_rejected : int
    n_filtered_zero : int
        Rows with price == 0 and size == 0 (futures "NA" placeholders): excluded.
    n_repeated : int
        Accepted trades equal in (symbol, ts, price, qty) to an earlier one; all kept.
    trades_by_symbol : dict of str to int
    symbols : tuple of str
    format : str
        "ndjson", "csv", or "unknown" when the file could not be read at all.
    side_known : bool
        True when every accepted trade carries is_buyer_maker.
    time_format : str
    warnings : tuple of str
    ok : bool
        True when there is no fatal error and at least one trade was accepted.
    error : str or None
    filename : str
    """

    trades: pd.DataFrame
    rejected: pd.DataFrame
    n_rows: int
    n_accepted: int
    n_rejected: int
    n_filtered_zero: int
    n_repeated: int
    trades_by_symbol: dict[str, int]
    symbols: tuple[str, ...]
    format: str
    side_known: bool
    time_format: str
    warnings: tuple[str, ...]
    ok: bool
    error: str | None
    filename: str


# ------------------------------------------------------------------------ small helpers


def timeframe_to_ms(timeframe: str) -> int:
    """Length of a bar size such as "1s", "5m", "1min" or "1h" in milliseconds.

    Parameters
    ----------
    timeframe : str
        A positive integer and a unit: ms, s, m/min/T (minutes), h, d. "1M" (a month in
        Binance's vocabulary) is refused rather than read as a minute.

    Returns
    -------
    int
        Milliseconds.

    Raises
    ------
    ValueError
        When the text is not such a bar size.
    """
    text = str(timeframe).strip()
    match = None if text.endswith("M") else _TIMEFRAME_PATTERN.match(text.lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"timeframe ({timeframe!r}) is not a bar size like '1s', '5m', '1min', '1h'"
        )
    return int(match.group(1)) * _TIMEFRAME_UNIT_MS[match.group(2)]


def _format_duration(ms: int) -> str:
    """60000 -> "1 min", 300000 -> "5 min", 41000 -> "41 s", 29003 -> "29.003 s"."""
    for unit_ms, unit in ((86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1_000, "s")):
        if ms >= unit_ms and ms % unit_ms == 0:
            return f"{ms // unit_ms} {unit}"
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms} ms"


def _check_timezone(naive_timezone: str) -> None:
    if not isinstance(naive_timezone, str) or not naive_timezone.strip():
        raise ValueError(f"naive_timezone ({naive_timezone!r}) must be an IANA zone name")
    try:
        zoneinfo.ZoneInfo(naive_timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"naive_timezone ({naive_timezone!r}) is not an IANA zone name such as 'UTC' "
            "or 'Asia/Kolkata'"
        ) from exc


def _read_bytes(data, max_bytes: int | None = None) -> tuple[bytes, str]:
    """The content of ``data`` as UTF-8 bytes and the name of the encoding it was in.

    ``data`` is bytes, a path (``os.PathLike``, or a one-line str naming an existing file),
    text, or a file-like object such as Streamlit's UploadedFile. A file larger than
    ``max_bytes`` is refused before it is read or decoded."""
    is_path = isinstance(data, os.PathLike) or (
        isinstance(data, str)
        and "\n" not in data
        and 0 < len(data) < 4096
        and os.path.isfile(data)
    )
    if is_path:
        _check_size(os.path.getsize(data), max_bytes)
        with open(data, "rb") as handle:
            data = handle.read()
    elif hasattr(data, "getvalue") or hasattr(data, "read"):
        size = getattr(data, "size", None)
        if isinstance(size, int):
            _check_size(size, max_bytes)
        data = data.getvalue() if hasattr(data, "getvalue") else data.read()
    if isinstance(data, (bytes, bytearray, memoryview)):
        _check_size(len(data), max_bytes)
        return _to_utf8(bytes(data))
    if isinstance(data, str):
        _check_size(len(data), max_bytes)
        surrogate = _LONE_SURROGATE.search(data)
        if surrogate is not None:
            raise _UploadError(
                f"the text holds a lone UTF-16 surrogate (U+{ord(surrogate.group()):04X}) at "
                f"character {surrogate.start()}: it is not valid Unicode"
            )
        return data.removeprefix("\ufeff").encode("utf-8"), "text"
    raise _BadArgument(
        f"data must be bytes, text, a path or a file-like object, got {type(data).__name__}"
    )


def _internal_error(exc: Exception) -> str:
    """The message for a file this parser failed on (a parser defect, tested never to
    happen by tests/test_upload_fuzz.py): the user sees what broke instead of a traceback."""
    return (
        f"internal error while reading the file ({type(exc).__name__}: {str(exc)[:200]}); "
        "please report it with the file"
    )


def _with_encoding_note(result, encoding: str):
    """Say in ``warnings`` when the file was not plain UTF-8 (or passed as text)."""
    if encoding in ("UTF-8", "text"):
        return result
    note = f"file read as {encoding}"
    return dataclasses.replace(result, warnings=(note, *result.warnings))


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_if_hopeless(validate_head: Callable, n_rows: int) -> None:
    """Refuse a large file none of whose first ``_PROBE_ROWS`` rows is valid.

    Validating a million rows that are all broken costs time and memory for a table of
    a million reasons nobody reads (a 40 MB file took 48 s and 2 GB). A file whose first
    10,000 rows all fail is in a format this parser does not read: the error says so with
    the first reasons. A fatal error of the first rows alone (e.g. a timeframe that only
    appears later) proves nothing about the file: then the whole file is validated."""
    try:
        head = validate_head()
    except _UploadError:
        return
    if head.n_accepted or getattr(head, "n_skipped", 0) or getattr(head, "n_filtered_zero", 0):
        return
    column = "row" if "row" in head.rejected.columns else "line"
    example = "; ".join(
        f"line {line}: {reason}"
        for line, reason in zip(head.rejected[column].head(1), head.rejected["reason"].head(1))
    )
    raise _UploadError(
        f"none of the first {_PROBE_ROWS:,} data rows is valid ({example}): the file was not "
        "read further; fix its format and upload it again",
        n_rows,
    )


def _check_size(n_bytes: int, max_bytes: int | None) -> None:
    if max_bytes is not None and n_bytes > max_bytes:
        raise _UploadError(
            f"the file is {_format_bytes(n_bytes)}, over the upload limit of "
            f"{_format_bytes(max_bytes)} (setting CRYPTO_UPLOAD_MAX_MB): split it or raise "
            "the limit"
        )


def _format_bytes(n_bytes: int) -> str:
    """1500000 -> "1.5 MB", 200000000 -> "200 MB" (decimal megabytes, like the setting)."""
    return f"{n_bytes / 1e6:,.3g} MB" if n_bytes < 1e9 else f"{n_bytes / 1e6:,.0f} MB"


# Byte-order marks, longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BYTE_ORDER_MARKS = (
    (b"\xef\xbb\xbf", "utf-8-sig", "UTF-8 with byte-order mark"),
    (b"\xff\xfe\x00\x00", "utf-32", "UTF-32 LE with byte-order mark"),
    (b"\x00\x00\xfe\xff", "utf-32", "UTF-32 BE with byte-order mark"),
    (b"\xff\xfe", "utf-16", "UTF-16 LE with byte-order mark"),
    (b"\xfe\xff", "utf-16", "UTF-16 BE with byte-order mark"),
)


def _sniff_encoding(raw: bytes) -> tuple[str, str]:
    """(codec, plain name) of ``raw``: a byte-order mark, else the zero bytes that ASCII
    characters leave in UTF-16/UTF-32 (a CSV or NDJSON file starts with ASCII names or
    ``{``), else UTF-8."""
    for mark, codec, name in _BYTE_ORDER_MARKS:
        if raw.startswith(mark):
            return codec, name
    head = raw[:4096]
    if len(head) >= 4 and b"\x00" in head:
        quads = len(head) // 4 * 4
        zero = [head[i:quads:4].count(0) / (quads // 4) for i in range(4)]
        if zero[1] > 0.9 and zero[2] > 0.9 and zero[3] > 0.9 and zero[0] < 0.5:
            return "utf-32-le", "UTF-32 LE without byte-order mark"
        if zero[0] > 0.9 and zero[1] > 0.9 and zero[2] > 0.9 and zero[3] < 0.5:
            return "utf-32-be", "UTF-32 BE without byte-order mark"
        pairs = len(head) // 2 * 2
        even = head[0:pairs:2].count(0) / (pairs // 2)
        odd = head[1:pairs:2].count(0) / (pairs // 2)
        if odd > 0.9 and even < 0.5:
            return "utf-16-le", "UTF-16 LE without byte-order mark"
        if even > 0.9 and odd < 0.5:
            return "utf-16-be", "UTF-16 BE without byte-order mark"
    return "utf-8", "UTF-8"


def _to_utf8(raw: bytes) -> tuple[bytes, str]:
    """An uploaded file as UTF-8 bytes without byte-order mark; the error names the
    encoding it looked like and where it broke, so the user knows what to re-save.

    UTF-8 input is only checked (decoded once and dropped), never copied, so a large file
    costs its own size once here."""
    if raw[:2] == b"\x1f\x8b" or raw[:4] == b"PK\x03\x04":
        raise _UploadError("the file is compressed (gzip/zip): upload the extracted text file")
    codec, name = _sniff_encoding(raw)
    try:
        if codec.startswith("utf-8"):
            raw.decode(codec)
            return (raw[3:] if codec == "utf-8-sig" else raw), name
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        if codec == "utf-8":
            raise _UploadError(
                f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at position "
                f"{exc.start}): save it as UTF-8 CSV"
            ) from exc
        raise _UploadError(
            f"the file looks like {name} but is not valid {name.split()[0]} text "
            f"({exc.reason} at byte {exc.start}): save it as UTF-8"
        ) from exc
    return text.removeprefix("\ufeff").encode("utf-8"), name


def _as_text(series: pd.Series) -> pd.Series:
    """Stripped str column; missing values become ""."""
    if not pd.api.types.is_string_dtype(series.dtype):
        series = series.astype(object).where(series.notna(), "")
    return series.astype("str").fillna("").str.strip()


def _is_empty(column: pd.Series | _NumberCells) -> np.ndarray:
    if isinstance(column, _NumberCells):
        return column.empty
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.isna().to_numpy()
    return (column == "").to_numpy(dtype=bool)


def _valid_symbols(symbol: pd.Series) -> np.ndarray:
    """True where the (upper-case) symbol matches ``SYMBOL_PATTERN`` after lower-casing."""
    pattern = SYMBOL_PATTERN.pattern.removeprefix("^").removesuffix("$")
    return symbol.str.lower().str.fullmatch(pattern).fillna(False).to_numpy(dtype=bool)


def _to_float(column: pd.Series | _NumberCells) -> np.ndarray:
    """Writable float64 array of a column of numbers (NDJSON numbers, ``_NumberCells``) or
    of Arrow text ("str" columns); unreadable cells are NaN.

    ``_NumberCells`` give their own array, not a copy (8 MB a million rows): the columns
    are the validator's private input, and _check_numbers' edit (inf -> NaN, after the
    "not finite" reason) is what every later reader of the column wants."""
    if isinstance(column, _NumberCells):
        return column.values
    if pd.api.types.is_float_dtype(column.dtype):
        return np.array(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    return _arrow_text_to_float(pa.array(column.array))


# What pyarrow's (and pandas') text -> float conversion accepts: decimals, exponents,
# inf/infinity/nan in any case. Anything else is "not a number" (NaN).
_NUMBER_TEXT = (
    r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?"
    r"|[nN][aA][nN])$"
)


def _arrow_text_to_float(text, try_whole: bool = True) -> np.ndarray:
    """Arrow text -> float64 without turning a million cells into Python objects (which
    ``pd.to_numeric`` does): cast at once, or, when some cells are not numbers, cast the
    ones matching ``_NUMBER_TEXT`` and leave the others NaN. Same values as pd.to_numeric.
    ``try_whole=False`` skips the cast of everything (a failing cast is slow: ~30 ms a
    1 MB block) when the caller knows the column holds text that is not a number."""
    if try_whole:
        try:
            values = pa_compute.cast(text, pa.float64())
            return np.array(values.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # some cells are not numbers: cast only those that look like one
    looks_numeric = pa_compute.match_substring_regex(text, _NUMBER_TEXT)
    positions = np.flatnonzero(np.asarray(looks_numeric.to_numpy(zero_copy_only=False)))
    out = np.full(len(text), np.nan)
    if len(positions):  # a column of dates has none: nothing to cast
        try:
            picked = pa_compute.cast(text.take(pa.array(positions)), pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a form the regex let in
            series = pd.Series(text.to_pylist(), dtype=object)
            numbers = pd.to_numeric(series.where(series != "", None), errors="coerce")
            return np.array(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
        out[positions] = picked.to_numpy(zero_copy_only=False)
    return out


class _Reasons:
    """Reasons per row position, gathered check by check, joined with "; " in check order.

    ``add(mask, *pieces)`` builds the text only for the flagged rows; a piece is a str
    (same for every row), a column (its cells' text), a callable (positions -> texts) or an
    array indexed by row position. Texts are kept as Arrow arrays and joined by Arrow, so a
    file with half a million rejected rows does not hold their reasons as Python strings."""

    def __init__(self, n: int):
        self.n = n
        self._parts: list[tuple[np.ndarray, pa.Array]] = []  # (positions, their texts)

    def add(self, mask, *pieces) -> None:
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        positions = np.flatnonzero(mask)
        arrays = []
        for piece in pieces:
            if isinstance(piece, str):
                arrays.append(pa.scalar(piece, pa.large_string()))
                continue
            if isinstance(piece, (pd.Series, _NumberCells)):
                column = _text_column(lambda rows, piece=piece: _cell_texts(piece, rows),
                                      positions)
            elif callable(piece):  # computed for the flagged rows only
                column = _text_column(piece, positions)
            else:
                column = pd.Series(np.asarray(piece)[positions].astype(str), dtype="str")
            arrays.append(pa.array(column.array).cast(pa.large_string()))
        if not any(isinstance(a, pa.Array) for a in arrays):  # a fixed text: one per row
            arrays.append(pa.array([""] * len(positions), pa.large_string()))
        self._parts.append((positions, pa_compute.binary_join_element_wise(
            *arrays, pa.scalar("", pa.large_string()))))

    def merge(self, other: _Reasons, mask: np.ndarray) -> None:
        """Take over the reasons of ``other`` for the rows in ``mask``."""
        for positions, texts in other._parts:
            keep = mask[positions]
            if keep.any():
                self._parts.append((positions[keep], texts.filter(pa.array(keep))))

    def flagged(self) -> np.ndarray:
        out = np.zeros(self.n, dtype=bool)
        for positions, _ in self._parts:
            out[positions] = True
        return out

    def joined(self) -> pd.Series:
        """Reason text ("str") per flagged position, sorted by position."""
        if not self._parts:
            return pd.Series([], dtype="str")
        flagged = np.unique(np.concatenate([positions for positions, _ in self._parts]))
        text = None
        for positions, texts in self._parts:  # check order: each part joins the ones before
            slot = np.full(len(flagged), -1, dtype=np.int64)
            slot[np.searchsorted(flagged, positions)] = np.arange(len(positions))
            spread = texts.take(pa.array(slot, mask=slot < 0))  # null where not flagged here
            if text is None:
                text = spread
            else:
                both = pa_compute.binary_join_element_wise(
                    text, spread, pa.scalar("; ", pa.large_string()))
                text = pa_compute.coalesce(both, text, spread)
        return pd.Series(pd.array(text, dtype="str"), index=flagged)


def _check_numbers(
    column: pd.Series,
    name: str,
    reasons: _Reasons,
    *,
    required: bool,
    rule: str,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """Parse a numeric column and add a reason for each cell breaking the rule.

    ``rule`` is "positive" (> 0) or "non-negative" (>= 0). Returns float64 values with NaN
    where the cell is empty or unusable. ``active`` limits the checks to some rows."""
    active = np.ones(len(column), dtype=bool) if active is None else active
    values = _to_float(column)
    empty = _is_empty(column)
    with np.errstate(invalid="ignore"):
        if required:
            reasons.add(active & empty, f"{name} is missing")
        reasons.add(active & np.isnan(values) & ~empty, f"{name} '", column, "' is not a number")
        reasons.add(active & np.isinf(values), f"{name} ", column, " is not finite")
        values[np.isinf(values)] = np.nan
        if rule == "positive":
            reasons.add(active & (values <= 0), f"{name} ", column, " is not positive")
        else:
            reasons.add(active & (values < 0), f"{name} ", column, " is negative")
    return values


# ---------------------------------------------------------------------------- CSV input


@dataclass
class _NumberCells:
    """A numeric column kept as numbers instead of text (8 bytes a cell instead of the text
    and its 8-byte Arrow offset): ``values`` is float64, NaN where the cell is empty or not a
    number (+-inf kept, so that "not finite" can be said); ``empty`` marks empty cells; the
    cells' own text, for the few rows a message quotes, comes from ``texts(positions)``."""

    values: np.ndarray
    empty: np.ndarray
    texts: Callable[[np.ndarray], list[str]]

    def __len__(self) -> int:
        return len(self.values)

    def take(self, keep: np.ndarray) -> _NumberCells:
        """The rows where ``keep`` is True (texts still found by the new positions)."""
        kept, texts = np.flatnonzero(keep), self.texts
        return _NumberCells(self.values[kept], self.empty[kept],
                            lambda positions: texts(kept[np.asarray(positions)]))

    def head(self, n: int) -> _NumberCells:
        # A copy: a validator may edit its values (see _to_float), the full one runs later.
        return _NumberCells(self.values[:n].copy(), self.empty[:n], self.texts)


_TEXT_CHUNK_ROWS = 100_000


def _text_column(texts_of: Callable[[np.ndarray], list[str]], positions: np.ndarray
                 ) -> pd.Series:
    """``texts_of(positions)`` as an Arrow "str" column, asked for 100,000 positions at a
    time: only one chunk of Python strings exists at once (a million of them cost ~60 MB,
    their Arrow text a third of it)."""
    step = _TEXT_CHUNK_ROWS
    parts = [pa.array(texts_of(positions[at:at + step]), pa.large_string())
             for at in range(0, len(positions), step)]
    return pd.Series(pd.array(pa.chunked_array(parts, pa.large_string()), dtype="str"))


def _cell_texts(column: pd.Series | _NumberCells, positions: np.ndarray) -> list[str]:
    """The stripped text of ``column``'s cells at ``positions``."""
    if isinstance(column, _NumberCells):
        return column.texts(positions)
    return column.iloc[positions].astype(str).tolist()


def _head(column: pd.Series | _NumberCells | None, n: int):
    """The first ``n`` rows of a column (None stays None: an optional column left out)."""
    if column is None:
        return None
    if isinstance(column, _NumberCells):
        return column.head(n)
    return column.iloc[:n].reset_index(drop=True)


@dataclass
class _CsvTable:
    """A CSV file split into cells. ``columns`` holds the columns the caller asked to keep
    (by position; all of them unless the reader was told otherwise) as stripped Arrow text
    ("str" Series) or ``_NumberCells``; ``row_texts`` gives every cell of any row as text
    (for the rejected table and the raw lines), read again from the file's bytes by the
    fast reader, so columns nobody validates never stay in memory."""

    header: list[str]  # stripped names as written in the file
    columns: dict[int, pd.Series | _NumberCells]
    lines: np.ndarray  # int64 line number of each row
    ragged: list[tuple[int, str, list[str]]]  # (line, reason, fields) of rows of bad width
    n_blank: int
    # row_texts(positions) -> each row's stripped cells, padded to the header's width;
    # row_texts(positions, column) -> that column's cell of each row
    row_texts: Callable[..., list]

    def head(self, n: int) -> _CsvTable:
        """The first ``n`` rows (and the ragged rows among their lines)."""
        last = int(self.lines[n - 1]) if len(self.lines) >= n else np.iinfo(np.int64).max
        return _CsvTable(
            self.header, {i: _head(c, n) for i, c in self.columns.items()}, self.lines[:n],
            [row for row in self.ragged if row[0] <= last], 0, self.row_texts,
        )

    def rows(self, keep: np.ndarray) -> _CsvTable:
        """The rows where ``keep`` is True (ragged rows and blank count unchanged)."""
        kept, row_texts = np.flatnonzero(keep), self.row_texts
        columns = {
            i: c.take(keep) if isinstance(c, _NumberCells) else c[keep].reset_index(drop=True)
            for i, c in self.columns.items()
        }
        return _CsvTable(self.header, columns, self.lines[kept], self.ragged, self.n_blank,
                         lambda positions, column=None: row_texts(
                             kept[np.asarray(positions, dtype=np.int64)], column))

    def __len__(self) -> int:
        return len(self.lines)


_CSV_CHUNK_ROWS = 50_000
_CSV_BLOCK_BYTES = 1 << 20  # the fast reader's block: its transient cells stay ~1 MB


def _read_csv_table(
    raw: bytes, kinds_of: Callable[[list[str], list[str]], dict[int, str] | None] | None = None
) -> _CsvTable:
    """Split CSV (UTF-8 bytes) into header and cells, keeping each row's first line number.

    A file without quotes, where every line is one row, is read by pyarrow's CSV reader
    block by block, never becomes per-cell Python objects, and keeps only the columns
    ``kinds_of`` asks for, numbers as float64 (see ``_read_unquoted_csv``). A file
    with quotes (cells that may hold the delimiter or a newline) goes through Python's csv
    module, 50,000 rows at a time, and keeps every column as Arrow text."""
    if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
        # Lone CRs (old Mac files) end lines too. CRLF alone needs no copy of the file: both
        # readers take it, and a line of just "\r" is an empty line (_line_stats).
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    first_line = next((line for line in raw[:65_536].split(b"\n") if line.strip()), b"")
    delimiter = ","
    if b"," not in first_line:
        delimiter = ";" if b";" in first_line else ("\t" if b"\t" in first_line else ",")
    if b'"' not in raw:
        table = _read_unquoted_csv(raw, delimiter, kinds_of)
        if table is not None:
            return table
    return _read_quoted_csv(raw, delimiter)


def _read_quoted_csv(raw: bytes, delimiter: str) -> _CsvTable:
    """The exact reader: Python's csv module, chunk by chunk (see ``_read_csv_table``).

    It is fed one decoded line at a time, with its "\\n" (which keeps newlines inside
    quoted cells), so the whole file never exists as a Python string."""
    lines_with_ends = (raw[start:end + 1].decode("utf-8") for _, start, end in _iter_lines(raw))
    reader = csv.reader(lines_with_ends, delimiter=delimiter)
    header: list[str] | None = None
    width = 0
    rows: list[list[str]] = []
    column_chunks: list[list[pd.Series]] = []
    lines = array("q")
    ragged: list[tuple[int, str, list[str]]] = []
    n_blank = 0
    end_of_previous = 0

    def flush() -> None:
        for position, chunks in enumerate(column_chunks):
            chunks.append(pd.Series([row[position].strip() for row in rows], dtype="str"))
        rows.clear()

    try:
        for fields in reader:
            start = end_of_previous + 1
            end_of_previous = reader.line_num
            if not fields or (not fields[0].strip() and all(not f.strip() for f in fields)):
                n_blank += header is not None
                continue
            if header is None:
                header = [f.strip() for f in fields]
                width = len(header)
                column_chunks = [[] for _ in range(width)]
                continue
            if len(fields) != width:
                if not _has_only_trailing_empties(fields, width):
                    ragged.append((start, f"expected {width} fields, found {len(fields)}", fields))
                    continue
                fields = fields[:width]  # trailing delimiters left by spreadsheets
            rows.append(fields)
            lines.append(start)
            if len(rows) >= _CSV_CHUNK_ROWS:
                flush()
    except csv.Error as exc:
        raise _UploadError(f"line {reader.line_num}: the file is not valid CSV ({exc})") from exc
    if header is None:
        raise _UploadError("the file is empty")
    flush()
    cells = pd.DataFrame(
        {
            i: pd.concat(chunks, ignore_index=True) if chunks else pd.Series([], dtype="str")
            for i, chunks in enumerate(column_chunks)
        }
    )

    def row_texts(positions, column: int | None = None) -> list:
        positions = np.asarray(positions, dtype=np.int64)
        if column is not None:
            return cells[column].iloc[positions].astype(object).tolist()
        return cells.iloc[positions].astype(object).values.tolist()

    return _CsvTable(header, {i: cells[i] for i in range(width)},
                     np.frombuffer(lines, dtype=np.int64), ragged, n_blank, row_texts)


def _has_only_trailing_empties(fields: list[str], width: int) -> bool:
    """Whether a row longer than the header holds only empty cells past it (trailing
    delimiters left by spreadsheets): both readers then keep its first ``width`` cells."""
    return len(fields) > width and all(not f.strip() for f in fields[width:])


_NEWLINE_SCAN_BYTES = 1 << 20  # newline positions are found 1 MB at a time


def _newline_blocks(raw: bytes):
    """Offsets (int64) of the b"\\n" bytes of ``raw``, one array per 1 MB block: nothing
    of the size of the whole file is built (an array of every line's offset would cost 8
    bytes a line, and freeing such temporaries does not give the memory back at once)."""
    buffer = np.frombuffer(raw, dtype=np.uint8)
    for at in range(0, len(buffer), _NEWLINE_SCAN_BYTES):
        yield np.flatnonzero(buffer[at:at + _NEWLINE_SCAN_BYTES] == 10) + at


def _line_stats(raw: bytes) -> tuple[int, np.ndarray, int]:
    """Number of lines of ``raw``, 1-based numbers of its empty lines, longest line (bytes).

    A last line without a newline counts; an empty file has no lines; a line holding only
    "\r" (an empty line of a CRLF file) is empty."""
    n_lines, previous_end, longest = 0, -1, 0
    empty: list[np.ndarray] = []
    buffer = np.frombuffer(raw, dtype=np.uint8)
    for ends in _newline_blocks(raw):
        if len(ends):
            lengths = np.diff(ends, prepend=previous_end) - 1
            longest = max(longest, int(lengths.max()))
            is_empty = lengths == 0
            one_byte = np.flatnonzero(lengths == 1)
            is_empty[one_byte] = buffer[ends[one_byte] - 1] == 13
            empty.append(np.flatnonzero(is_empty) + n_lines + 1)
            n_lines += len(ends)
            previous_end = int(ends[-1])
    if previous_end + 1 < len(raw):
        longest = max(longest, len(raw) - previous_end - 1)
        n_lines += 1
    return n_lines, np.concatenate(empty) if empty else np.zeros(0, np.int64), longest


def _line_spans(raw: bytes, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end byte offsets (int64 arrays, end excludes the newline) of the lines with
    the given 1-based numbers, in the order given. One scan, stopped after the last line
    asked for; arrays, not a dict, so asking for a million lines costs 16 bytes each."""
    wanted, inverse = np.unique(np.asarray(numbers, dtype=np.int64), return_inverse=True)
    starts = np.empty(len(wanted), dtype=np.int64)
    ends = np.empty(len(wanted), dtype=np.int64)
    n_before, previous_end, found = 0, -1, 0
    for block_ends in _newline_blocks(raw):
        if found == len(wanted):
            break
        if not len(block_ends):
            continue
        last = n_before + len(block_ends)
        upto = int(np.searchsorted(wanted, last, side="right"))
        k = wanted[found:upto] - n_before - 1  # index of each line's newline in this block
        ends[found:upto] = block_ends[k]
        starts[found:upto] = np.where(k > 0, block_ends[np.maximum(k - 1, 0)],
                                      previous_end) + 1
        found, n_before, previous_end = upto, last, int(block_ends[-1])
    starts[found:] = previous_end + 1  # the last line, without a newline
    ends[found:] = len(raw)
    return starts[inverse], ends[inverse]


def _read_unquoted_csv(
    raw: bytes,
    delimiter: str,
    kinds_of: Callable[[list[str], list[str]], dict[int, str] | None] | None = None,
) -> _CsvTable | None:
    """Fast reader for files without quotes: one line = one row, parsed by pyarrow.

    Reproduces the exact reader's rules (header = first non-blank line; blank lines are
    empty or hold only spaces and delimiters; rows of another width are "ragged" unless the
    extra cells are empty). Line numbers come from the newline offsets. Returns None when
    pyarrow cannot give line numbers, so the caller falls back to the exact reader.

    ``kinds_of(header, first_row)`` (the stripped cells of the first data line, [] if
    none) says which columns to keep and how: position -> "text", "number"
    (``_NumberCells``) or "category" (few distinct values, such as symbols: a pandas
    Categorical, 1-4 bytes a row); other columns are not kept (their cells stay readable
    through ``row_texts``). None, or a None answer, keeps every column as text. The file is
    read 1 MB at a time and each block's cells are turned into the kept form at once, so the
    whole file never exists as text cells."""
    n_lines, empty_lines, longest = _line_stats(raw)
    if longest > csv.field_size_limit():
        return None  # the exact reader names the line with the oversized cell
    header_index, start = None, 0
    for index in range(n_lines):  # the first non-blank line: usually the first line
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        line = raw[start:end].decode("utf-8")
        if line.replace(delimiter, "").strip():
            header_index = index
            break
        start = end + 1
    if header_index is None:
        raise _UploadError("the file is empty")
    header = [name.strip() for name in line.split(delimiter)]
    width = len(header)
    first_row = _first_data_fields(raw, end + 1, delimiter)
    kinds = (kinds_of(header, first_row) if kinds_of is not None else None) or dict.fromkeys(
        range(width), "text")
    names = [f"c{i}" for i in range(width)]
    body_start = end + 1
    lines_after_header = n_lines - header_index - 1
    first_body_line = header_index + 2  # 1-based number of the line after the header
    empty = empty_lines[empty_lines >= first_body_line]
    handled: list[tuple[int, str]] = []  # (line number, text) of rows pyarrow refused

    def refuse(row) -> str:
        handled.append((row.number, row.text))
        return "skip"

    # Kept columns, block by block: text as Arrow chunks, numbers straight into arrays
    # sized for every body line (no per-block pieces to join and free afterwards).
    parts: dict[int, list | _NumberColumnBuilder] = {
        i: _NumberColumnBuilder(lines_after_header) if kind == "number" else []
        for i, kind in kinds.items()
    }
    blank_parts: list[np.ndarray] = []
    n_arrow_rows = 0
    if lines_after_header > 0 and body_start < len(raw):
        reader = pa_csv.open_csv(
            pa.BufferReader(pa.py_buffer(raw)[body_start:]),
            read_options=pa_csv.ReadOptions(
                column_names=names, use_threads=False, block_size=_CSV_BLOCK_BYTES
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, quote_char=False, ignore_empty_lines=True,
                invalid_row_handler=refuse,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()), null_values=[],
                strings_can_be_null=False,
            )
        )
        for batch in reader:
            n_arrow_rows += batch.num_rows
            cells, all_blank = _stripped_cells(batch.columns)
            blank_parts.append(all_blank)
            filled = pa.array(~all_blank) if all_blank.any() else None
            for i, kind in kinds.items():
                column = cells[i] if filled is None else cells[i].filter(filled)
                parts[i].append(_encoded(column, kind))
            del batch, cells
    if any(number is None for number, _ in handled):
        return None
    ragged, extra_rows, blank_lines = [], [], []
    # pyarrow numbers rows without the empty lines it skips: row k is the k-th non-empty
    # body line, i.e. k - 1 plus the empty lines before it.
    nonempty_before = (empty - first_body_line) - np.arange(len(empty))
    refused_lines = [
        first_body_line + number - 1
        + int(np.searchsorted(nonempty_before, number - 1, side="right"))
        for number, _ in handled
    ]
    for line_number, (_, text) in zip(refused_lines, handled):
        fields = text.split(delimiter)
        if not text.strip() or all(not f.strip() for f in fields):
            blank_lines.append(line_number)
        elif _has_only_trailing_empties(fields, width):
            extra_rows.append((line_number, fields[:width]))  # trailing delimiters
        else:
            ragged.append((line_number, f"expected {width} fields, found {len(fields)}", fields))
    refused = np.asarray(refused_lines, dtype=np.int64)
    # The rows pyarrow gave, in order: the body lines but the empty and the refused ones.
    is_row = np.ones(max(lines_after_header, 0), dtype=bool)
    is_row[np.concatenate([empty, refused]) - first_body_line] = False
    if int(is_row.sum()) != n_arrow_rows:
        return None  # pyarrow saw the lines differently: let the exact reader decide
    all_blank = np.concatenate(blank_parts) if blank_parts else np.zeros(0, dtype=bool)
    n_blank = len(empty) + len(blank_lines) + int(all_blank.sum())
    if all_blank.any():
        is_row[np.flatnonzero(is_row)[all_blank]] = False
    row_lines = np.flatnonzero(is_row)
    row_lines += first_body_line
    del is_row
    order = None
    if extra_rows:
        # Rows with trailing delimiters go back to their place among the others.
        extra_lines = np.asarray([line for line, _ in extra_rows], dtype=np.int64)
        order = np.argsort(np.concatenate([row_lines, extra_lines]), kind="stable")
        row_lines = np.concatenate([row_lines, extra_lines])[order]
        for i, kind in kinds.items():
            extra = pa.array([fields[i].strip() for _, fields in extra_rows], pa.large_string())
            parts[i].append(_encoded(extra, kind))
    row_texts = _line_row_texts(raw, row_lines, delimiter, width)
    columns: dict[int, pd.Series | _NumberCells] = {}
    for i in kinds:
        built = parts.pop(i)
        if isinstance(built, _NumberColumnBuilder):
            values, empty_cells = built.finish(order)
            columns[i] = _NumberCells(values, empty_cells, _column_texts(row_texts, i))
        elif kinds[i] == "category":
            columns[i] = _joined_category(built, order)
        else:
            columns[i] = _joined_text(built, order)
    return _CsvTable(header, columns, row_lines, ragged, n_blank, row_texts)


def _first_data_fields(raw: bytes, start: int, delimiter: str) -> list[str]:
    """Stripped cells of the first non-blank line at or after ``start`` (among the next
    100 lines), or [] when there is none."""
    for _ in range(100):
        if start >= len(raw):
            break
        end = raw.find(b"\n", start)
        end = len(raw) if end < 0 else end
        fields = [f.strip() for f in raw[start:end].decode("utf-8").split(delimiter)]
        if any(fields):
            return fields
        start = end + 1
    return []


def _time_kind(first_row: list[str], position: int) -> str:
    """How to keep a time column: as numbers when the first data row holds an epoch number
    (8 bytes a row; the few cells that are not numbers are read again as text), else as
    text (ISO-8601 strings). A file mixing both is refused either way."""
    cell = first_row[position] if position < len(first_row) else ""
    return "number" if re.fullmatch(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", cell) else "text"


def _stripped_cells(columns: list) -> tuple[list, np.ndarray]:
    """A block's text columns with surrounding spaces removed, and which rows are blank
    (every cell empty: ",,,," or spaces between delimiters)."""
    all_blank = np.ones(len(columns[0]) if columns else 0, dtype=bool)
    out = []
    for column in columns:
        padded = pa_compute.match_substring_regex(column, r"^\s|\s$")
        if pa_compute.any(padded).as_py():
            column = pa_compute.utf8_trim_whitespace(column)
        if all_blank.any():
            empty = pa_compute.equal(column, "")
            all_blank &= np.asarray(empty.to_numpy(zero_copy_only=False))
        out.append(column)
    return out, all_blank


class _NumberColumnBuilder:
    """A numeric column filled block by block into arrays sized for the whole file."""

    def __init__(self, capacity: int):
        self.values = np.empty(capacity, dtype=np.float64)
        self.empty = np.empty(capacity, dtype=bool)
        self.size = 0
        self.all_numbers = True  # so far every cell was a number: try the fast cast

    def append(self, text) -> None:
        """Add a block of (stripped) Arrow text cells."""
        end = self.size + len(text)
        values = _arrow_text_to_float(text, try_whole=self.all_numbers)
        self.values[self.size:end] = values
        self.empty[self.size:end] = pa_compute.equal(text, "").to_numpy(
            zero_copy_only=False)
        # A column with text that is not a number (empty cells included) mostly goes on
        # having some: after the first such block only the regex path is taken.
        self.all_numbers = self.all_numbers and not np.isnan(values).any()
        self.size = end

    def finish(self, order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(values, empty) of the rows appended, in ``order`` when given."""
        values, empty = self.values[:self.size], self.empty[:self.size]
        self.values = self.empty = None
        if order is not None:
            values, empty = values[order], empty[order]
        return values, empty


def _encoded(column, kind: str):
    """A block of a kept text column as kept: dictionary-encoded for "category"."""
    return pa_compute.dictionary_encode(column) if kind == "category" else column


def _joined_category(blocks: list, order: np.ndarray | None) -> pd.Series:
    """Dictionary-encoded blocks of one column as one categorical Series (categories are
    the column's distinct stripped texts), in ``order`` when given."""
    joined = pa.chunked_array(blocks, pa.dictionary(pa.int32(), pa.large_string()))
    if order is not None:
        joined = joined.take(pa.array(order))
    return pd.Series(joined.to_pandas(), dtype="category").reset_index(drop=True)


def _joined_text(blocks: list, order: np.ndarray | None) -> pd.Series:
    """The Arrow text blocks of one column as one "str" Series, in ``order`` when given."""
    chunks = [c.chunks if isinstance(c, pa.ChunkedArray) else [c] for c in blocks]
    joined = pa.chunked_array([a for c in chunks for a in c], pa.large_string())
    if order is not None:
        joined = joined.take(pa.array(order))
    return pd.Series(pd.array(joined, dtype="str"))


def _line_row_texts(raw: bytes, row_lines: np.ndarray, delimiter: str, width: int
                    ) -> Callable[..., list]:
    """The cells of the rows at some positions (all of them, or one column's), read again
    from their lines in ``raw`` for the rows a message or the rejected table shows: each
    call scans the file for the newlines up to the last row asked for, so no offset of
    every line is ever kept."""
    def row_texts(positions, column: int | None = None) -> list:
        numbers = row_lines[np.asarray(positions, dtype=np.int64)]
        if not len(numbers):
            return []
        starts, ends = _line_spans(raw, numbers)
        out = []
        for start, end in zip(starts.tolist(), ends.tolist()):
            fields = raw[start:end].decode("utf-8").split(delimiter)
            if column is not None:
                out.append(fields[column].strip() if column < len(fields) else "")
            else:
                out.append(([f.strip() for f in fields] + [""] * width)[:width])
        return out

    return row_texts


def _column_texts(row_texts: Callable, column: int) -> Callable[[np.ndarray], list[str]]:
    return lambda positions: row_texts(positions, column)


def _looks_like_data(header: list[str]) -> bool:
    """True when the first line holds values rather than column names (no header)."""
    if re.match(r"^\d{4}-\d{2}-\d{2}", header[0]):
        return True
    numbers = pd.to_numeric(pd.Series(header, dtype=object), errors="coerce")
    return bool(numbers.notna().sum() >= max(2, len(header) // 2))


def _find_column(lowered: list[str], aliases, what: str, n_rows: int) -> int | None:
    """Position of the one column whose name is in ``aliases``; error when several are."""
    hits = [i for i, name in enumerate(lowered) if name in aliases]
    if len(hits) > 1:
        names = ", ".join(lowered[i] for i in hits)
        raise _UploadError(f"several columns could be the {what} ({names}): keep only one", n_rows)
    return hits[0] if hits else None


# --------------------------------------------------------------------------------- times


@dataclass
class _ParsedTimes:
    ts_ms: np.ndarray  # int64 epoch ms, 0 where not ok
    ok: np.ndarray  # bool
    time_format: str
    n_naive: int
    n_submillisecond: int


def _parse_times(
    text: pd.Series | _NumberCells, lines: np.ndarray, naive_timezone: str, reasons: _Reasons
) -> _ParsedTimes:
    """Epoch s / epoch ms / ISO-8601 text -> int64 epoch ms UTC (rules: module docstring).

    Adds a reason for every unusable row; raises _UploadError for mixed or too-fine units.
    ``text`` may be ``_NumberCells`` (a column of epoch numbers, whose values this edits
    in place): the cells that are not numbers are then read as text for the ISO rules."""
    n = len(text)
    missing = _is_empty(text)
    numbers = _to_float(text)
    is_number = ~np.isnan(numbers)
    is_string = ~missing & ~is_number
    reasons.add(missing, "time is missing")
    ts_us = np.zeros(n, dtype=np.int64)  # microseconds: keeps sub-millisecond parts visible
    ok = np.zeros(n, dtype=bool)
    formats: list[str] = []
    n_naive = 0

    if is_string.any():
        string_rows = np.flatnonzero(is_string)
        parsed_us, parsed, iso_formats, n_naive = _parse_iso_times(
            text, string_rows, naive_timezone, reasons)
        formats.extend(iso_formats)
        ts_us[string_rows[parsed]] = parsed_us[parsed]
        ok[string_rows[parsed]] = True

    if is_number.any():
        if ok.any():
            raise _UploadError(
                "the time column mixes epoch numbers (first at line "
                f"{lines[np.flatnonzero(is_number)[0]]}) and date strings (first at line "
                f"{lines[np.flatnonzero(ok)[0]]}): use one form"
            )
        unit_names = list(_EPOCH_UNITS_PER_MS)
        unit = np.full(n, -1, dtype=np.int8)  # index into unit_names; -1 = in no range
        with np.errstate(invalid="ignore"):
            for code, (name, per_ms) in enumerate(_EPOCH_UNITS_PER_MS.items()):
                low, high = PLAUSIBLE_START_MS * per_ms, PLAUSIBLE_END_MS * per_ms
                inside = (numbers >= low) & (numbers < high)
                unit[is_number & inside] = code
        found = np.unique(unit[is_number])
        present = sorted(unit_names[code] for code in found if code >= 0)
        too_fine = [u for u in present if u in ("us", "ns")]
        if too_fine:
            fine_codes = [unit_names.index(u) for u in too_fine]
            first = lines[np.flatnonzero(np.isin(unit, fine_codes))[0]]
            raise _UploadError(
                f"epoch times in {_EPOCH_UNIT_NAMES[too_fine[0]]} are not supported (first at "
                f"line {first}): convert them to milliseconds or seconds"
            )
        if present == ["ms", "s"]:
            raise _UploadError(
                "the time column mixes epoch seconds (first at line "
                f"{lines[np.flatnonzero(unit == unit_names.index('s'))[0]]}) and epoch "
                "milliseconds (first at line "
                f"{lines[np.flatnonzero(unit == unit_names.index('ms'))[0]]}): use one unit"
            )
        outside = is_number & (unit < 0)
        reasons.add(
            outside,
            "time '",
            text,
            "' is outside 2000-01-01 .. 2100-01-01 (as epoch seconds or milliseconds)",
        )
        usable = is_number & ~outside
        if present:
            # In place, on one array (numbers is not read after this): a million times cost
            # 8 MB here instead of a temporary per arithmetic step.
            as_ms = numbers if usable.all() else numbers[usable]
            del numbers
            if _EPOCH_UNITS_PER_MS[present[0]] != 1.0:
                as_ms /= _EPOCH_UNITS_PER_MS[present[0]]
            whole_ms = as_ms + 1e-3  # seconds * 1000 may land a hair below the ms
            np.floor(whole_ms, out=whole_ms)
            as_ms -= whole_ms  # the fraction of a millisecond ...
            as_ms *= 1000.0  # ... in microseconds
            np.clip(np.round(as_ms, out=as_ms), 0, 999, out=as_ms)
            micros = whole_ms.astype(np.int64)
            del whole_ms
            micros *= 1000
            micros += as_ms.astype(np.int64)
            del as_ms
            ts_us[usable] = micros
            del micros
            ok |= usable
            formats.append(f"epoch {present[0]}")

    in_window = (ts_us >= PLAUSIBLE_START_MS * 1000) & (ts_us < PLAUSIBLE_END_MS * 1000)
    reasons.add(ok & ~in_window, "time '", text, "' is outside 2000-01-01 .. 2100-01-01")
    ok &= in_window
    del in_window
    n_submillisecond = int((ok & (ts_us % 1000 != 0)).sum())
    ts_us //= 1000  # now milliseconds
    ts_us[~ok] = 0
    return _ParsedTimes(ts_us, ok, " + ".join(formats) or "none", n_naive, n_submillisecond)


def _parse_iso_times(
    text: pd.Series | _NumberCells, string_rows: np.ndarray, naive_timezone: str,
    reasons: _Reasons,
) -> tuple[np.ndarray, np.ndarray, list[str], int]:
    """The ISO-8601 branch of ``_parse_times``, for the rows at ``string_rows`` (cells that
    are neither empty nor numbers): (microseconds, parsed, formats seen, naive count), the
    first two indexed like ``string_rows``. Adds the reasons of the rows it cannot use
    (a local time in a DST gap or overlap, an unparseable time)."""
    n = len(text)
    formats: list[str] = []
    n_naive = 0
    if isinstance(text, _NumberCells):  # the cells that are not numbers, read again
        iso = _text_column(text.texts, string_rows)
    elif len(string_rows) == n:  # all rows strings (the usual case): no copy
        iso = text
    else:
        iso = text.iloc[string_rows].reset_index(drop=True)
    utc_word = iso.str.contains(r"(?i)(?:UTC|GMT)$", regex=True).to_numpy(dtype=bool)
    if utc_word.any():
        iso = iso.copy()  # never edit the caller's column
        iso[utc_word] = iso[utc_word].str.replace(_UTC_WORD_SUFFIX, "+00:00", regex=True)
    aware = iso.str.contains(_ZONE_SUFFIX, regex=True).to_numpy(dtype=bool)
    parsed_us = np.zeros(len(iso), dtype=np.int64)
    parsed = np.zeros(len(iso), dtype=bool)
    unreadable = np.zeros(len(iso), dtype=bool)
    if aware.any():
        stamps = _to_datetime_in_chunks(_rows_of(iso, aware), utc=True, format="ISO8601")
        good = stamps.notna().to_numpy()
        rows = np.flatnonzero(aware)
        parsed_us[rows[good]] = _epoch_us(stamps)[good]
        del stamps
        parsed[rows[good]] = True
        unreadable[rows[~good]] = True
        if good.any():
            formats.append("ISO-8601 with zone")
    if (~aware).any():
        rows = np.flatnonzero(~aware)
        wall = _to_datetime_in_chunks(_rows_of(iso, ~aware), format="ISO8601")
        if isinstance(wall.dtype, pd.DatetimeTZDtype):
            raise _UploadError("could not tell times with a zone from times without one")
        if naive_timezone == "UTC":  # wall-clock time is UTC: nothing to localize
            local = wall
        else:
            local = wall.dt.tz_localize(naive_timezone, ambiguous="NaT", nonexistent="NaT")
        good = local.notna().to_numpy()
        wall_ok = wall.notna().to_numpy()
        parsed_us[rows[good]] = _epoch_us(local)[good]
        del local
        parsed[rows[good]] = True
        unreadable[rows[~wall_ok]] = True
        n_naive = int(good.sum())
        if n_naive:
            formats.append(f"ISO-8601 naive ({naive_timezone})")
        dst = wall_ok & ~good
        if dst.any():
            # An ambiguous time survives when told which side to take; a missing one never.
            retry = wall[dst].dt.tz_localize(
                naive_timezone, ambiguous=np.ones(int(dst.sum()), dtype=bool), nonexistent="NaT"
            )
            problem = string_rows[rows[dst]]
            gap = np.zeros(n, dtype=bool)
            overlap = np.zeros(n, dtype=bool)
            gap[problem[retry.isna().to_numpy()]] = True
            overlap[problem[retry.notna().to_numpy()]] = True
            where = f"' does not exist in {naive_timezone} (clocks jump forward)"
            reasons.add(gap, "local time '", text, where)
            where = f"' is ambiguous in {naive_timezone} (clocks fall back)"
            reasons.add(overlap, "local time '", text, where)
    bad = np.zeros(n, dtype=bool)
    bad[string_rows[unreadable]] = True
    reasons.add(bad, "unparseable time '", text, "'")
    return parsed_us, parsed, formats, n_naive


def _rows_of(column: pd.Series, mask: np.ndarray) -> pd.Series:
    """``column[mask]``, or the column itself when every row is in the mask (no copy)."""
    return column if mask.all() else column[mask]


def _epoch_us(stamps: pd.Series) -> np.ndarray:
    """int64 microseconds since the epoch of datetime stamps, naive (read as UTC) or
    zoned; a NaT gives a meaningless number, so callers pick the rows they know are set."""
    return stamps.array.as_unit("us").asi8


_DATETIME_CHUNK_ROWS = 100_000


def _to_datetime_in_chunks(text: pd.Series, **options) -> pd.Series:
    """``pd.to_datetime(errors="coerce")`` on at most 100,000 cells at a time: pandas turns
    Arrow text into Python strings while parsing, and chunks keep that transient cost
    small. Same result as one call."""
    step = _DATETIME_CHUNK_ROWS
    if len(text) <= step:
        return pd.to_datetime(text, errors="coerce", **options)
    parts = [
        pd.to_datetime(text.iloc[at:at + step], errors="coerce", **options)
        for at in range(0, len(text), step)
    ]
    if len({str(part.dtype) for part in parts}) > 1 and not options.get("utc"):
        aware = [isinstance(part.dtype, pd.DatetimeTZDtype) for part in parts]
        if any(aware):
            return parts[aware.index(True)]  # the caller refuses zone-aware naive times
        parts = [part.dt.as_unit("us") for part in parts]
    return pd.concat(parts)


def _time_warnings(times: _ParsedTimes, naive_timezone: str) -> list[str]:
    out = []
    if times.n_naive:
        out.append(f"naive times interpreted as {naive_timezone}")
    if times.n_submillisecond:
        out.append(
            f"times finer than a millisecond on {times.n_submillisecond:,} rows: floored to "
            "the millisecond"
        )
    return out


# ---------------------------------------------------------------------------------- OHLC


def _empty_bars() -> pd.DataFrame:
    columns = {"symbol": pd.Series([], dtype="str"), "ts": pd.Series([], dtype=np.int64)}
    columns.update({name: pd.Series([], dtype=np.float64) for name in BAR_COLUMNS[2:]})
    return pd.DataFrame(columns)


def _failed_ohlc(filename: str, error: str, n_rows: int) -> OhlcUpload:
    return OhlcUpload(
        bars=_empty_bars(),
        rejected=pd.DataFrame(
            {"row": pd.Series([], dtype=np.int64), "reason": pd.Series([], dtype=object)}
        ),
        n_rows=n_rows,
        n_accepted=0,
        n_rejected=0,
        n_skipped=0,
        n_duplicates=0,
        n_misaligned=0,
        symbols=(),
        timeframe_ms=None,
        timeframe_ms_by_symbol={},
        time_format="none",
        warnings=(),
        ok=False,
        error=error,
        filename=filename,
    )


def parse_ohlc_csv(
    data,
    *,
    filename: str = "upload.csv",
    naive_timezone: str = "UTC",
    default_symbol: str | None = None,
    timeframe: str | None = None,
    max_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES,
) -> OhlcUpload:
    """Parse and validate an uploaded OHLC (or price) CSV.

    Parameters
    ----------
    data : bytes, str, path-like or file-like
        The file's bytes, its text, a path (``os.PathLike``, or a str without a newline
        naming an existing file), or an object with ``getvalue()`` or ``read()``.
    filename : str
        Name shown in messages and kept on the result.
    naive_timezone : str
        IANA zone of times written without a zone, e.g. "Asia/Kolkata". Default "UTC".
    default_symbol : str, optional
        Symbol for a file without a ``symbol`` column and for rows with an empty symbol.
        Without it such a file is refused: the symbol is never guessed from the file name.
    timeframe : str, optional
        Bar size to keep when the file has a ``timeframe`` column holding several values
        ("1s", "1m", "5min", ...). With no such column it is the bar size alignment is
        checked against.
    max_bytes : int or None, default 200 MB
        Larger files are refused before they are read, with the limit in ``error``
        (the page passes ``Settings.upload_max_mb``); None = no limit.

    Returns
    -------
    OhlcUpload
        Accepted bars, rejected rows with line numbers and reasons, counts, warnings, ``ok``
        and ``error``.

    Raises
    ------
    ValueError
        For invalid arguments only (unknown zone name, empty default_symbol, a timeframe that
        is not a bar size, data of an unsupported type). Problems in the file never raise.

    Notes
    -----
    Columns (case-insensitive, spaces stripped): time = one of timestamp, time, ts, date,
    datetime, open_time; open, high, low, close; optional volume (vol, qty), symbol (any
    case in, upper case out), vwap, timeframe (interval). Other columns are ignored with a
    warning. A file with no open/high/low and exactly one ``price`` or ``close`` column is a
    price file: every row becomes a bar with open = high = low = close = price (warned).

    A row is rejected when its time is missing, unparseable or outside 2000..2100, its
    symbol is missing, an OHLC value is missing, not a number, not finite or <= 0, when
    high < max(open, close), low > min(open, close) or high < low, when volume is not a
    number or negative, when it repeats the (symbol, time) of an earlier row, or when its
    time is earlier than the previous accepted row of its symbol. The module docstring
    gives the time rules and the reasons behind each decision.
    """
    _check_timezone(naive_timezone)
    if default_symbol is not None:
        if not isinstance(default_symbol, str) or not default_symbol.strip():
            raise ValueError(f"default_symbol ({default_symbol!r}) must be a non-empty string")
        default_symbol = default_symbol.strip().upper()
        if not SYMBOL_PATTERN.match(default_symbol.lower()):
            return _failed_ohlc(
                filename, f"the symbol chosen for the file '{default_symbol}{_SYMBOL_RULE}",
                0,
            )
    wanted_ms = None if timeframe is None else timeframe_to_ms(timeframe)
    try:
        raw, encoding = _read_bytes(data, max_bytes)
        if raw.lstrip().startswith(b"{"):
            raise _UploadError(
                "the file is NDJSON (one JSON object per line), not CSV: upload it as trades "
                "(ticks)"
            )
        table = _read_csv_table(raw, _ohlc_kinds)
        del raw  # the table's row_texts keeps what it needs
        if len(table) + len(table.ragged) > 2 * _PROBE_ROWS:
            _refuse_if_hopeless(
                lambda: _validate_ohlc(table.head(_PROBE_ROWS), filename, naive_timezone,
                                       default_symbol, timeframe, wanted_ms),
                len(table) + len(table.ragged),
            )
        result = _validate_ohlc(table, filename, naive_timezone, default_symbol, timeframe,
                                wanted_ms)
        return _with_encoding_note(result, encoding)
    except _UploadError as exc:
        return _failed_ohlc(filename, str(exc), exc.n_rows)
    except _BadArgument:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError, UnicodeError) as exc:
        # A defect of this parser, not of the file: said as such instead of a traceback.
        return _failed_ohlc(filename, _internal_error(exc), 0)


def _ohlc_kinds(header: list[str], first_row: list[str]) -> dict[int, str] | None:
    """The columns the OHLC validator reads (numbers as numbers); None = keep all as text
    (a header the validator refuses: it says why with the row count)."""
    try:
        columns, _, _ = _resolve_ohlc_columns(header, 0)
    except _UploadError:
        return None
    kinds = {position: "number" for position in columns.values()}
    kinds[columns["time"]] = _time_kind(first_row, columns["time"])
    if "symbol" in columns:
        kinds[columns["symbol"]] = "category"
    if "timeframe" in columns:
        kinds[columns["timeframe"]] = "text"
    return kinds


def _resolve_ohlc_columns(header: list[str], n_rows: int) -> tuple[dict[str, int], list[str], bool]:
    """Map canonical names to positions, list ignored columns, tell price files apart."""
    lowered = [name.lower() for name in header]
    found = ", ".join(header)
    if _looks_like_data(header):
        raise _UploadError(
            "the first line looks like data, not column names: add a header such as "
            "timestamp,symbol,open,high,low,close,volume",
            n_rows,
        )
    repeated = sorted({name for name in lowered if name and lowered.count(name) > 1})
    if repeated:
        raise _UploadError(
            f"column '{repeated[0]}' appears more than once (found: {found})", n_rows
        )
    time_position = _find_column(lowered, TIME_ALIASES, "time", n_rows)
    if time_position is None:
        raise _UploadError(
            f"missing required column 'timestamp' (found: {found}); accepted names: "
            + ", ".join(TIME_ALIASES),
            n_rows,
        )
    columns = {"time": time_position}
    is_price_file = not any(name in lowered for name in ("open", "high", "low"))
    price_columns = [i for i, name in enumerate(lowered) if name in PRICE_ALIASES]
    if is_price_file and len(price_columns) == 1:
        columns["price"] = price_columns[0]
    elif is_price_file and len(price_columns) > 1:
        raise _UploadError(
            f"columns 'price' and 'close' are both present without open/high/low (found: "
            f"{found}): keep one",
            n_rows,
        )
    else:
        is_price_file = False
        missing = [name for name in OHLC_COLUMNS if name not in lowered]
        if missing:
            listed = ", ".join(f"'{name}'" for name in missing)
            plural = "s" if len(missing) > 1 else ""
            raise _UploadError(f"missing required column{plural} {listed} (found: {found})", n_rows)
        columns.update({name: lowered.index(name) for name in OHLC_COLUMNS})
    optional = {
        "volume": _find_column(lowered, VOLUME_ALIASES, "volume", n_rows),
        "symbol": _find_column(lowered, ("symbol",), "symbol", n_rows),
        "vwap": _find_column(lowered, ("vwap",), "vwap", n_rows),
        "timeframe": _find_column(lowered, TIMEFRAME_ALIASES, "timeframe", n_rows),
    }
    columns.update({name: pos for name, pos in optional.items() if pos is not None})
    used = set(columns.values())
    ignored = [
        header[i] or f"(unnamed column {i + 1})" for i in range(len(header)) if i not in used
    ]
    return columns, ignored, is_price_file


def _select_timeframe(
    labels_column: pd.Series, timeframe: str | None, wanted_ms: int | None, n_rows: int
) -> tuple[np.ndarray, int]:
    """Rows of the chosen timeframe, and that timeframe in ms."""
    labels = sorted(set(labels_column.tolist()))
    sizes: dict[str, int | None] = {}
    for label in labels:
        try:
            sizes[label] = timeframe_to_ms(label)
        except ValueError:
            sizes[label] = None
    ordered = sorted(labels, key=lambda s: (sizes[s] is None, sizes[s] or 0, s))
    listed = ", ".join(s if sizes[s] is not None else repr(s) for s in ordered)
    if any(size is None for size in sizes.values()):
        raise _UploadError(
            f"the timeframe column holds values that are not bar sizes ({listed})", n_rows
        )
    if wanted_ms is None:
        if len(set(sizes.values())) > 1:
            raise _UploadError(
                f"the file holds several timeframes ({listed}): choose one with timeframe=",
                n_rows,
            )
        return np.ones(len(labels_column), dtype=bool), sizes[labels[0]]
    matching = [label for label in labels if sizes[label] == wanted_ms]
    if not matching:
        raise _UploadError(f"timeframe {timeframe!r} is not in the file (found: {listed})", n_rows)
    return labels_column.isin(matching).to_numpy(dtype=bool), wanted_ms


def _validate_ohlc(
    table: _CsvTable,
    filename: str,
    naive_timezone: str,
    default_symbol: str | None,
    timeframe: str | None,
    wanted_ms: int | None,
) -> OhlcUpload:
    n_rows = len(table) + len(table.ragged)
    columns, ignored, is_price_file = _resolve_ohlc_columns(table.header, n_rows)
    if "symbol" not in columns and default_symbol is None:
        raise _UploadError(
            f"the file has no 'symbol' column (found: {', '.join(table.header)}): choose the "
            "symbol (default_symbol=)",
            n_rows,
        )
    if n_rows == 0:
        raise _UploadError("the file has a header but no data rows")

    warnings: list[str] = []
    declared_ms, n_skipped = wanted_ms, 0
    if "timeframe" in columns and len(table):
        keep, declared_ms = _select_timeframe(
            _as_text(table.columns[columns["timeframe"]]), timeframe, wanted_ms, n_rows
        )
        n_skipped = int((~keep).sum())
        if n_skipped:
            table = table.rows(keep)
            warnings.append(
                f"kept timeframe {timeframe}: {n_skipped:,} rows of other timeframes skipped"
            )
    lines = table.lines
    n = len(table)
    # Stripped text, or _NumberCells for the numeric columns of a file read by the fast reader.
    text = {name: table.columns[position] for name, position in columns.items()}
    reasons = _Reasons(n)

    times = _parse_times(text["time"], lines, naive_timezone, reasons)
    warnings.extend(_time_warnings(times, naive_timezone))
    # A column is dropped once its checks are done (the rejected table reads rows again).
    del text["time"]
    table.columns.pop(columns["time"])

    codes, names = _symbol_codes(text.get("symbol"), n, default_symbol)
    symbol_ok = _check_symbols(codes, names, text.get("symbol"), reasons)
    if "symbol" in columns:
        del text["symbol"]
        table.columns.pop(columns["symbol"])

    prices = _check_prices(text, table.header, columns, is_price_file, reasons, warnings)
    volume = np.full(n, np.nan)
    if "volume" in columns:
        volume = _check_numbers(
            text["volume"], "volume", reasons, required=False, rule="non-negative"
        )

    # Duplicates: among all rows with a readable time and symbol, the first row owns the time.
    keyed = times.ok & symbol_ok
    duplicate, first_line = _duplicate_times(codes, times.ts_ms, lines, keyed)
    reasons.add(duplicate, "duplicate time of line ", first_line)
    del first_line

    valid = ~reasons.flagged() & times.ok & symbol_ok
    late, late_line, descending = _out_of_order(codes, times.ts_ms, lines, valid, names)
    reasons.add(late, "out of order: time earlier than line ", late_line)
    for name in descending:
        warnings.append(f"rows of {name} are newest first: read in ascending time order")
    accepted = valid & ~late

    vwap = np.full(n, np.nan)
    if "vwap" in columns:
        vwap = _usable_vwap(text["vwap"], prices, accepted, lines, warnings)
    if "volume" in columns:
        empty_volume = accepted & _is_empty(text["volume"])
        if empty_volume.any():
            warnings.append(f"volume is empty on {int(empty_volume.sum()):,} rows: left as NaN")
    if ignored:
        warnings.append("ignored columns: " + ", ".join(ignored))
    if table.n_blank:
        warnings.append(f"{table.n_blank:,} blank lines skipped")

    # The grid and spacing describe the file: judged on every readable, non-duplicate row.
    # (Before the bars are built: the grid's temporary copies and the bars never coexist.)
    structural = keyed & ~duplicate
    grid = _grid_report(codes, times.ts_ms, lines, accepted, structural, names, declared_ms)
    warnings.extend(grid.warnings)
    rejected = _rejected_bars_table(reasons, lines, table)
    # The cells are no longer needed: release them before the bars are built. The table is
    # this function's private input; nobody reads it after.
    table.columns = {}
    del reasons, text, structural

    # Accepted rows in (symbol, ts) order, ties in file order; built in that order column by
    # column instead of sorting a finished frame (which would copy every column at once).
    picked = np.flatnonzero(accepted)
    order = picked[np.lexsort((times.ts_ms[picked], codes[picked]))]  # names are sorted
    symbol_names = pa.array(names.tolist(), pa.large_string())
    out = {
        "symbol": pd.array(symbol_names.take(pa.array(codes[order])), dtype="str"),
        "ts": times.ts_ms[order],
    }
    # Each input column is released once its ordered copy exists, and copy=False keeps
    # pandas from copying all the float columns into one block: one column at a time.
    for name in OHLC_COLUMNS:
        out[name] = prices.pop(name)[order]
    out["volume"] = volume[order]
    del volume
    out["vwap"] = vwap[order]
    time_format = times.time_format
    del vwap, times
    bars = pd.DataFrame(out, copy=False)
    symbols = tuple(str(names[c]) for c in np.unique(codes[order]))  # names are sorted
    spacing = {s: ms for s, ms in grid.timeframe_by_symbol.items() if s in symbols}
    n_accepted = len(bars)
    return OhlcUpload(
        bars=bars,
        rejected=rejected,
        n_rows=n_rows,
        n_accepted=n_accepted,
        n_rejected=len(rejected),
        n_skipped=n_skipped,
        n_duplicates=int(duplicate.sum()),
        n_misaligned=grid.n_misaligned,
        symbols=symbols,
        timeframe_ms=next(iter(set(spacing.values()))) if len(set(spacing.values())) == 1 else None,
        timeframe_ms_by_symbol=spacing,
        time_format=time_format,
        warnings=tuple(warnings),
        ok=n_accepted > 0,
        error=None if n_accepted else f"no row passed validation ({len(rejected):,} rejected)",
        filename=filename,
    )


def _check_prices(
    text: dict[str, pd.Series],
    header: list[str],
    columns: dict[str, int],
    is_price_file: bool,
    reasons: _Reasons,
    warnings: list[str],
) -> dict[str, np.ndarray]:
    """open/high/low/close values, with reasons for unusable or inconsistent ones."""
    if is_price_file:
        name = header[columns["price"]].lower()
        price = _check_numbers(text["price"], name, reasons, required=True, rule="positive")
        warnings.append(
            f"no open/high/low columns: each row's {name} is used as open = high = low = close "
            "(a price series, not true bars)"
        )
        return dict.fromkeys(OHLC_COLUMNS, price)
    prices = {
        name: _check_numbers(text[name], name, reasons, required=True, rule="positive")
        for name in OHLC_COLUMNS
    }
    o, h, lo, c = (prices[name] for name in OHLC_COLUMNS)
    with np.errstate(invalid="ignore"):
        usable = (o > 0) & (h > 0) & (lo > 0) & (c > 0)
        # Quote the user's own cells, not re-printed floats (looked up for flagged rows only).
        def top(positions: np.ndarray) -> list[str]:
            return _pick_cells(o[positions] >= c[positions], positions, text["open"],
                               text["close"])

        def bottom(positions: np.ndarray) -> list[str]:
            return _pick_cells(o[positions] <= c[positions], positions, text["open"],
                               text["close"])

        high_low = usable & (h < np.maximum(o, c))
        reasons.add(high_low, "high ", text["high"], " < max(open, close) ", top)
        low_high = usable & (lo > np.minimum(o, c))
        reasons.add(low_high, "low ", text["low"], " > min(open, close) ", bottom)
        reasons.add(usable & (h < lo), "high ", text["high"], " < low ", text["low"])
    return prices


def _pick_cells(first: np.ndarray, positions: np.ndarray, a, b) -> list[str]:
    """Cell of ``a`` where ``first`` else of ``b``, at ``positions``."""
    return [x if pick else y for pick, x, y in
            zip(first.tolist(), _cell_texts(a, positions), _cell_texts(b, positions))]


def _usable_vwap(
    column: pd.Series,
    prices: dict[str, np.ndarray],
    accepted: np.ndarray,
    lines: np.ndarray,
    warnings: list[str],
) -> np.ndarray:
    """vwap with 0, unusable and out-of-[low, high] values set to NaN (each warned)."""
    vwap = _to_float(column)
    with np.errstate(invalid="ignore"):
        zero = accepted & (vwap == 0)
        unusable = accepted & ~_is_empty(column) & ~(np.isfinite(vwap) & (vwap >= 0))
        margin = _VWAP_RELATIVE_TOLERANCE * np.abs(vwap)
        outside = (
            accepted
            & (vwap > 0)
            & np.isfinite(vwap)
            & ((vwap < prices["low"] - margin) | (vwap > prices["high"] + margin))
        )
    if zero.any():
        warnings.append(f"vwap is 0 on {int(zero.sum()):,} rows: treated as missing")
    if unusable.any():
        warnings.append(
            f"vwap is not a usable number on {int(unusable.sum()):,} rows: treated as missing"
        )
    if outside.any():
        warnings.append(
            f"vwap lies outside [low, high] on {int(outside.sum()):,} rows (first at line "
            f"{lines[np.flatnonzero(outside)[0]]}): treated as missing"
        )
    vwap[zero | unusable | outside | ~np.isfinite(vwap)] = np.nan
    return vwap


def _check_symbols(codes: np.ndarray, names: np.ndarray, column: pd.Series | None,
                   reasons: _Reasons, active: np.ndarray | None = None) -> np.ndarray:
    """Add "symbol is missing" and, when the file has a symbol ``column``, "symbol '…' is
    not valid" (the live rule) to the ``active`` rows; True where the symbol is usable.
    The rule runs once per distinct name (``names[codes]``, see ``_symbol_codes``)."""
    active = np.ones(len(codes), dtype=bool) if active is None else active
    present = (names != "")[codes]
    reasons.add(active & ~present, "symbol is missing")
    if column is None:  # every row has the chosen default symbol
        return present
    usable = present & _valid_symbols(pd.Series(names, dtype="str"))[codes]
    reasons.add(active & present & ~usable, "symbol '", column, _SYMBOL_RULE)
    return usable


def _symbol_codes(
    column: pd.Series | None, n: int, default_symbol: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's upper-case symbol as ``names[codes]``: ``names`` is sorted and unique (an
    object array of str; "" = no symbol), ``codes`` is int32 — 4 bytes a row instead of a
    text column, and the symbol rules run once per distinct symbol. Empty symbols become
    ``default_symbol`` when one is given; without a symbol column every row has it."""
    if column is None:
        return np.zeros(n, dtype=np.int32), np.array([default_symbol], dtype=object)
    if isinstance(column.dtype, pd.CategoricalDtype):  # the fast reader's symbols
        row_codes, uniques = column.cat.codes.to_numpy(), column.cat.categories
    else:
        row_codes, uniques = pd.factorize(column)
    upper = [str(name).upper() for name in uniques]
    if default_symbol is not None:
        upper = [name or default_symbol for name in upper]
    names, merged = np.unique(np.array(upper, dtype=object), return_inverse=True)
    return merged.astype(np.int32)[row_codes], names


# A readable time is in [2000, 2100): below 2**42 ms, so (symbol code, ts) packs into one
# int64 key whose order is (symbol, time).
_TS_BITS = 42


def _symbol_time_keys(codes: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    return (codes.astype(np.int64) << _TS_BITS) | ts_ms


def _duplicate_times(
    codes: np.ndarray, ts_ms: np.ndarray, lines: np.ndarray, keyed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (among ``keyed``) repeating the (symbol, time) of an earlier row, and for them
    the line of the first row with that (symbol, time). A stable sort by the packed key
    puts equal keys side by side in file order: no hash table of a million keys."""
    n = len(ts_ms)
    duplicate = np.zeros(n, dtype=bool)
    first_line = np.zeros(n, dtype=np.int64)
    rows = np.flatnonzero(keyed)
    if not len(rows):
        return duplicate, first_line
    order = rows[np.argsort(_symbol_time_keys(codes[rows], ts_ms[rows]), kind="stable")]
    key = _symbol_time_keys(codes[order], ts_ms[order])
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = key[1:] == key[:-1]
    del key
    if repeat.any():
        duplicate[order[repeat]] = True
        run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
        first_line[order[repeat]] = lines[order[run_start[repeat]]]
    return duplicate, first_line


def _out_of_order(
    codes: np.ndarray, ts_ms: np.ndarray, lines: np.ndarray, valid: np.ndarray,
    names: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Rows earlier than the previous valid row of their symbol.

    Returns
    -------
    late : ndarray of bool
        Rows to reject as out of order.
    late_line : ndarray of int64
        For those rows, the line of the latest earlier row of the symbol.
    descending : list of str
        Symbols whose valid rows only ever go back in time: read reversed, not rejected.

    Notes
    -----
    Works on the valid rows sorted by symbol (file order within a symbol, a stable sort):
    the running maximum of the packed (symbol, time) key is each symbol's running maximum
    time, because a new symbol's first key exceeds every key before it.
    """
    n = len(ts_ms)
    late = np.zeros(n, dtype=bool)
    late_line = np.zeros(n, dtype=np.int64)
    rows = np.flatnonzero(valid)
    if not len(rows):
        return late, late_line, []
    order = rows[np.argsort(codes[rows], kind="stable")]
    code, ts = codes[order], ts_ms[order]
    same = np.zeros(len(order), dtype=bool)  # same symbol as the row before
    same[1:] = code[1:] == code[:-1]
    step = np.zeros(len(order), dtype=np.int64)
    step[1:] = ts[1:] - ts[:-1]
    rises = np.zeros(len(names), dtype=bool)
    rises[code[same & (step > 0)]] = True
    falls = np.zeros(len(names), dtype=bool)
    falls[code[same & (step < 0)]] = True
    del step
    reversed_code = falls & ~rises
    descending = sorted(str(names[c]) for c in np.flatnonzero(reversed_code))
    running = np.maximum.accumulate(_symbol_time_keys(code, ts)) & ((1 << _TS_BITS) - 1)
    is_late = np.zeros(len(order), dtype=bool)
    is_late[1:] = same[1:] & (ts[1:] < running[:-1]) & ~reversed_code[code[1:]]
    if is_late.any():
        # The latest row (so far) holding its symbol's running maximum; never crosses a
        # symbol, as a symbol's first row holds its own maximum.
        holder = np.maximum.accumulate(np.where(ts == running, np.arange(len(order)), 0))
        late[order[is_late]] = True
        late_line[order[is_late]] = lines[order[holder[np.flatnonzero(is_late) - 1]]]
    return late, late_line, descending


@dataclass
class _GridReport:
    timeframe_by_symbol: dict[str, int]
    n_misaligned: int = 0
    warnings: list[str] = field(default_factory=list)


def _grid_report(
    codes: np.ndarray, ts_ms: np.ndarray, lines: np.ndarray, accepted: np.ndarray,
    rows: np.ndarray, names: np.ndarray, declared_ms: int | None,
) -> _GridReport:
    """Bar spacing per symbol (median step), rows off the grid, rows closer than a bar.

    ``rows`` marks every readable, non-duplicate row (``names[codes]`` = symbol). The grid
    of a symbol is its most common ``ts % bar`` phase (a tie goes to the phase seen first
    in time), so a file whose bars all start at :41 s is one offset grid (said once), not
    200 misaligned rows. Numpy on the rows sorted by their packed (symbol, time) key: a
    few arrays of the rows' size, no frame copies and no group-by tables."""
    rows = np.flatnonzero(rows)
    if not len(rows):
        return _GridReport({})
    key = codes[rows].astype(np.int64)
    key <<= _TS_BITS
    key |= ts_ms[rows]
    order = np.argsort(key)  # keys are unique here: duplicates were left out
    rows = rows[order]  # the rows in (symbol, time) order
    key = key[order]
    del order
    code = (key >> _TS_BITS).astype(np.int32)
    key &= (1 << _TS_BITS) - 1
    ts = key  # times, in the same order
    del key
    n = len(rows)
    same = np.zeros(n, dtype=bool)  # same symbol as the row before
    same[1:] = code[1:] == code[:-1]
    step = np.zeros(n, dtype=np.int64)
    np.subtract(ts[1:], ts[:-1], out=step[1:])
    # Median step per symbol: steps within a symbol are positive (one row per time).
    spacing = code[same].astype(np.int64)
    spacing <<= _TS_BITS
    spacing |= step[same]
    spacing.sort()
    spacing_code = (spacing >> _TS_BITS).astype(np.int32)
    starts = np.flatnonzero(np.r_[True, spacing_code[1:] != spacing_code[:-1]]) if len(
        spacing) else np.zeros(0, dtype=np.int64)
    sizes = np.diff(np.append(starts, len(spacing)))
    low = spacing[starts + (sizes - 1) // 2] & ((1 << _TS_BITS) - 1)
    high = spacing[starts + sizes // 2] & ((1 << _TS_BITS) - 1)
    group_codes = spacing_code[starts]
    del spacing, spacing_code
    report = _GridReport({str(names[c]): int(round((float(a) + float(b)) / 2.0))
                          for c, a, b in zip(group_codes.tolist(), low.tolist(), high.tolist())})
    if len(set(report.timeframe_by_symbol.values())) > 1:
        listed = ", ".join(
            f"{s} {_format_duration(ms)}" for s, ms in report.timeframe_by_symbol.items()
        )
        report.warnings.append(f"symbols have different bar spacing: {listed}")
    bar_of_code = np.zeros(len(names), dtype=np.int64)  # 0 = no bar size known
    present = np.unique(code)
    if declared_ms is not None:
        unlike = {s: ms for s, ms in report.timeframe_by_symbol.items() if ms != declared_ms}
        if unlike:
            listed = ", ".join(f"{s} {_format_duration(ms)}" for s, ms in unlike.items())
            report.warnings.append(
                f"bars are spaced unlike the timeframe {_format_duration(declared_ms)}: {listed}"
            )
        bar_of_code[present] = declared_ms
    else:
        for c in group_codes.tolist():
            bar_of_code[c] = report.timeframe_by_symbol[str(names[c])]
    bar_sizes = np.unique(bar_of_code[present])
    if len(bar_sizes) == 1:  # the usual case: one bar size, no per-row array of it
        bar = int(bar_sizes[0])
        if not bar:
            return report
    else:
        bar = bar_of_code[code]
        has_bar = bar > 0
        if not has_bar.any():
            return report
        if not has_bar.all():
            part = np.flatnonzero(has_bar)
            rows, code, ts, bar = rows[part], code[part], ts[part], bar[part]
            same, step = same[part], step[part]
            del part
    close = same & (step < bar)
    del same, step
    phase = np.remainder(ts, bar, out=ts)  # ts is not needed any more
    # Most common phase per symbol, ties to the earliest: np.unique on packed (symbol,
    # phase) keys gives each pair's count and first position (the rows are in time order).
    pair = code.astype(np.int64)
    pair <<= _TS_BITS
    pair |= phase
    pairs, first_seen, counts = np.unique(pair, return_index=True, return_counts=True)
    del pair
    pair_code = pairs >> _TS_BITS
    best = np.lexsort((first_seen, -counts, pair_code))
    best = best[np.r_[True, pair_code[best][1:] != pair_code[best][:-1]]]
    usual = np.zeros(len(names), dtype=np.int64)
    usual[pair_code[best]] = pairs[best] & ((1 << _TS_BITS) - 1)
    off_grid = phase != usual[code]
    for c in np.unique(code).tolist():
        if usual[c]:
            report.warnings.append(
                f"bars of {names[c]} start {_format_duration(int(usual[c]))} after the "
                f"{_format_duration(int(bar_of_code[c]))} boundary"
            )
    report.n_misaligned = int(off_grid.sum())
    for size in np.unique(bar).tolist():
        hit = off_grid & (bar == size)
        if hit.any():
            n_kept = int(accepted[rows[hit]].sum())
            report.warnings.append(
                f"{int(hit.sum()):,} rows not aligned to {_format_duration(size)} (first at line "
                f"{int(lines[rows[hit]].min())}; {n_kept:,} of them accepted)"
            )
    if close.any():
        first_bar = bar if np.isscalar(bar) else bar[np.argmax(close)]
        report.warnings.append(
            f"{int(close.sum()):,} rows start less than one bar "
            f"({_format_duration(int(first_bar))}) after the previous row of their "
            f"symbol (first at line {int(lines[rows[close]].min())}): the file may mix bar sizes"
        )
    return report


def _rejected_bars_table(reasons: _Reasons, lines: np.ndarray, table: _CsvTable
                         ) -> pd.DataFrame:
    """row, reason and the raw cells under the file's column names."""
    names = [
        f"raw_{name or i + 1}" if not name or name.lower() in ("row", "reason") else name
        for i, name in enumerate(table.header)
    ]
    joined = reasons.joined()
    positions = joined.index.to_numpy(dtype=np.int64)
    # Arrow text columns, built one column at a time: a file with half a million rejected
    # rows would otherwise hold millions of Python strings here.
    out = {"row": lines[positions], "reason": pd.Series(pd.array(joined.array, dtype="str"))}
    del joined
    for i, name in enumerate(names):
        out[name] = _text_column(lambda rows, i=i: table.row_texts(rows, i), positions)
    out = pd.DataFrame(out, copy=False)
    if not table.ragged:
        return out  # rows in file order already
    width = len(names)
    ragged = pd.DataFrame(
        [[reason, *(fields + [""] * width)[:width]] for _, reason, fields in table.ragged],
        columns=["reason", *names], dtype="str",
    )
    ragged.insert(0, "row", np.asarray([line for line, _, _ in table.ragged], dtype=np.int64))
    out = pd.concat([out, ragged], ignore_index=True)
    return out.sort_values("row", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------- ticks


def _failed_ticks(filename: str, error: str, n_rows: int, fmt: str) -> TickUpload:
    trades = pd.DataFrame(
        {
            "symbol": pd.Series([], dtype="str"),
            "trade_id": pd.Series([], dtype=np.int64),
            "ts": pd.Series([], dtype=np.int64),
            "price": pd.Series([], dtype=np.float64),
            "qty": pd.Series([], dtype=np.float64),
            "is_buyer_maker": pd.Series([], dtype="Int8"),
        }
    )
    rejected = pd.DataFrame(
        {
            "line": pd.Series([], dtype=np.int64),
            "reason": pd.Series([], dtype=object),
            "raw": pd.Series([], dtype=object),
        }
    )
    return TickUpload(
        trades=trades,
        rejected=rejected,
        n_rows=n_rows,
        n_accepted=0,
        n_rejected=0,
        n_filtered_zero=0,
        n_repeated=0,
        trades_by_symbol={},
        symbols=(),
        format=fmt,
        side_known=False,
        time_format="none",
        warnings=(),
        ok=False,
        error=error,
        filename=filename,
    )


@dataclass
class _TickColumns:
    """The four (five) tick fields of a file, whatever its format, one entry per row."""

    symbol: pd.Series  # stripped text
    time: pd.Series  # stripped text
    price: pd.Series | _NumberCells  # text, or numbers (NDJSON numbers, fast CSV reader)
    qty: pd.Series | _NumberCells
    side: pd.Series | None  # stripped text
    qty_name: str  # the file's name for the size, used in messages
    lines: np.ndarray
    raw_for: Callable[[np.ndarray], list[str]]  # row positions -> line content
    early_rejects: list[tuple[int, str, str]]  # (line, reason, raw) found while reading
    ignored: list[str]
    n_blank: int

    def head(self, n: int) -> _TickColumns:
        """The first ``n`` rows (and the early rejects among their lines)."""
        last = int(self.lines[n - 1]) if len(self.lines) >= n else np.iinfo(np.int64).max

        return _TickColumns(
            _head(self.symbol, n), _head(self.time, n), _head(self.price, n),
            _head(self.qty, n), _head(self.side, n), self.qty_name, self.lines[:n], self.raw_for,
            [row for row in self.early_rejects if row[0] <= last], self.ignored, 0,
        )


def parse_tick_file(
    data,
    *,
    filename: str = "ticks.ndjson",
    naive_timezone: str = "UTC",
    max_bytes: int | None = DEFAULT_MAX_UPLOAD_BYTES,
) -> TickUpload:
    """Parse and validate an uploaded file of individual trades.

    Parameters
    ----------
    data : bytes, str, path-like or file-like
        As for ``parse_ohlc_csv``.
    filename : str
        Name shown in messages and kept on the result.
    naive_timezone : str
        IANA zone of times written without a zone (none of the known formats has them).
    max_bytes : int or None, default 200 MB
        As for ``parse_ohlc_csv``.

    Returns
    -------
    TickUpload
        Accepted trades with sequential per-symbol ``trade_id``, rejected lines, counts,
        warnings, ``ok`` and ``error``.

    Raises
    ------
    ValueError
        For invalid arguments only.

    Notes
    -----
    The format is told from the content: a first character ``{`` means NDJSON, one object
    per line, as written by the browser tick collector::

        {"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,"size":0.054}

    (keys qty/quantity, timestamp/time and is_buyer_maker are accepted too). Anything else
    is CSV with a header: ``symbol,ts,price,size`` (ts ISO-8601 with zone) or
    ``timestamp,symbol,price,qty`` (timestamp epoch ms), optionally ``is_buyer_maker``
    (true/false/1/0). Times follow the rules of ``parse_ohlc_csv``.

    Rows with price == 0 and size == 0 are futures "NA" placeholders: counted in
    ``n_filtered_zero`` and left out before any other check. A row is rejected when its
    symbol or time is missing or unreadable, price or size is missing, not a finite number
    or not positive, or is_buyer_maker is not a boolean. Identical rows are all kept (the
    files have no trade ids; 15-25 % of futures rows are such repeats).
    """
    _check_timezone(naive_timezone)
    fmt = "unknown"
    try:
        raw, encoding = _read_bytes(data, max_bytes)
        if not raw.strip():
            raise _UploadError("the file is empty")
        fmt = "ndjson" if raw.lstrip().startswith(b"{") else "csv"
        columns = _read_ndjson(raw) if fmt == "ndjson" else _read_tick_csv(raw)
        del raw
        if len(columns.lines) + len(columns.early_rejects) > 2 * _PROBE_ROWS:
            _refuse_if_hopeless(
                lambda: _validate_ticks(columns.head(_PROBE_ROWS), fmt, filename, naive_timezone),
                len(columns.lines) + len(columns.early_rejects),
            )
        return _with_encoding_note(_validate_ticks(columns, fmt, filename, naive_timezone),
                                   encoding)
    except _UploadError as exc:
        return _failed_ticks(filename, str(exc), exc.n_rows, fmt)
    except _BadArgument:
        raise
    except (ValueError, TypeError, ArithmeticError, RecursionError, UnicodeError) as exc:
        return _failed_ticks(filename, _internal_error(exc), 0, fmt)


def _json_error(line: str) -> str:
    """Why a line is not JSON, in the words of the standard library's decoder when it
    has some, else orjson's (which also refuses what the standard library lets through:
    NaN/Infinity, numbers beyond a double such as 1e400, lone surrogates like \\ud800,
    nesting deeper than 1024)."""
    try:
        json.loads(line)
    except json.JSONDecodeError as exc:
        return exc.msg
    except RecursionError:
        return "nested too deeply"
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return str(exc).split(";")[0]
    if re.search(r"\b(?:NaN|-?Infinity)\b", line):
        return "NaN and Infinity are not JSON numbers"
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return exc.msg
    return "not readable"


def _json_cells(values: list) -> pd.Series:
    """One chunk of one key's values as a column: float64 when every value is a JSON
    number, else text (numbers keep their digits, a missing key is "", true is "True")."""
    if values and all(type(v) in (int, float) for v in values):
        return pd.Series(np.array(values, dtype=np.float64))
    texts = [
        "" if v is None else (v.strip() if type(v) is str else str(v)) for v in values
    ]
    return pd.Series(texts, dtype="str")


def _concat_cells(chunks: list[pd.Series]) -> pd.Series:
    """Chunks of one key as one column: numbers when all chunks are, else text."""
    if not chunks:
        return pd.Series([], dtype="str")
    if not all(pd.api.types.is_float_dtype(c.dtype) for c in chunks):
        chunks = [c if not pd.api.types.is_float_dtype(c.dtype) else _as_text(c) for c in chunks]
    return pd.concat(chunks, ignore_index=True)


def _iter_lines(raw: bytes):
    """(line number, start offset, end offset) of each line of ``raw``, without holding
    a list of all lines (a 1 M-line file would cost ~100 bytes per line)."""
    position, number, size = 0, 0, len(raw)
    while position < size:
        end = raw.find(b"\n", position)
        if end < 0:
            end = size
        number += 1
        yield number, position, end
        position = end + 1


_JSON_CHUNK_LINES = 50_000
_PROBE_ROWS = 10_000  # a file none of whose first rows is usable is refused after them


def _read_ndjson(raw: bytes) -> _TickColumns:
    """NDJSON -> tick columns, decoded in chunks of 50,000 lines so that only one chunk's
    Python objects exist at a time; the kept columns are compact (float64 or Arrow text)."""
    alias_of = {key: name for name, keys in _NDJSON_KEYS.items() for key in keys}
    chunks: dict[str, list[pd.Series]] = {}  # key -> column chunks (aliases of our fields)
    seen_keys: dict[str, None] = {}  # every key in order of first appearance
    kept_numbers: list[np.ndarray] = []  # line number of each object, chunk by chunk
    early: list[tuple[int, str, str]] = []
    n_rows = n_objects = 0
    records: list[dict] = []
    numbers: list[int] = []  # line numbers of the objects in ``records``

    def flush() -> None:
        if not numbers:
            return
        keys_here = dict.fromkeys(k for record in records for k in record)
        seen_keys.update(keys_here)
        for key in list(chunks) + [k for k in keys_here if k in alias_of and k not in chunks]:
            column = _json_cells([record.get(key) for record in records])
            if key not in chunks:  # first chunk holding this key: earlier rows lack it
                done = sum(len(c) for c in kept_numbers)
                chunks[key] = [pd.Series([""] * done, dtype="str")] if done else []
            chunks[key].append(column)
        kept_numbers.append(np.asarray(numbers, dtype=np.int64))
        records.clear()
        numbers.clear()

    for number, start, end in _iter_lines(raw):
        line = raw[start:end].strip()
        if not line:
            continue
        n_rows += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            text = line.decode("utf-8")
            early.append((number, f"invalid JSON ({_json_error(text)})", text[:_RAW_LINE_LIMIT]))
            record = None
        if record is not None and not isinstance(record, dict):
            early.append((number, "not a JSON object", line.decode("utf-8")[:_RAW_LINE_LIMIT]))
        elif record is not None:
            records.append(record)
            numbers.append(number)
            n_objects += 1
        if len(numbers) >= _JSON_CHUNK_LINES:
            flush()
        if n_rows == _PROBE_ROWS and n_objects == 0:
            raise _UploadError(
                f"none of the first {_PROBE_ROWS:,} lines is a JSON object (line "
                f"{early[0][0]}: {early[0][1]}): is this an NDJSON file of trades?",
                n_rows,
            )
    flush()

    picked: dict[str, str | None] = {}
    for name, keys in _NDJSON_KEYS.items():
        present = [k for k in keys if k in seen_keys]
        if len(present) > 1:
            raise _UploadError(
                f"several keys could be the {name} ({', '.join(present)}): keep one", n_rows
            )
        picked[name] = present[0] if present else None
    if not n_objects:
        first = f" (line {early[0][0]}: {early[0][1]})" if early else ""
        raise _UploadError(f"no line of the file is a JSON object{first}", n_rows)
    for name, wanted in (("symbol", "symbol"), ("time", "ts"), ("price", "price"), ("qty", "size")):
        if picked[name] is None:
            found = ", ".join(map(str, seen_keys))
            raise _UploadError(f"missing required key '{wanted}' (found: {found})", n_rows)
    lines = np.concatenate(kept_numbers)
    del kept_numbers

    def raw_for(positions: np.ndarray) -> list[str]:
        """The lines of some objects, found again in the bytes (no offsets kept)."""
        asked = lines[np.asarray(positions, dtype=np.int64)]
        if not len(asked):
            return []
        starts, ends = _line_spans(raw, asked)
        return [raw[start:end].decode("utf-8").strip()[:_RAW_LINE_LIMIT]
                for start, end in zip(starts.tolist(), ends.tolist())]

    columns = {name: _concat_cells(chunks.pop(key)) for name, key in picked.items() if key}
    return _TickColumns(
        symbol=_as_text(columns["symbol"]),
        time=_json_times(columns.pop("time")),
        price=columns["price"],
        qty=columns["qty"],
        side=_as_text(columns["side"]) if "side" in columns else None,
        qty_name=picked["qty"],
        lines=lines,
        raw_for=raw_for,
        early_rejects=early,
        ignored=[str(c) for c in seen_keys if c not in picked.values()],
        n_blank=0,
    )


def _json_times(values: pd.Series) -> pd.Series | _NumberCells:
    """An NDJSON file's times: a column of JSON numbers stays float64 (``_NumberCells``;
    the text a message quotes is written as ``_json_time_text`` does, for those rows only)
    instead of a million numbers turned into text and parsed back; anything else is text."""
    if not pd.api.types.is_float_dtype(values.dtype):
        return _json_time_text(values)
    numbers = np.array(values.to_numpy(dtype=np.float64))  # writable: _parse_times edits it
    return _NumberCells(numbers, np.zeros(len(numbers), dtype=bool),
                        lambda positions: _json_time_text(values.iloc[positions]).tolist())


def _json_time_text(values: pd.Series) -> pd.Series:
    """Times as text; JSON integers keep their digits ("1765912493266", not "1.76e+12")."""
    if pd.api.types.is_float_dtype(values.dtype):
        # Only exact integers (|v| < 2**53) are written as digits; inf and 1e30 stay floats
        # and are rejected by the time rules, never cast to a wrapped-around int64.
        with np.errstate(invalid="ignore"):
            whole = values.notna() & (values == np.floor(values)) & (values.abs() < 2.0**53)
        values = values.astype(object).where(~whole, values.where(whole, 0).astype(np.int64))
    return _as_text(values)


def _tick_kinds(header: list[str], first_row: list[str]) -> dict[int, str] | None:
    """The columns the tick validator reads (price and size as numbers); None = keep all as
    text (a header it refuses: it says why with the row count)."""
    try:
        positions = _tick_positions(header, 0)
    except _UploadError:
        return None
    kinds = {position: "number" if name in ("price", "qty") else "text"
             for name, position in positions.items() if position is not None}
    kinds[positions["symbol"]] = "category"
    kinds[positions["time"]] = _time_kind(first_row, positions["time"])
    return kinds


def _tick_positions(header: list[str], n_rows: int) -> dict[str, int | None]:
    """Column position of each tick field (None = absent); errors for an unusable header."""
    lowered = [name.lower() for name in header]
    found = ", ".join(header)
    if _looks_like_data(header):
        raise _UploadError(
            "the first line looks like data, not column names: add a header such as "
            "symbol,ts,price,size",
            n_rows,
        )
    positions = {
        "symbol": _find_column(lowered, ("symbol",), "symbol", n_rows),
        "time": _find_column(lowered, TICK_TIME_ALIASES, "time", n_rows),
        "price": _find_column(lowered, ("price",), "price", n_rows),
        "qty": _find_column(lowered, TICK_QTY_ALIASES, "size", n_rows),
        "side": _find_column(lowered, TICK_SIDE_ALIASES, "is_buyer_maker", n_rows),
    }
    for name, wanted in (("symbol", "symbol"), ("time", "ts"), ("price", "price"), ("qty", "size")):
        if positions[name] is None:
            raise _UploadError(f"missing required column '{wanted}' (found: {found})", n_rows)
    return positions


def _read_tick_csv(raw: bytes) -> _TickColumns:
    table = _read_csv_table(raw, _tick_kinds)
    n_rows = len(table) + len(table.ragged)
    positions = _tick_positions(table.header, n_rows)
    cells = table.columns
    used = {p for p in positions.values() if p is not None}
    row_texts = table.row_texts

    def raw_for(rows: np.ndarray) -> list[str]:
        return [",".join(fields)[:_RAW_LINE_LIMIT] for fields in row_texts(rows)]

    return _TickColumns(
        symbol=cells[positions["symbol"]],
        time=cells[positions["time"]],
        price=cells[positions["price"]],
        qty=cells[positions["qty"]],
        side=cells[positions["side"]] if positions["side"] is not None else None,
        qty_name=table.header[positions["qty"]].lower(),
        lines=table.lines,
        raw_for=raw_for,
        early_rejects=[
            (line, reason, ",".join(fields)[:_RAW_LINE_LIMIT])
            for line, reason, fields in table.ragged
        ],
        ignored=[table.header[i] for i in range(len(table.header)) if i not in used],
        n_blank=table.n_blank,
    )


def _validate_ticks(
    columns: _TickColumns, fmt: str, filename: str, naive_timezone: str
) -> TickUpload:
    n = len(columns.lines)
    n_rows = n + len(columns.early_rejects)
    if n_rows == 0:
        raise _UploadError("the file has a header but no trades")
    price = _to_float(columns.price)
    qty = _to_float(columns.qty)
    # Placeholders are not trades: left out before any other check.
    placeholder = (price == 0) & (qty == 0)
    live = ~placeholder
    time_reasons = _Reasons(n)
    times = _parse_times(columns.time, columns.lines, naive_timezone, time_reasons)
    reasons = _Reasons(n)
    reasons.merge(time_reasons, live)  # a placeholder's time does not matter
    del time_reasons
    # A column is dropped once its checks are done (the raw lines are read again).
    columns.time = None
    codes, names = _symbol_codes(columns.symbol, n, None)
    _check_symbols(codes, names, columns.symbol, reasons, active=live)
    columns.symbol = None
    for column, name in ((columns.price, "price"), (columns.qty, columns.qty_name)):
        _check_numbers(column, name, reasons, required=True, rule="positive", active=live)
    columns.price = columns.qty = None  # price and qty hold the values
    side, side_known = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=bool)
    if columns.side is not None:
        lowered = pa_compute.utf8_lower(pa.array(columns.side.array))
        is_true = pa_compute.is_in(lowered, value_set=pa.array(
            [k for k, v in _SIDE_VALUES.items() if v == 1])).to_numpy(zero_copy_only=False)
        is_false = pa_compute.is_in(lowered, value_set=pa.array(
            [k for k, v in _SIDE_VALUES.items() if v == 0])).to_numpy(zero_copy_only=False)
        del lowered
        side_known = np.asarray(is_true | is_false, dtype=bool)
        side[np.asarray(is_true, dtype=bool)] = 1
        bad = live & ~_is_empty(columns.side) & ~side_known
        reasons.add(bad, "is_buyer_maker '", columns.side, "' is not true/false")
        columns.side = None
    accepted = live & ~reasons.flagged() & times.ok

    joined = reasons.joined()
    positions = joined.index.to_numpy(dtype=np.int64)
    rejected = pd.DataFrame(
        {
            "line": columns.lines[positions],
            "reason": pd.Series(pd.array(joined.array, dtype="str")),
            "raw": _text_column(columns.raw_for, positions),  # Arrow text, not objects
        },
        copy=False,
    )
    del joined
    if columns.early_rejects:
        early = pd.DataFrame([(reason, raw) for _, reason, raw in columns.early_rejects],
                             columns=["reason", "raw"], dtype="str")
        early.insert(0, "line", np.asarray([line for line, _, _ in columns.early_rejects],
                                           dtype=np.int64))
        rejected = pd.concat([rejected, early], ignore_index=True)
        rejected = rejected.sort_values("line", kind="stable").reset_index(drop=True)
    # The bytes kept for the raw lines are no longer needed: released before the trades
    # are built. The columns are this function's private input; nobody reads them after.
    columns.raw_for = None

    # The trades' columns one at a time, each input released once taken.
    kept = np.flatnonzero(accepted)
    ts = times.ts_ms[kept]
    warnings = _time_warnings(times, naive_timezone)
    time_format = times.time_format
    del times
    symbol_code = codes[kept]
    del codes
    price, qty = price[kept], qty[kept]
    side, side_known = side[kept], side_known[kept]
    # File order within each symbol: one stable sort serves the trade ids and the check for
    # trades earlier than their symbol's previous one (no group-by on a million strings).
    by_symbol = np.argsort(symbol_code, kind="stable")
    ordered_code = symbol_code[by_symbol]
    new_symbol = np.ones(len(kept), dtype=bool)
    new_symbol[1:] = ordered_code[1:] != ordered_code[:-1]
    del ordered_code
    first = np.flatnonzero(new_symbol)
    rank = np.arange(len(kept), dtype=np.int64)
    rank -= np.repeat(first, np.diff(np.append(first, len(kept))))
    trade_id = np.empty(len(kept), dtype=np.int64)
    trade_id[by_symbol] = rank + 1
    del rank
    ordered_ts = ts[by_symbol]
    back = np.zeros(len(kept), dtype=bool)
    back[1:] = ~new_symbol[1:] & (ordered_ts[1:] < ordered_ts[:-1])
    going_back = by_symbol[back]  # positions among the accepted trades
    del ordered_ts, new_symbol, back, by_symbol
    n_repeated = _count_repeats(symbol_code, ts, price, qty)
    counts = np.bincount(symbol_code, minlength=len(names))
    symbol_names = pa.array(names.tolist(), pa.large_string())
    trades = pd.DataFrame(
        {
            "symbol": pd.array(symbol_names.take(pa.array(symbol_code)), dtype="str"),
            "trade_id": trade_id,
            "ts": ts,
            "price": price,
            "qty": qty,
            "is_buyer_maker": pd.arrays.IntegerArray(side, ~side_known),
        },
        copy=False,  # fresh arrays: no need to copy the int and float columns into blocks
    )
    del symbol_code, trade_id, ts, price, qty, side
    n_filtered_zero = int(placeholder.sum())
    if n_filtered_zero:
        warnings.append(
            f"{n_filtered_zero:,} rows with price 0 and {columns.qty_name} 0 excluded "
            "(placeholder frames, not trades)"
        )
    n_accepted = len(trades)
    n_unknown_side = int((~side_known).sum())
    if n_unknown_side:
        warnings.append(
            f"side unknown on {n_unknown_side:,} trades: buy/sell imbalance and taker-buy "
            "volume are meaningless for this upload (is_buyer_maker stored as 0)"
        )
    if n_repeated:
        warnings.append(
            f"{n_repeated:,} trades repeat an earlier trade's symbol, time, price and "
            f"{columns.qty_name}: kept as distinct trades (the file has no trade ids)"
        )
    if len(going_back):
        first = int(columns.lines[kept[going_back.min()]])
        warnings.append(
            f"{len(going_back):,} trades are earlier than the previous trade of their "
            f"symbol (first at line {first}): kept; bars use each trade's own time"
        )
    if columns.ignored:
        label = "keys" if fmt == "ndjson" else "columns"
        warnings.append(f"ignored {label}: " + ", ".join(columns.ignored))
    if columns.n_blank:
        warnings.append(f"{columns.n_blank:,} blank lines skipped")

    error = None
    if not n_accepted:
        error = (
            f"no trade passed validation ({len(rejected):,} rejected, "
            f"{n_filtered_zero:,} placeholders)"
        )
    return TickUpload(
        trades=trades,
        rejected=rejected,
        n_rows=n_rows,
        n_accepted=n_accepted,
        n_rejected=len(rejected),
        n_filtered_zero=n_filtered_zero,
        n_repeated=n_repeated,
        trades_by_symbol={str(names[c]): int(counts[c]) for c in np.flatnonzero(counts)},
        symbols=tuple(str(names[c]) for c in np.flatnonzero(counts)),  # names are sorted
        format=fmt,
        side_known=n_accepted > 0 and n_unknown_side == 0,
        time_format=time_format,
        warnings=tuple(warnings),
        ok=n_accepted > 0,
        error=error,
        filename=filename,
    )


def _count_repeats(symbol_code: np.ndarray, ts: np.ndarray, price: np.ndarray,
                   qty: np.ndarray) -> int:
    """Trades equal in (symbol, ts, price, qty) to an earlier one: the same count as
    ``trades.duplicated([...]).sum()`` without pandas' hash tables of four columns (about
    90 MB for a million trades). Sorting by the four keys puts equal trades side by side;
    every row equal to its predecessor in that order repeats an earlier trade."""
    if len(ts) < 2:
        return 0
    keys = [symbol_code, ts, price, qty]
    order = np.lexsort(keys[::-1])
    same = np.ones(len(order) - 1, dtype=bool)
    for key in keys:
        ordered = key[order]
        equal = ordered[1:] == ordered[:-1]
        if ordered.dtype.kind == "f":  # NaN equals NaN here, as in pandas
            equal |= np.isnan(ordered[1:]) & np.isnan(ordered[:-1])
        same &= equal
    return int(same.sum())


def to_trade_tuples(trades: pd.DataFrame, received_ms: int) -> list[tuple]:
    """Turn accepted uploaded trades into the project's trade records.

    Parameters
    ----------
    trades : DataFrame
        ``TickUpload.trades`` (columns symbol, trade_id, ts, price, qty, is_buyer_maker).
    received_ms : int
        Local receive time stamped on every record (epoch ms), e.g. the upload time.

    Returns
    -------
    list of tuple
        ``(symbol: str, trade_id: int, ts: int, price: float, qty: float,
        is_buyer_maker: int, received_ms: int)`` in the frame's order, plain Python types.

    Raises
    ------
    ValueError
        When received_ms is not a non-negative int or a column is missing.

    Notes
    -----
    The record contract needs is_buyer_maker as int 0/1; an unknown side (<NA>) is written
    as 0, so every such trade counts as a taker buy downstream and the buy/sell imbalance is
    meaningless. That is why ``TickUpload.side_known`` is False and its warnings say so.
    """
    is_int = isinstance(received_ms, (int, np.integer)) and not isinstance(received_ms, bool)
    if not is_int or received_ms < 0:
        raise ValueError(
            f"received_ms ({received_ms!r}) must be a non-negative int of epoch milliseconds"
        )
    missing = [c for c in TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise ValueError(f"trades is missing columns {missing} (expected {list(TRADE_COLUMNS)})")
    side = trades["is_buyer_maker"].astype("Int8").fillna(0).astype(np.int64)
    return list(
        zip(
            trades["symbol"].astype(str).tolist(),
            trades["trade_id"].astype(np.int64).tolist(),
            trades["ts"].astype(np.int64).tolist(),
            trades["price"].astype(np.float64).tolist(),
            trades["qty"].astype(np.float64).tolist(),
            side.tolist(),
            repeat(int(received_ms)),
        )
    )
