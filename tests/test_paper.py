"""Paper trading (paper.py) on a scripted feed: trades written into a real SQLite file with
``database.import_ticks`` (as the collector writes them), fills and P&L checked against a
hand computation written out here, not against ``backtest.position_pnl``. The page's Paper
tab and the start/stop collection buttons are driven with AppTest at the end."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

import analytics
import dashboard_data as dd
import database
import paper
import services
from page_helpers import closed_feed_env, download, media, metric, page, run, \
    stop_page_services, visible_columns  # noqa: F401  (media is a fixture)

Y, X = "ETHUSDT", "BTCUSDT"
T0 = 1_765_000_000_000  # epoch ms, a whole second
HISTORY_S = 120
SETTINGS = dict(timeframe="1s", window=20, method="ols", log_prices=True)


class Feed:
    """A scripted feed: one writer, increasing trade ids per symbol."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.next_id = {Y: 1, X: 1}

    def trade(self, symbol: str, ts: int, price: float, qty: float = 0.01) -> None:
        trade_id = self.next_id[symbol]
        self.next_id[symbol] += 1
        with dd.writing(self.path) as conn:
            database.import_ticks(conn, [(symbol, trade_id, ts, price, qty, 0, ts)])

    def history(self, t0: int = T0) -> None:
        """One trade per second and leg from ``t0``; y follows x with elasticity ~0.8."""
        rng = np.random.default_rng(7)
        log_x = np.log(87_000.0) + np.cumsum(rng.normal(0, 1e-4, HISTORY_S))
        log_y = np.log(3_000.0) + 0.8 * (log_x - np.log(87_000.0)) + rng.normal(0, 5e-5,
                                                                               HISTORY_S)
        rows = []
        for k in range(HISTORY_S):
            for symbol, value, offset in ((X, log_x[k], 100), (Y, log_y[k], 200)):
                rows.append((symbol, self.next_id[symbol], t0 + k * 1000 + offset,
                             round(float(np.exp(value)), 2), 0.01, 0, 0))
                self.next_id[symbol] += 1
        with dd.writing(self.path) as conn:
            database.import_ticks(conn, rows)


@pytest.fixture
def feed(tmp_path):
    scripted = Feed(str(tmp_path / "paper.db"))
    scripted.history()
    return scripted


NEWEST = T0 + (HISTORY_S - 1) * 1000 + 200  # the last history trade (y)


def order(**changes) -> paper.PaperOrder:
    fields = dict(y=Y, x=X, side="long", notional=10_000.0, fee_bps=5.0, slippage_bps=2.0,
                  **SETTINGS)
    fields.update(changes)
    return paper.PaperOrder(**fields)


def position(path: str, position_id: int) -> dict:
    with dd.writing(path) as conn:
        return database.list_paper_positions(conn, position_id=position_id).iloc[0].to_dict()


def hand_round_trip(side, beta, notional, entry_y, entry_x, exit_y, exit_x, fee_bps, slip_bps):
    """The round trip written out: sizing at the entry trades, slipped fills, four fees."""
    fee, slip = fee_bps / 1e4, slip_bps / 1e4
    units_y = notional / entry_y
    units_x = beta * notional / entry_x  # log prices: beta is an elasticity
    d = 1 if side == "long" else -1
    q_y, q_x = d * units_y, -d * units_x
    in_y = entry_y * (1 + slip * np.sign(q_y))
    in_x = entry_x * (1 + slip * np.sign(q_x))
    out_y = exit_y * (1 - slip * np.sign(q_y))
    out_x = exit_x * (1 - slip * np.sign(q_x))
    gross = q_y * (out_y - in_y) + q_x * (out_x - in_x)
    fees = fee * (abs(q_y) * (in_y + out_y) + abs(q_x) * (in_x + out_x))
    return {"q_y": q_y, "q_x": q_x, "in_y": in_y, "in_x": in_x, "out_y": out_y,
            "out_x": out_x, "gross": gross, "fees": fees, "net": gross - fees,
            "leg_y": q_y * (out_y - in_y), "leg_x": q_x * (out_x - in_x),
            "entry_fee": fee * (abs(q_y) * in_y + abs(q_x) * in_x)}


def test_open_fill_mark_close_equals_hand_computation(feed):
    path = feed.path
    click = NEWEST + 500
    position_id = paper.open_position(path, order(), at_ms=click)
    row = position(path, position_id)
    assert row["status"] == "opening"
    assert math.isfinite(row["z_at_request"])  # the pair's z at the click
    # beta is the pair's newest trailing OLS beta over the same bars (computed here apart)
    with dd.reading(path) as conn:
        bars_y = database.read_bars(conn, Y, None, None, "1s")
        bars_x = database.read_bars(conn, X, None, None, "1s")
    aligned = analytics.align(bars_y, bars_x, timeframe="1s")
    signals = analytics.pair_signals(aligned.y, aligned.x, method="ols", window=20)
    assert row["beta"] == pytest.approx(float(signals.frame["beta"].iloc[-1]), rel=1e-12)
    assert 0.3 < row["beta"] < 1.3

    # A trade made before the click but written after it never fills the order.
    feed.trade(Y, click - 100, 2_990.0)
    feed.trade(X, click - 50, 86_900.0)
    assert paper.process(path, at_ms=click + 10)["entries"] == 0
    feed.trade(Y, click + 200, 3_010.0)
    assert paper.process(path, at_ms=click + 250)["entries"] == 0  # x has not traded yet
    feed.trade(X, click + 300, 87_100.0)
    feed.trade(X, click + 400, 87_500.0)  # a later trade: not the fill
    assert paper.process(path, at_ms=click + 450)["entries"] == 1
    row = position(path, position_id)
    hand = hand_round_trip("long", row["beta"], 10_000.0, 3_010.0, 87_100.0, 3_020.0,
                           87_000.0, 5.0, 2.0)
    assert row["status"] == "open"
    assert (row["entry_ts_y"], row["entry_ts_x"]) == (click + 200, click + 300)
    assert (row["entry_ref_y"], row["entry_ref_x"]) == (3_010.0, 87_100.0)
    assert row["qty_y"] == pytest.approx(hand["q_y"], rel=1e-12)
    assert row["qty_x"] == pytest.approx(hand["q_x"], rel=1e-12)
    assert row["entry_fill_y"] == pytest.approx(hand["in_y"], rel=1e-12)
    assert row["entry_fill_x"] == pytest.approx(hand["in_x"], rel=1e-12)
    assert row["entry_fee"] == pytest.approx(hand["entry_fee"], rel=1e-12)

    # Unrealised: as if both legs closed at their last trades (3020 and 87000).
    feed.trade(Y, click + 1_000, 3_020.0)
    feed.trade(X, click + 1_100, 87_000.0)
    live = paper.positions_table(path, status="open", at_ms=click + 2_000).iloc[0]
    assert live["upnl_y"] == pytest.approx(hand["leg_y"], rel=1e-9)
    assert live["upnl_x"] == pytest.approx(hand["leg_x"], rel=1e-9)
    assert live["upnl"] == pytest.approx(hand["net"], rel=1e-9)
    assert live["holding_s"] == pytest.approx((click + 2_000 - click) / 1000)
    # z now is the page's current z of the pair (NaN when its beta guard refuses the newest
    # bar, as the strip shows it)
    now = paper.current_signal(path, Y, X, timeframe="1s", window=20, z_window=20,
                               method="ols", log_prices=True)
    assert live["z_now"] == now.z or (math.isnan(live["z_now"]) and math.isnan(now.z))

    # Close: filled at the next trade of each leg after the close click.
    close_click = click + 2_000
    assert paper.request_close(path, position_id, at_ms=close_click) == "closing"
    feed.trade(Y, close_click + 100, 3_020.0)
    feed.trade(X, close_click + 150, 87_000.0)
    assert paper.process(path, at_ms=close_click + 200)["exits"] == 1
    row = position(path, position_id)
    assert row["status"] == "closed" and row["close_reason"] == "manual"
    assert (row["exit_ref_y"], row["exit_ref_x"]) == (3_020.0, 87_000.0)
    assert row["gross_pnl"] == pytest.approx(hand["gross"], rel=1e-12)
    assert row["fees"] == pytest.approx(hand["fees"], rel=1e-12)
    assert row["pnl"] == pytest.approx(hand["net"], rel=1e-12)
    # The same numbers in the history table, read through a new connection (a restart).
    history = paper.positions_table(path, status="closed")
    assert history["pnl"].iloc[0] == pytest.approx(hand["net"], rel=1e-12)
    assert list(history.columns) == list(paper.HISTORY_COLUMNS)


def test_short_position_hand_computation(feed):
    click = NEWEST + 300
    position_id = paper.open_position(feed.path, order(side="short", fee_bps=4.0,
                                                       slippage_bps=1.0), at_ms=click)
    feed.trade(X, click + 10, 87_050.0)
    feed.trade(Y, click + 20, 3_001.0)
    paper.process(feed.path, at_ms=click + 30)
    paper.request_close(feed.path, position_id, at_ms=click + 40)
    feed.trade(Y, click + 50, 2_995.0)
    feed.trade(X, click + 60, 87_200.0)
    paper.process(feed.path, at_ms=click + 70)
    row = position(feed.path, position_id)
    hand = hand_round_trip("short", row["beta"], 10_000.0, 3_001.0, 87_050.0, 2_995.0,
                           87_200.0, 4.0, 1.0)
    assert row["qty_y"] < 0 < row["qty_x"]
    assert row["pnl"] == pytest.approx(hand["net"], rel=1e-12)
    assert row["fees"] == pytest.approx(hand["fees"], rel=1e-12)


def test_replay_clock_fills_at_next_stored_trade(feed):
    """Recorded trade times far from the wall clock: the stored order alone decides."""
    click = NEWEST + 86_400_000
    position_id = paper.open_position(feed.path, order(), at_ms=click)
    feed.trade(Y, NEWEST + 700, 3_005.0)
    feed.trade(X, NEWEST + 800, 87_010.0)
    paper.process(feed.path, at_ms=click + 1)
    row = position(feed.path, position_id)
    assert row["status"] == "open"
    assert (row["entry_ref_y"], row["entry_ref_x"]) == (3_005.0, 87_010.0)


def test_close_before_fill_cancels(feed):
    position_id = paper.open_position(feed.path, order(), at_ms=NEWEST + 100)
    assert paper.request_close(feed.path, position_id, at_ms=NEWEST + 200) == "cancelled"
    feed.trade(Y, NEWEST + 300, 3_005.0)
    feed.trade(X, NEWEST + 400, 87_010.0)
    assert paper.process(feed.path, at_ms=NEWEST + 500) == {"entries": 0, "exits": 0,
                                                            "auto_closed": 0}
    assert position(feed.path, position_id)["status"] == "cancelled"
    with pytest.raises(ValueError, match="already cancelled"):
        paper.request_close(feed.path, position_id)
    with pytest.raises(LookupError):
        paper.request_close(feed.path, 999)


def test_max_holding_closes_automatically(feed):
    click = NEWEST + 100
    position_id = paper.open_position(feed.path, order(max_holding_s=5), at_ms=click)
    feed.trade(Y, click + 10, 3_005.0)
    feed.trade(X, click + 20, 87_010.0)
    assert paper.process(feed.path, at_ms=click + 1_000) == {"entries": 1, "exits": 0,
                                                             "auto_closed": 0}
    counts = paper.process(feed.path, at_ms=click + 5_000)
    assert counts["auto_closed"] == 1
    row = position(feed.path, position_id)
    assert row["status"] == "closing" and row["close_reason"] == "max_holding"
    feed.trade(Y, click + 5_100, 3_006.0)
    feed.trade(X, click + 5_200, 87_020.0)
    paper.process(feed.path, at_ms=click + 5_300)
    row = position(feed.path, position_id)
    assert row["status"] == "closed" and row["closed_ms"] == click + 5_300


@pytest.mark.parametrize("side,z,expected", [
    ("long", -0.6, None), ("long", -0.4, "exit"), ("long", -3.1, "stop"),
    ("short", 0.6, None), ("short", 0.4, "exit"), ("short", 3.1, "stop"),
    ("long", math.nan, None),
])
def test_auto_close_rules(side, z, expected):
    row = {"side": side, "exit_z": 0.5, "stop_z": 3.0, "max_holding_s": None}
    assert paper.auto_close_reason(row, z, held_ms=10_000) == expected


def test_order_validation_names_the_field():
    with pytest.raises(ValueError, match="side"):
        order(side="up")
    with pytest.raises(ValueError, match="notional"):
        order(notional=-5)
    with pytest.raises(ValueError, match="x .*differ"):
        order(x=Y)
    with pytest.raises(ValueError, match=r"^y \('BTC-USDT'\) is not valid"):
        order(y="BTC-USDT")
    with pytest.raises(ValueError, match=r"^x \('btcusdt,solusdt'\) must be one symbol"):
        order(x="btcusdt,solusdt")
    assert order(y=" ethusdt ").y == Y
    with pytest.raises(ValueError, match="stop_z"):
        order(exit_z=1.0, stop_z=0.5)
    with pytest.raises(ValueError, match="leverage: unknown field"):
        paper.order_from_fields({"y": Y, "x": X, "side": "long", "notional": 1,
                                 "leverage": 3})
    with pytest.raises(ValueError, match="notional: missing"):
        paper.order_from_fields({"y": Y, "x": X, "side": "long"})


def test_no_position_before_the_hedge_exists(tmp_path):
    feed = Feed(str(tmp_path / "short.db"))
    for k in range(5):
        feed.trade(X, T0 + k * 1000, 87_000.0 + k)
        feed.trade(Y, T0 + k * 1000 + 1, 3_000.0 + k)
    with pytest.raises(ValueError, match="beta"):
        paper.open_position(feed.path, order(), at_ms=T0 + 6_000)


# --------------------------------------------------------------------------------------
# The page's Paper tab (AppTest) and start/stop collection
# --------------------------------------------------------------------------------------



@pytest.fixture
def page_env(tmp_path, monkeypatch):
    """A page whose collector cannot connect (a closed 127.0.0.1 port): only the scripted
    trades are stored. History ends a second ago, so the wall clock is the feed's clock."""
    feed = Feed(closed_feed_env(tmp_path, monkeypatch))
    feed.history(t0=paper.now_ms() // 1000 * 1000 - HISTORY_S * 1000)
    yield feed
    stop_page_services()


def test_page_opens_and_closes_a_paper_position(page_env, media):
    feed = page_env
    at = page(window=20, tab="Paper", paper_size=10_000.0, paper_fee=5.0, paper_slip=2.0)
    before = paper.now_ms()
    next(b for b in at.button if b.label.startswith("Open long spread")).click()
    at = run(at)
    assert any(s.value.startswith("position 1: long ETHUSDT/BTCUSDT placed")
               for s in at.success), [e.value for e in at.error]
    row = position(feed.path, 1)
    assert row["status"] == "opening" and row["requested_ms"] >= before

    click = int(row["requested_ms"])
    feed.trade(Y, click + 100, 3_010.0)
    feed.trade(X, click + 200, 87_100.0)
    paper.process(feed.path)  # what the monitor thread does twice a second
    marked = click + 400  # the newest stored trade: the open position's last mark
    feed.trade(Y, click + 300, 3_020.0)
    feed.trade(X, marked, 87_000.0)
    at = run(at)
    row = position(feed.path, 1)
    hand = hand_round_trip("long", row["beta"], 10_000.0, 3_010.0, 87_100.0, 3_020.0,
                           87_000.0, 5.0, 2.0)
    assert metric(at, "unrealised P&L") == f"{hand['net']:,.2f}"
    assert metric(at, "y legs") == f"{hand['leg_y']:,.2f}"
    assert_readable_table(at, "upnl", {"opened": click})

    at.selectbox(key="paper_close_choice").set_value(1)
    at.button(key="paper_close").click()
    at = run(at)
    assert position(feed.path, 1)["status"] == "closing"
    close_click = int(position(feed.path, 1)["close_requested_ms"])
    # The exit trades follow every stored trade, as an exchange's do: the last mark above
    # is stamped later than a close clicked within 0.4 s of the open.
    exit_at = max(close_click, marked)
    feed.trade(Y, exit_at + 100, 3_020.0)
    feed.trade(X, exit_at + 200, 87_000.0)
    paper.process(feed.path)
    at = run(at)
    assert metric(at, "realised P&L") == f"{hand['net']:,.2f}"
    assert metric(at, "fees paid") == f"{hand['fees']:,.2f}"
    # entry: each leg's first trade after the click (y at +100 ms; the +300 ms one only
    # marked the open position), exit: the first after the close request (x at +200 ms)
    assert_readable_table(at, "gross_pnl", {"opened": click, "y entry time": click + 100,
                                            "x exit time": exit_at + 200})
    history = pd.read_csv(io.BytesIO(download(at, media, "download_paper")))
    assert history["pnl"].iloc[0] == pytest.approx(hand["net"], rel=1e-12)
    assert history["close_reason"].iloc[0] == "manual"


def assert_readable_table(at, column: str, times: dict) -> None:
    """The Paper table holding ``column`` shows labels without "_", no epoch-ms column,
    and the ``times`` (label -> epoch ms) as wall-clock times in the display zone (#15)."""
    table = next(f for f in at.dataframe if column in f.value.columns)
    shown = {label: name for name, label in visible_columns(table).items()}
    assert all("_" not in label for label in shown), sorted(shown)
    for label, ms in times.items():
        text = table.value[shown[label]].iloc[0]
        assert text == dd.display_times([ms], "UTC")[0].strftime("%Y-%m-%d %H:%M:%S"), label


def test_stop_and_start_collection_from_the_page(page_env):
    at = page(tab="Health")
    assert not services.collection_paused()
    at.button(key="stop_collection").click()
    at = run(at)
    assert services.collection_paused()
    assert any(w.value.startswith("Collection stopped") for w in at.warning)
    assert any(m.value.startswith("**collection:** stopped") for m in at.markdown)
    assert services.current_feed() is not None and not services.current_feed().running
    at.button(key="start_collection").click()
    at = run(at)
    assert not services.collection_paused() and services.current_feed().running
    assert any(m.value.startswith("**collection:** running") for m in at.markdown)


def test_a_resumed_collector_is_paced_and_waits_for_the_page_like_a_started_one(
        page_env, monkeypatch):
    monkeypatch.setitem(services._PROCESS, "paused", True)
    monkeypatch.setitem(services._PROCESS, "last_feed", None)  # nothing ran before
    feed = services.resume_collection()
    assert feed.running
    assert feed.settings.backfill_pace == services.PAGE_BACKFILL_PACE
    assert feed.trades_after is services._PROCESS["page_served"]


def test_an_automatic_close_already_due_is_refused(feed):
    z = paper.current_signal(feed.path, Y, X, timeframe="1s", window=20, z_window=20,
                             method="ols", log_prices=True).z
    assert math.isfinite(z)
    # a long spread exits once z >= -exit_z: with exit_z above -z it would close at once
    side, exit_z = ("long", abs(z) + 0.5) if z > -0.5 else ("short", abs(z) + 0.5)
    with pytest.raises(ValueError, match="^exit_z: z is .* would close at once"):
        paper.open_position(feed.path, order(side=side, exit_z=exit_z), at_ms=NEWEST + 10)
    stop_z = max(abs(z) - 0.01, 0.0)  # a stop that is already beyond
    stop_side = "long" if z < 0 else "short"
    with pytest.raises(ValueError, match="^stop_z: "):
        paper.open_position(feed.path, order(side=stop_side, stop_z=stop_z),
                            at_ms=NEWEST + 10)
    with dd.writing(feed.path) as conn:
        assert database.list_paper_positions(conn).empty


def test_notify_records_an_alert_event_at_fill_and_close(feed):
    click = NEWEST + 100
    position_id = paper.open_position(feed.path, order(notify=True), at_ms=click)
    quiet_id = paper.open_position(feed.path, order(), at_ms=click)
    feed.trade(Y, click + 10, 3_005.0)
    feed.trade(X, click + 20, 87_010.0)
    paper.process(feed.path, at_ms=click + 30)
    for pid in (position_id, quiet_id):
        paper.request_close(feed.path, pid, at_ms=click + 40)
    feed.trade(Y, click + 50, 3_006.0)
    feed.trade(X, click + 60, 87_020.0)
    paper.process(feed.path, at_ms=click + 70)
    with dd.reading(feed.path) as conn:
        events = database.list_alert_events(conn)
    assert len(events) == 2  # the position without notify stays quiet
    closed, opened = events.to_dict("records")  # newest first
    assert opened["message"].startswith(f"paper position {position_id}: long "
                                        f"{Y}/{X} filled: {Y} 3005.601")
    assert (opened["ts"], opened["comparison"]) == (click + 30, "opened")
    row = position(feed.path, position_id)
    assert closed["comparison"] == "closed" and closed["value"] == pytest.approx(row["pnl"])
    assert f"P&L {row['pnl']:,.2f}" in closed["message"]


def test_the_monitor_fills_and_needs_no_write_lock_while_idle(feed):
    """The monitor's step fills orders like ``process``; with nothing to fill it must not
    wait for the write lock the collector holds during a batch (it keeps one connection:
    opening a writable one takes the lock to check the schema)."""
    monitor = paper.Monitor(feed.path)
    try:
        monitor.step()  # opens the monitor's connection
        blocker = database.connect(feed.path, busy_timeout_ms=0)
        blocker.execute("BEGIN IMMEDIATE")  # the collector in the middle of a batch
        try:
            monitor.step()
            monitor.step()
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert monitor.steps == 3
        click = paper.now_ms()
        position_id = paper.open_position(feed.path, order(), at_ms=click)
        feed.trade(Y, click + 10, 3_005.0)
        feed.trade(X, click + 20, 87_010.0)
        monitor.step()
        assert monitor.entries == 1
        assert position(feed.path, position_id)["status"] == "open"
    finally:
        monitor.stop()


def test_the_monitor_builds_no_table_while_no_position_is_open(feed, monkeypatch):
    """Twice a second, in the page's process: with no position to fill or watch a step is
    one indexed lookup, not the positions read into frames (~20 ms of the GIL each step on
    the benchmark machine); closed positions do not count."""
    reads = []
    listing = database.list_paper_positions
    monkeypatch.setattr(database, "list_paper_positions",
                        lambda conn, **kw: reads.append(kw) or listing(conn, **kw))
    monitor = paper.Monitor(feed.path)
    try:
        monitor.step()
        assert monitor.steps == 1 and reads == []
        click = paper.now_ms()
        position_id = paper.open_position(feed.path, order(), at_ms=click)
        monitor.step()  # an order to fill: the positions are read
        assert reads
        feed.trade(Y, click + 10, 3_005.0)
        feed.trade(X, click + 20, 87_010.0)
        monitor.step()
        paper.request_close(feed.path, position_id, at_ms=click + 30)
        feed.trade(Y, click + 40, 3_006.0)
        feed.trade(X, click + 50, 87_020.0)
        monitor.step()
        assert position(feed.path, position_id)["status"] == "closed"
        reads.clear()
        monitor.step()
        assert reads == []
    finally:
        monitor.stop()


def test_the_positions_table_reads_while_the_collector_holds_the_write_lock(feed):
    """The Paper tab and GET /api/paper/positions read: they must not wait for (or fail
    on) the write lock the collector holds during a batch."""
    position_id = paper.open_position(feed.path, order(), at_ms=paper.now_ms())
    blocker = database.connect(feed.path, busy_timeout_ms=0)
    blocker.execute("BEGIN IMMEDIATE")  # the collector in the middle of a batch
    try:
        table = paper.positions_table(feed.path, status="open")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert table["id"].tolist() == [position_id] and table["status"].tolist() == ["opening"]


def test_a_database_without_positions_reads_as_an_empty_table(tmp_path):
    path = str(tmp_path / "fresh.db")
    database.connect(path).close()  # the schema, but no paper position ever stored
    conn = database.connect(path, readonly=True)
    try:
        table = database.list_paper_positions(conn)
    finally:
        conn.close()
    assert table.empty and list(table.columns) == ["id", *database.PAPER_POSITION_FIELDS]


def test_a_table_from_an_older_version_gets_the_new_columns(tmp_path):
    path = str(tmp_path / "old.db")
    with dd.writing(path) as conn:
        conn.execute("CREATE TABLE paper_positions (id INTEGER PRIMARY KEY, y_symbol TEXT, "
                     "x_symbol TEXT, side TEXT, status TEXT)")
        conn.execute("INSERT INTO paper_positions (y_symbol, x_symbol, side, status) "
                     "VALUES ('ETHUSDT', 'BTCUSDT', 'long', 'closed')")
        table = database.list_paper_positions(conn)
    assert list(table.columns) == ["id", *database.PAPER_POSITION_FIELDS]
    assert table["side"].tolist() == ["long"] and table["notify"].isna().all()
