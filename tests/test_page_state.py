"""The page's view state: defaults a new user sees, the URL that restores a view, the alert
form (issue 15). AppTest drives the real page (``app.py``) on SQLite files in ``tmp_path``
with the collector pointed at a closed 127.0.0.1 port (fixtures from ``test_app``); the URL
is ``AppTest.query_params``, which the page reads on a session's first run and writes back.
"""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

import alerts
import dashboard_data as dd
import database
import page_state
import uploads
from page_helpers import visible_columns
from test_app import (DATA, GOOD_OHLC, app_env, closed_port, new_app,  # noqa: F401
                      open_tab, recorded_db, run, texts)

GOOD_TICKS = DATA / "upload_futures_2025-12-15T0843Z_btc_eth_first2000.ndjson"


def store_good_upload(upload_db: str) -> str:
    """The 1-minute OHLC file (about 1,000 bars of BTC and ETH) stored as an upload."""
    parsed = uploads.parse_ohlc_csv(GOOD_OHLC.read_bytes(), filename=GOOD_OHLC.name)
    assert parsed.ok, parsed.error
    dd.save_uploaded(upload_db, GOOD_OHLC.name, parsed.bars)
    return GOOD_OHLC.name


def strip_caption(at) -> str:
    return next(c.value for c in at.caption if " bars · last bar " in c.value)


# --------------------------------------------------------------------------------------
# 1. an upload opens at its own bar size, over the whole file
# --------------------------------------------------------------------------------------


def test_an_uploaded_minute_file_opens_at_its_bar_size_and_whole_range(app_env):
    name = store_good_upload(app_env["uploads"])
    at = run(new_app())  # a new tab: a fresh session starts on the live source
    at.radio(key="source_kind").set_value("uploaded")
    at = run(at)

    assert at.session_state["upload_name"] == name
    assert at.selectbox(key="timeframe").value == "1m"
    assert at.selectbox(key="lookback").value == "all"
    caption = strip_caption(at)
    parsed = uploads.parse_ohlc_csv(GOOD_OHLC.read_bytes(), filename=GOOD_OHLC.name)
    bars = parsed.bars["ts"].nunique()  # every accepted bar time: the whole file
    assert "1m bars" in caption and f"{bars} bars" in caption, caption
    assert not any("needs " in t and "more at" in t for t in texts(at))


def test_upload_bar_size_is_read_from_the_stored_bars(app_env):
    name = store_good_upload(app_env["uploads"])
    source = dd.DataSource("uploaded", app_env["uploads"], name)
    assert dd.upload_bar_ms(source) == 60_000
    assert page_state.timeframe_label_for(60_000) == "1m"
    assert page_state.timeframe_label_for(1_000) == "1s"
    assert page_state.timeframe_label_for(15 * 60_000) == "5m"  # coarser files: the largest
    assert page_state.timeframe_label_for(None) == "1s"


# --------------------------------------------------------------------------------------
# 6. the default pair
# --------------------------------------------------------------------------------------


def test_default_pair_is_eth_on_btc(app_env):
    at = run(new_app())
    assert at.selectbox(key="y_symbol").value == "ETHUSDT"
    assert at.selectbox(key="x_symbol").value == "BTCUSDT"


def test_default_pair_falls_back_to_the_first_two_symbols():
    assert page_state.default_pair(["BTCUSDT", "ETHUSDT", "SOLUSDT"]) == ("ETHUSDT", "BTCUSDT")
    assert page_state.default_pair(["SOLUSDT", "BNBUSDT"]) == ("SOLUSDT", "BNBUSDT")
    assert page_state.default_pair(["SOLUSDT", "BTCUSDT"]) == ("SOLUSDT", "BTCUSDT")


# --------------------------------------------------------------------------------------
# 3. the alert form: one rule per submit, duplicates refused
# --------------------------------------------------------------------------------------


def alert_rules(db_path: str) -> pd.DataFrame:
    with dd.reading(db_path) as conn:
        return database.list_alert_rules(conn)


def fill_alert(at, *, threshold: float, cooldown: float):
    at.selectbox(key="alert_metric").set_value("zscore")
    at.selectbox(key="alert_comparison").set_value("abs>")
    at.number_input(key="alert_threshold").set_value(threshold)
    at.number_input(key="alert_cooldown").set_value(cooldown)
    next(b for b in at.button if b.label == "Create alert").click()
    return run(at)


def test_enter_in_the_alert_form_does_not_submit_it(recorded_db):
    at = open_tab(run(new_app(lookback="15 min")), "Alerts")
    forms = [f for f in at.get("form") if f.proto.form.form_id == "new_alert"]
    assert len(forms) == 1
    assert forms[0].proto.form.enter_to_submit is False


def test_a_duplicate_alert_rule_is_refused(recorded_db):
    at = open_tab(run(new_app(lookback="15 min")), "Alerts")
    before = len(alert_rules(recorded_db["db"]))
    at = fill_alert(at, threshold=2.7, cooldown=15.0)
    rules = alert_rules(recorded_db["db"])
    assert len(rules) == before + 1
    assert rules.iloc[-1]["cooldown_s"] == 15.0 and rules.iloc[-1]["threshold"] == 2.7
    first_id = int(rules.iloc[-1]["id"])

    at = fill_alert(at, threshold=2.7, cooldown=15.0)  # the same values again
    assert len(alert_rules(recorded_db["db"])) == before + 1
    assert any(f"same as rule {first_id}" in e.value for e in at.error), \
        [e.value for e in at.error]
    at = fill_alert(at, threshold=2.8, cooldown=15.0)  # a different threshold is new
    assert len(alert_rules(recorded_db["db"])) == before + 2


# --------------------------------------------------------------------------------------
# 4. the view lives in the URL
# --------------------------------------------------------------------------------------

SHARED_VIEW = {"y": "BTCUSDT", "x": "ETHUSDT", "tf": "10s", "lookback": "15 min",
               "window": "30", "method": "Kalman", "prices": "raw", "entry": "2.5",
               "exit": "0.5", "tab": "Statistics"}


def test_a_pasted_link_restores_the_view(recorded_db):
    at = new_app()
    at.query_params.update(SHARED_VIEW)
    at = run(at)

    state = at.session_state
    assert (state["y_symbol"], state["x_symbol"]) == ("BTCUSDT", "ETHUSDT")
    assert (state["timeframe"], state["lookback"], state["method"]) == ("10s", "15 min",
                                                                         "Kalman")
    assert state["window"] == 30 and state["log_prices"] is False
    assert (state["entry_z"], state["exit_z"]) == (2.5, 0.5)
    assert state["tab"] == "Statistics"
    assert any("Per-minute statistics" in m.value for m in at.markdown)  # the tab is open
    assert "Kalman, raw prices, 30-bar window, 10s bars" in strip_caption(at)
    assert not at.warning or not any("URL" in w.value for w in at.warning)


def test_the_url_follows_the_view(recorded_db):
    at = run(new_app())
    at.selectbox(key="timeframe").set_value("5s")
    at = run(at)
    at.number_input(key="window").set_value(40)
    at = run(at)
    at = open_tab(at, "Backtest")

    params = at.query_params
    assert params["tf"] == "5s" and params["window"] == "40" and params["tab"] == "Backtest"
    assert (params["y"], params["x"], params["source"]) == ("ETHUSDT", "BTCUSDT", "live")

    again = new_app()  # a reload: a new session with the same URL
    again.query_params.update(params)
    again = run(again)
    assert again.session_state["timeframe"] == "5s" and again.session_state["window"] == 40
    assert again.session_state["tab"] == "Backtest"


def test_a_new_session_writes_its_url_in_one_message(recorded_db, monkeypatch):
    """Each message that changes the URL costs the browser a history entry and a render
    (~3 ms each, eleven parameters): a run sends at most one, and none when nothing
    changed."""
    from streamlit.runtime.state.query_params import QueryParams

    sent = []
    real_send = QueryParams._send_query_param_msg
    monkeypatch.setattr(QueryParams, "_send_query_param_msg",
                        lambda self: sent.append(1) or real_send(self))
    at = run(new_app())
    assert len(sent) == 1
    assert at.query_params["tf"] == "1s" and at.query_params["tab"] == "Prices"

    sent.clear()
    at = run(at)
    assert sent == []


def test_a_link_to_an_upload_restores_source_and_bar_size(app_env):
    name = store_good_upload(app_env["uploads"])
    at = new_app()
    at.query_params.update({"source": "uploaded", "upload": name, "tf": "5m"})
    at = run(at)
    assert at.session_state["source_kind"] == "uploaded"
    assert at.session_state["upload_name"] == name
    assert at.selectbox(key="timeframe").value == "5m"  # the link's choice, not the file's
    assert at.selectbox(key="lookback").value == "all"


def test_invalid_url_params_are_ignored_with_a_message(recorded_db):
    at = new_app()
    at.query_params.update({"tf": "7s", "window": "abc", "y": "DOGEUSDT", "tab": "Nope",
                            "entry": "99", "prices": "log"})
    at = run(at)

    default_window = run(new_app()).session_state["window"]
    assert at.session_state["timeframe"] == "1s" and at.session_state["window"] == default_window
    assert at.session_state["y_symbol"] == "ETHUSDT"
    warning = next(w.value for w in at.warning if "URL" in w.value)
    for bad in ("tf=7s", "window=abc", "y=DOGEUSDT", "tab=Nope", "entry=99"):
        assert bad in warning, warning
    assert "prices" not in warning


def test_read_url_checks_every_parameter():
    view = page_state.read_url(
        {"source": "uploaded", "upload": "a.csv", "y": "ETHUSDT", "x": "btcusdt",
         "window": "25", "entry": "1.5", "exit": "2.5", "unknown": "1"},
        uploads=["a.csv"], symbols_of=lambda kind, upload: ["BTCUSDT", "ETHUSDT"],
        tabs=["Prices", "Alerts"])
    assert view.state == {"source_kind": "uploaded", "upload_name": "a.csv",
                          "y_symbol": "ETHUSDT", "x_symbol": "BTCUSDT", "window": 25,
                          "entry_z": 1.5}
    assert view.problems == ["exit=2.5 (must be below entry 1.5)"]
    assert page_state.url_params(view.state) == {
        "source": "uploaded", "upload": "a.csv", "y": "ETHUSDT", "x": "BTCUSDT",
        "window": "25", "entry": "1.5"}


# --------------------------------------------------------------------------------------
# 7. status words that do not mislead
# --------------------------------------------------------------------------------------


def test_uploaded_strip_shows_the_spread_next_to_its_z(app_env):
    # The file's last bar has a β but no spread (one leg has no price there): the strip
    # showed "spread —" next to the previous bar's z. Both now come from the newest bar
    # that has them.
    name = store_good_upload(app_env["uploads"])
    at = new_app()
    at.query_params.update({"source": "uploaded", "upload": name, "window": "60"})
    at = run(at)
    from test_app import metric
    z, spread = metric(at, "z-score"), metric(at, "spread")
    assert z != "—" and spread != "—", (z, spread)
    view = dd.build_pair_view(
        dd.load_bars(dd.DataSource("uploaded", app_env["uploads"], name), "ETHUSDT", "1min",
                     None, None),
        dd.load_bars(dd.DataSource("uploaded", app_env["uploads"], name), "BTCUSDT", "1min",
                     None, None), "ETHUSDT", "BTCUSDT", None, "ols", 60, True)
    both = view.signals.frame.dropna(subset=["spread", "z"]).iloc[-1]
    assert z == f"{both['z']:.2f}" and spread == f"{both['spread'] * 1e4:,.1f} bp"


@pytest.mark.parametrize("value, shown", [
    (87060.12, "87,060.12"), (-2.3149, "-2.315"), (0.000123456, "0.0001235"),
    (3139.7, "3,139.70"), (0.0, "0")])
def test_alert_messages_write_prices_as_plain_decimals(value, shown):
    rule = alerts.validate_rule(metric="price", symbol="BTCUSDT", comparison=">",
                                threshold=87000)
    message = alerts.event_message(rule, value)
    assert f"= {shown}," in message and "e+" not in message, message
    assert "above 87,000.00" in message


def test_health_says_what_the_fallback_did():
    fallback = {"state": "connected", "feed": "demo", "requested_feed": "auto",
                "builtin_market": True, "reconnects": 4,
                "fallback_reason": "connect failed: [Errno 111] Connection refused",
                "last_close_reason": "connect failed: [Errno 111] Connection refused"}
    text = dd.connection_summary(fallback)
    assert "last close" not in text
    assert "fell back to the built-in simulated market after 4 failed attempts" in text
    assert "connection refused" in text.lower() and "current connection: connected" in text
    live = {"state": "reconnecting", "feed": "binance-futures", "builtin_market": False,
            "requested_feed": "binance-futures", "reconnects": 2,
            "last_close_reason": "no data for 30 s"}
    assert dd.connection_summary(live) == "state reconnecting · last close: no data for 30 s"


# --------------------------------------------------------------------------------------
# 8. tables and messages for people
# --------------------------------------------------------------------------------------


def styled_text(frame_element) -> pd.DataFrame:
    """The text a styled table shows (pandas Styler display values sent to the page)."""
    import pyarrow as pa

    values = pa.ipc.open_stream(frame_element.proto.arrow_data.styler.display_values)
    text = values.read_pandas()
    text.index = frame_element.value.index
    text.columns = frame_element.value.columns
    return text


def test_tables_use_labels_and_display_times(recorded_db):
    at = run(new_app(lookback="15 min", window=20, entry_z=1.0))
    at = open_tab(at, "Backtest")
    trades = next(f for f in at.dataframe if "entry_ts" in f.value.columns)
    shown = visible_columns(trades)
    assert "entry_ts" not in shown and "exit_ts" not in shown  # epoch ms hidden ...
    assert "entry time" in shown and "exit time" in shown      # ... shown as times
    assert all("_" not in label for label in shown.values()), shown
    assert trades.value["entry time"].iloc[0].startswith("2025-12-15 08:")
    metrics_table = next(f for f in at.dataframe if "value" in f.value.columns)
    assert not [r for r in metrics_table.value.index if "_" in str(r)]

    at = open_tab(at, "Statistics")
    prices = next(f for f in at.dataframe if "vwap" in f.value.index)
    assert "volatility per bar" in prices.value.index
    assert not [r for r in prices.value.index if "_" in str(r)]
    # each row in a format for its size: a per-bar volatility (~1e-4) was shown as "0"
    display = styled_text(prices)
    shown = display.loc["volatility per bar"]
    assert all(re.fullmatch(r"\d\.\d{3}e-0[3-6]", text) for text in shown), shown.tolist()
    assert all(re.fullmatch(r"[\d,]+", text) for text in display.loc["bars"])
    assert prices.value.loc["volatility per bar"].gt(0).all()  # the numbers stay numbers

    at = open_tab(at, "Alerts")
    rules = next(f for f in at.dataframe if "comparison" in f.value.columns)
    labels = visible_columns(rules)
    assert labels["cooldown_s"] == "cooldown (s)" and labels["y_symbol"] == "y symbol"
    assert all("_" not in label for label in labels.values()), labels


def test_health_tables_use_labels_times_and_formats_for_their_numbers(recorded_db):
    # Defects caught: the repaired-gaps table showed from_id, to_id and epoch-ms noted_ms;
    # the activity table printed "38.9000" trades/s and "0.2670" s.
    with dd.writing(recorded_db["db"]) as conn:
        database.note_gap(conn, "BTCUSDT", 10, 19, "repaired over REST", repaired=True)
        noted = conn.execute("SELECT noted_ms FROM gap_notes").fetchone()[0]
    at = open_tab(run(new_app(lookback="15 min")), "Health")
    repaired = next(f for f in at.dataframe if "noted_ms" in f.value.columns)
    labels = visible_columns(repaired)
    assert all("_" not in label for label in labels.values()), labels
    assert "noted_ms" not in labels and "repaired" in labels.values(), labels
    when = dd.display_times([noted], "UTC")[0].strftime("%Y-%m-%d %H:%M:%S")
    assert repaired.value.iloc[0][next(k for k, v in labels.items() if v == "repaired")] == when
    activity = next(f for f in at.dataframe if "trades/s" in f.value.columns)
    config = json.loads(activity.proto.columns)
    formats = {name: ((config.get(f"col:{name}") or config.get(name) or {})
                      .get("type_config") or {}).get("format")
               for name in ("trades/s", "age (s)", "received")}
    assert formats == {"trades/s": "%.1f", "age (s)": "%.2f", "received": "localized"}


def test_a_rule_that_fired_is_not_shown_as_not_checked():
    assert dd.rule_state_text("not checked yet", 2) == "fired (status pending)"
    assert dd.rule_state_text("not checked yet", 0) == "not checked yet"
    assert dd.rule_state_text("armed", 3) == "armed"


def test_tick_upload_summary_is_words_not_a_dict(app_env):
    path = GOOD_TICKS
    at = open_tab(run(new_app()), "Data")
    at.get("file_uploader")[1].upload(path.name, path.read_bytes(), "application/x-ndjson")
    at = run(at)
    summary = next(t for t in texts(at) if "trades accepted" in t)
    assert "{" not in summary and "'" not in summary, summary
    assert re.search(r"per symbol BTCUSDT [\d,]+ · ETHUSDT [\d,]+", summary), summary


def test_upload_messages_name_the_page_fields_not_arguments(app_env):
    path = DATA / "upload_spot_bars_1s_1m_5m_IST_naive_first3000.csv"
    at = open_tab(run(new_app()), "Data")
    at.get("file_uploader")[0].upload(path.name, path.read_bytes(), "text/csv")
    at = run(at)
    errors = [e.value for e in at.error]
    assert any("several timeframes" in e for e in errors), errors
    assert not any("timeframe=" in e or "default_symbol=" in e for e in texts(at))
    assert any('"bar size to keep"' in e for e in errors), errors


def test_csv_numbers_have_no_binary_noise():
    frame = pd.DataFrame({"v": [0.1 + 0.2, 87060.12, 1.2345678901234e-07]},
                         index=pd.Index([0, 1000, 2000], name="ts"))
    text = dd.to_csv_bytes(frame, "UTC").decode()
    assert "0.30000000000000004" not in text and ",0.3\n" in text, text
    assert ",87060.12\n" in text and ",1.2345678901234e-07\n" in text, text


def test_hurst_outside_its_range_is_explained():
    assert "outside its 0–1 range" in dd.hurst_note(-0.002)
    assert "mean-reverting" in dd.hurst_note(0.05)
    assert dd.hurst_note(0.45) == "" and dd.hurst_note(float("nan")) == ""


# --------------------------------------------------------------------------------------
# progress feedback
# --------------------------------------------------------------------------------------


def test_the_cointegration_screen_reports_progress(recorded_db):
    at = open_tab(run(new_app(lookback="15 min", window=30)), "Correlation")
    at.checkbox(key="liquid_only").set_value(False)
    at = run(at)
    at.button(key="run_screen").click()
    at = run(at)
    labels = [s.proto.label for s in at.get("status")]
    assert any("Cointegration screen: 2 tests done" in label for label in labels), labels
