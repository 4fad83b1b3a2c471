"""The REST API (api.py) against a real ``streamlit run app.py`` on a free 127.0.0.1 port.

The server runs the built-in demo market (CRYPTO_FEED=demo) on a temporary SQLite file
that was first seeded with five minutes of scripted trades ending just before the start,
so the pair's hedge and z exist at once and a fixed time range has known bars. No browser
is opened: recording, the alert evaluator and the API must work without a page.

The write rule for non-loopback clients cannot be exercised with a real client (only
127.0.0.0/8 addresses may be used here); ``test_write_guard_*`` drive the guard itself and
the routes through Starlette's ASGI interface with the client address in the scope.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from starlette.applications import Starlette

import analytics
import api
import dashboard_data as dd
import database
from browser import ROOT, StreamlitServer, demo_env, server_stack
from helpers import wait_until

Y, X = "ETHUSDT", "BTCUSDT"
SEED_SECONDS = 300


def seed(path: str, end_ms: int) -> tuple[int, int]:
    """Trades of both legs, ~5 per second, over the SEED_SECONDS before ``end_ms``; returns
    a range ``[start, end)`` of seeded, closed bars."""
    rng = np.random.default_rng(11)
    start = (end_ms - SEED_SECONDS * 1000) // 1000 * 1000
    n = SEED_SECONDS * 5
    ts = start + np.sort(rng.integers(0, SEED_SECONDS * 1000 - 1000, n))
    log_x = np.log(87_000.0) + np.cumsum(rng.normal(0, 1e-4, n))
    log_y = np.log(3_000.0) + 0.8 * (log_x - np.log(87_000.0)) + rng.normal(0, 5e-5, n)
    rows = []
    for k in range(n):
        rows.append((X, 10 + 2 * k, int(ts[k]), round(float(np.exp(log_x[k])), 1), 0.001, 0, 0))
        rows.append((Y, 10 + 2 * k, int(ts[k]) + 1, round(float(np.exp(log_y[k])), 2), 0.01,
                     1, 0))
    with dd.writing(path) as conn:
        database.import_ticks(conn, rows)
    # Up to a whole minute before the start: every 1m bar of the range has closed.
    return start, end_ms // 60_000 * 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("api")
    env = demo_env(workdir)
    seed_range = seed(env["CRYPTO_DB_PATH"], int(time.time() * 1000) - 1000)
    with StreamlitServer(env, workdir) as running:
        running.db_path = env["CRYPTO_DB_PATH"]
        running.seed_range = seed_range
        yield running


def call(server, path: str, method: str = "GET", body=None, raw: bool = False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url.rstrip('/')}{path}", data=data,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            content = reply.read()
            return reply.status, (content if raw else json.loads(content))
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_health_without_any_page_open(server):
    assert wait_until(lambda: call(server, "/api/health")[1]["collector"]["stored"] > 0, 20)
    status, health = call(server, "/api/health")
    assert status == 200
    assert health["collection"] == "running"
    assert health["collector"]["feed"] == "demo"
    assert health["alerts"]["running"] is True
    assert health["paper"]["running"] is True


def test_an_unknown_api_path_is_a_json_404(server):
    status, body = call(server, "/api/no-such-thing")
    assert status == 404
    assert "no endpoint GET /api/no-such-thing" in body["error"]


def test_the_servers_import_of_app_py_stops_at_streamlit():
    """`streamlit run` imports app.py before it listens: pandas and the project are
    imported by server.lifespan's thread afterwards (README, Backfill benchmark)."""
    probe = ("import sys; import app; print([m for m in ('pandas', 'api', 'analytics', "
             "'collector', 'dashboard_data', 'services', 'visualizations') "
             "if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_page_server_runs_on_httptools_and_uvloop():
    """Streamlit leaves uvicorn's HTTP parser and event loop on "auto": with httptools and
    uvloop installed (``streamlit[performance]`` in requirements.txt) a new browser gets
    Streamlit's ~60 scripts sooner than on h11 and asyncio (README, Backfill benchmark)."""
    assert server_stack() == "httptools/uvloop"


def test_symbols(server):
    status, body = call(server, "/api/symbols")
    assert status == 200
    assert body["subscribed"] == ["BTCUSDT", "ETHUSDT"]
    assert {row["symbol"] for row in body["stored"]} == {"BTCUSDT", "ETHUSDT"}


def test_bars_equal_the_database(server):
    start, end = server.seed_range
    status, bars = call(server, f"/api/bars?symbol=BTCUSDT&timeframe=1m&start={start}"
                                f"&end={end}")
    assert status == 200 and len(bars) >= 3
    with dd.reading(server.db_path) as conn:
        expected = database.read_bars(conn, "BTCUSDT", start, end, "1min")
    assert [b["ts"] for b in bars] == expected.index.tolist()
    for name in ("open", "high", "low", "close", "volume"):
        assert [b[name] for b in bars] == pytest.approx(expected[name].tolist(), rel=1e-14)


def test_forming_bar_left_out_unless_asked(server):
    status, closed = call(server, "/api/bars?symbol=ETHUSDT&timeframe=1m")
    assert status == 200 and all("forming" not in b for b in closed)
    status, flagged = call(server, "/api/bars?symbol=ETHUSDT&timeframe=1m&"
                                   "include_forming=true")
    assert flagged[-1]["forming"] is True
    # Forming bars are the newest ones: the current minute, plus the one before it only in
    # the first alerts.BAR_SETTLE_MS after its end (its last trades may still be written).
    flags = [b["forming"] for b in flagged]
    first_forming = flags.index(True)
    assert all(flags[first_forming:]) and len(flags) - first_forming <= 2, flags[-5:]
    assert flagged[-1]["ts"] > closed[-1]["ts"]


def test_ticks(server):
    start, end = server.seed_range
    status, ticks = call(server, f"/api/ticks?symbol=ETHUSDT&start={start}&end={end}&limit=50")
    assert status == 200 and len(ticks) == 50
    with dd.reading(server.db_path) as conn:
        expected = database.read_ticks(conn, "ETHUSDT", start, end, 50)
    assert [t["trade_id"] for t in ticks] == expected["trade_id"].tolist()
    assert [t["price"] for t in ticks] == expected["price"].tolist()


def test_pair_latest_values_match_the_analytics(server):
    start, end = server.seed_range
    status, body = call(server, f"/api/pair?y={Y}&x={X}&timeframe=1s&window=30&z_window=20"
                                f"&end={end}&lookback_s=200&history=5")
    assert status == 200
    for key in ("beta", "alpha", "spread", "z", "correlation", "half_life_bars"):
        assert key in body
    with dd.reading(server.db_path) as conn:
        bars_y = database.read_bars(conn, Y, end - 200_000, end, "1s")
        bars_x = database.read_bars(conn, X, end - 200_000, end, "1s")
    aligned = analytics.align(bars_y, bars_x, timeframe="1s")
    signals = analytics.pair_signals(aligned.y, aligned.x, method="ols", window=30,
                                     z_window=20).frame
    assert body["beta"] == pytest.approx(float(signals["beta"].iloc[-1]), rel=1e-9)
    assert body["z"] == pytest.approx(float(signals["z"].iloc[-1]), rel=1e-9)
    assert len(body["history"]) == 5
    assert body["history"][-1]["ts"] == int(signals.index[-1])
    # the interface of the issue: the defaults answer with beta and z
    status, latest = call(server, f"/api/pair?y={Y}&x={X}&timeframe=1s")
    assert status == 200 and math.isfinite(latest["beta"]) and "z" in latest


@pytest.mark.parametrize("path,name", [
    ("/api/bars?timeframe=1m", "symbol"),
    ("/api/bars?symbol=BTC-USDT", "symbol"),
    ("/api/bars?symbol=BTCUSDT&timeframe=2m", "timeframe"),
    ("/api/bars?symbol=BTCUSDT&start=abc", "start"),
    ("/api/bars?symbol=BTCUSDT&start=20&end=10", "start"),
    ("/api/bars?symbol=BTCUSDT&limit=0", "limit"),
    ("/api/bars?symbol=BTCUSDT&limit=100001", "limit"),
    ("/api/bars?symbol=BTCUSDT&format=xml", "format"),
    ("/api/bars?symbol=BTCUSDT&colour=red", "colour"),
    ("/api/ticks?symbol=BTCUSDT&limit=1000000", "limit"),
    ("/api/ticks?symbol=BTCUSDT&newest=maybe", "newest"),
    ("/api/pair?y=ETHUSDT", "x"),
    ("/api/pair?y=ETHUSDT&x=ETHUSDT", "x"),
    ("/api/pair?y=ETHUSDT&x=BTCUSDT&window=5", "window"),
    ("/api/pair?y=ETHUSDT&x=BTCUSDT&method=magic", "method"),
    ("/api/pair?y=ETHUSDT&x=BTCUSDT&log_prices=2", "log_prices"),
    ("/api/pair?y=ETHUSDT&x=BTCUSDT&history=10001", "history"),
    ("/api/pair?y=ETHUSDT&x=BTCUSDT&lookback_s=999999", "lookback_s"),
    ("/api/alerts/events?limit=5000", "limit"),
    ("/api/paper/positions?status=sleeping", "status"),
])
def test_bad_parameters_answer_400_naming_them(server, path, name):
    status, body = call(server, path)
    assert status == 400, body
    assert body["error"].startswith(f"{name}:"), body


def test_alert_rule_lifecycle(server):
    rule = {"metric": "zscore", "y_symbol": Y, "x_symbol": X, "comparison": "abs>",
            "threshold": 2.5, "window": 30}
    status, created = call(server, "/api/alerts", "POST", rule)
    assert status == 201, created
    rule_id = created["id"]
    rules = {r["id"]: r for r in call(server, "/api/alerts")[1]}
    assert rules[rule_id]["threshold"] == 2.5 and rules[rule_id]["enabled"] is True
    assert call(server, f"/api/alerts/{rule_id}/disable", "POST")[0] == 200
    assert {r["id"]: r for r in call(server, "/api/alerts")[1]}[rule_id]["enabled"] is False
    assert call(server, f"/api/alerts/{rule_id}/enable", "POST")[0] == 200
    assert call(server, f"/api/alerts/{rule_id}", "DELETE")[0] == 200
    assert rule_id not in {r["id"] for r in call(server, "/api/alerts")[1]}
    status, body = call(server, f"/api/alerts/{rule_id}", "DELETE")
    assert status == 404 and body["error"].startswith("rule_id:")
    status, body = call(server, "/api/alerts", "POST", {**rule, "threshold": "high"})
    assert status == 400 and "threshold" in body["error"]
    status, events = call(server, "/api/alerts/events?limit=10")
    assert status == 200 and isinstance(events, list)


def test_watchlist_lists_pinned_pairs_in_pin_order(server):
    with dd.writing(server.db_path) as conn:
        database.pin_pair(conn, Y, X, timeframe="1s", beta=0.81, half_life=12.5,
                          eg_qvalue=0.01, now_ms=1_000)
        database.pin_pair(conn, "SOLUSDT", X, timeframe="1min", beta=math.nan, now_ms=2_000)
    try:
        status, pinned = call(server, "/api/watchlist")
        assert status == 200
        assert [(p["y_symbol"], p["x_symbol"], p["timeframe"]) for p in pinned] == [
            (Y, X, "1s"), ("SOLUSDT", X, "1min")]
        assert (pinned[0]["beta"], pinned[0]["half_life"], pinned[0]["eg_qvalue"],
                pinned[0]["added_ms"]) == (0.81, 12.5, 0.01, 1_000)
        assert pinned[1]["beta"] is None  # not finite: stored as NULL, answered as null
        assert call(server, "/api/watchlist?sort=beta")[0] == 400
    finally:
        with dd.writing(server.db_path) as conn:
            database.unpin_pair(conn, Y, X)
            database.unpin_pair(conn, "SOLUSDT", X)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://169.254.169.254/latest",
                                 "http://[fe80::1]/hook", "https://hooks.example.com/x",
                                 "gopher://127.0.0.1/"])
def test_webhook_urls_refused(server, url):
    rule = {"metric": "price", "symbol": "BTCUSDT", "comparison": ">", "threshold": 1,
            "webhook_url": url}
    status, body = call(server, "/api/alerts", "POST", rule)
    assert status == 400 and body["error"].startswith("webhook_url:"), body


def test_paper_position_round_trip(server):
    order = {"y": Y, "x": X, "side": "long", "notional": 5_000, "window": 30,
             "fee_bps": 5, "slippage_bps": 1}
    status, opened = call(server, "/api/paper/positions", "POST", order)
    assert status == 201, opened
    position_id = opened["id"]

    def status_of(pid):
        table = call(server, "/api/paper/positions?status=all")[1]
        return {row["id"]: row for row in table}[pid]

    assert wait_until(lambda: status_of(position_id)["status"] == "open", 15)
    row = call(server, "/api/paper/positions?status=open")[1][0]
    assert math.isfinite(row["upnl"]) and math.isfinite(row["upnl_y"])
    assert row["upnl"] == pytest.approx(row["upnl_y"] + row["upnl_x"]
                                        - 2 * row["fees_so_far"], rel=0.05, abs=1.0)
    assert call(server, f"/api/paper/positions/{position_id}/close", "POST")[0] == 200
    assert wait_until(lambda: status_of(position_id)["status"] == "closed", 15)
    closed = status_of(position_id)
    assert closed["pnl"] == pytest.approx(closed["gross_pnl"] - closed["fees"], rel=1e-12)
    assert closed["entry_ts_y"] >= closed["requested_ms"]
    status, body = call(server, f"/api/paper/positions/{position_id}/close", "POST")
    assert status == 409 and body["error"].startswith("position_id:")
    status, body = call(server, "/api/paper/positions", "POST", {**order, "side": "up"})
    assert status == 400 and "side" in body["error"]
    status, csv = call(server, "/api/paper/positions?status=closed&format=csv", raw=True)
    history = pd.read_csv(io.BytesIO(csv))
    assert position_id in history["id"].tolist()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "xlsx", "json"])
def test_export_round_trip(server, fmt):
    start, end = server.seed_range
    status, data = call(server, f"/api/bars?symbol=ETHUSDT&timeframe=10s&start={start}"
                                f"&end={end}&format={fmt}", raw=True)
    assert status == 200
    reader = {"csv": pd.read_csv, "parquet": pd.read_parquet, "xlsx": pd.read_excel,
              "json": lambda buffer: pd.DataFrame(json.load(buffer))}[fmt]
    table = reader(io.BytesIO(data))
    with dd.reading(server.db_path) as conn:
        expected = database.read_bars(conn, "ETHUSDT", start, end, "10s")
    assert table["ts"].tolist() == expected.index.tolist()
    for name in ("open", "close", "volume", "vwap"):
        assert table[name].to_numpy() == pytest.approx(expected[name].to_numpy(), rel=1e-14)


def test_openapi_documents_every_route(server):
    status, document = call(server, "/api/openapi.json")
    assert status == 200
    documented = {(method.upper(), path) for path, ops in document["paths"].items()
                  for method in ops}
    assert documented == {(e.method, e.path) for e in api.ENDPOINTS}


def test_pause_and_resume_collection(server):
    assert call(server, "/api/collection/pause", "POST")[0] == 200
    health = call(server, "/api/health")[1]
    assert health["collection"] == "paused"
    stored = health["collector"]["stored"]
    time.sleep(1.0)
    assert call(server, "/api/health")[1]["collector"]["stored"] == stored
    assert call(server, "/api/collection/resume", "POST")[0] == 200
    assert call(server, "/api/health")[1]["collection"] == "running"
    assert wait_until(lambda: call(server, "/api/health")[1]["collector"]["stored"] > 0, 15)


# --------------------------------------------------------------------------------------
# The write rule and the webhook rule, without a network
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.5", False), ("192.168.1.2", False), ("::ffff:10.0.0.5", False),
    ("testclient", False), ("", False), (None, False),
])
def test_is_loopback(host, loopback):
    assert api.is_loopback(host) is loopback


def test_write_guard_rule():
    api.check_write_allowed("127.0.0.1", None, None)  # loopback: no token needed
    with pytest.raises(api.ApiError) as refused:
        api.check_write_allowed("10.0.0.5", None, None)
    assert refused.value.status == 403 and "CRYPTO_API_TOKEN" in refused.value.message
    with pytest.raises(api.ApiError) as missing:
        api.check_write_allowed("10.0.0.5", None, "s3cret")
    assert missing.value.status == 401
    with pytest.raises(api.ApiError) as wrong:
        api.check_write_allowed("10.0.0.5", "Bearer nope", "s3cret")
    assert wrong.value.status == 403
    api.check_write_allowed("10.0.0.5", "Bearer s3cret", "s3cret")


def asgi_call(method: str, path: str, client: str, headers: dict | None = None,
              body: bytes = b"") -> tuple[int, dict]:
    """One request through the API's Starlette routes, from ``client`` (no socket)."""
    app = Starlette(routes=api.routes())
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
             "client": (client, 40000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(content)


def test_write_guard_on_the_routes(monkeypatch, tmp_path):
    """A non-loopback client is refused before the handler runs; with the token it passes
    the guard (and reaches validation, here a 404 for a rule that does not exist)."""
    monkeypatch.setenv("CRYPTO_DB_PATH", str(tmp_path / "guard.db"))
    monkeypatch.delenv(api.TOKEN_ENV, raising=False)
    status, body = asgi_call("DELETE", "/api/alerts/7", "10.1.2.3")
    assert status == 403 and body["error"].startswith("authorization:")
    monkeypatch.setenv(api.TOKEN_ENV, "s3cret")
    assert asgi_call("POST", "/api/paper/positions", "10.1.2.3")[0] == 401
    status, body = asgi_call("DELETE", "/api/alerts/7", "10.1.2.3",
                             {"Authorization": "Bearer s3cret"})
    assert status == 404 and body["error"].startswith("rule_id:")


def test_webhook_rule():
    allowed = ("hooks.example.com", "*.chat.example.org")
    for url in ("https://hooks.example.com/T/B", "https://a.chat.example.org/x",
                "http://127.0.0.1:9000/hook", "http://localhost/hook", None, ""):
        api.check_webhook_url(url, allowed)
    for url in ("https://evil.example.net/", "file:///etc/passwd", "ftp://hooks.example.com",
                "http://169.254.169.254/", "http://0.0.0.0/", "http://224.0.0.1/",
                "http://[fe80::1]/", "https:///nohost"):
        with pytest.raises(api.ApiError, match="^webhook_url"):
            api.check_webhook_url(url, allowed)
