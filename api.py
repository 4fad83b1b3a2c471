"""REST API served by the same process and on the same port as the page.

``streamlit run app.py`` finds ``app = st.App(...)`` in app.py (Streamlit 1.67 discovers an
ASGI app by reading the file) and serves it with uvicorn: the page at ``/``, these routes
under ``/api/``, both on the page's port (``server.ROUTES``, which imports this module in
the background after the server starts). ``server.lifespan`` starts the collector, the
alert evaluator and the paper-trading monitor (``services.start``), so recording, alerts
and the API work with no browser tab open.

Every endpoint reads or writes through the functions the page calls (``database``,
``dashboard_data``, ``alerts``, ``paper``, ``exports``); nothing here computes a number of
its own. Handlers are plain functions: Starlette runs them in its thread pool, so a slow
SQLite read never blocks the page's websocket.

Rules every endpoint follows
    * Each query parameter is validated; a bad one gives ``400 {"error": "<name>: ..."}``
      naming it. Unknown query parameters are refused too (a typo must not silently fall
      back to a default).
    * Sizes are bounded: ``limit`` has a maximum (``MAX_BARS``, ``MAX_TICKS``, ...).
    * Times are UTC epoch milliseconds.
    * Writes (POST/DELETE) are accepted from a loopback client (127.0.0.0/8, ::1) without a
      token, and from any other address only with ``Authorization: Bearer
      <CRYPTO_API_TOKEN>`` (refused with 403 when the variable is unset). Streamlit binds
      every interface unless ``server.address`` is set, so the network is never trusted.
    * A webhook URL given through the API must be http(s), must not point at a link-local,
      multicast or unspecified address (cloud metadata services live on 169.254.169.254),
      and its host must be loopback or listed in ``CRYPTO_WEBHOOK_HOSTS`` (comma-separated
      host names; ``*.example.com`` allows sub-domains).

``/api/openapi.json`` describes every endpoint (``ENDPOINTS`` below is its source).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import alerts
import analytics
import dashboard_data as dd
import database
import exports
import paper
import services
from config import ConfigError, Settings, parse_symbols

log = logging.getLogger("api")

MAX_BARS = 100_000  # rows per /api/bars answer
MAX_TICKS = 100_000
DEFAULT_TICKS = 1_000
MAX_HISTORY = 10_000  # /api/pair history rows
MAX_EVENTS = 1_000
MAX_PAIR_BARS = 100_000  # bars one /api/pair computation may read (lookback / bar size)
DEFAULT_PAIR_LOOKBACK_S = 3_600
MAX_BODY_BYTES = 64_000
TOKEN_ENV = "CRYPTO_API_TOKEN"
WEBHOOK_HOSTS_ENV = "CRYPTO_WEBHOOK_HOSTS"
TIMEFRAMES = tuple(analytics.TIMEFRAME_MS)


class ApiError(Exception):
    """An answer other than 200: ``status`` and a message that names the parameter."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------


def _plain(value):
    """orjson's fallback: pandas/numpy scalars and timestamps to plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return int(value.value // 1_000_000)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_response(payload, status: int = 200) -> Response:
    """orjson: NaN and infinities become null, numpy values are written as numbers."""
    body = orjson.dumps(payload, default=_plain,
                        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    return Response(body, status_code=status, media_type="application/json")


def records(frame: pd.DataFrame) -> list[dict]:
    """A frame as JSON records (index included when named), numbers without float noise."""
    out = frame.reset_index() if frame.index.name else frame
    return exports.json_records(out)


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


class Params:
    """Query parameters, read once each; ``finish()`` refuses the ones nobody read."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self._query = dict(query)
        self._read: set[str] = set()

    def raw(self, name: str) -> str | None:
        self._read.add(name)
        value = self._query.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def integer(self, name: str, default: int | None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        text = self.raw(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ApiError(400, f"{name}: {text!r} is not a whole number") from None
        if minimum is not None and value < minimum:
            raise ApiError(400, f"{name}: {value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise ApiError(400, f"{name}: {value} is above the maximum {maximum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        text = self.raw(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in ("1", "true", "yes"):
            return True
        if lowered in ("0", "false", "no"):
            return False
        raise ApiError(400, f"{name}: {text!r} must be true or false")

    def choice(self, name: str, default: str | None, choices) -> str | None:
        text = self.raw(name)
        if text is None:
            return default
        if text not in choices:
            raise ApiError(400, f"{name}: {text!r} must be one of {', '.join(choices)}")
        return text

    def symbol(self, name: str, required: bool = True) -> str | None:
        text = self.raw(name)
        if text is None:
            if required:
                raise ApiError(400, f"{name}: missing (a symbol such as BTCUSDT)")
            return None
        try:
            symbols = parse_symbols(text)
        except ConfigError as exc:
            raise ApiError(400, f"{name}: {exc}") from None
        if len(symbols) != 1:
            raise ApiError(400, f"{name}: give one symbol, got {len(symbols)}")
        return symbols[0].upper()

    def timeframe(self, name: str = "timeframe", default: str = "1s") -> str:
        text = self.raw(name)
        if text is None:
            return default
        try:
            return analytics.normalize_timeframe(text)
        except (ValueError, TypeError):
            raise ApiError(400, f"{name}: {text!r} must be one of "
                                f"{', '.join(TIMEFRAMES)} (1m/5m accepted)") from None

    def finish(self) -> None:
        unknown = sorted(set(self._query) - self._read)
        if unknown:
            raise ApiError(400, f"{unknown[0]}: unknown parameter (allowed: "
                                f"{', '.join(sorted(self._read))})")


def _time_range(params: Params) -> tuple[int | None, int | None]:
    start = params.integer("start", None, 0, 2**62)
    end = params.integer("end", None, 0, 2**62)
    if start is not None and end is not None and start > end:
        raise ApiError(400, f"start: {start} is after end ({end})")
    return start, end


# --------------------------------------------------------------------------------------
# Security
# --------------------------------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_write_allowed(client_host: str | None, authorization: str | None,
                        token: str | None) -> None:
    """The write rule: loopback clients need no token; others need ``Bearer <token>``.

    Raises ``ApiError`` 401/403 otherwise. ``token`` is ``CRYPTO_API_TOKEN`` (None or ""
    when unset: then only loopback clients may write).
    """
    if is_loopback(client_host):
        return
    if not token:
        raise ApiError(403, f"authorization: writes from {client_host} are refused; set "
                            f"{TOKEN_ENV} on the server and send 'Authorization: Bearer "
                            "<token>'")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "authorization: missing 'Authorization: Bearer <token>' "
                            f"(required from {client_host})")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "authorization: wrong token")


def allowed_webhook_hosts(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    text = (os.environ if environ is None else environ).get(WEBHOOK_HOSTS_ENV, "")
    return tuple(h.strip().lower() for h in text.split(",") if h.strip())


def check_webhook_url(url: str | None, allowed_hosts: tuple[str, ...]) -> None:
    """Refuse a webhook URL the API must not post to (see the module docstring)."""
    if url is None or (isinstance(url, str) and not url.strip()):
        return
    if not isinstance(url, str):
        raise ApiError(400, "webhook_url: must be an http:// or https:// URL")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise ApiError(400, f"webhook_url: scheme {parts.scheme!r} is not allowed; use "
                            "http:// or https://")
    host = (parts.hostname or "").lower()
    if not host:
        raise ApiError(400, "webhook_url: has no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        mapped = getattr(address, "ipv4_mapped", None) or address
        if mapped.is_link_local or mapped.is_multicast or mapped.is_unspecified:
            raise ApiError(400, f"webhook_url: {host} is a link-local, multicast or "
                                "unspecified address")
        if mapped.is_loopback:
            return
    elif host == "localhost":
        return
    for allowed in allowed_hosts:
        if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
            return
    raise ApiError(400, f"webhook_url: host {host!r} is not allowed; list it in "
                        f"{WEBHOOK_HOSTS_ENV} (comma-separated) on the server")


def _guard_write(request: Request) -> None:
    check_write_allowed(request.client.host if request.client else None,
                        request.headers.get("authorization"), os.environ.get(TOKEN_ENV))


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, f"body: larger than {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: must be a JSON object")
    return data


# --------------------------------------------------------------------------------------
# Data access (the page's functions)
# --------------------------------------------------------------------------------------


def _db_path() -> str:
    path = services.db_path()
    if path is None:
        try:
            path = Settings.from_env().db_path
        except ConfigError as exc:
            raise ApiError(503, f"configuration: {exc}") from None
    return path


def _reading():
    path = _db_path()
    if not dd.database_ready(path):
        raise ApiError(503, f"database: {dd.WAITING_MESSAGE} ({path} has no data yet)")
    return dd.reading(path)


def _stored_records(read: Callable) -> list[dict]:
    """``read(conn)`` (a ``database.list_*`` table) as JSON records; [] before the
    collector has created the database."""
    path = _db_path()
    if not dd.database_ready(path):
        return []
    with dd.reading(path) as conn:
        return records(read(conn))


def _subscribed() -> tuple[str, ...]:
    feed = services.current_feed()
    return tuple(s.upper() for s in feed.settings.symbols) if feed is not None else ()


# --------------------------------------------------------------------------------------
# Endpoints
# --------------------------------------------------------------------------------------


def health(request: Request) -> Response:
    Params(request.query_params).finish()
    feed = services.current_feed()
    collector_health = feed.health() if feed is not None else None
    body = {"collection": "paused" if services.collection_paused() else
            ("running" if feed is not None and feed.running else "stopped"),
            "collector": collector_health,
            "feed_status": (dd.feed_status(collector_health).label
                            if collector_health is not None else None),
            "alerts": alerts.evaluator_status(),
            "paper": paper.monitor_status()}
    return json_response(body)


def symbols(request: Request) -> Response:
    Params(request.query_params).finish()
    return json_response({"subscribed": list(_subscribed()),
                          "stored": _stored_records(database.list_symbols)})


def bars(request: Request) -> Response:
    params = Params(request.query_params)
    symbol = params.symbol("symbol")
    timeframe = params.timeframe()
    start, end = _time_range(params)
    limit = params.integer("limit", MAX_BARS, 1, MAX_BARS)
    include_forming = params.boolean("include_forming", False)
    fmt = params.choice("format", "json", exports.FORMATS)
    params.finish()
    with _reading() as conn:
        frame = exports.bars_for_export(conn, symbol, timeframe, start, end,
                                        include_forming=include_forming)
    if len(frame) > limit:
        raise ApiError(400, f"limit: {len(frame)} bars match, more than limit={limit}; "
                            "narrow start/end or raise limit (at most "
                            f"{MAX_BARS})")
    return _table_response(frame, fmt, f"bars_{symbol}_{timeframe}")


def ticks(request: Request) -> Response:
    params = Params(request.query_params)
    symbol = params.symbol("symbol")
    start, end = _time_range(params)
    limit = params.integer("limit", DEFAULT_TICKS, 1, MAX_TICKS)
    newest = params.boolean("newest", False)
    fmt = params.choice("format", "json", exports.FORMATS)
    params.finish()
    with _reading() as conn:
        frame = database.read_ticks(conn, symbol, 0 if start is None else start, end,
                                    limit, latest=newest)
    return _table_response(frame, fmt, f"ticks_{symbol}")


def _table_response(frame: pd.DataFrame, fmt: str, name: str) -> Response:
    if fmt == "json":
        return json_response(records(frame))
    try:
        export = exports.export(frame, fmt)
    except exports.ExportTooLarge as exc:
        raise ApiError(400, f"format: {exc}") from None
    return Response(export.data, media_type=export.mime, headers={
        "Content-Disposition": f'attachment; filename="{name}.{export.extension}"'})


def pair(request: Request) -> Response:
    params = Params(request.query_params)
    y = params.symbol("y")
    x = params.symbol("x")
    if y == x:
        raise ApiError(400, f"x: must differ from y ({y})")
    timeframe = params.timeframe()
    window = params.integer("window", 60, 10, 20_000)
    z_window = params.integer("z_window", window, 2, 20_000)
    method = params.choice("method", "ols", analytics.PAIR_METHODS)
    log_prices = params.boolean("log_prices", True)
    bar_s = analytics.TIMEFRAME_MS[timeframe] / 1000
    lookback_s = params.integer("lookback_s", max(DEFAULT_PAIR_LOOKBACK_S,
                                                  int(3 * (window + z_window) * bar_s)),
                                1, None)
    if lookback_s / bar_s > MAX_PAIR_BARS:
        raise ApiError(400, f"lookback_s: {lookback_s} s of {timeframe} bars is more than "
                            f"{MAX_PAIR_BARS} bars")
    history = params.integer("history", 0, 0, MAX_HISTORY)
    end = params.integer("end", None, 0, 2**62)
    params.finish()
    source = dd.DataSource("live", _db_path())
    if not dd.database_ready(source.db_path):
        raise ApiError(503, f"database: {dd.WAITING_MESSAGE}")
    anchor = end if end is not None else max(
        (t for t in dd.latest_bar_times(source, (y, x)) if t is not None), default=None)
    if anchor is None:
        raise ApiError(404, f"y: no bars of {y} or {x} stored yet")
    view = dd.pair_view(source.db_path, y, x, timeframe=timeframe, window=window,
                           z_window=z_window, method=method, log_prices=log_prices,
                           lookback_ms=lookback_s * 1000, end_ms=end)
    body = dd.pair_summary(view)
    body.update(y=y, x=x, timeframe=timeframe, window=window, z_window=z_window,
                method=method, log_prices=log_prices, lookback_s=lookback_s)
    if history:
        body["history"] = records(dd.analytics_frame(view).tail(history))
    return json_response(body)


def alert_rules(request: Request) -> Response:
    Params(request.query_params).finish()
    return json_response(_stored_records(database.list_alert_rules))


def alert_events(request: Request) -> Response:
    params = Params(request.query_params)
    since_id = params.integer("since_id", None, 0, 2**62)
    rule_id = params.integer("rule_id", None, 1, 2**62)
    limit = params.integer("limit", 200, 1, MAX_EVENTS)
    params.finish()
    return json_response(_stored_records(lambda conn: database.list_alert_events(
        conn, since_id=since_id, limit=limit, rule_id=rule_id)))


async def create_alert(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    fields = await _json_body(request)
    check_webhook_url(fields.get("webhook_url"), allowed_webhook_hosts())
    try:
        with dd.writing(_db_path()) as conn:
            rule_id = alerts.create_rule(conn, **fields)
            rule = alerts.get_rule(conn, rule_id)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response({"id": rule_id, "rule": rule.describe()}, status=201)


def _rule_id(request: Request) -> int:
    text = request.path_params["rule_id"]
    if not text.isdigit():
        raise ApiError(400, f"rule_id: {text!r} is not a whole number")
    return int(text)


def _existing_rule(conn, rule_id: int) -> None:
    rules = database.list_alert_rules(conn)
    if not (rules["id"] == rule_id).any():
        raise ApiError(404, f"rule_id: {rule_id} does not exist")


def _set_rule_enabled(request: Request, enabled: bool) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    rule_id = _rule_id(request)
    with dd.writing(_db_path()) as conn:
        _existing_rule(conn, rule_id)
        database.set_alert_rule_enabled(conn, rule_id, enabled)
    return json_response({"id": rule_id, "enabled": enabled})


def enable_alert(request: Request) -> Response:
    return _set_rule_enabled(request, True)


def disable_alert(request: Request) -> Response:
    return _set_rule_enabled(request, False)


def delete_alert(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    rule_id = _rule_id(request)
    with dd.writing(_db_path()) as conn:
        _existing_rule(conn, rule_id)
        database.delete_alert_rule(conn, rule_id)
    return json_response({"id": rule_id, "deleted": True})


def watchlist(request: Request) -> Response:
    """The Pairs tab's pinned pairs (``database.list_watchlist``), in pin order."""
    Params(request.query_params).finish()
    return json_response(_stored_records(database.list_watchlist))


def paper_positions(request: Request) -> Response:
    params = Params(request.query_params)
    status = params.choice("status", "all", ("open", "closed", "all"))
    limit = params.integer("limit", 200, 1, paper.MAX_LISTED)
    fmt = params.choice("format", "json", exports.FORMATS)
    params.finish()
    path = _db_path()
    if not dd.database_ready(path):
        raise ApiError(503, f"database: {dd.WAITING_MESSAGE}")
    table = paper.positions_table(path, status=status, limit=limit)
    if fmt != "json":
        return _table_response(table, fmt, "paper_positions")
    return json_response(records(table))


async def open_paper_position(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    fields = await _json_body(request)
    try:
        order = paper.order_from_fields(fields)
        position_id = paper.open_position(_db_path(), order)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return json_response({"id": position_id, "status": "opening"}, status=201)


def close_paper_position(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    text = request.path_params["position_id"]
    if not text.isdigit():
        raise ApiError(400, f"position_id: {text!r} is not a whole number")
    try:
        status = paper.request_close(_db_path(), int(text), reason="api")
    except LookupError as exc:
        raise ApiError(404, f"position_id: {exc}") from None
    except ValueError as exc:
        raise ApiError(409, f"position_id: {exc}") from None
    return json_response({"id": int(text), "status": status})


def pause_collection(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    services.pause_collection()
    return json_response({"collection": "paused"})


def resume_collection(request: Request) -> Response:
    _guard_write(request)
    Params(request.query_params).finish()
    services.resume_collection()
    return json_response({"collection": "running"})


# --------------------------------------------------------------------------------------
# Routes and OpenAPI
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable
    summary: str
    params: tuple[tuple[str, str], ...] = ()  # (name, description)
    body: str = ""


_TIME = (("start", "epoch ms, inclusive (optional)"), ("end", "epoch ms, exclusive (optional)"))
_FORMAT = (("format", f"one of {', '.join(exports.FORMATS)}; default json"),)

ENDPOINTS = (
    Endpoint("GET", "/api/health", health, "Collector counters, feed, collection state, "
             "alert evaluator and paper monitor status"),
    Endpoint("GET", "/api/symbols", symbols, "Subscribed symbols and stored symbols with "
             "first/last trade time and trade count"),
    Endpoint("GET", "/api/bars", bars, "OHLCV bars (ts = bar open, epoch ms) of one symbol; "
             "the still-forming newest bar is left out unless include_forming=true "
             "(then flagged forming=true)",
             (("symbol", "required, e.g. BTCUSDT"),
              ("timeframe", f"one of {', '.join(TIMEFRAMES)} (1m/5m accepted); default 1s"),
              *_TIME, ("limit", f"1..{MAX_BARS}; default {MAX_BARS}: more matching bars "
                                "give 400"),
              ("include_forming", "true/false; default false"), *_FORMAT)),
    Endpoint("GET", "/api/ticks", ticks, "Stored trades of one symbol, oldest first",
             (("symbol", "required"), *_TIME,
              ("limit", f"1..{MAX_TICKS}; default {DEFAULT_TICKS}"),
              ("newest", "true: the newest `limit` trades of the range; default false"),
              *_FORMAT)),
    Endpoint("GET", "/api/pair", pair, "Latest beta, alpha, spread, z, correlation and "
             "half-life of y on x (the page's computation), optionally the last rows",
             (("y", "required"), ("x", "required, != y"),
              ("timeframe", "default 1s"), ("window", "hedge window in bars, 10..20000; "
                                                     "default 60"),
              ("z_window", "z-score window in bars, 2..20000; default window"),
              ("method", f"one of {', '.join(analytics.PAIR_METHODS)}; default ols"),
              ("log_prices", "true/false; default true"),
              ("lookback_s", f"seconds of bars read; default max(3600, 3*(window+z_window) "
                             f"bars); at most {MAX_PAIR_BARS} bars"),
              ("end", "epoch ms: compute as of this time (default: newest)"),
              ("history", f"0..{MAX_HISTORY} last per-bar rows to include; default 0"))),
    Endpoint("GET", "/api/alerts", alert_rules, "Alert rules with their live status"),
    Endpoint("POST", "/api/alerts", create_alert, "Create an alert rule (write)",
             body="JSON object of alert rule fields: metric, comparison, threshold, symbol "
                  "or y_symbol/x_symbol, timeframe, window, z_window, method, log_prices, "
                  "cooldown_s, hysteresis, enabled, webhook_url, name"),
    Endpoint("POST", "/api/alerts/{rule_id}/enable", enable_alert, "Enable a rule (write)"),
    Endpoint("POST", "/api/alerts/{rule_id}/disable", disable_alert, "Disable a rule (write)"),
    Endpoint("DELETE", "/api/alerts/{rule_id}", delete_alert, "Delete a rule (write)"),
    Endpoint("GET", "/api/alerts/events", alert_events, "Alert events, newest first",
             (("since_id", "only events with a larger id"), ("rule_id", "only this rule"),
              ("limit", f"1..{MAX_EVENTS}; default 200"))),
    Endpoint("GET", "/api/watchlist", watchlist, "Pairs pinned in the Pairs tab: y_symbol, "
             "x_symbol, timeframe, the screen's beta, half_life (bars) and eg_qvalue when "
             "pinned, added_ms"),
    Endpoint("GET", "/api/paper/positions", paper_positions, "Paper positions with live "
             "unrealised P&L (open) or realised P&L and fees (closed)",
             (("status", "open, closed or all; default all"),
              ("limit", "1..1000; default 200"), *_FORMAT)),
    Endpoint("POST", "/api/paper/positions", open_paper_position, "Open a paper spread "
             "position, filled at the next trade of each leg (write)",
             body="JSON object: y, x, side (long|short), notional (y notional), timeframe, "
                  "window, method, log_prices, fee_bps, slippage_bps, exit_z, stop_z, "
                  "max_holding_s (the last three optional), notify (an alert event when it "
                  "fills and closes)"),
    Endpoint("POST", "/api/paper/positions/{position_id}/close", close_paper_position,
             "Close a paper position at the next trade of each leg (write)"),
    Endpoint("POST", "/api/collection/pause", pause_collection, "Pause recording (write)"),
    Endpoint("POST", "/api/collection/resume", resume_collection, "Resume recording (write)"),
)


def openapi_document() -> dict:
    """A small OpenAPI 3.1 document built from ``ENDPOINTS``."""
    paths: dict[str, dict] = {}
    for endpoint in ENDPOINTS:
        operation = {"summary": endpoint.summary, "responses": {
            "200": {"description": "JSON"}, "400": {"description": "a bad parameter, named "
                                                                    "in `error`"}}}
        parameters = [{"name": name, "in": "query", "description": text,
                       "required": text.startswith("required"), "schema": {"type": "string"}}
                      for name, text in endpoint.params]
        for name in ("rule_id", "position_id"):
            if "{" + name + "}" in endpoint.path:
                parameters.append({"name": name, "in": "path", "required": True,
                                   "schema": {"type": "integer"}})
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body:
            operation["requestBody"] = {"description": endpoint.body, "content": {
                "application/json": {"schema": {"type": "object"}}}}
        if endpoint.method != "GET":
            operation["security"] = [{"bearer": []}, {}]
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {"openapi": "3.1.0",
            "info": {"title": "Pairs analytics API", "version": "1"},
            "components": {"securitySchemes": {"bearer": {"type": "http",
                                                          "scheme": "bearer"}}},
            "paths": paths}


def openapi(request: Request) -> Response:
    return json_response(openapi_document())


def _answering(handler: Callable) -> Callable:
    """Turn ``ApiError`` and bad input into JSON answers; keep sync handlers sync (Starlette
    runs those in its thread pool)."""

    def failure(exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            return json_response({"error": exc.message}, status=exc.status)
        log.exception("API request failed")
        return json_response({"error": f"internal error: {type(exc).__name__}: {exc}"},
                             status=500)

    if asyncio.iscoroutinefunction(handler):
        @functools.wraps(handler)
        async def wrapped_async(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every failure becomes a JSON answer, logged
                return failure(exc)
        return wrapped_async

    @functools.wraps(handler)
    def wrapped(request: Request) -> Response:
        try:
            return handler(request)
        except Exception as exc:  # every failure becomes a JSON answer, logged
            return failure(exc)
    return wrapped


async def unknown_endpoint(scope, receive, send) -> None:
    """ASGI answer for a path under ``/api/`` that no endpoint serves: 404 in JSON."""
    message = f"no endpoint {scope.get('method', '')} {scope['path']} (see /api/openapi.json)"
    await json_response({"error": message}, status=404)(scope, receive, send)


def routes() -> list[Route]:
    """The Starlette routes of ``ENDPOINTS`` plus ``/api/openapi.json``.

    Fixed paths come before the ``{rule_id}`` ones so that ``/api/alerts/events`` is
    never read as a rule id.
    """
    table = [Route("/api/openapi.json", _answering(openapi), methods=["GET"])]
    ordered = sorted(ENDPOINTS, key=lambda e: "{" in e.path)
    for endpoint in ordered:
        table.append(Route(endpoint.path, _answering(endpoint.handler),
                           methods=[endpoint.method]))
    return table
