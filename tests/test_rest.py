"""binance_rest.RestClient and the Backfiller against a scripted loopback HTTP server.

Every answer the client meets in production is played by a real HTTP server on 127.0.0.1:
429 with Retry-After, 418, 500, a hanging answer (timeout), malformed JSON, an invalid
symbol, a page of 1,000 followed by an empty page, and weight headers near the limit. The
assertions look at what the server saw (how many requests, when), so a busy loop or a
missing wait fails them.
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse

import orjson
import pytest

import binance_rest
import database
from binance_rest import Backfiller, RestBanned, RestClient, RestError, RestRejected
from tests.helpers import wait_until


class ScriptedRest:
    """HTTP server on 127.0.0.1 answering each request with the next scripted answer.

    An answer is ``(status, body bytes, headers dict, delay_s)``; once the script is used up,
    ``default`` (a callable of the parsed query) answers. Every request is logged as
    ``(monotonic time, path, query dict)``.
    """

    def __init__(self, script=(), default=None):
        self.script = list(script)
        self.default = default
        self.log: list[tuple[float, str, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                owner.log.append((time.monotonic(), parts.path, query))
                if owner.script:
                    status, body, headers, delay = owner.script.pop(0)
                else:
                    status, body, headers, delay = owner.default(parts.path, query)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, str(value))
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is what the test wanted

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def ok(body, headers=None, delay=0.0):
    return 200, orjson.dumps(body), headers or {}, delay


def agg_row(trade_id, ts=None, price="100.5", qty="0.010", maker=False):
    return {"a": trade_id, "p": price, "q": qty, "f": trade_id, "l": trade_id,
            "T": 1_700_000_000_000 + trade_id if ts is None else ts, "m": maker}


def client(url, **kwargs):
    kwargs.setdefault("backoff_base", 0.05)
    kwargs.setdefault("backoff_cap", 0.2)
    kwargs.setdefault("timeout", 2.0)
    return RestClient(url, "futures", seed=1, **kwargs)


def test_429_waits_retry_after_then_goes_on_more_slowly():
    script = [(429, b'{"code":-1003,"msg":"Too many requests"}', {"Retry-After": "1"}, 0),
              ok([agg_row(5)])]
    with ScriptedRest(script) as server:
        rest = client(server.url)
        rows = rest.agg_trades("btcusdt", from_id=5, limit=10)
    assert [r[1] for r in rows] == [5]
    assert len(server.log) == 2
    assert server.log[1][0] - server.log[0][0] >= 0.95  # Retry-After honoured
    assert rest.stats.throttled == 1
    assert rest.budget_fraction == pytest.approx(0.4)  # half of 0.8


def test_418_stops_every_request_until_the_ban_ends():
    script = [(418, b'{"code":-1003,"msg":"banned"}', {"Retry-After": "120"}, 0)]
    with ScriptedRest(script, default=lambda p, q: ok([])) as server:
        rest = client(server.url)
        with pytest.raises(RestBanned):
            rest.agg_trades("BTCUSDT", limit=5)
        with pytest.raises(RestBanned):
            rest.agg_trades("BTCUSDT", limit=5)
    assert len(server.log) == 1  # the second call never reached the server
    assert rest.banned_until - time.time() > 100


def test_500_is_retried_with_backoff_then_succeeds():
    script = [(500, b"oops", {}, 0), (503, b"", {}, 0), ok([agg_row(1), agg_row(2)])]
    with ScriptedRest(script) as server:
        rest = client(server.url, backoff_base=0.1, backoff_cap=0.1)
        rows = rest.agg_trades("BTCUSDT", from_id=1, limit=2)
    assert [r[1] for r in rows] == [1, 2]
    assert len(server.log) == 3 and rest.stats.retries == 2


def test_timeout_is_retried():
    script = [ok([agg_row(9)], delay=1.0), ok([agg_row(9)])]
    with ScriptedRest(script) as server:
        rest = client(server.url, timeout=0.3)
        started = time.monotonic()
        rows = rest.agg_trades("BTCUSDT", from_id=9, limit=1)
        elapsed = time.monotonic() - started
    assert [r[1] for r in rows] == [9]
    assert len(server.log) == 2 and rest.stats.retries == 1
    assert 0.3 <= elapsed < 1.5


def test_malformed_json_is_retried_a_bounded_number_of_times():
    with ScriptedRest(default=lambda p, q: (200, b"[{not json", {}, 0)) as server:
        rest = client(server.url, max_retries=3, backoff_base=0.05, backoff_cap=0.05)
        with pytest.raises(RestError, match="giving up after 4 attempts"):
            rest.agg_trades("BTCUSDT", limit=3)
    assert len(server.log) == 4  # no busy loop: exactly max_retries + 1 requests


def test_malformed_row_is_an_error_not_a_trade():
    bad = [{"a": "7", "p": "1", "q": "1", "T": 1, "m": False}]
    with ScriptedRest(default=lambda p, q: ok(bad)) as server:
        rest = client(server.url, max_retries=1)
        with pytest.raises(RestError, match="malformed aggTrades row"):
            rest.agg_trades("BTCUSDT", limit=3)
    assert len(server.log) == 2


def test_invalid_symbol_is_not_retried():
    script = [(400, b'{"code":-1121,"msg":"Invalid symbol."}', {}, 0)]
    with ScriptedRest(script, default=lambda p, q: ok([])) as server:
        rest = client(server.url)
        with pytest.raises(RestRejected, match="-1121"):
            rest.agg_trades("NOSUCHCOIN", limit=3)
    assert len(server.log) == 1


def test_symbols_are_validated_before_they_reach_a_url():
    with ScriptedRest(default=lambda p, q: ok([])) as server:
        rest = client(server.url)
        for bad in ("btc/usdt", "BTC&limit=5", "x", ""):
            with pytest.raises(ValueError, match="not valid"):
                rest.agg_trades(bad)
    assert server.log == []


def test_requests_carry_binance_parameters():
    with ScriptedRest(default=lambda p, q: ok([])) as server:
        rest = client(server.url)
        rest.agg_trades("ethusdt", from_id=42, limit=1000)
        rest.agg_trades("ethusdt", start_ms=1000, end_ms=2000, limit=10)
        rest.klines("ethusdt", 60_000, 120_000)
        with pytest.raises(ValueError, match="fromId and a time window"):
            rest.agg_trades("ethusdt", from_id=1, start_ms=5)
    assert [(path, query) for _, path, query in server.log] == [
        ("/fapi/v1/aggTrades", {"symbol": "ETHUSDT", "limit": "1000", "fromId": "42"}),
        ("/fapi/v1/aggTrades", {"symbol": "ETHUSDT", "limit": "10", "startTime": "1000",
                                "endTime": "2000"}),
        ("/fapi/v1/klines", {"symbol": "ETHUSDT", "interval": "1m", "startTime": "60000",
                             "limit": "1500", "endTime": "120000"}),
    ]
    assert rest.stats.weight == 20 + 20 + 10  # aggTrades 20, klines limit 1500: 10


def test_spot_paths_and_weights():
    with ScriptedRest(default=lambda p, q: ok([])) as server:
        rest = RestClient(server.url, "spot")
        rest.agg_trades("BTCUSDT", from_id=1)
        rest.klines("BTCUSDT", 0)
    assert [path for _, path, _ in server.log] == ["/api/v3/aggTrades", "/api/v3/klines"]
    assert rest.stats.weight == 4 + 2


def test_used_weight_header_near_the_limit_makes_the_client_wait_for_the_next_window():
    # Limit 100, budget 80; the server says 79 are used: a 20-weight request must wait.
    near = {"X-MBX-USED-WEIGHT-1M": "79"}
    script = [ok({"rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                  "intervalNum": 1, "limit": 100}]}, near)]
    with ScriptedRest(script, default=lambda p, q: ok([], {"X-MBX-USED-WEIGHT-1M": "20"})
                      ) as server:
        rest = client(server.url, window_s=1.0)
        assert rest.load_weight_limit() == 100
        rest.agg_trades("BTCUSDT", limit=1)
        rest.agg_trades("BTCUSDT", limit=1)  # 20 + 20 <= 80: no wait
    first, second, third = (entry[0] for entry in server.log)
    # The first aggTrades request waited for the next 1 s window (>= 0.05 s: the margin
    # added to the boundary); the next one fit in the fresh window's budget.
    assert second - first >= 0.05
    assert rest.stats.paced_s >= 0.05
    assert third - second < 0.5


def test_parse_duration():
    assert binance_rest.parse_duration("90s") == 90
    assert binance_rest.parse_duration("6h") == 6 * 3600
    assert binance_rest.parse_duration("0") == 0
    with pytest.raises(ValueError, match="not valid"):
        binance_rest.parse_duration("ten minutes")


def test_gap_repair_stops_at_an_empty_page_and_keeps_the_rest_with_its_reason(tmp_path):
    """A page of 1,000 then an empty page: repair what came, keep the rest open, no loop."""
    path = tmp_path / "gap.db"
    conn = database.connect(path)
    writer = database.TickWriter(conn)
    base_ts = 1_700_000_000_000
    writer.write([("BTCUSDT", 1000, base_ts, 100.0, 1.0, 0, 0)])
    writer.write([("BTCUSDT", 3001, base_ts + 5000, 100.0, 1.0, 0, 0)])
    assert database.open_gaps(conn, ["BTCUSDT"])[0][1:3] == (1001, 3000)

    def answer(path_, query):
        if path_.endswith("/time"):
            return ok({"serverTime": base_ts + 6000})
        if path_.endswith("/exchangeInfo"):
            return ok({"rateLimits": []})
        start = int(query["fromId"])
        if start == 1001:
            return ok([agg_row(i, ts=base_ts + 1 + i) for i in range(1001, 2001)])
        return ok([])  # REST has nothing from 2001 on

    with ScriptedRest(default=answer) as server:
        rest = client(server.url)
        backfiller = Backfiller(rest, ["BTCUSDT"], database.BackfillLedger(path),
                                trade_history_s=0, kline_history_s=0, poll_s=0.05).start()
        assert wait_until(lambda: backfiller.gaps_unrepairable, 5)
        requests_then = len(server.log)
        time.sleep(0.5)  # ten more polls
        requests_later = len(server.log)
        backfiller.stop()
    assert requests_later == requests_then  # the unfillable gap is not asked for again
    assert backfiller.backfilled == 1000
    gaps = database.read_gaps_with_reasons(conn)
    assert gaps[["from_id", "to_id"]].values.tolist() == [[2001, 3000]]
    assert gaps["reason"].iloc[0] == "REST has no trades with these ids"
    fetched = [q.get("fromId") for _, p, q in server.log if p.endswith("aggTrades")]
    assert fetched == ["1001", "2001"]
    conn.close()


def _newest_trades_answer(now_ms):
    """A REST side with klines and a page of trades just before ``now_ms``."""
    def answer(path_, query):
        if path_.endswith("/time"):
            return ok({"serverTime": now_ms})
        if path_.endswith("/exchangeInfo"):
            return ok({"rateLimits": []})
        if path_.endswith("/klines"):
            return ok([])
        if "fromId" in query:
            return ok([])
        return ok([agg_row(i, ts=now_ms - 1_000 + i) for i in range(1, 11)])
    return answer


@pytest.mark.parametrize("served_after_s", [0.4, None])
def test_the_trade_walk_waits_for_the_page_at_most_trades_after_s(tmp_path, served_after_s):
    """Klines at once; trades once the page's first run is over (the event), or after
    ``trades_after_s`` when no page comes."""
    import threading
    page_served = threading.Event()
    with ScriptedRest(default=_newest_trades_answer(1_700_000_000_000)) as server:
        backfiller = Backfiller(client(server.url), ["BTCUSDT"],
                                database.BackfillLedger(tmp_path / "gate.db"),
                                trade_history_s=60, kline_history_s=60, repair=False,
                                trades_after=page_served, trades_after_s=1.0)
        started = time.monotonic()
        backfiller.start()
        assert wait_until(lambda: backfiller.state == "waiting for the page", 5)
        if served_after_s is not None:
            time.sleep(served_after_s - (time.monotonic() - started))
            served = time.monotonic()
            page_served.set()
        assert wait_until(lambda: backfiller.state == "done", 5), backfiller.health()
    klines = [t for t, path_, _ in server.log if path_.endswith("/klines")]
    trades = [t for t, path_, _ in server.log if path_.endswith("/aggTrades")]
    assert klines and trades and max(klines) < min(trades)
    if served_after_s is None:
        assert 1.0 <= min(trades) - started < 2.0  # the cap, then at once
    else:
        assert 0 <= min(trades) - served < 0.5  # at once after the page, not at the cap
    assert backfiller.backfilled == 10


def test_backfiller_reports_unreachable_rest_and_keeps_gaps(tmp_path):
    from tests.helpers import free_port
    path = tmp_path / "down.db"
    conn = database.connect(path)
    writer = database.TickWriter(conn)
    writer.write([("BTCUSDT", 10, 1_000, 1.0, 1.0, 0, 0), ("BTCUSDT", 20, 2_000, 1.0, 1.0, 0, 0)])
    rest = RestClient(f"http://127.0.0.1:{free_port()}", max_retries=1, backoff_base=0.01,
                      backoff_cap=0.01, timeout=1)
    backfiller = Backfiller(rest, ["BTCUSDT"], database.BackfillLedger(path),
                            trade_history_s=60, kline_history_s=60, poll_s=0.05).start()
    assert wait_until(lambda: backfiller.detail.startswith("REST unreachable"), 5)
    assert wait_until(lambda: database.read_gaps_with_reasons(conn)["reason"].iloc[0] != "", 5)
    backfiller.stop()
    gaps = database.read_gaps_with_reasons(conn)
    assert gaps[["from_id", "to_id"]].values.tolist() == [[11, 19]]
    assert "REST" in gaps["reason"].iloc[0]
    assert backfiller.progress["BTCUSDT"].state == "failed"
    conn.close()


# --------------------------------------------------------------------------------------
# The built-in market's REST side
# --------------------------------------------------------------------------------------

import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import market  # noqa: E402


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), orjson.loads(exc.read())


@pytest.fixture(scope="module")
def past_market():
    server = market.MarketServer(market.SimulatedMarket(seed=11), history_s=600,
                                 kline_history_s=3 * 3600)
    server.start()
    yield server, server.url.replace("ws://", "http://")
    server.stop()


def test_market_klines_cover_the_simulated_past_minute_by_minute(past_market):
    server, base = past_market
    _, headers, answer = _get(f"{base}/fapi/v1/time")
    now = answer["serverTime"]
    _, headers, rows = _get(f"{base}/fapi/v1/klines?symbol=ETHUSDT&interval=1m"
                            f"&startTime={now - 4 * 3600_000}&endTime={now}&limit=1500")
    opens = [row[0] for row in rows]
    assert all(b - a == 60_000 for a, b in zip(opens, opens[1:]))
    # 3 h of simulated klines before the 10 min (whole minutes) of trades, to the live one.
    history_start = (now - 600_000) // 60_000 * 60_000
    assert opens[0] == history_start - 3 * 3600_000 and opens[-1] == now - now % 60_000
    for row in rows:
        low, high = float(row[3]), float(row[2])
        assert low <= float(row[1]) <= high and low <= float(row[4]) <= high
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(1 + 10)  # time 1, klines(1500) 10


def test_market_kline_of_a_traded_minute_matches_its_aggregate_trades(past_market):
    server, base = past_market
    _, _, answer = _get(f"{base}/fapi/v1/time")
    minute = answer["serverTime"] // 60_000 * 60_000 - 5 * 60_000  # inside the trade history
    _, _, trades = _get(f"{base}/fapi/v1/aggTrades?symbol=BTCUSDT&startTime={minute}"
                        f"&endTime={minute + 59_999}&limit=1000")
    while trades[-1]["T"] < minute + 60_000:  # ~40 trades/s: walk on by id
        _, _, page = _get(f"{base}/fapi/v1/aggTrades?symbol=BTCUSDT"
                          f"&fromId={trades[-1]['a'] + 1}&limit=1000")
        trades += page
    trades = [t for t in trades if t["T"] < minute + 60_000]
    _, _, klines = _get(f"{base}/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={minute}"
                        f"&endTime={minute}")
    assert len(trades) > 1000
    prices = [float(t["p"]) for t in trades]
    kline = klines[0]
    assert kline[0] == minute and kline[8] == len(trades)
    assert (float(kline[1]), float(kline[4])) == (prices[0], prices[-1])
    assert (float(kline[2]), float(kline[3])) == (max(prices), min(prices))
    assert float(kline[5]) == pytest.approx(sum(float(t["q"]) for t in trades))
    ids = [t["a"] for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # consecutive aggregate ids


def test_market_rest_errors_like_binance(past_market):
    _, base = past_market
    assert _get(f"{base}/fapi/v1/aggTrades?symbol=NOPEUSDT")[2]["code"] == -1121
    assert _get(f"{base}/fapi/v1/aggTrades?symbol=BTCUSDT&startTime=0&endTime=3600000"
                )[2]["code"] == -1127
    assert _get(f"{base}/fapi/v1/klines?symbol=BTCUSDT&interval=5m")[2]["code"] == -1120
    status, _, rows = _get(f"{base}/api/v3/aggTrades?symbol=BTCUSDT&limit=3")
    assert status == 200 and len(rows) == 3 and all(row["M"] is True for row in rows)


def test_market_simulates_429_then_418_for_a_client_that_ignores_it():
    server = market.MarketServer(market.SimulatedMarket(seed=2), history_s=60,
                                 rest_weight_limit=50)
    base = server.start().replace("ws://", "http://")
    try:
        statuses = []
        for _ in range(10):
            status, headers, _ = _get(f"{base}/fapi/v1/aggTrades?symbol=BTCUSDT&limit=5")
            statuses.append((status, headers.get("Retry-After")))
    finally:
        server.stop()
    codes = [status for status, _ in statuses]
    # 20 + 20 fit in 50; the third is over: 429 with Retry-After; five 429s later a 418.
    if codes[:2] == [200, 200]:  # (unless the minute turned over between requests)
        assert codes[2] == 429 and int(statuses[2][1]) >= 1
        assert 418 in codes and all(c == 418 for c in codes[codes.index(418):])


def test_backfill_walks_up_to_the_streams_first_stored_trade(tmp_path):
    """The newest REST page can be older than the stream's first trade (the stream started
    after it was fetched); on an empty database no gap marks the hole: the walk goes up."""
    path = tmp_path / "up.db"
    conn = database.connect(path)
    base_ts = 1_700_000_000_000
    now = int(time.time() * 1000)
    database.TickWriter(conn).write([("BTCUSDT", i, base_ts + i, 100.0, 1.0, 0, now)
                                     for i in range(2001, 2101)])  # the stream's rows

    def answer(path_, query):
        if path_.endswith("/time"):
            return ok({"serverTime": base_ts + 2200})
        if path_.endswith("/exchangeInfo"):
            return ok({"rateLimits": []})
        if "fromId" not in query:  # "the newest page" as it was before the stream began
            return ok([agg_row(i, ts=base_ts + i) for i in range(901, 1901)])
        start = int(query["fromId"])
        stop = min(start + int(query["limit"]), 2101)
        return ok([agg_row(i, ts=base_ts + i) for i in range(start, stop)])

    with ScriptedRest(default=answer) as server:
        backfiller = Backfiller(client(server.url), ["BTCUSDT"], database.BackfillLedger(path),
                                trade_history_s=1.295, kline_history_s=0, repair=False,
                                started_ms=now).start()
        assert wait_until(lambda: backfiller.state in ("done", "failed"), 5), backfiller.health()
    ids = [row[0] for row in conn.execute(
        "SELECT trade_id FROM ticks WHERE symbol = 'BTCUSDT' ORDER BY trade_id")]
    assert ids == list(range(905, 2101))  # window start (ts >= now - 1.295 s) to the stream
    assert backfiller.duplicates > 0
    conn.close()
