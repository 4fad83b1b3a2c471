"""Settings: defaults, environment, overrides and the messages for bad values."""

import pytest

from config import ConfigError, Settings, parse_symbols


def test_defaults_follow_the_feed():
    settings = Settings.from_env({})
    assert settings.feed == "auto" and settings.symbols == ("btcusdt", "ethusdt")
    assert settings.stream == "aggTrade" and settings.db_path.endswith("binance-futures.db")
    spot = Settings.from_env({"CRYPTO_FEED": "binance-spot"})
    assert spot.stream == "trade" and spot.db_path.endswith("binance-spot.db")
    assert Settings.from_env({"CRYPTO_FEED": "demo"}).db_path.endswith("demo.db")


def test_environment_and_overrides():
    env = {"CRYPTO_FEED": "demo", "CRYPTO_SYMBOLS": " BTCUSDT, solusdt ,btcusdt",
           "CRYPTO_BATCH_SIZE": "500", "CRYPTO_FLUSH_INTERVAL": "0.4",
           "BINANCE_WS_URL": "ws://127.0.0.1:9000", "CRYPTO_DB_PATH": "/tmp/x.db"}
    settings = Settings.from_env(env, batch_size=None, silence_timeout=12.0)
    assert settings.symbols == ("btcusdt", "solusdt")  # lower-cased, de-duplicated
    assert settings.batch_size == 500 and settings.flush_interval == 0.4
    assert settings.silence_timeout == 12.0  # the CLI flag wins; None means "not given"
    assert settings.db_path == "/tmp/x.db" and settings.explicit_db_path


@pytest.mark.parametrize("env, message", [
    ({"CRYPTO_FEED": "kraken"}, "CRYPTO_FEED='kraken' is not one of"),
    ({"CRYPTO_SYMBOLS": "btc-usdt"}, "symbol 'btc-usdt' is not valid"),
    ({"CRYPTO_SYMBOLS": "b"}, "symbol 'b' is not valid"),
    ({"CRYPTO_SYMBOLS": " , "}, "no symbols given"),
    ({"CRYPTO_STREAM": "kline"}, "CRYPTO_STREAM='kline'"),
    ({"BINANCE_WS_URL": "http://x"}, "BINANCE_WS_URL='http://x' must start with ws://"),
    ({"CRYPTO_BATCH_SIZE": "many"}, "CRYPTO_BATCH_SIZE='many' is not a whole number"),
    ({"CRYPTO_SILENCE_TIMEOUT": "-1"}, "CRYPTO_SILENCE_TIMEOUT=-1.0 is out of range"),
    ({"CRYPTO_FEED": "replay"}, "needs CRYPTO_REPLAY_FILE"),
    ({"CRYPTO_FEED": "replay", "CRYPTO_REPLAY_FILE": "/nonexistent.ndjson"}, "does not exist"),
    ({"CRYPTO_DISPLAY_TZ": "Mars/Base"}, "not an IANA time zone"),
])
def test_bad_values_are_named_in_the_message(env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.from_env(env)


def test_parse_symbols_keeps_order():
    assert parse_symbols("ETHUSDT,btcusdt") == ("ethusdt", "btcusdt")


def test_with_changes_revalidates_and_moves_the_default_db_with_the_feed():
    settings = Settings.from_env({})
    assert settings.with_changes(feed="demo").db_path.endswith("demo.db")
    with pytest.raises(ConfigError):
        settings.with_changes(symbols="x")


def test_a_copy_keeps_a_default_database_path_default():
    # The collector keeps a demo's database next to the demo market unless a path was
    # chosen (explicit_db_path): a copy with other changes must not turn the default
    # path into a chosen one.
    demo = Settings.from_env({"CRYPTO_FEED": "demo"})
    assert not demo.with_changes(backfill_pace=0.5).explicit_db_path
    assert not demo.with_changes(symbols="solusdt,bnbusdt").explicit_db_path
    chosen = Settings.from_env({"CRYPTO_FEED": "demo", "CRYPTO_DB_PATH": "/tmp/x.db"})
    assert chosen.with_changes(backfill_pace=0.5).db_path == "/tmp/x.db"
    assert chosen.with_changes(backfill_pace=0.5).explicit_db_path


def test_backfill_pace_is_checked():
    assert Settings.from_env({"CRYPTO_BACKFILL_PACE": "0.5"}).backfill_pace == 0.5
    assert Settings.from_env({}).backfill_pace is None  # the page or the CLI decides
    with pytest.raises(ConfigError, match="CRYPTO_BACKFILL_PACE"):
        Settings.from_env({"CRYPTO_BACKFILL_PACE": "0"})


def test_each_replay_recording_gets_its_own_database(tmp_path):
    recording = tmp_path / "futures 2025-12-15.ndjson"
    recording.write_text("")
    settings = Settings.from_env({"CRYPTO_FEED": "replay", "CRYPTO_REPLAY_FILE": str(recording)})
    assert settings.db_path.endswith("replay-futures_2025-12-15.db")
