"""Downloads in every format users ask for: CSV, JSON, Parquet and Excel.

One entry point, ``export(frame, fmt)``, used by the page's download buttons and by the
REST API (``/api/bars?format=parquet``), so a file from either is the same file.

What every export guarantees
    * Times: ``ts``-like columns stay int64 UTC epoch ms in every format; CSV and Excel
      also carry an ISO ``time`` column (in the chosen zone) for people.
    * Numbers without float noise: floats are rounded to ``SIGNIFICANT_DIGITS`` (15)
      significant digits, which removes the one-ulp residue of arithmetic
      (0.25000000000000006 -> 0.25) and keeps every digit a price or quantity has.
    * Size: each format has a row cap (``MAX_ROWS``); a larger table raises
      ``ExportTooLarge`` with a message saying how many rows there are and what to do, so
      the page shows a message instead of freezing on a 300 MB build.
    * The forming bar: ``closed_only`` / ``bars_for_export`` leave out a bar while it may
      still grow (its interval has not ended 0.5 s ago), unless asked; then the bar is kept
      and flagged ``forming = True``.
    * CSV and Excel text cells that a spreadsheet would run as a formula are neutralised
      by ``dashboard_data.spreadsheet_safe``: CSV is written by the page's CSV writer
      (``dashboard_data.to_csv_bytes``, which applies it), Excel applies it here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

import dashboard_data as dd
import database
from alerts import last_complete_bar

FORMATS = ("csv", "json", "parquet", "xlsx")
FORMAT_LABELS = {"csv": "CSV", "json": "JSON", "parquet": "Parquet", "xlsx": "Excel"}
MIME = {"csv": "text/csv", "json": "application/json",
        "parquet": "application/vnd.apache.parquet",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
# Rows per file. Excel stops at 1,048,576 rows and openpyxl writes ~50k rows/s; a day of
# 1 s bars (86,400 rows) fits every format, a day of ticks (millions) only Parquet.
MAX_ROWS = {"csv": 2_000_000, "json": 1_000_000, "parquet": 10_000_000, "xlsx": 200_000}
SIGNIFICANT_DIGITS = 15


class ExportTooLarge(ValueError):
    """The table has more rows than the format's cap (``MAX_ROWS``)."""


@dataclass(frozen=True)
class Export:
    data: bytes
    mime: str
    extension: str
    rows: int


def round_significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """Floats rounded to ``digits`` significant digits (NaN and infinities kept).

    Scaling by an exact power of ten, rounding, and dividing back is correctly rounded
    in IEEE arithmetic, so 0.1 + 0.2 gives the double nearest to 0.3 (the one ``0.3``
    parses to), which prints as ``0.3``.
    """
    values = np.asarray(values, dtype=np.float64)
    out = values.copy()
    finite = np.isfinite(values) & (values != 0)
    if not finite.any():
        return out
    magnitude = np.floor(np.log10(np.abs(values[finite]))).astype(np.int64)
    shift = digits - 1 - magnitude  # decimals to keep
    v = values[finite]
    result = np.empty_like(v)
    up = shift >= 0
    scale_up = np.power(10.0, np.minimum(shift[up], 300))
    result[up] = np.round(v[up] * scale_up) / scale_up
    scale_down = np.power(10.0, -shift[~up])
    result[~up] = np.round(v[~up] / scale_down) * scale_down
    # A product that overflowed (tiny numbers near the float limit): keep the value.
    bad = ~np.isfinite(result)
    result[bad] = v[bad]
    out[finite] = result
    return out


def denoised(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every float column rounded by ``round_significant``."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column].dtype):
            out[column] = round_significant(out[column].to_numpy(dtype=np.float64))
    return out


def json_records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts of plain Python values: NaN -> None, floats denoised, ints as ints."""
    return _plain_records(denoised(frame))


def _plain_records(clean: pd.DataFrame) -> list[dict]:
    """``json_records`` of a table whose floats are already denoised."""
    columns = {}
    for column in clean.columns:
        series = clean[column]
        if pd.api.types.is_float_dtype(series.dtype):
            values = series.to_numpy(dtype=np.float64)
            columns[column] = [None if not math.isfinite(v) else v for v in values.tolist()]
        elif pd.api.types.is_bool_dtype(series.dtype):
            columns[column] = [bool(v) for v in series.tolist()]
        else:
            columns[column] = [None if v is None or (isinstance(v, float) and math.isnan(v))
                               else v for v in series.tolist()]
    names = [str(c) for c in clean.columns]
    return [dict(zip(names, row)) for row in zip(*columns.values())] if len(clean) else []


def _check_size(frame: pd.DataFrame, fmt: str) -> None:
    message = cap_message(len(frame), fmt)
    if message:
        raise ExportTooLarge(message)


def export(frame: pd.DataFrame, fmt: str, *, tz: str = "UTC",
           ts_column: str | None = None) -> Export:
    """The table as a file in ``fmt`` (one of ``FORMATS``).

    Parameters
    ----------
    frame : pandas.DataFrame
        A table indexed by ``ts`` (bars, analytics) or with a ``ts``-like column named by
        ``ts_column`` (ticks, trades, positions); a default RangeIndex is dropped.
    fmt : {"csv", "json", "parquet", "xlsx"}
    tz : str
        Zone of the readable ``time`` column of CSV and Excel.
    ts_column : str or None
        Column that holds the epoch-ms time when the index is not ``ts``.

    Raises
    ------
    ValueError
        An unknown format. ``ExportTooLarge`` (a ValueError) above the format's row cap.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format ({fmt!r}) must be one of {', '.join(FORMATS)}")
    _check_size(frame, fmt)
    clean = denoised(frame)
    table = clean.reset_index() if clean.index.name else clean.reset_index(drop=True)
    if fmt == "csv":
        data = dd.to_csv_bytes(table, tz, ts_column=ts_column or _ts_column(table))
    elif fmt == "json":
        import orjson
        data = orjson.dumps(_plain_records(table))  # denoised above
    elif fmt == "parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        data = buffer.getvalue()
    else:
        data = _excel_bytes(table, tz, ts_column or _ts_column(table))
    return Export(data=data, mime=MIME[fmt], extension=fmt, rows=len(table))


def _ts_column(table: pd.DataFrame) -> str | None:
    return "ts" if "ts" in table.columns else None


def _excel_bytes(table: pd.DataFrame, tz: str, ts_column: str | None) -> bytes:
    """One sheet, a readable ``time`` column first (as text: Excel has no time zones)."""
    readable = dd.with_time_column(table, tz, ts_column=ts_column) if ts_column else table
    safe = dd.spreadsheet_safe(readable)
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        safe.to_excel(writer, index=False, sheet_name="data")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# What the page and the API export
# --------------------------------------------------------------------------------------


def closed_only(frame: pd.DataFrame, timeframe: str, now_ms: int, include_forming: bool
                ) -> pd.DataFrame:
    """A ``ts``-indexed table of bars without the forming bar, or with a ``forming``
    column (True on a bar that may still grow) when ``include_forming``.

    A bar is closed once its interval ended ``alerts.BAR_SETTLE_MS`` (0.5 s) ago: the
    collector writes every 0.25 s, so its last trades are in (the alert evaluator's rule,
    ``alerts.last_complete_bar``). A replay's recorded times lie in the past: all its bars
    count as closed."""
    is_forming = frame.index > last_complete_bar(now_ms, timeframe)
    if include_forming:
        return frame.assign(forming=is_forming)
    return frame[~is_forming]


def bars_for_export(conn, symbol: str, timeframe: str, start_ms: int | None = None,
                    end_ms: int | None = None, *, include_forming: bool = False,
                    now_ms: int | None = None) -> pd.DataFrame:
    """``database.read_bars`` without the forming bar, or with it flagged (``closed_only``)."""
    bars = database.read_bars(conn, symbol, start_ms, end_ms, timeframe)
    return closed_only(bars, timeframe, dd.now_ms() if now_ms is None else now_ms,
                       include_forming)


def by_symbol(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables of several symbols as one, with a ``symbol`` column first (index kept)."""
    frames = [table.assign(symbol=symbol) for symbol, table in tables.items() if len(table)]
    if not frames:
        first = next(iter(tables.values()))
        frames = [first.assign(symbol=pd.Series(dtype=object))]
    joined = pd.concat(frames)
    return joined[["symbol", *[c for c in joined.columns if c != "symbol"]]]


def cap_message(rows: int, fmt: str) -> str | None:
    """What to tell the user instead of a download above the format's cap, or None."""
    cap = MAX_ROWS[fmt]
    if rows <= cap:
        return None
    return (f"{rows:,} rows is more than the {FORMAT_LABELS[fmt]} cap of {cap:,} rows; "
            "choose a shorter lookback or a coarser timeframe"
            + ("" if fmt == "parquet" else ", or Parquet"))
