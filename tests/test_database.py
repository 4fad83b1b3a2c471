"""Tests of database.py on real SQLite files (tmp_path), with pandas as the reference.

Reference values: 1 s bars are recomputed with pandas ``groupby`` from the ticks actually
stored; coarser bars with pandas ``resample`` of the stored 1 s bars; gap rows and prune
counts are counted by hand in comments. Sums (volume, notional) are compared with
``rtol=1e-12`` because SQLite and pandas add in different orders; everything else exactly.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time

import numpy as np
import pandas as pd
import pytest

import analytics
import database

BASE_MS = 1_765_843_200_000  # 2025-12-16 00:00:00 UTC, a whole hour
SUM_RTOL = 1e-12  # summation order differs between SQLite and pandas


# ----------------------------------------------------------------------------- helpers


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "sub" / "ticks.db")


@pytest.fixture
def conn(db_path):
    connection = database.connect(db_path)
    yield connection
    connection.close()


def make_trades(n: int, seed: int, symbols=("BTCUSDT", "ETHUSDT"), span_ms: int = 20_000,
                start_ms: int = BASE_MS, first_id: int = 1_000) -> list[tuple]:
    """Time-ordered trades with consecutive ids per symbol and many same-ms ties."""
    rng = np.random.default_rng(seed)
    trades = []
    for k, symbol in enumerate(symbols):
        count = n // len(symbols)
        # span_ms / count small -> several trades share a millisecond.
        ts = np.sort(rng.integers(start_ms, start_ms + span_ms, count))
        price = np.round((100.0 + 50 * k) * np.exp(np.cumsum(rng.normal(0, 1e-3, count))), 2)
        qty = np.round(rng.exponential(0.5, count), 3) + 0.001
        maker = rng.integers(0, 2, count)
        ids = np.arange(first_id, first_id + count)
        trades.extend(zip([symbol] * count, ids.tolist(), ts.tolist(), price.tolist(),
                          qty.tolist(), maker.tolist(), (ts + 7).tolist()))
    trades.sort(key=lambda t: (t[2], t[0], t[1]))
    return trades


def trade(trade_id: int, symbol: str = "BTCUSDT", ts: int | None = None,
          price: float = 100.0, qty: float = 1.0, maker: int = 0) -> tuple:
    ts = BASE_MS + 10 * trade_id if ts is None else ts
    return (symbol, trade_id, ts, price, qty, maker, ts + 5)


def stored_ticks(conn) -> pd.DataFrame:
    rows = conn.execute("SELECT symbol, trade_id, ts, price, qty, is_buyer_maker, received_ms "
                        "FROM ticks").fetchall()
    return pd.DataFrame(rows, columns=["symbol", "trade_id", "ts", "price", "qty",
                                       "is_buyer_maker", "received_ms"])


def stored_bars_1s(conn) -> pd.DataFrame:
    rows = conn.execute("SELECT symbol, ts, open, high, low, close, volume, buy_volume, "
                        "trades, notional FROM bars_1s ORDER BY symbol, ts").fetchall()
    return pd.DataFrame(rows, columns=["symbol", "ts", "open", "high", "low", "close",
                                       "volume", "buy_volume", "trades", "notional"])


def reference_bars_1s(ticks: pd.DataFrame) -> pd.DataFrame:
    """1 s bars from ticks with pandas: open/close by (ts, trade_id) order."""
    ticks = ticks.sort_values(["symbol", "ts", "trade_id"]).copy()
    ticks["second"] = ticks["ts"] - ticks["ts"] % 1000
    ticks["buy_qty"] = np.where(ticks["is_buyer_maker"] == 0, ticks["qty"], 0.0)
    ticks["notional"] = ticks["price"] * ticks["qty"]
    grouped = ticks.groupby(["symbol", "second"], sort=True)
    result = pd.DataFrame({
        "open": grouped["price"].first(), "high": grouped["price"].max(),
        "low": grouped["price"].min(), "close": grouped["price"].last(),
        "volume": grouped["qty"].sum(), "buy_volume": grouped["buy_qty"].sum(),
        "trades": grouped["price"].size(), "notional": grouped["notional"].sum(),
    }).reset_index().rename(columns={"second": "ts"})
    return result


def assert_bars_equal(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(result) == len(expected)
    exact = [c for c in ("symbol", "ts", "open", "high", "low", "close", "trades")
             if c in expected.columns]
    summed = [c for c in ("volume", "buy_volume", "notional", "vwap") if c in expected.columns]
    pd.testing.assert_frame_equal(result[exact].reset_index(drop=True),
                                  expected[exact].reset_index(drop=True), check_dtype=False)
    for column in summed:
        np.testing.assert_allclose(result[column].to_numpy(dtype=float),
                                   expected[column].to_numpy(dtype=float), rtol=SUM_RTOL,
                                   err_msg=column)


def resample_reference(bars_1s: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """pandas resample of read_bars(..., '1s') output; empty buckets dropped."""
    frame = bars_1s.copy()
    frame.index = pd.to_datetime(frame.index.to_numpy(), unit="ms", utc=True)
    out = frame.resample(timeframe, closed="left", label="left", origin="epoch").agg({
        "open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
        "buy_volume": "sum", "trades": "sum", "notional": "sum"})
    out = out[out["trades"] > 0]
    out.index = pd.Index(((out.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms"))
                         .to_numpy().astype(np.int64), name="ts")
    out["vwap"] = out["notional"] / out["volume"]
    return out


# ----------------------------------------------------------------------------- schema


def test_schema_names_and_columns(conn):
    def columns(table):
        return [row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (table,))]

    assert columns("ticks") == ["symbol", "trade_id", "ts", "price", "qty", "is_buyer_maker",
                                "received_ms"]
    assert columns("bars_1s")[:10] == ["symbol", "ts", "open", "high", "low", "close",
                                       "volume", "buy_volume", "trades", "notional"]
    assert {"first_ts", "first_id", "last_ts", "last_id"} <= set(columns("bars_1s"))
    assert columns("gaps")[:4] == ["symbol", "from_id", "to_id", "detected_at"]
    assert columns("uploaded_bars")[:8] == ["source", "symbol", "ts", "open", "high", "low",
                                            "close", "volume"]
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(database.SCHEMA_VERSION),)

    # ticks: primary key (symbol, ts, trade_id) and a unique index on (symbol, trade_id).
    pk = sorted((row[5], row[1]) for row in conn.execute("PRAGMA table_info(ticks)") if row[5])
    assert [name for _, name in pk] == ["symbol", "ts", "trade_id"]
    unique = [row[1] for row in conn.execute("PRAGMA index_list(ticks)") if row[2] == 1
              and row[3] == "c"]
    assert [[r[2] for r in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))]
            for name in unique] == [["symbol", "trade_id"]]
    for table in ("ticks", "bars_1s", "uploaded_bars"):
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
        assert "WITHOUT ROWID" in sql[0], table


def test_connect_settings_wal_and_parent_directory(db_path):
    assert not os.path.exists(os.path.dirname(db_path))
    writer = database.connect(db_path)
    reader = database.connect(db_path, readonly=True)
    for connection in (writer, reader):
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    writer.close()
    reader.close()


def test_connect_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="':memory:'"):
        database.connect(":memory:")
    with pytest.raises(FileNotFoundError, match="missing.db"):
        database.connect(tmp_path / "missing.db", readonly=True)
    with pytest.raises(ValueError, match=r"busy_timeout_ms \(-1\)"):
        database.connect(tmp_path / "x.db", busy_timeout_ms=-1)


def test_newer_schema_version_is_refused(db_path):
    connection = database.connect(db_path)
    connection.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    connection.close()
    with pytest.raises(RuntimeError, match="schema version 99"):
        database.connect(db_path)


# ----------------------------------------------------------------------------- writes


def test_duplicates_are_counted_and_not_stored(conn):
    writer = database.TickWriter(conn)
    trades = make_trades(200, seed=1)
    first = writer.write(trades)
    assert first == database.WriteStats(inserted=200, duplicates=0, gaps_opened=0,
                                        gaps_filled=0)
    again = writer.write(trades[:50] + trades[:10])  # 50 stored already, 10 repeated again
    assert (again.inserted, again.duplicates) == (0, 60)
    new = [trade(2_000), trade(2_000), trade(2_001)]  # one repeat inside the batch
    assert (writer.write(new).inserted, writer.write(new).duplicates) == (2, 3)
    assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] == 202
    # The same (symbol, trade_id) with another time is still the same trade.
    moved = [trade(2_001, ts=BASE_MS + 999_999)]
    assert writer.write(moved).duplicates == 1


def test_first_of_conflicting_repeats_is_stored_and_counted_once(conn):
    # Same id twice with different prices in one batch: the first one is stored (as
    # INSERT OR IGNORE does) and the bar holds exactly the stored rows.
    stats = database.TickWriter(conn).write(
        [trade(1, price=100.0), trade(1, price=999.0), trade(2, price=101.0)])
    assert (stats.inserted, stats.duplicates) == (2, 1)
    ticks = stored_ticks(conn)
    assert ticks.sort_values("trade_id")["price"].tolist() == [100.0, 101.0]
    assert_bars_equal(stored_bars_1s(conn), reference_bars_1s(ticks))


@pytest.mark.parametrize("batch_size", [1, 37, 400])
@pytest.mark.parametrize("order", ["in_order", "shuffled", "late_batches"])
def test_bars_equal_pandas_reference_under_disorder_and_duplicates(conn, order, batch_size):
    seed = {"in_order": 11, "shuffled": 12, "late_batches": 13}[order] + batch_size
    rng = random.Random(seed)
    trades = make_trades(1_200, seed=seed, span_ms=6_000)  # ~100 trades/s/symbol, ties
    stream = list(trades)
    if order == "shuffled":
        rng.shuffle(stream)
    elif order == "late_batches":
        # Whole chunks arrive late: reverse the order of 150-trade chunks.
        chunks = [stream[i:i + 150] for i in range(0, len(stream), 150)]
        stream = [t for chunk in reversed(chunks) for t in chunk]
    # 15 % re-sent: some inside the same batch, some much later.
    for original in rng.sample(trades, 180):
        stream.insert(rng.randrange(len(stream) + 1), original)
    writer = database.TickWriter(conn)
    inserted = duplicates = 0
    for i in range(0, len(stream), batch_size):
        stats = writer.write(stream[i:i + batch_size])
        inserted += stats.inserted
        duplicates += stats.duplicates
    assert (inserted, duplicates) == (1_200, 180)

    ticks = stored_ticks(conn)
    # What is stored is exactly the distinct input trades (so no double counting).
    assert sorted(map(tuple, ticks.itertuples(index=False, name=None))) == sorted(trades)
    assert_bars_equal(stored_bars_1s(conn), reference_bars_1s(ticks))


def test_bar_open_close_follow_ts_then_trade_id(conn):
    # Hand-made second: three trades in the same ms; ids decide first/last.
    second = BASE_MS + 5_000
    trades = [trade(12, ts=second + 500, price=103.0), trade(10, ts=second + 500, price=101.0),
              trade(11, ts=second + 500, price=102.0, maker=1),
              trade(9, ts=second + 999, price=99.0)]
    writer = database.TickWriter(conn)
    writer.write(trades[:2])
    writer.write(trades[2:])
    bars = database.read_bars(conn, "BTCUSDT")
    assert bars.index.tolist() == [second]
    row = bars.iloc[0]
    # open: (500, id 10) -> 101; close: (999, id 9) -> 99; buy volume excludes id 11.
    assert (row.open, row.high, row.low, row.close) == (101.0, 103.0, 99.0, 99.0)
    assert (row.volume, row.buy_volume, row.trades) == (4.0, 3.0, 4)
    assert row.notional == pytest.approx(405.0, rel=SUM_RTOL)


def test_write_rejects_lower_case_symbol(conn):
    with pytest.raises(ValueError, match="'btcusdt'"):
        database.TickWriter(conn).write([trade(1, symbol="btcusdt")])
    assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] == 0


def test_import_ticks_matches_writer_and_accepts_generator(tmp_path):
    trades = make_trades(3_000, seed=5)
    imported = database.connect(tmp_path / "imported.db")
    total = database.import_ticks(imported, (t for t in trades + trades[:100]), batch_size=700)
    assert total == database.WriteStats(3_000, 100, 0, 0)
    written = database.connect(tmp_path / "written.db")
    database.TickWriter(written).write(trades)
    assert_bars_equal(stored_bars_1s(imported), stored_bars_1s(written))
    with pytest.raises(ValueError, match=r"batch_size \(0\)"):
        database.import_ticks(imported, trades, batch_size=0)


# ----------------------------------------------------------------------------- reads


@pytest.fixture
def two_hours(conn):
    """~2.5 h of sparse trades for two symbols, with empty seconds and minutes."""
    trades = make_trades(6_000, seed=21, span_ms=9_000_000, start_ms=BASE_MS - 1_800_000)
    database.import_ticks(conn, trades, batch_size=1_000)
    return trades


@pytest.mark.parametrize("timeframe", ["5s", "10s", "30s", "1min", "5min", "15min", "1h"])
def test_read_bars_timeframes_equal_pandas_resample(conn, two_hours, timeframe):
    bars_1s = database.read_bars(conn, "ETHUSDT")
    result = database.read_bars(conn, "ethusdt", timeframe=timeframe)
    expected = resample_reference(bars_1s, timeframe)
    assert result.index.dtype == np.int64 and result.index.name == "ts"
    assert list(result.columns) == list(analytics.BAR_COLUMNS)
    assert result["trades"].dtype == np.int64
    assert_bars_equal(result.reset_index(), expected.reset_index())


def test_read_bars_1s_equals_stored_bars(conn, two_hours):
    result = database.read_bars(conn, "BTCUSDT")
    expected = reference_bars_1s(stored_ticks(conn)).query("symbol == 'BTCUSDT'")
    assert_bars_equal(result.reset_index(), expected.drop(columns="symbol"))
    vwap = expected["notional"].to_numpy() / expected["volume"].to_numpy()
    np.testing.assert_allclose(result["vwap"].to_numpy(), vwap, rtol=SUM_RTOL)


def test_read_bars_bounds_are_bucket_opens_start_inclusive_end_exclusive(conn, two_hours):
    full = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    opens = full.index.to_numpy()
    start, end = int(opens[3]), int(opens[10])
    result = database.read_bars(conn, "BTCUSDT", start, end, "1min")
    assert result.index.tolist() == opens[3:10].tolist()
    pd.testing.assert_frame_equal(result, full.iloc[3:10])
    # A start inside a bucket leaves that (incomplete) bucket out; an end inside one keeps it.
    inside = database.read_bars(conn, "BTCUSDT", start + 1, end + 1, "1min")
    assert inside.index.tolist() == opens[4:11].tolist()
    pd.testing.assert_frame_equal(inside, full.iloc[4:11])
    with pytest.raises(ValueError, match=r"start_ms \(5\) must not be after end_ms \(4\)"):
        database.read_bars(conn, "BTCUSDT", 5, 4)


def test_read_bars_minute_boundary_by_hand(conn):
    # Hand count: 11:59.999 goes to the bar opening at minute 0, 12:00.000 to minute 1.
    database.TickWriter(conn).write([
        trade(1, ts=BASE_MS + 59_999, price=10.0), trade(2, ts=BASE_MS + 60_000, price=20.0),
        trade(3, ts=BASE_MS + 119_999, price=30.0, qty=2.0)])
    result = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    assert result.index.tolist() == [BASE_MS, BASE_MS + 60_000]
    assert result["open"].tolist() == [10.0, 20.0]
    assert result["close"].tolist() == [10.0, 30.0]
    assert result["trades"].tolist() == [1, 2]
    assert result["vwap"].tolist() == pytest.approx([10.0, 80.0 / 3.0], rel=SUM_RTOL)


def test_read_bars_rejects_unknown_timeframe_and_handles_empty(conn):
    with pytest.raises(ValueError, match=r"timeframe \('1m'\) must be one of"):
        database.read_bars(conn, "BTCUSDT", timeframe="1m")
    empty = database.read_bars(conn, "NOPE", timeframe="1min")
    assert empty.empty and list(empty.columns) == list(analytics.BAR_COLUMNS)
    assert empty.index.dtype == np.int64


def test_read_bars_since_returns_the_last_bucket_again(conn, two_hours):
    full = database.read_bars(conn, "ETHUSDT", timeframe="5min")
    last_open = int(full.index[-3])
    result = database.read_bars_since(conn, "ETHUSDT", last_open + 1234, "5min")
    pd.testing.assert_frame_equal(result, full.iloc[-3:])
    assert database.latest_bar_ts(conn, "ethusdt") == int(database.read_bars(
        conn, "ETHUSDT").index[-1])
    assert database.latest_bar_ts(conn, "NOPE") is None


def test_read_ticks_order_bounds_and_limits(conn):
    trades = [trade(5, ts=BASE_MS + 2), trade(3, ts=BASE_MS + 1), trade(4, ts=BASE_MS + 1),
              trade(1, ts=BASE_MS + 3), trade(9, ts=BASE_MS + 9)]
    database.TickWriter(conn).write(trades)
    result = database.read_ticks(conn, "btcusdt", BASE_MS + 1, BASE_MS + 9)
    assert list(result.columns) == list(database.TICK_COLUMNS)
    # (ts, trade_id) order; end exclusive drops ts = +9.
    assert result["trade_id"].tolist() == [3, 4, 5, 1]
    assert database.read_ticks(conn, "BTCUSDT", BASE_MS, limit=2)["trade_id"].tolist() == [3, 4]
    latest = database.read_ticks(conn, "BTCUSDT", BASE_MS, limit=2, latest=True)
    assert latest["trade_id"].tolist() == [1, 9]
    assert database.read_ticks(conn, "BTCUSDT", BASE_MS + 10).empty
    with pytest.raises(ValueError, match=r"limit \(0\)"):
        database.read_ticks(conn, "BTCUSDT", BASE_MS, limit=0)


def test_list_symbols_from_bars(conn, two_hours):
    result = database.list_symbols(conn)
    ticks = stored_ticks(conn)
    expected = ticks.groupby("symbol").agg(first_ts=("ts", "min"), last_ts=("ts", "max"),
                                           trades=("ts", "size")).reset_index()
    pd.testing.assert_frame_equal(result, expected, check_dtype=False)
    assert list(result.columns) == ["symbol", "first_ts", "last_ts", "trades"]


def test_symbol_names_equal_list_symbols(conn, two_hours):
    assert database.symbol_names(conn) == database.list_symbols(conn)["symbol"].tolist()
    assert database.symbol_names(conn) == sorted(stored_ticks(conn)["symbol"].unique())


def test_symbol_names_seek_the_index_instead_of_scanning_the_bars(conn, two_hours):
    """The page asks for the symbols on every run: the answer must cost a few index seeks
    per symbol, not a scan of every stored 1 s bar (which grows with the history kept)."""
    plan = " | ".join(row[-1] for row in conn.execute(
        "EXPLAIN QUERY PLAN " + database.SYMBOL_NAMES_SQL).fetchall())
    assert "SCAN bars_1s" not in plan, plan
    assert "SEARCH bars_1s" in plan, plan


def test_database_size_counts_wal_and_shm(db_path, conn):
    database.TickWriter(conn).write(make_trades(500, seed=3))
    files = [db_path + suffix for suffix in ("", "-wal", "-shm")]
    expected = sum(os.path.getsize(name) for name in files if os.path.exists(name))
    assert os.path.exists(db_path + "-wal")
    assert database.database_size_bytes(db_path) == expected > 0


# ----------------------------------------------------------------------------- gaps


def gap_rows(conn, symbol="BTCUSDT"):
    return [tuple(row) for row in database.read_gaps(conn, symbol)[["from_id", "to_id"]]
            .itertuples(index=False, name=None)]


def test_id_jump_records_one_gap_with_times(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(i) for i in range(1, 6)])
    stats = writer.write([trade(9), trade(10)])
    assert stats.gaps_opened == 1
    gaps = database.read_gaps(conn)
    assert len(gaps) == 1
    row = gaps.iloc[0]
    # Ids 6, 7, 8 missing: between trade 5 and trade 9.
    assert (row.symbol, row.from_id, row.to_id, row.missing) == ("BTCUSDT", 6, 8, 3)
    assert (row.from_ts, row.to_ts) == (BASE_MS + 50, BASE_MS + 90)
    assert abs(row.detected_at - time.time() * 1000) < 60_000


def test_late_trades_shrink_split_and_fill_gaps(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(1), trade(20)])  # gap 2..19
    assert gap_rows(conn) == [(2, 19)]
    assert writer.write([trade(2)]).gaps_filled == 0  # left edge
    assert gap_rows(conn) == [(3, 19)]
    writer.write([trade(19)])  # right edge
    assert gap_rows(conn) == [(3, 18)]
    writer.write([trade(10)])  # middle: split
    assert gap_rows(conn) == [(3, 9), (11, 18)]
    split = database.read_gaps(conn)
    assert split["to_ts"].iloc[0] == split["from_ts"].iloc[1] == BASE_MS + 100
    stats = writer.write([trade(i) for i in range(11, 19)])
    assert (stats.gaps_opened, stats.gaps_filled) == (0, 1)
    assert gap_rows(conn) == [(3, 9)]


def test_out_of_order_within_a_batch_opens_no_gap_but_across_batches_it_does(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(1)])
    assert writer.write([trade(4), trade(2), trade(3)]).gaps_opened == 0
    assert writer.write([trade(6)]).gaps_opened == 1
    assert writer.write([trade(5)]).gaps_filled == 1
    assert gap_rows(conn) == []


def test_seen_ids_prevent_false_gaps_and_fill_recorded_ones(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(1), trade(2)])
    # Ids 3 and 4 were placeholder frames: seen, not stored.
    stats = writer.write([trade(5)], seen_ids=[("BTCUSDT", 3), ("BTCUSDT", 4)])
    assert stats.gaps_opened == 0
    writer.write([trade(9)])
    assert gap_rows(conn) == [(6, 8)]
    writer.write([], seen_ids=[("BTCUSDT", 7)])
    assert gap_rows(conn) == [(6, 6), (8, 8)]
    assert conn.execute("SELECT count(*) FROM ticks").fetchone()[0] == 4


def test_symbols_are_tracked_independently(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(1), trade(100, symbol="ETHUSDT")])
    stats = writer.write([trade(2), trade(103, symbol="ETHUSDT")])
    assert stats.gaps_opened == 1
    assert gap_rows(conn, "ETHUSDT") == [(101, 102)] and gap_rows(conn) == []


def test_restart_detects_downtime_gap(db_path):
    first = database.connect(db_path)
    writer = database.TickWriter(first)
    writer.write([trade(i) for i in range(1, 11)], seen_ids=[("BTCUSDT", 11)])
    first.close()
    second = database.connect(db_path)
    restarted = database.TickWriter(second)
    # Id 11 was seen before the restart: 12 continues without a gap; 20 opens 13..19.
    assert restarted.write([trade(12)]).gaps_opened == 0
    assert restarted.write([trade(20)]).gaps_opened == 1
    assert gap_rows(second) == [(13, 19)]
    # Without the cursor row the highest stored id (20) is the starting point.
    second.execute("DELETE FROM trade_id_cursor")
    third = database.TickWriter(second)
    assert third.write([trade(25)]).gaps_opened == 1
    assert gap_rows(second) == [(13, 19), (21, 24)]
    second.close()


def test_history_far_below_is_late_not_a_new_sequence(conn):
    writer = database.TickWriter(conn)
    writer.write([trade(i) for i in range(50_000, 50_010)])
    # Older trades (earlier exchange times) far below the current ids: a history import.
    old = [trade(i, ts=BASE_MS - 1_000_000 + i) for i in range(10_000, 10_005)]
    assert writer.write(old) == database.WriteStats(5, 0, 0, 0)
    assert writer.write([trade(50_010)]).gaps_opened == 0
    assert gap_rows(conn) == []


def test_new_id_sequence_resets_tracking(conn, caplog):
    writer = database.TickWriter(conn)
    writer.write([trade(i) for i in range(5_000, 5_010)])
    writer.write([trade(5_020)])
    assert gap_rows(conn) == [(5_010, 5_019)]
    # A restarted simulated market: ids from 1 again, later exchange times.
    later = BASE_MS + 10_000_000
    stats = writer.write([trade(1, ts=later), trade(2, ts=later + 1)])
    assert stats == database.WriteStats(2, 0, 0, 0)
    assert "new id sequence" in caplog.text
    assert writer.write([trade(4, ts=later + 2)]).gaps_opened == 1
    # Ids the old sequence stored (5_000..5_009) are duplicates: (symbol, trade_id) is unique.
    stats = writer.write([trade(i, ts=later + i) for i in range(5, 5_010)])
    assert (stats.inserted, stats.duplicates, stats.gaps_opened) == (4_995, 10, 0)
    assert writer.write([trade(6_000, ts=later + 6_000)]).gaps_opened == 1
    # A late trade of the new sequence lies in both the old and the new gap; its time is
    # after the old gap's end, so only the new gap is split.
    writer.write([trade(5_012, ts=later + 5_012)])
    assert sorted(gap_rows(conn)) == [(3, 3), (5_010, 5_011), (5_010, 5_019), (5_013, 5_999)]


def test_failed_write_changes_nothing_and_can_be_retried(db_path):
    conn = database.connect(db_path, busy_timeout_ms=100)
    writer = database.TickWriter(conn)
    writer.write([trade(1)])
    blocker = database.connect(db_path)
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        writer.write([trade(5)])
    blocker.execute("ROLLBACK")
    # The failed batch left no trace, tracking included: the retry opens the gap 2..4.
    assert writer.write([trade(5)]) == database.WriteStats(1, 0, 1, 0)
    assert gap_rows(conn) == [(2, 4)]
    conn.close()
    blocker.close()


# ----------------------------------------------------------------------------- prune


def test_prune_removes_only_old_data_in_bounded_steps(conn):
    trades = make_trades(2_000, seed=8, span_ms=20_000)
    writer = database.TickWriter(conn)
    writer.write(trades)
    cutoff = BASE_MS + 10_500  # mid-second on purpose
    conn.execute("INSERT INTO gaps VALUES ('BTCUSDT', 1, 5, ?, ?, ?)",
                 (BASE_MS, BASE_MS, BASE_MS + 100))  # ended before the cutoff
    conn.execute("INSERT INTO gaps VALUES ('BTCUSDT', 7, 8, ?, ?, ?)",
                 (BASE_MS, BASE_MS, BASE_MS + 15_000))  # ended after it
    ticks_before = stored_ticks(conn)
    bars_before = stored_bars_1s(conn)
    old = int((ticks_before["ts"] < cutoff).sum())
    assert old > 600

    steps = []
    while deleted := database.prune(conn, cutoff, max_rows=300):
        steps.append(deleted)
    # Full steps of 300 until fewer old ticks are left.
    assert steps == [300] * (old // 300) + ([old % 300] if old % 300 else [])

    ticks_after = stored_ticks(conn)
    expected = ticks_before[ticks_before["ts"] >= cutoff]
    assert sorted(ticks_after.itertuples(index=False, name=None)) == sorted(
        expected.itertuples(index=False, name=None))
    bars_after = stored_bars_1s(conn)
    # Bars whose second still has ticks stay untouched (the straddling one, whole).
    kept = bars_before[bars_before["ts"] >= cutoff - cutoff % 1000]
    assert_bars_equal(bars_after, kept)
    assert gap_rows(conn) == [(7, 8)]


def test_prune_one_symbol_leaves_others(conn):
    database.TickWriter(conn).write(make_trades(400, seed=9, span_ms=4_000))
    cutoff = BASE_MS + 2_000
    eth_before = stored_ticks(conn).query("symbol == 'ETHUSDT'")
    while database.prune(conn, cutoff, symbol="btcusdt", max_rows=50):
        pass
    ticks = stored_ticks(conn)
    assert ticks.query("symbol == 'BTCUSDT'")["ts"].min() >= cutoff
    assert len(ticks.query("symbol == 'ETHUSDT'")) == len(eth_before)
    with pytest.raises(ValueError, match=r"max_rows \(0\)"):
        database.prune(conn, cutoff, max_rows=0)


# ----------------------------------------------------------------------------- concurrency


def test_reader_in_another_thread_reads_while_writer_commits(db_path):
    batches = [make_trades(200, seed=100, first_id=1_000 + 100 * i,
                           start_ms=BASE_MS + 1_000 * i, span_ms=1_000) for i in range(60)]
    database.connect(db_path).close()  # schema exists before the reader opens
    done = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []

    def write():
        try:
            connection = database.connect(db_path)
            writer = database.TickWriter(connection)
            for batch in batches:
                writer.write(batch)
            connection.close()
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)
        finally:
            done.set()

    def read():
        try:
            reader = database.connect(db_path, readonly=True)
            while not done.is_set():
                counts.append(int(database.read_bars(reader, "BTCUSDT")["trades"].sum()))
                database.read_bars(reader, "ETHUSDT", timeframe="5s")
            counts.append(int(database.read_bars(reader, "BTCUSDT")["trades"].sum()))
            reader.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(counts) > 2
    assert counts == sorted(counts)  # never sees a half-written batch go backwards
    assert counts[-1] == 60 * 100


def test_reader_is_not_blocked_by_an_open_write_transaction(db_path, conn):
    database.TickWriter(conn).write([trade(1)])
    reader = database.connect(db_path, readonly=True)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(database._INSERT_TICK, trade(2))
    t0 = time.perf_counter()
    assert len(database.read_ticks(reader, "BTCUSDT", 0)) == 1  # last committed state
    assert time.perf_counter() - t0 < 1.0
    conn.execute("COMMIT")
    assert len(database.read_ticks(reader, "BTCUSDT", 0)) == 2
    reader.close()


def test_writer_waits_for_another_writers_lock_within_busy_timeout(db_path, conn):
    # The blocker is released from a timer thread, hence check_same_thread=False.
    blocker = database.connect(db_path, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, lambda: blocker.execute("COMMIT"))
    release.start()
    t0 = time.perf_counter()
    stats = database.TickWriter(conn).write([trade(1), trade(2)])
    waited = time.perf_counter() - t0
    release.join()
    blocker.close()
    assert stats.inserted == 2
    assert 0.8 < waited < 4.5  # waited for the lock, well inside the 5 s busy timeout


# ----------------------------------------------------------------------------- uploads


def uploaded_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, with_vwap in (("btcusdt", True), ("ethusdt", False)):
        n = 180
        ts = BASE_MS + 60_000 * np.arange(n)
        close = 100 + np.cumsum(rng.normal(0, 1, n))
        open_ = np.r_[100.0, close[:-1]]
        high = np.maximum(open_, close) + 0.5
        low = np.minimum(open_, close) - 0.5
        frames.append(pd.DataFrame({
            "ts": ts, "symbol": symbol, "open": open_, "high": high, "low": low,
            "close": close, "volume": rng.uniform(1, 5, n),
            "vwap": (open_ + close) / 2 if with_vwap else np.nan}))
    return pd.concat(frames, ignore_index=True)


def test_uploaded_bars_roundtrip_and_resample(conn):
    frame = uploaded_frame(seed=4)
    assert database.save_uploaded_bars(conn, "klines.csv", frame.set_index("ts")) == 360
    uploads = database.list_uploads(conn)
    assert uploads.to_dict("records") == [
        {"source": "klines.csv", "symbol": "BTCUSDT", "first_ts": BASE_MS,
         "last_ts": BASE_MS + 179 * 60_000, "rows": 180},
        {"source": "klines.csv", "symbol": "ETHUSDT", "first_ts": BASE_MS,
         "last_ts": BASE_MS + 179 * 60_000, "rows": 180}]

    btc = database.read_uploaded_bars(conn, "klines.csv", "BTCUSDT")
    source = frame[frame["symbol"] == "btcusdt"]
    assert list(btc.columns) == list(analytics.BAR_COLUMNS)
    np.testing.assert_array_equal(btc.index.to_numpy(), source["ts"].to_numpy())
    for column in ("open", "high", "low", "close", "volume", "vwap"):
        np.testing.assert_array_equal(btc[column].to_numpy(), source[column].to_numpy())
    assert btc[["trades", "buy_volume"]].isna().all().all()

    # 15-minute bars against pandas resample of the stored 1-minute bars.
    result = database.read_uploaded_bars(conn, "klines.csv", "btcusdt", timeframe="15min")
    minute = btc.copy()
    minute.index = pd.to_datetime(minute.index.to_numpy(), unit="ms", utc=True)
    minute["notional"] = minute["vwap"] * minute["volume"]
    expected = minute.resample("15min", origin="epoch").agg({
        "open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
        "notional": "sum"})
    expected["vwap"] = expected["notional"] / expected["volume"]
    assert len(result) == 12
    np.testing.assert_array_equal(result["open"].to_numpy(), expected["open"].to_numpy())
    np.testing.assert_array_equal(result["close"].to_numpy(), expected["close"].to_numpy())
    np.testing.assert_array_equal(result["high"].to_numpy(), expected["high"].to_numpy())
    for column in ("volume", "notional", "vwap"):
        np.testing.assert_allclose(result[column].to_numpy(), expected[column].to_numpy(),
                                   rtol=SUM_RTOL)

    eth = database.read_uploaded_bars(conn, "klines.csv", "ETHUSDT", timeframe="1h")
    assert eth["vwap"].isna().all() and eth["notional"].isna().all() and len(eth) == 3


def test_saving_a_source_again_replaces_only_that_source(conn):
    frame = uploaded_frame(seed=5)
    database.save_uploaded_bars(conn, "a.csv", frame)
    database.save_uploaded_bars(conn, "b.csv", frame)
    database.save_uploaded_bars(conn, "a.csv", frame.iloc[:10])
    rows = database.list_uploads(conn).groupby("source")["rows"].sum().to_dict()
    assert rows == {"a.csv": 10, "b.csv": 360}
    # Uploads never show up as live data.
    assert database.list_symbols(conn).empty


def test_save_uploaded_bars_validates_input(conn):
    frame = uploaded_frame(seed=6)
    with pytest.raises(ValueError, match="2 duplicate"):
        database.save_uploaded_bars(conn, "x.csv", pd.concat([frame, frame.iloc[:2]]))
    with pytest.raises(ValueError, match="integer epoch ms"):
        database.save_uploaded_bars(
            conn, "x.csv", frame.assign(ts=pd.to_datetime(frame["ts"], unit="ms")))
    with pytest.raises(ValueError, match=r"missing columns \['close'\]"):
        database.save_uploaded_bars(conn, "x.csv", frame.drop(columns="close"))
    with pytest.raises(ValueError, match="source"):
        database.save_uploaded_bars(conn, " ", frame)
    assert database.list_uploads(conn).empty


def test_latest_bar_version_changes_with_every_trade_in_the_newest_bar(tmp_path):
    conn = database.connect(str(tmp_path / "version.db"))
    writer = database.TickWriter(conn)
    assert database.latest_bar_version(conn, "BTCUSDT") is None
    writer.write([("BTCUSDT", 1, 1_765_800_000_100, 1.0, 1.0, 0, 0)])
    first = database.latest_bar_version(conn, "btcusdt")
    writer.write([("BTCUSDT", 2, 1_765_800_000_900, 2.0, 1.0, 0, 0)])  # same second
    second = database.latest_bar_version(conn, "BTCUSDT")
    assert first == (1_765_800_000_000, 1) and second == (1_765_800_000_000, 2)
    assert database.latest_bar_ts(conn, "BTCUSDT") == 1_765_800_000_000  # unchanged


# ----------------------------------------------------------------------------- minute bars


def stored_minutes(conn) -> pd.DataFrame:
    rows = conn.execute("SELECT symbol, ts, open, high, low, close, volume, buy_volume, "
                        "trades, notional, first_ts, first_id, last_ts, last_id FROM bars_1m "
                        "ORDER BY symbol, ts").fetchall()
    return pd.DataFrame(rows, columns=["symbol", "ts", "open", "high", "low", "close",
                                       "volume", "buy_volume", "trades", "notional",
                                       "first_ts", "first_id", "last_ts", "last_id"])


def minutes_from_ticks(conn) -> pd.DataFrame:
    """Reference: 1-minute bars with pandas from the ticks actually stored."""
    ticks = stored_ticks(conn).sort_values(["symbol", "ts", "trade_id"])
    ticks["minute"] = ticks["ts"] - ticks["ts"] % 60_000
    ticks["buy_qty"] = np.where(ticks["is_buyer_maker"] == 0, ticks["qty"], 0.0)
    ticks["notional"] = ticks["price"] * ticks["qty"]
    grouped = ticks.groupby(["symbol", "minute"], sort=True)
    return pd.DataFrame({
        "open": grouped["price"].first(), "high": grouped["price"].max(),
        "low": grouped["price"].min(), "close": grouped["price"].last(),
        "volume": grouped["qty"].sum(), "buy_volume": grouped["buy_qty"].sum(),
        "trades": grouped["price"].size(), "notional": grouped["notional"].sum(),
        "first_ts": grouped["ts"].first(), "first_id": grouped["trade_id"].first(),
        "last_ts": grouped["ts"].last(), "last_id": grouped["trade_id"].last(),
    }).reset_index().rename(columns={"minute": "ts"})


def assert_minutes_match_ticks(conn) -> None:
    stored, expected = stored_minutes(conn), minutes_from_ticks(conn)
    assert_bars_equal(stored, expected)
    for column in ("first_ts", "first_id", "last_ts", "last_id"):
        assert stored[column].tolist() == expected[column].tolist(), column


def test_minute_bars_follow_every_write_in_any_order_with_duplicates(conn):
    # Batches of 700 (two multi-row chunks of TICK_CHUNK_ROWS and a remainder), shuffled
    # across minutes, each repeating 100 trades of the batch before it (savepoint + redo).
    trades = make_trades(6_000, seed=31, span_ms=600_000)
    random.Random(5).shuffle(trades)
    writer = database.TickWriter(conn)
    inserted = 0
    for start in range(0, len(trades), 700):
        inserted += writer.write(trades[max(0, start - 100):start + 700]).inserted
    assert inserted == len(trades)
    assert_minutes_match_ticks(conn)
    assert len(stored_minutes(conn)) == 2 * 10  # 10 minutes, two symbols


def test_minute_reads_equal_todays_aggregation_of_one_second_bars(conn, two_hours):
    for timeframe in ("1min", "5min", "15min", "1h"):
        size = analytics.TIMEFRAME_MS[timeframe]
        old = database._bars_frame(conn.execute(database._READ_BUCKETS, {
            "symbol": "BTCUSDT", "start": database._MIN_TS, "end": database._MAX_TS,
            "size": size}).fetchall())
        new = database.read_bars(conn, "BTCUSDT", timeframe=timeframe)
        assert_bars_equal(new.reset_index(), old.reset_index())


def test_version_1_file_gets_minute_bars_built_once_at_open(db_path):
    conn = database.connect(db_path)
    database.import_ticks(conn, make_trades(3_000, seed=32, span_ms=400_000), batch_size=500)
    expected = stored_minutes(conn)
    # What a version-1 program left: no bars_1m, schema_version 1.
    conn.execute("DROP TABLE bars_1m")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    reader = database.connect(db_path, readonly=True)  # before any writer: 1 s fallback
    fallback = database.read_bars(reader, "ETHUSDT", timeframe="1min")
    reader.close()
    conn = database.connect(db_path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(database.SCHEMA_VERSION),)
    assert_bars_equal(stored_minutes(conn), expected)
    assert_minutes_match_ticks(conn)
    assert_bars_equal(database.read_bars(conn, "ETHUSDT", timeframe="1min").reset_index(),
                      fallback.reset_index())
    conn.close()
    conn = database.connect(db_path)  # opened again: nothing rebuilt, nothing lost
    assert_bars_equal(stored_minutes(conn), expected)
    conn.close()


def minutes_from_seconds(conn, symbol: str) -> pd.DataFrame:
    """Reference: today's 1-minute read, aggregating the stored 1 s bars in SQL."""
    return database._bars_frame(conn.execute(database._READ_BUCKETS, {
        "symbol": symbol, "start": database._MIN_TS, "end": database._MAX_TS,
        "size": 60_000}).fetchall())


def test_prune_keeps_minute_bars_equal_to_the_one_second_bars_left(conn):
    database.import_ticks(conn, make_trades(4_000, seed=33, span_ms=300_000), batch_size=1_000)
    cutoff = BASE_MS + 90_500  # inside a second inside a minute
    steps = 0
    while database.prune(conn, cutoff, max_rows=300):
        steps += 1
        for symbol in ("BTCUSDT", "ETHUSDT"):  # after every bounded step, not only the last
            assert_bars_equal(database.read_bars(conn, symbol, timeframe="1min").reset_index(),
                              minutes_from_seconds(conn, symbol).reset_index())
    assert steps >= 2
    minutes = stored_minutes(conn)
    assert minutes["ts"].min() == BASE_MS + 60_000  # the first minute is gone entirely
    # The cut minute holds only what is left: its 1 s bars from second 90 on.
    cut = minutes[minutes["ts"] == BASE_MS + 60_000]
    seconds = stored_bars_1s(conn).query("ts < @BASE_MS + 120_000")
    assert seconds["ts"].min() == BASE_MS + 90_000
    assert cut["trades"].sum() == seconds["trades"].sum()


def test_rebuilding_the_minute_a_prune_cuts_reads_that_minute_not_the_whole_history(conn):
    # prune() rebuilds the minute its cutoff falls in from that minute's 1 s bars, every
    # PRUNE_EVERY_S in the collector's writer, holding the write lock. Its work must not grow
    # with the symbol's history (a week of 1 s bars is 604,800 rows per symbol).
    def add_seconds(first: int, last: int) -> None:
        conn.executemany(
            "INSERT INTO bars_1s (symbol, ts, open, high, low, close, volume, buy_volume, "
            "trades, notional, first_ts, first_id, last_ts, last_id) "
            "VALUES ('BTCUSDT', ?, 1, 1, 1, 1, 1, 0, 1, 1, ?, ?, ?, ?)",
            [(BASE_MS + s * 1000, BASE_MS + s * 1000, s, BASE_MS + s * 1000, s)
             for s in range(first, last)])

    def steps_to_rebuild_the_first_minute() -> int:
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # 0 = go on

        conn.set_progress_handler(count, 100)
        try:
            assert database._rebuild_minutes(conn, "BTCUSDT", BASE_MS, BASE_MS + 60_000) == 1
        finally:
            conn.set_progress_handler(None, 100)
        return steps[0]

    add_seconds(0, 120)
    short_history = steps_to_rebuild_the_first_minute()
    add_seconds(120, 30_000)
    long_history = steps_to_rebuild_the_first_minute()
    assert long_history < 2 * short_history + 5, (short_history, long_history)
