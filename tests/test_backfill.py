"""REST backfill and gap repair end to end: real SQLite files, the built-in market and
loopback REST + WebSocket servers, the collector as the user runs it.

The klines/ticks join of ``database.read_bars`` is tested here too, since it exists for
the backfilled history.
"""

from __future__ import annotations

import pandas as pd
import pytest

import database

MINUTE = 60_000
T0 = 1_765_000_000_000 - 1_765_000_000_000 % (5 * MINUTE)  # a whole 5 minutes


def kline(ts, open_, high, low, close, volume, trades=10):
    """A klines row as binance_rest.parse_klines returns it."""
    return (ts, open_, high, low, close, volume, ts + MINUTE - 1, volume * close, trades,
            volume / 2)


def write_ticks(conn, rows):
    database.TickWriter(conn).write([("BTCUSDT", trade_id, ts, price, qty, 0, ts)
                                     for trade_id, ts, price, qty in rows])


def test_klines_join_tick_bars_one_bar_per_minute_live_minute_from_ticks(tmp_path):
    conn = database.connect(tmp_path / "join.db")
    # Klines for minutes 0..3 (closed); ticks: minute 2 partly (less volume than its
    # kline), minute 3 completely (same volume), minute 4 live (no kline yet).
    database.save_klines(conn, "btcusdt", [
        kline(T0 + 0 * MINUTE, 100, 101, 99, 100.5, 2.0),
        kline(T0 + 1 * MINUTE, 100.5, 102, 100, 101, 2.0),
        kline(T0 + 2 * MINUTE, 101, 103, 100, 102, 3.0),
        kline(T0 + 3 * MINUTE, 102, 104, 101, 103, 2.0),
    ])
    write_ticks(conn, [
        (1, T0 + 2 * MINUTE + 30_000, 102.5, 1.0),  # minute 2: 1.0 of 3.0 - incomplete
        (2, T0 + 3 * MINUTE + 1_000, 102.0, 1.0),  # minute 3: 2.0 of 2.0 - complete
        (3, T0 + 3 * MINUTE + 59_000, 103.0, 1.0),
        (4, T0 + 4 * MINUTE + 5_000, 103.5, 0.5),  # minute 4: live
    ])
    bars = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    assert bars.index.tolist() == [T0 + k * MINUTE for k in range(5)]
    assert bars["close"].tolist() == [100.5, 101, 102, 103.0, 103.5]
    assert bars.loc[T0 + 2 * MINUTE, "volume"] == 3.0  # the kline, not the partial ticks
    assert bars.loc[T0 + 3 * MINUTE, "trades"] == 2  # the complete tick bar
    assert bars.loc[T0 + 4 * MINUTE, "volume"] == 0.5  # the live minute from ticks
    # 5-minute bars are built from the joined minutes.
    five = database.read_bars(conn, "BTCUSDT", timeframe="5min")
    assert five.index.tolist() == [T0]
    row = five.loc[T0]
    assert (row["open"], row["high"], row["low"], row["close"]) == (100, 103.5, 99, 103.5)
    assert row["volume"] == pytest.approx(2 + 2 + 3 + 2 + 0.5)
    # 1 s bars never contain klines.
    assert database.read_bars(conn, "BTCUSDT", timeframe="1s")["volume"].sum() == 3.5
    conn.close()


def test_bars_without_klines_read_as_before(tmp_path):
    conn = database.connect(tmp_path / "plain.db")
    write_ticks(conn, [(1, T0 + 1_000, 100.0, 1.0), (2, T0 + MINUTE + 1_000, 101.0, 2.0)])
    bars = database.read_bars(conn, "BTCUSDT", timeframe="1min")
    assert bars["close"].tolist() == [100.0, 101.0] and database.history_version(conn) == 0
    database.save_klines(conn, "ETHUSDT", [kline(T0, 1, 1, 1, 1, 1.0)])  # another symbol
    pd.testing.assert_frame_equal(database.read_bars(conn, "BTCUSDT", timeframe="1min"), bars)
    assert database.history_version(conn) == 1
    conn.close()
