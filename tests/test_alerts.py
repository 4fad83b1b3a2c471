"""Tests of alerts.py (rules, trigger logic, metrics, evaluator, webhooks) on real SQLite files
and, for every test taking ``db_path`` or ``db_target``, a real PostgreSQL server as well.

Reference values: expected firing indices of hand-made series are worked out by hand in the
comments next to them; metric values are recomputed with ``analytics`` (``align``,
``pair_signals``, ``rolling_correlation``) on ALL stored bars up to the evaluated bar, or by
hand from the few trades written. Webhooks go to a real ``http.server`` on 127.0.0.1, the
built-in market test runs the real collector against the real simulated market.
"""

from __future__ import annotations

import dataclasses
import http.server
import importlib
import json
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import alerts
import analytics
import database
from config import Settings
from helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1_765_843_200_000  # 2025-12-16 00:00:00 UTC, a whole hour
Z_RTOL = 1e-6  # bounded read vs full history: same windows, rolling sums in another order


# ----------------------------------------------------------------------------- helpers



@pytest.fixture
def db_path(db_target):
    """A SQLite file, then a PostgreSQL database (conftest's ``db_target``): every test that
    takes it runs on both backends."""
    return db_target


@pytest.fixture
def conn(db_path):
    connection = database.connect(db_path)
    yield connection
    connection.close()


@pytest.fixture
def make_evaluator():
    made = []

    def make(*args, **kwargs):
        evaluator = alerts.Evaluator(*args, **kwargs)
        made.append(evaluator)
        return evaluator

    yield make
    for evaluator in made:
        evaluator.stop()


def trade(symbol, trade_id, ts, price, qty=1.0):
    return (symbol, trade_id, ts, float(price), float(qty), 0, ts + 5)


def write_prices(conn, symbol, prices, *, start=T0, offset_ms=300, first_id=1):
    """One trade per second: second k at ``start + k*1000 + offset_ms`` at ``prices[k]``."""
    trades = [trade(symbol, first_id + k, start + k * 1000 + offset_ms, p)
              for k, p in enumerate(prices) if p is not None]
    database.import_ticks(conn, trades)


def pair_trades(n, seed, *, start=T0, first_id=1):
    """A cointegrated pair, one trade per leg per second: log y = a + 1.2 log x + AR(1)."""
    rng = np.random.default_rng(seed)
    log_x = math.log(90_000.0) + np.cumsum(rng.normal(0, 1e-3, n))
    noise = np.zeros(n)
    for k in range(1, n):
        noise[k] = 0.8 * noise[k - 1] + rng.normal(0, 5e-4)
    log_y = math.log(3_000.0) - 1.2 * math.log(90_000.0) + 1.2 * log_x + noise
    trades = []
    for k in range(n):
        trades.append(trade("BTCUSDT", first_id + k, start + k * 1000 + 250,
                            round(math.exp(log_x[k]), 2), 0.01))
        trades.append(trade("ETHUSDT", first_id + k, start + k * 1000 + 400,
                            round(math.exp(log_y[k]), 2), 1.0))
    return trades


def reference_signals(conn, end_ms, *, window, z_window, method="ols", timeframe="1s"):
    """analytics on every stored bar before ``end_ms``: what the page would show."""
    bars_y = database.read_bars(conn, "ETHUSDT", None, end_ms, timeframe)
    bars_x = database.read_bars(conn, "BTCUSDT", None, end_ms, timeframe)
    aligned = analytics.align(bars_y, bars_x, timeframe=timeframe)
    signals = analytics.pair_signals(aligned.y, aligned.x, method=method, window=window,
                                     z_window=z_window, bar_ms=aligned.bar_ms)
    return aligned, signals


def now_for(bar_open_ms, timeframe_ms=1000):
    """A time at which ``bar_open_ms`` is the last complete (settled) bar."""
    return bar_open_ms + timeframe_ms + alerts.BAR_SETTLE_MS + 100


def events(conn, **kwargs):
    return database.list_alert_events(conn, limit=None, **kwargs)


def run_series(rule, values, step_ms=1000):
    """Feed ``values`` to ``evaluate`` at t = i * step_ms; return the indices that fired."""
    state, fired_at = alerts.RuleState(), []
    for i, value in enumerate(values):
        fired, state = alerts.evaluate(rule, value, state, i * step_ms)
        if fired:
            fired_at.append(i)
    return fired_at


def price_rule(comparison, threshold, hysteresis=0.0, cooldown_s=0.0, symbol="BTCUSDT",
               **extra):
    return alerts.validate_rule(metric="price", symbol=symbol, comparison=comparison,
                                threshold=threshold, hysteresis=hysteresis,
                                cooldown_s=cooldown_s, **extra)


# ----------------------------------------------------------------------- pure evaluate


# Worked by hand, threshold t=2 (mirrored -2 for "<"/"crosses_below"), hysteresis 0.5:
# ">"  : 2.5 fires (i1); 3, 1.8 (not < 1.5), 2.2 stay disarmed; 1.4 re-arms; 2.1 fires (i6);
#        2.1 disarmed; 0 re-arms; 5 fires (i9).
# "abs>": same with signs flipped at will: |x| is what counts; 2.1 -> -2.1 does not re-fire.
# "crosses_above": 2.5 first value (no previous) no; 1 -> 2.5 fires (i2); 1.8 not < 1.5 so the
#        cross 1.8 -> 2.2 (i4) does not count; 1.4 re-arms; 1.4 -> 2.1 fires (i6); 1.9 -> 2.0
#        (i9) is a cross but 1.9 did not re-arm.
UP = [1, 2.5, 3, 1.8, 2.2, 1.4, 2.1, 2.1, 0, 5]
CROSS_UP = [2.5, 1, 2.5, 1.8, 2.2, 1.4, 2.1, 2.1, 1.9, 2.0]


@pytest.mark.parametrize("comparison, threshold, values, expected", [
    (">", 2.0, UP, [1, 6, 9]),
    ("<", -2.0, [-v for v in UP], [1, 6, 9]),
    ("abs>", 2.0, [1, -2.5, 3, 1.8, -2.2, 1.4, 2.1, -2.1, 0, -5], [1, 6, 9]),
    ("crosses_above", 2.0, CROSS_UP, [2, 6]),
    ("crosses_below", -2.0, [-v for v in CROSS_UP], [2, 6]),
])
def test_fires_once_per_crossing_with_hysteresis(comparison, threshold, values, expected):
    rule = price_rule(comparison, threshold, hysteresis=0.5)
    assert run_series(rule, values) == expected


@pytest.mark.parametrize("comparison, sign", [("crosses_above", 1), ("crosses_below", -1)])
def test_crossing_without_hysteresis_counts_every_cross(comparison, sign):
    # h = 0: 1 -> 2.5 (i2), 1.8 -> 2.2 (i4), 1.4 -> 2.1 (i6), 1.9 -> 2.0 (i9, 2 <= 2.0).
    rule = price_rule(comparison, 2.0 * sign)
    assert run_series(rule, [sign * v for v in CROSS_UP]) == [2, 4, 6, 9]


def test_level_rule_fires_after_the_cooldown_if_still_true():
    # cooldown 6 s, t = i s: fire at i1; re-armed at i5 (1.4); i6 (t=6 s) is 5 s after the
    # firing: suppressed but still armed; i7 (6 s after) fires; i9 (2 s after i7) suppressed.
    rule = price_rule(">", 2.0, hysteresis=0.5, cooldown_s=6)
    assert run_series(rule, UP) == [1, 7]


def test_a_cross_during_the_cooldown_is_lost():
    # crosses at i1, i3, i5, i7 (t = i s); cooldown 5 s: i3 and i5 are within 5 s of i1.
    rule = price_rule("crosses_above", 2.0, cooldown_s=5)
    assert run_series(rule, [1, 3, 1, 3, 1, 3, 1, 3]) == [1, 7]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fires_exactly_once_per_excursion_on_a_random_walk(seed):
    values = np.cumsum(np.random.default_rng(seed).normal(0, 1, 2_000))
    threshold = float(np.median(values))
    rule = price_rule(">", threshold)
    above = values > threshold
    # Reference: runs of consecutive values above the threshold (h = 0, no cooldown).
    runs = int(above[0]) + int(np.sum(above[1:] & ~above[:-1]))
    assert runs > 5
    assert len(run_series(rule, values.tolist())) == runs


def test_nan_changes_nothing_and_crossing_spans_the_gap():
    rule = price_rule("crosses_above", 2.0)
    state = alerts.RuleState(armed=True, last_fired_ms=None, previous_value=1.0)
    fired, after_nan = alerts.evaluate(rule, math.nan, state, 1_000)
    assert not fired and after_nan == state
    fired, _ = alerts.evaluate(rule, 3.0, after_nan, 2_000)  # 1.0 (before the gap) -> 3.0
    assert fired


def test_describe_state_in_words():
    rule = price_rule(">", 2.0, hysteresis=0.2, cooldown_s=60)
    assert alerts.describe_state(rule, alerts.RuleState(False, 0, 2.5), 1_000) == (
        "disarmed", "disarmed until below 1.8")
    assert alerts.describe_state(rule, alerts.RuleState(True, 0, 1.0), 15_500) == (
        "cooling down", "cooling down: 45 s left")
    assert alerts.describe_state(rule, alerts.RuleState(), 0) == (
        "armed", "armed: fires when value > 2")
    below = price_rule("<", -2.0, hysteresis=0.5)
    assert alerts.describe_state(below, alerts.RuleState(False, 0, -3), 0)[1] == (
        "disarmed until above -1.5")


# -------------------------------------------------------------------------- validation


@pytest.mark.parametrize("changes, message", [
    ({"metric": "zscroe"}, r"metric \('zscroe'\) is not known: use one of zscore"),
    ({"threshold": "abc"}, r"threshold \('abc'\) must be a number"),
    ({"threshold": None}, r"threshold \(None\) must be a number"),
    ({"threshold": float("nan")}, r"threshold \(nan\) must be a finite number"),
    ({"y_symbol": "eth-usdt"}, r"y_symbol \('eth-usdt'\) is not valid"),
    ({"x_symbol": ""}, r"x_symbol \(''\) is missing"),
    ({"x_symbol": "ethusdt"}, r"y_symbol and x_symbol \('ETHUSDT'\) must differ"),
    ({"x_symbol": "btcusdt,solusdt"}, r"x_symbol \('btcusdt,solusdt'\) must be one symbol"),
    ({"symbol": "BTCUSDT"}, r"metric 'zscore' needs a pair"),
    ({"cooldown_s": -1}, r"cooldown_s \(-1.0\) must be >= 0"),
    ({"hysteresis": -0.1}, r"hysteresis \(-0.1\) must be >= 0"),
    ({"hysteresis": 2.0}, r"hysteresis \(2.0\) must be smaller than the threshold"),
    ({"threshold": 0}, r"threshold \(0.0\) must be > 0 for 'abs>'"),
    ({"webhook_url": "ftp://example.com/x"}, r"webhook_url \('ftp://example.com/x'\) must be"),
    ({"webhook_url": "https://"}, r"webhook_url \('https://'\) must be an http"),
    ({"webhook_url": "http://a b.com/"}, r"webhook_url"),
    ({"comparison": "=>"}, r"comparison \('=>'\) must be one of >, <, crosses_above"),
    ({"timeframe": "2s"}, r"timeframe \('2s'\) must be one of 1s"),
    ({"window": 5}, r"window \(5\) must be between 10 and 5000"),
    ({"window": 60.5}, r"window \(60.5\) must be a whole number"),
    ({"z_window": 1}, r"z_window \(1\) must be between 2"),
    ({"method": "lasso"}, r"method \('lasso'\) must be one of ols"),
    ({"method": "theil-sen", "window": 300}, r"at most 250 with method 'theil-sen'"),
    ({"log_prices": "yes"}, r"log_prices \('yes'\) must be True or False"),
    ({"enabled": 2}, r"enabled \(2\) must be True or False"),
    ({"thresh": 2}, r"unknown rule fields \['thresh'\]"),
])
def test_invalid_rules_are_rejected_with_the_field_and_value(changes, message):
    fields = dict(metric="zscore", comparison="abs>", threshold=2.0, y_symbol="ETHUSDT",
                  x_symbol="BTCUSDT")
    fields.update(changes)
    with pytest.raises(ValueError, match=message):
        alerts.validate_rule(**fields)


@pytest.mark.parametrize("fields, message", [
    (dict(metric="price", y_symbol="ETHUSDT", x_symbol="BTCUSDT", comparison=">",
          threshold=1), r"metric 'price' takes one symbol: give symbol, not a pair"),
    (dict(metric="price", comparison=">", threshold=1), r"symbol \(None\) is missing"),
    (dict(metric="correlation", y_symbol="ETHUSDT", x_symbol="BTCUSDT", comparison="<",
          threshold=1.5), r"threshold \(1.5\) must be between -1 and 1"),
    (dict(metric="price", symbol="BTCUSDT", threshold=1), r"comparison is missing"),
])
def test_subject_and_metric_checks(fields, message):
    with pytest.raises(ValueError, match=message):
        alerts.validate_rule(**fields)


def test_validation_normalises_form_input():
    rule = alerts.validate_rule(metric="zscore", comparison="abs>", threshold="2.5",
                                y_symbol=" ethusdt ", x_symbol="BtcUsdt", timeframe="1m",
                                window="30", cooldown_s="0", webhook_url="")
    assert (rule.threshold, rule.y_symbol, rule.x_symbol) == (2.5, "ETHUSDT", "BTCUSDT")
    assert (rule.timeframe, rule.window, rule.z_window) == ("1min", 30, 30)
    assert rule.webhook_url is None and rule.id is None and rule.symbol is None
    assert rule.name == "z-score ETHUSDT/BTCUSDT abs> 2.5"
    assert rule.subject == "ETHUSDT/BTCUSDT"
    with pytest.raises(ValueError, match=r"threshold \('x'\) must be a number"):
        alerts.AlertRule(metric="price", symbol="btcusdt", comparison=">", threshold="x")


# ---------------------------------------------------------------- storage, CRUD, defaults


def test_rules_are_stored_listed_edited_and_deleted(conn):
    rule_id = alerts.create_rule(conn, metric="price", symbol="btcusdt", comparison=">",
                                 threshold=100, hysteresis=1, cooldown_s=30,
                                 webhook_url="http://127.0.0.1:9/hook")
    frame = database.list_alert_rules(conn)
    assert frame["id"].tolist() == [rule_id]
    row = frame.iloc[0]
    assert (row["symbol"], row["threshold"], row["state"]) == ("BTCUSDT", 100.0,
                                                               "not checked yet")
    assert row["y_symbol"] is None and bool(row["enabled"]) and row["events"] == 0
    assert alerts.list_rules(conn) == [alerts.get_rule(conn, rule_id)]
    database.write_alert_status(conn, rule_id, state="disarmed", detail="d", checked_ms=T0,
                                value=105.0, armed=False, last_fired_ms=T0)

    alerts.edit_rule(conn, rule_id, name="BTC breakout", cooldown_s=10)  # keeps the state
    assert database.read_alert_status(conn)[rule_id]["armed"] is False
    edited = alerts.edit_rule(conn, rule_id, threshold="110")  # re-arms
    assert edited.threshold == 110.0 and edited.name == "BTC breakout"
    assert rule_id not in database.read_alert_status(conn)
    with pytest.raises(ValueError, match=r"threshold \('high'\) must be a number"):
        alerts.edit_rule(conn, rule_id, threshold="high")
    with pytest.raises(ValueError, match=r"unknown rule fields \['id'\]"):
        alerts.edit_rule(conn, rule_id, id=5)

    database.set_alert_rule_enabled(conn, rule_id, False)
    assert database.list_alert_rules(conn)["state"].tolist() == ["disabled"]
    assert database.list_alert_rules(conn, enabled_only=True).empty
    database.insert_alert_event(conn, rule_id=rule_id, ts=T0, value=111.0, threshold=110.0,
                                message="m", rule_name="BTC breakout", metric="price",
                                subject="BTCUSDT", comparison=">")
    assert database.delete_alert_rule(conn, rule_id)
    assert not database.delete_alert_rule(conn, rule_id)
    assert database.list_alert_rules(conn).empty
    kept = events(conn)
    assert kept["rule_id"].tolist() == [rule_id] and kept["rule_name"].tolist() == [
        "BTC breakout"]
    with pytest.raises(ValueError, match=rf"rule_id \({rule_id}\) does not exist"):
        database.update_alert_rule(conn, rule_id, threshold=1.0)


def test_update_with_unchanged_values_keeps_the_trigger_state(conn):
    rule = alerts.validate_rule(metric="price", symbol="BTCUSDT", comparison=">", threshold=1)
    rule_id = database.save_alert_rule(conn, rule)
    database.write_alert_status(conn, rule_id, state="disarmed", detail="", checked_ms=T0,
                                armed=False)
    # A form that submits every field, unchanged:
    database.update_alert_rule(conn, rule_id, **{name: getattr(rule, name)
                                                 for name in database.ALERT_RULE_FIELDS})
    assert database.read_alert_status(conn)[rule_id]["armed"] is False
    with pytest.raises(ValueError, match=r"unknown alert rule fields \['colour'\]"):
        database.update_alert_rule(conn, rule_id, colour="red")
    with pytest.raises(ValueError, match=r"must be None for a new rule"):
        database.save_alert_rule(conn, alerts.validate_rule(**{**rule.__dict__, "id": 3}))


def test_method_matters_only_for_hedge_metrics():
    price = alerts.validate_rule(metric="price", symbol="BTCUSDT", comparison=">", threshold=1,
                                 method="kalman", window=1000)  # the page's settings as they are
    assert price.method == "kalman"
    defaults = alerts.default_rules("ETHUSDT", "BTCUSDT", method="kalman")
    assert {rule.method for rule in defaults} == {"kalman"}  # the page's method as it is
    assert {r.method for r in alerts.default_rules("ETHUSDT", "BTCUSDT", method="tls")} == {
        "tls"}
    assert {r.method for r in alerts.default_rules("ETHUSDT", "BTCUSDT", method="theil-sen",
                                                   window=500)} == {"ols"}


def test_default_rules_are_added_once_and_disabled(conn):
    rules = alerts.default_rules("ethusdt", "btcusdt", window=30)
    assert [(r.metric, r.comparison, r.threshold, r.enabled) for r in rules] == [
        ("zscore", "abs>", 2.0, False), ("zscore", "abs>", 3.0, False)]
    assert {r.subject for r in rules} == {"ETHUSDT/BTCUSDT"} and rules[0].window == 30
    first = alerts.ensure_default_rules(conn, "ETHUSDT", "BTCUSDT", window=30)
    assert len(first) == 2
    for _ in range(3):  # page reruns
        assert alerts.ensure_default_rules(conn, "ETHUSDT", "BTCUSDT", window=30) == []
    frame = database.list_alert_rules(conn)
    assert frame["threshold"].tolist() == [2.0, 3.0]
    assert frame["state"].tolist() == ["disabled", "disabled"]
    database.delete_alert_rule(conn, first[0])
    assert alerts.ensure_default_rules(conn, "ETHUSDT", "BTCUSDT") == []  # stays deleted
    assert len(alerts.ensure_default_rules(conn, "SOLUSDT", "BTCUSDT")) == 2


def test_events_are_listed_newest_first_and_since_an_id(conn):
    ids = [database.insert_alert_event(conn, rule_id=1, ts=T0 + k, value=float(k),
                                       threshold=0.0, message=f"m{k}", rule_name="r",
                                       metric="price", subject="BTCUSDT", comparison=">")
           for k in range(5)]
    assert events(conn)["id"].tolist() == ids[::-1]
    assert database.list_alert_events(conn, since_id=ids[2])["id"].tolist() == ids[:2:-1]
    assert database.list_alert_events(conn, limit=2)["id"].tolist() == ids[:2:-1]
    assert database.latest_alert_event_id(conn) == ids[-1]
    assert database.list_alert_events(conn, since_id=ids[-1]).empty


# ----------------------------------------------------------------------------- metrics


def test_last_complete_bar_waits_for_the_settle_time():
    # The bar [T0, T0+1000) is complete once T0 + 1000 + BAR_SETTLE_MS has passed.
    assert alerts.last_complete_bar(T0 + 1000 + alerts.BAR_SETTLE_MS, "1s") == T0
    assert alerts.last_complete_bar(T0 + 1000 + alerts.BAR_SETTLE_MS - 1, "1s") == T0 - 1000
    assert alerts.last_complete_bar(T0 + 60_000 + alerts.BAR_SETTLE_MS, "1m") == T0


def test_price_metrics_by_hand(conn):
    write_prices(conn, "BTCUSDT", [100, 110, 121, 100, 90, 95])
    now = now_for(T0 + 4000)  # bar 5 (95) is still building: bar 4 is the last complete
    price = alerts.compute_metric(conn, price_rule(">", 1), now)
    assert (price.value, price.ready, price.as_of_ts) == (90.0, True, T0 + 4000)
    change_rule = alerts.validate_rule(metric="price_change_pct", symbol="BTCUSDT",
                                       comparison="<", threshold=-5, window=2)
    change = alerts.compute_metric(conn, change_rule, now)
    # Window = bars 3 and 4; the price at its start is the last trade before bar 3: 121.
    assert change.ready and change.value == pytest.approx(100 * (90 / 121 - 1), rel=1e-12)
    long_rule = alerts.validate_rule(metric="price_change_pct", symbol="BTCUSDT",
                                     comparison="<", threshold=-5, window=5)
    waiting = alerts.compute_metric(conn, long_rule, now)
    assert not waiting.ready and math.isnan(waiting.value)
    assert waiting.detail.startswith("waiting for data: needs a price before")
    unknown = alerts.compute_metric(conn, price_rule(">", 1, symbol="SOLUSDT"), now)
    assert not unknown.ready and "no trades of SOLUSDT" in unknown.detail


def test_volume_and_trade_spikes_by_hand(conn):
    # Seconds 0..5: one trade of qty 1, except second 3 (no trade) and second 5 (two
    # trades of qty 2). Baseline = seconds 0..4 = 4 units in 5 bars (empty bar = 0).
    trades = [trade("BTCUSDT", k + 1, T0 + k * 1000 + 100, 100.0, 1.0) for k in (0, 1, 2, 4)]
    trades += [trade("BTCUSDT", 10, T0 + 5100, 100.0, 2.0),
               trade("BTCUSDT", 11, T0 + 5200, 100.0, 2.0)]
    database.import_ticks(conn, trades)
    now = now_for(T0 + 5000)
    volume = alerts.validate_rule(metric="volume_spike", symbol="BTCUSDT", comparison=">",
                                  threshold=3, window=5)
    trades_rule = dataclasses.replace(volume, metric="trades_spike")
    assert alerts.compute_metric(conn, volume, now).value == pytest.approx(4 / (4 / 5))
    assert alerts.compute_metric(conn, trades_rule, now).value == pytest.approx(2 / (4 / 5))
    too_long = dataclasses.replace(volume, window=6)
    result = alerts.compute_metric(conn, too_long, now)
    assert result.detail == "waiting for data: needs 7 bars of history, has 6"


def test_last_trade_age(conn):
    write_prices(conn, "BTCUSDT", [100, 101], offset_ms=300)  # last trade at T0 + 1300
    rule = alerts.validate_rule(metric="last_trade_age", symbol="BTCUSDT", comparison=">",
                                threshold=5)
    result = alerts.compute_metric(conn, rule, T0 + 8_000)
    assert (result.value, result.as_of_ts) == (6.7, T0 + 8_000)


def test_pair_metrics_match_analytics_on_the_full_history(conn):
    database.import_ticks(conn, pair_trades(300, seed=7))
    now = now_for(T0 + 250_000)  # bars 251.. exist but are not complete yet
    end = T0 + 251_000
    aligned, signals = reference_signals(conn, end, window=40, z_window=30)
    common = dict(y_symbol="ETHUSDT", x_symbol="BTCUSDT", window=40, z_window=30,
                  comparison=">", threshold=0.5)
    z = alerts.compute_metric(conn, alerts.validate_rule(metric="zscore", **common), now)
    assert z.ready and z.as_of_ts == T0 + 250_000
    assert z.value == pytest.approx(signals.frame["z"].iloc[-1], rel=Z_RTOL)
    spread = alerts.compute_metric(conn, alerts.validate_rule(metric="spread", **common), now)
    assert spread.value == pytest.approx(signals.frame["spread"].iloc[-1], rel=Z_RTOL)
    beta = signals.frame["beta"]
    expected_change = 100 * (beta.iloc[-1] - beta.iloc[-41]) / abs(beta.iloc[-41])
    change = alerts.compute_metric(conn, alerts.validate_rule(metric="beta_change", **common),
                                   now)
    assert change.value == pytest.approx(expected_change, rel=Z_RTOL)
    correlation = analytics.rolling_correlation(aligned.y, aligned.x, 40,
                                                co_traded=aligned.both_traded)
    corr = alerts.compute_metric(conn, alerts.validate_rule(
        metric="correlation", **{**common, "threshold": 0.5}), now)
    assert corr.value == pytest.approx(correlation.iloc[-1], rel=Z_RTOL)


def test_rules_on_one_pair_and_settings_share_one_computation(conn, monkeypatch):
    database.import_ticks(conn, pair_trades(200, seed=5))
    calls = []
    original = analytics.pair_signals

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(analytics, "pair_signals", counting)
    common = dict(y_symbol="ETHUSDT", x_symbol="BTCUSDT", window=30, comparison=">",
                  threshold=1.0)
    cache, now = {}, now_for(T0 + 150_000)
    for metric in ("zscore", "spread", "beta_change", "zscore"):
        assert alerts.compute_metric(conn, alerts.validate_rule(metric=metric, **common), now,
                                     cache=cache).ready
    assert len(calls) == 1
    alerts.compute_metric(conn, alerts.validate_rule(metric="zscore", method="tls", **common),
                          now, cache=cache)
    assert len(calls) == 2  # other settings: computed again


def test_no_value_while_the_z_window_is_incomplete(conn, db_path, make_evaluator):
    database.import_ticks(conn, pair_trades(40, seed=3))
    rule_id = alerts.create_rule(conn, metric="zscore", y_symbol="ETHUSDT",
                                 x_symbol="BTCUSDT", window=10, z_window=10,
                                 comparison="abs>", threshold=0.01, cooldown_s=0)
    rule = alerts.get_rule(conn, rule_id)
    result = alerts.compute_metric(conn, rule, now_for(T0 + 13_000))  # bars 0..13
    assert not result.ready and math.isnan(result.value)
    assert result.detail == "waiting for data: needs 20 bars, has 14"
    evaluator = make_evaluator(db_path)
    for bar in range(13, 19):  # 14 .. 19 bars: z needs window + z_window = 20
        assert evaluator.tick(now_for(T0 + bar * 1000)) == []
        status = database.read_alert_status(conn)[rule_id]
        assert status["state"] == "waiting for data"
        assert status["detail"] == f"waiting for data: needs 20 bars, has {bar + 1}"
    assert events(conn).empty
    _, signals = reference_signals(conn, T0 + 20_000, window=10, z_window=10)
    assert np.isnan(signals.frame["z"].iloc[-2]) and abs(signals.frame["z"].iloc[-1]) > 0.01
    assert len(evaluator.tick(now_for(T0 + 19_000))) == 1  # the 20th bar
    event = events(conn).iloc[0]
    assert event["as_of_ts"] == T0 + 19_000
    assert event["value"] == pytest.approx(signals.frame["z"].iloc[-1], rel=Z_RTOL)


# --------------------------------------------------------------------------- evaluator


def test_evaluator_stores_one_event_per_crossing_and_logs_it(conn, db_path, make_evaluator,
                                                             caplog):
    write_prices(conn, "BTCUSDT", [100, 103, 104, 101, 99, 103, 104])
    rule_id = alerts.create_rule(conn, name="BTC > 102", metric="price", symbol="BTCUSDT",
                                 comparison=">", threshold=102, hysteresis=2, cooldown_s=0)
    evaluator = make_evaluator(db_path)
    caplog.set_level(logging.WARNING, logger="alerts")
    fired = []
    for bar in range(6):
        for extra_ms in (0, 300):  # two ticks within one bar: evaluated once
            fired += evaluator.tick(now_for(T0 + bar * 1000) + extra_ms)
    # 100 no; 103 fires (bar 1); 104, 101 (not < 100) disarmed; 99 re-arms; 103 fires (bar 5).
    stored = events(conn)
    assert stored["id"].tolist() == fired[::-1]
    assert stored["as_of_ts"].tolist() == [T0 + 5000, T0 + 1000]
    assert stored["value"].tolist() == [103.0, 103.0]
    assert set(stored["delivered"]) == {"not requested"}
    assert stored["message"].iloc[0] == "BTC > 102: price of BTCUSDT = 103, above 102 (1s bars)"
    lines = [r.getMessage() for r in caplog.records if r.name == "alerts"]
    assert len(lines) == 2 and all(f"rule {rule_id}:" in line for line in lines)
    status = database.list_alert_rules(conn).iloc[0]
    assert (status["state"], status["value"], status["events"]) == ("disarmed", 103.0, 2)
    assert status["detail"].startswith("disarmed until below 100")
    assert evaluator.status()["events_fired"] == 2


def test_stale_feed_rule_fires_every_tick_evaluation(conn, db_path, make_evaluator):
    write_prices(conn, "BTCUSDT", [100])  # one trade at T0 + 300
    alerts.create_rule(conn, metric="last_trade_age", symbol="BTCUSDT", comparison=">",
                       threshold=10, cooldown_s=0)
    evaluator = make_evaluator(db_path)
    assert evaluator.tick(T0 + 5_000) == []  # 4.7 s old
    assert len(evaluator.tick(T0 + 11_000)) == 1  # 10.7 s old
    assert events(conn)["value"].tolist() == [pytest.approx(10.7)]


def test_a_second_evaluator_on_the_same_file_stands_by(conn, db_path, make_evaluator):
    write_prices(conn, "BTCUSDT", [100, 105])
    alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">", threshold=1)
    now = now_for(T0 + 1000)
    first = make_evaluator(db_path, clock=lambda: now)
    second = make_evaluator(db_path, clock=lambda: now)
    assert len(first.tick()) == 1
    assert second.tick() == [] and second.status()["standby"]
    first.stop()  # releases the lease
    second.tick()
    assert not second.status()["standby"]
    assert len(events(conn)) == 1  # disarmed: the still-true condition does not fire again


# An evaluator in its own process that says when it holds the lease, then runs until killed.
LEASE_HOLDER_SCRIPT = """
import sys, time
import alerts
evaluator = alerts.Evaluator(sys.argv[1], interval=float(sys.argv[2])).start()
deadline = time.monotonic() + 60  # never leave the test waiting on a silent process
while not (evaluator.status()["ticks"] and not evaluator.status()["standby"]):
    if time.monotonic() > deadline:
        sys.exit(f"never evaluated: {evaluator.status()}")
    time.sleep(0.02)
print("evaluating", flush=True)
time.sleep(600)
"""


def test_postgresql_lease_passes_to_a_survivor_within_seconds_of_a_kill(postgres_db,
                                                                        make_evaluator):
    interval = 0.2
    conn = database.connect(postgres_db)
    write_prices(conn, "BTCUSDT", [100])  # in 2025: stale from the first tick on
    rule_id = alerts.create_rule(conn, metric="last_trade_age", symbol="BTCUSDT",
                                 comparison=">", threshold=1, cooldown_s=0)

    def status():
        return database.read_alert_status(conn).get(rule_id)

    owner = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER_SCRIPT, postgres_db,
                              str(interval)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "evaluating", owner.stderr.read()
        survivor = make_evaluator(postgres_db, interval=interval).start()
        assert wait_until(lambda: survivor.status()["standby"], 10)
        checked = status()["checked_ms"]
        time.sleep(5 * interval)
        assert status()["checked_ms"] > checked  # the owner evaluates ...
        assert survivor.status()["ticks"] == 0 and survivor.status()["standby"]  # alone
        assert len(events(conn)) == 1 and not status()["armed"]  # fired once, disarmed
    finally:
        owner.kill()  # SIGKILL: no release; the server ends the session and its lock
        owner.wait(10)
    killed_ms = alerts.now_ms()
    assert wait_until(lambda: survivor.status()["ticks"] >= 1, 5), survivor.status()
    took_over_s = (survivor.status()["last_tick_ms"] - killed_ms) / 1000
    assert not survivor.status()["standby"] and took_over_s < 3
    assert wait_until(lambda: survivor.status()["ticks"] >= 5, 5)
    # It continues from the stored state: the condition still holds but the rule is
    # disarmed, so the owner's firing is not repeated.
    assert len(events(conn)) == 1 and status()["checked_ms"] >= killed_ms
    # A fresh trade re-arms the rule (age < 1 s); a second later it fires, once, here.
    now = alerts.now_ms()
    database.import_ticks(conn, [trade("BTCUSDT", 2, now, 101)])
    assert wait_until(lambda: len(events(conn)) == 2, 5), status()
    time.sleep(5 * interval)
    survivor.stop()
    stored = events(conn)
    assert len(stored) == 2 and survivor.status()["events_fired"] == 1
    assert stored["ts"].iloc[0] >= now + 1000 and stored["ts"].iloc[1] < killed_ms
    conn.close()


def test_postgresql_lease_survives_the_holder_losing_its_connection(postgres_db,
                                                                    make_evaluator):
    # The server ends the holder's session (a network cut, an admin's pg_terminate_backend):
    # its lock goes with it; whichever evaluator claims first at the next tick holds it
    # (the old holder reconnects and may win), and again exactly one evaluates.
    conn = database.connect(postgres_db)
    write_prices(conn, "BTCUSDT", [100])
    rule_id = alerts.create_rule(conn, metric="last_trade_age", symbol="BTCUSDT",
                                 comparison=">", threshold=1, cooldown_s=0)
    pair = [make_evaluator(postgres_db, interval=0.2).start() for _ in range(2)]

    def one_evaluates():
        before = [e.status()["ticks"] for e in pair]
        time.sleep(1.0)
        grew = [e.status()["ticks"] > b for e, b in zip(pair, before)]
        standby = [e.status()["standby"] for e in pair]
        return grew.count(True) == 1 and standby == [not g for g in grew]

    assert wait_until(lambda: any(e.status()["ticks"] for e in pair), 10)
    assert one_evaluates()
    holder_pid = json.loads(conn.execute("SELECT value FROM meta WHERE key = ?",
                                         ("alert_evaluator",)).fetchone()[0])["pid"]
    assert conn.execute("SELECT pg_terminate_backend(?)", (holder_pid,)).fetchone()[0]
    cut_ms = alerts.now_ms()
    assert wait_until(
        lambda: database.read_alert_status(conn)[rule_id]["checked_ms"] > cut_ms + 500, 5)
    assert one_evaluates()
    assert len(events(conn)) == 1  # the firing before the cut, not repeated after it
    conn.close()


def test_invalid_stored_rule_reports_an_error_and_others_still_run(conn, db_path,
                                                                   make_evaluator):
    write_prices(conn, "BTCUSDT", [100, 105])
    bad = alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">",
                             threshold=1)
    good = alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">",
                              threshold=2)
    conn.execute("UPDATE alert_rules SET metric = 'gamma' WHERE id = ?", (bad,))
    make_evaluator(db_path).tick(now_for(T0 + 1000))
    statuses = database.read_alert_status(conn)
    assert statuses[bad]["state"] == "error"
    assert "metric ('gamma') is not known" in statuses[bad]["detail"]
    assert events(conn)["rule_id"].tolist() == [good]


def test_evaluator_waits_for_the_database_file_instead_of_creating_it(tmp_path,
                                                                      make_evaluator):
    path = tmp_path / "not-yet.db"  # 'auto' may still switch to another file
    evaluator = make_evaluator(lambda: str(path))
    assert evaluator.tick(T0) == [] and not path.exists()
    assert make_evaluator(lambda: None).tick(T0) == []


def test_start_evaluator_is_one_per_process_even_after_a_reimport(conn, db_path, monkeypatch):
    # What Streamlit does when a module changed: drop it from sys.modules and import again.
    monkeypatch.delitem(sys.modules, "alerts")
    reimported = importlib.import_module("alerts")
    assert reimported is not alerts
    try:
        first = alerts.start_evaluator(lambda: db_path, interval=0.2)
        second = reimported.start_evaluator(lambda: db_path)
        assert first is second and alerts.running_evaluator() is first
        names = [t.name for t in threading.enumerate()]
        assert names.count("alerts-evaluator") == 1
        assert wait_until(lambda: alerts.evaluator_status()["ticks"] >= 2, 5)
        assert alerts.evaluator_status()["running"]
    finally:
        alerts.stop_evaluator()
    assert alerts.running_evaluator() is None
    assert not alerts.evaluator_status()["running"]


# ----------------------------------------------------------------------------- webhooks


class HookServer:
    """A local HTTP server: /ok answers 200, /flaky 500 then 200, /slow sleeps 5 s, /gone 410."""

    def __init__(self):
        self.requests = []  # (path, headers, body)
        self.lock = threading.Lock()
        hooks = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hooks.lock:
                    hooks.requests.append((self.path, dict(self.headers), json.loads(body)))
                    seen = sum(1 for r in hooks.requests if r[0] == self.path)
                if self.path == "/slow":
                    time.sleep(5)
                status = {"/flaky": 500 if seen == 1 else 200, "/gone": 410}.get(self.path, 200)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    hooks.requests.append((self.path, {}, {"client": "gone"}))

            def log_message(self, *args):  # keep the test output clean
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self, path):
        with self.lock:
            return [body for p, _, body in self.requests if p == path]


@pytest.fixture
def hooks(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 only, never through a proxy
    server = HookServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def delivery(conn, event_id):
    frame = events(conn)
    row = frame[frame["id"] == event_id].iloc[0]
    return row["delivered"], int(row["attempts"])


def test_webhooks_body_retry_and_a_slow_endpoint_does_not_block(conn, db_path, hooks,
                                                                 make_evaluator):
    write_prices(conn, "BTCUSDT", [100, 105])
    ids = {path: alerts.create_rule(conn, name=f"hook {path}", metric="price",
                                    symbol="BTCUSDT", comparison=">", threshold=101,
                                    webhook_url=hooks.url + path)
           for path in ("/slow", "/ok", "/flaky", "/gone")}  # the slow one is evaluated first
    now = now_for(T0 + 1000)
    evaluator = make_evaluator(db_path, webhook_timeout=1.0, webhook_attempts=2,
                               webhook_backoff=0.1)
    started = time.monotonic()
    fired = evaluator.tick(now)
    assert time.monotonic() - started < 1.0  # less than one webhook timeout: nothing waited
    assert len(fired) == 4
    event_of = {path: int(events(conn, rule_id=rule_id)["id"].iloc[0])
                for path, rule_id in ids.items()}
    assert delivery(conn, event_of["/slow"]) == ("pending", 0)

    assert wait_until(lambda: delivery(conn, event_of["/ok"])[0] == "ok", 5)
    assert delivery(conn, event_of["/slow"])[0] == "pending"  # still in its first attempt
    [body] = hooks.bodies("/ok")
    stored = events(conn, rule_id=ids["/ok"]).iloc[0]
    assert body == {
        "rule_id": ids["/ok"], "rule": "hook /ok", "metric": "price", "subject": "BTCUSDT",
        "value": 105.0, "threshold": 101.0, "comparison": ">", "ts": now,
        "time_utc": "2025-12-16T00:00:02.600Z", "message": stored["message"],
        "text": stored["message"]}
    headers = [h for p, h, _ in hooks.requests if p == "/ok"][0]
    assert headers["Content-Type"] == "application/json"

    assert wait_until(lambda: delivery(conn, event_of["/flaky"]) == ("ok", 2), 5)
    first, second = hooks.bodies("/flaky")
    assert first == second  # the retry sends the same event
    assert wait_until(lambda: delivery(conn, event_of["/gone"])[0] != "pending", 5)
    assert delivery(conn, event_of["/gone"]) == ("failed: HTTP 410 after 1 attempt", 1)

    # While /slow is retrying, another rule's event is stored and delivered.
    late = alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">",
                              threshold=50, webhook_url=hooks.url + "/ok")
    started = time.monotonic()
    [late_event] = evaluator.tick(now + 50)
    assert time.monotonic() - started < 1.0
    assert events(conn, rule_id=late)["id"].tolist() == [late_event]
    assert wait_until(lambda: delivery(conn, late_event)[0] == "ok", 5)

    assert wait_until(lambda: delivery(conn, event_of["/slow"])[0] != "pending", 8)
    result, attempts = delivery(conn, event_of["/slow"])
    assert attempts == 2 and result.startswith("failed: ") and "timed out" in result


def test_a_standby_taking_over_on_sqlite_fails_the_stopped_holders_queued_webhooks(
        tmp_path, hooks, make_evaluator):
    db = str(tmp_path / "alerts.db")
    conn = database.connect(db)
    write_prices(conn, "BTCUSDT", [100, 105])
    alerts.create_rule(conn, metric="price", symbol="BTCUSDT", comparison=">", threshold=101,
                       webhook_url=hooks.url + "/slow")
    clock = [now_for(T0 + 1000)]
    holder = make_evaluator(db, clock=lambda: clock[0], webhook_timeout=10.0,
                            webhook_attempts=1)
    standby = make_evaluator(db, clock=lambda: clock[0])
    [event_id] = holder.tick()
    assert standby.tick() == [] and standby.status()["standby"]
    assert delivery(conn, event_id) == ("pending", 0)  # /slow answers after 5 s
    # The holder stops renewing (as if killed); once its lease expired the standby takes it.
    clock[0] += holder.lease_ttl_ms + 1
    standby.tick()
    assert not standby.status()["standby"]
    assert delivery(conn, event_id)[0] == ("failed: the process stopped before the webhook "
                                           "was sent")
    conn.close()


def test_a_standby_taking_over_on_postgresql_fails_the_killed_holders_queued_webhooks(
        postgres_db, hooks, make_evaluator):
    conn = database.connect(postgres_db)
    write_prices(conn, "BTCUSDT", [100])
    alerts.create_rule(conn, metric="last_trade_age", symbol="BTCUSDT", comparison=">",
                       threshold=1, webhook_url=hooks.url + "/slow")
    owner = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER_SCRIPT, postgres_db, "0.2"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert owner.stdout.readline().strip() == "evaluating", owner.stderr.read()
        [event_id] = events(conn)["id"].tolist()
        assert delivery(conn, event_id) == ("pending", 0)  # /slow answers after 5 s
        survivor = make_evaluator(postgres_db, interval=0.2).start()
        assert wait_until(lambda: survivor.status()["standby"], 10)
    finally:
        owner.kill()
        owner.wait(10)
    assert wait_until(lambda: survivor.status()["ticks"] >= 1, 5), survivor.status()
    assert delivery(conn, event_id)[0] == ("failed: the process stopped before the webhook "
                                           "was sent")
    conn.close()


# ------------------------------------------------------------------------------ restart


RESTART_SCRIPT = """
import json, sys
import alerts, database
db, now = sys.argv[1], int(sys.argv[2])
conn = database.connect(db)
alerts.create_rule(conn, name="level", metric="price", symbol="BTCUSDT", comparison=">",
                   threshold=102, hysteresis=2, cooldown_s=3600)
alerts.create_rule(conn, name="cooldown", metric="price", symbol="BTCUSDT", comparison=">",
                   threshold=102, cooldown_s=3600)
evaluator = alerts.Evaluator(db, clock=lambda: now)
print(json.dumps(evaluator.tick()))
evaluator.stop()
"""


def test_rules_events_and_state_survive_a_process_restart(conn, db_path, make_evaluator):
    # Prices by second: 105 (above 102), 100.5 (re-arms "cooldown" only: h=0), 105, 105.
    write_prices(conn, "BTCUSDT", [105, 100.5, 105, 105])
    now = now_for(T0)
    result = subprocess.run([sys.executable, "-c", RESTART_SCRIPT, db_path, str(now)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout.strip().splitlines()[-1])) == 2

    rules = database.list_alert_rules(conn)  # a new connection in this process
    assert rules["name"].tolist() == ["level", "cooldown"]
    assert rules["state"].tolist() == ["disarmed", "disarmed"]
    assert rules["last_fired_ms"].tolist() == [now, now]
    assert len(events(conn)) == 2

    evaluator = make_evaluator(db_path)
    for bar in (1, 2, 3):
        assert evaluator.tick(now_for(T0 + bar * 1000)) == []
    # "level": 100.5 is not below 102 - 2, so it stays disarmed. "cooldown": 100.5 re-arms it,
    # 105 is true again but only ~2 s after the firing stored by the other process.
    states = database.list_alert_rules(conn)["state"].tolist()
    assert states == ["disarmed", "cooling down"]
    assert len(events(conn)) == 2


# ------------------------------------------------------------------------ built-in market


def test_rule_fires_on_the_built_in_market_with_no_page_open(db_target):
    import collector  # tests only: alerts.py never imports the collector

    # No REST backfill: the reference below recomputes from the final database, and history
    # stored behind the live edge while the evaluator runs would change the past it saw.
    settings = Settings(feed="demo", db_path=db_target, demo_seed=11,
                        flush_interval=0.1, backfill="0", backfill_klines="0")
    market = collector.Collector(settings).start()
    evaluator = None
    try:
        conn = database.connect(settings.db_path)
        # The simulated follower (ETH) is cointegrated with the leader (BTC); with a 5-bar
        # z window |z| > 0.5 holds for most bars (a 5-point z rarely stays inside +/-0.5).
        rule_id = alerts.create_rule(conn, metric="zscore", y_symbol="ETHUSDT",
                                     x_symbol="BTCUSDT", timeframe="1s", window=10,
                                     z_window=5, comparison="abs>", threshold=0.5,
                                     hysteresis=0.1, cooldown_s=0)
        evaluator = alerts.Evaluator(lambda: market.db_path, interval=0.5).start()
        assert wait_until(lambda: not events(conn, rule_id=rule_id).empty, 45), (
            database.list_alert_rules(conn)[["state", "detail"]].to_dict("records"),
            evaluator.status(), market.health()["stored"])
    finally:
        if evaluator is not None:
            evaluator.stop()
        market.stop()
    event = events(conn, rule_id=rule_id).iloc[-1]  # the first firing
    assert abs(event["value"]) > 0.5 and event["subject"] == "ETHUSDT/BTCUSDT"
    assert re.fullmatch(r"z-score ETHUSDT/BTCUSDT abs> 0.5: z-score of ETHUSDT/BTCUSDT = "
                        r"-?\d+\.?\d*, beyond ± 0.5 \(1s, ols 10/5, log\)", event["message"])
    as_of = int(event["as_of_ts"])
    assert as_of + 1000 + alerts.BAR_SETTLE_MS <= event["ts"]  # a complete, settled bar
    _, signals = reference_signals(conn, as_of + 1000, window=10, z_window=5)
    assert int(signals.frame.index[-1]) == as_of
    assert event["value"] == pytest.approx(signals.frame["z"].iloc[-1], rel=Z_RTOL)
    conn.close()
