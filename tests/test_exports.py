"""exports.py: every format read back with pandas and checked against the database, the
float-noise rounding, the row caps and the forming-bar rule; the Data tab's format choice
(AppTest)."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import openpyxl
import pandas as pd
import pytest

import alerts
import dashboard_data as dd
import database
import exports
from page_helpers import closed_feed_env, download, media, page, run, \
    stop_page_services  # noqa: F401  (media is a fixture)

T0 = 1_765_000_000_000


@pytest.fixture
def db(tmp_path):
    """Three minutes of trades of two symbols, prices with two decimals."""
    path = str(tmp_path / "exports.db")
    rng = np.random.default_rng(3)
    rows = []
    for symbol, base in (("BTCUSDT", 87_000.0), ("ETHUSDT", 3_000.0)):
        ts = T0 + np.sort(rng.integers(0, 180_000, 600))
        prices = np.round(base + np.cumsum(rng.normal(0, 1, 600)), 2)
        for k in range(600):
            rows.append((symbol, k + 1, int(ts[k]), float(prices[k]), 0.013, k % 2, 0))
    with dd.writing(path) as conn:
        database.import_ticks(conn, rows)
    return path


def test_round_significant_removes_float_noise_only():
    values = np.array([0.1 + 0.2, 0.25000000000000006, 87_004.62957746479, 1e-9 / 3,
                       -2.5e20 / 3, 0.0, np.nan, np.inf, 3010.05])
    rounded = exports.round_significant(values).tolist()
    assert repr(rounded[0]) == "0.3" and repr(rounded[1]) == "0.25"
    assert repr(rounded[2]) == "87004.6295774648"
    assert rounded[3] == pytest.approx(1e-9 / 3, rel=1e-14)
    assert rounded[4] == pytest.approx(-2.5e20 / 3, rel=1e-14)
    assert rounded[5] == 0.0 and np.isnan(rounded[6]) and rounded[7] == np.inf
    assert rounded[8] == 3010.05  # a price keeps every digit


@pytest.mark.parametrize("fmt", exports.FORMATS)
def test_every_format_reads_back_equal_to_the_database(db, fmt):
    with dd.reading(db) as conn:
        bars = {s: database.read_bars(conn, s, None, None, "10s")
                for s in ("BTCUSDT", "ETHUSDT")}
    table = exports.by_symbol(bars)
    result = exports.export(table, fmt, tz="Asia/Tokyo")
    reader = {"csv": pd.read_csv, "parquet": pd.read_parquet, "xlsx": pd.read_excel,
              "json": lambda b: pd.DataFrame(json.load(b))}[fmt]
    back = reader(io.BytesIO(result.data))
    assert result.rows == len(back) == sum(len(b) for b in bars.values())
    assert result.mime == exports.MIME[fmt]
    for symbol, expected in bars.items():
        mine = back[back["symbol"] == symbol].set_index("ts")
        assert mine.index.tolist() == expected.index.tolist()  # epoch ms in every format
        for column in ("open", "high", "low", "close", "trades"):
            assert mine[column].tolist() == expected[column].tolist(), column
        for column in ("volume", "vwap"):  # sums and ratios: float noise rounded off
            assert mine[column].to_numpy() == pytest.approx(expected[column].to_numpy(),
                                                            rel=1e-14)
    if fmt in ("csv", "xlsx"):  # a readable time column in the chosen zone
        assert back.columns[0] == "time"
        first = pd.Timestamp(int(back["ts"].iloc[0]), unit="ms", tz="UTC")
        assert back["time"].iloc[0] == first.tz_convert("Asia/Tokyo").isoformat(
            timespec="milliseconds")


def test_ticks_and_a_table_with_a_time_column(db):
    with dd.reading(db) as conn:
        ticks = database.read_ticks(conn, "ETHUSDT", 0)
    back = pd.read_parquet(io.BytesIO(exports.export(ticks, "parquet").data))
    pd.testing.assert_frame_equal(back, ticks)
    trades = pd.DataFrame({"entry_ts": [T0, T0 + 1000], "pnl": [0.1 + 0.2, -1 / 3]})
    csv = pd.read_csv(io.BytesIO(exports.export(trades, "csv", ts_column="entry_ts").data))
    assert list(csv.columns) == ["time", "entry_ts", "pnl"]
    assert csv["pnl"].tolist() == [0.3, -0.333333333333333]


def test_json_records_are_plain_values():
    frame = pd.DataFrame({"ts": np.array([T0], dtype=np.int64), "x": [np.nan],
                          "ok": [True], "name": ["a"]})
    assert exports.json_records(frame) == [{"ts": T0, "x": None, "ok": True, "name": "a"}]
    assert json.loads(exports.export(frame, "json").data) == [
        {"ts": T0, "x": None, "ok": True, "name": "a"}]


def test_excel_cells_that_look_like_formulas_are_neutralised():
    # Issue 12: cells starting with = + - @ that are not numbers; "+1" is a number and kept.
    frame = pd.DataFrame({"ts": [T0], "name": ["=HYPERLINK(\"http://x\")"],
                          "note": ["+cmd"], "number": ["+1"]})
    sheet = openpyxl.load_workbook(io.BytesIO(exports.export(frame, "xlsx").data)).active
    values = [cell.value for cell in sheet[2]]
    assert values[2].startswith("'=") and values[3] == "'+cmd" and values[4] == "+1"


def test_caps_raise_a_clear_message(monkeypatch):
    monkeypatch.setitem(exports.MAX_ROWS, "xlsx", 10)
    frame = pd.DataFrame({"ts": np.arange(11, dtype=np.int64), "v": np.ones(11)})
    assert exports.cap_message(10, "xlsx") is None
    with pytest.raises(exports.ExportTooLarge, match="11 rows .* Excel cap of 10 rows"):
        exports.export(frame, "xlsx")
    with pytest.raises(ValueError, match="format"):
        exports.export(frame, "xml")


def test_forming_bar_left_out_or_flagged(db):
    with dd.reading(db) as conn:
        newest = database.latest_bar_ts(conn, "BTCUSDT")
        minute = newest // 60_000 * 60_000
        # "now" inside the newest minute: that 1m bar is still forming
        closed = exports.bars_for_export(conn, "BTCUSDT", "1min", now_ms=minute + 30_000)
        flagged = exports.bars_for_export(conn, "BTCUSDT", "1min", include_forming=True,
                                          now_ms=minute + 30_000)
        # half a second after the minute ended it has closed (alerts.BAR_SETTLE_MS)
        later = exports.bars_for_export(conn, "BTCUSDT", "1min", now_ms=minute + 60_500)
        all_bars = database.read_bars(conn, "BTCUSDT", None, None, "1min")
    assert closed.index.tolist() == all_bars.index[:-1].tolist()
    assert flagged["forming"].tolist() == [False] * (len(all_bars) - 1) + [True]
    assert later.index.tolist() == all_bars.index.tolist()


@pytest.fixture
def live_page(tmp_path, monkeypatch):
    """A page on a database of trades up to a few seconds ago (the newest 1m bar forms)."""
    path = closed_feed_env(tmp_path, monkeypatch)
    # The newest minute must still form during the test, and the one before it must have
    # settled: in the first alerts.BAR_SETTLE_MS of a minute the bar that just ended counts
    # as forming too (its last trades may still be written), and the exports leave it out.
    settled_after_ms = alerts.BAR_SETTLE_MS + 1_000
    into_minute = dd.now_ms() % 60_000
    if into_minute > 45_000:
        time.sleep((60_000 - into_minute + settled_after_ms) / 1000)
    elif into_minute < settled_after_ms:
        time.sleep((settled_after_ms - into_minute) / 1000)
    now = dd.now_ms()
    rows = []
    for k in range(1, 241):  # one trade per second and symbol over four minutes, up to now
        ts = now - 240_000 + k * 1000
        rows.append(("BTCUSDT", k + 1, ts, 87_000.0 + (k % 7) * 0.1, 0.001, 0, 0))
        rows.append(("ETHUSDT", k + 1, ts + 5, 3_000.0 + (k % 5) * 0.01, 0.01, 1, 0))
    with dd.writing(path) as conn:
        database.import_ticks(conn, rows)
    yield path
    stop_page_services()


@pytest.mark.parametrize("fmt", ["parquet", "xlsx", "json"])
def test_data_tab_downloads_in_the_chosen_format(live_page, media, fmt):
    at = page(tab="Data", timeframe="1m", lookback="15 min")
    at.radio(key="download_bars_format").set_value(fmt)
    at = run(at)
    button = next(b for b in at.get("download_button") if b.proto.id.endswith("download_bars"))
    assert button.proto.label == f"Bars {exports.FORMAT_LABELS[fmt]}"
    data = download(at, media, "download_bars")
    reader = {"parquet": pd.read_parquet, "xlsx": pd.read_excel,
              "json": lambda b: pd.DataFrame(json.load(b))}[fmt]
    table = reader(io.BytesIO(data))
    with dd.reading(live_page) as conn:
        expected = database.read_bars(conn, "ETHUSDT", None, None, "1min")
    mine = table[table["symbol"] == "ETHUSDT"].set_index("ts")
    # the minute still forming is left out
    assert mine.index.tolist() == expected.index[:-1].tolist()
    assert mine["close"].tolist() == expected["close"].iloc[:-1].tolist()

    at.toggle(key="export_forming").set_value(True)
    at = run(at)
    table = reader(io.BytesIO(download(at, media, "download_bars")))
    mine = table[table["symbol"] == "ETHUSDT"]
    assert mine["ts"].tolist() == expected.index.tolist()
    assert mine["forming"].tolist() == [False] * (len(expected) - 1) + [True]


def test_ticks_are_not_offered_as_excel(live_page):
    at = page(tab="Data")
    # options are shown by label; a day of ticks is millions of rows: no Excel
    assert at.radio(key="download_ticks_format").options == ["CSV", "JSON", "Parquet"]
    assert at.radio(key="download_bars_format").options == ["CSV", "JSON", "Parquet", "Excel"]


def test_a_table_above_the_format_cap_gets_a_message_instead_of_a_button(live_page,
                                                                         monkeypatch):
    # The page never builds a file above exports.MAX_ROWS: the button gives way to the
    # cap message (a cap of 1 row stands in for 2 M rows of CSV).
    monkeypatch.setitem(exports.MAX_ROWS, "csv", 1)
    at = page(tab="Data", timeframe="1m", lookback="15 min")
    buttons = [b.proto.id for b in at.get("download_button")]
    assert not any(i.endswith("download_bars") for i in buttons), buttons
    warnings = [w.value for w in at.warning if w.value.startswith("Bars: ")]
    assert len(warnings) == 1 and "rows is more than the CSV cap of 1 rows" in warnings[0]
    at.radio(key="download_bars_format").set_value("parquet")
    at = run(at)
    assert any(b.proto.id.endswith("download_bars") for b in at.get("download_button"))
