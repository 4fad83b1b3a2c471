"""Paper trading of a pair's spread: positions filled at real trades, priced like the backtest.

A trader who trusts a signal in the backtest wants to watch it live before risking money.
A paper position is a long or short spread of ``y`` on ``x``:

* **Size and hedge.** ``notional`` is the y leg's notional; β is the pair's current
  trailing hedge (the same view the page draws: ``dashboard_data.pair_view``) at the
  click. Units are fixed at the entry fill with the backtest's sizing rule (see
  ``backtest.backtest`` Notes): ``units_y = notional / p_y``; ``units_x = β · notional /
  p_x`` in log prices, ``β · units_y`` in raw prices.
* **Fills.** An order (open or close) remembers the newest stored trade of each leg when
  it was placed; each leg fills at the FIRST trade stored after that one (in exchange
  time, then trade id), never at a bar close, a forward-filled price or a trade that was
  already known at the click. The monitor thread (``start_monitor``) looks for those
  trades twice a second; because the fill is defined by the data, not by when the monitor
  looks, a restart fills at the same trades. The collector flushes every 0.25 s, so a
  trade received up to that long before the click but not yet written can still count
  as "after".
* **Costs and P&L.** ``backtest.position_pnl`` (the backtest's own arithmetic) with the
  position's ``fee_bps`` and ``slippage_bps``. Unrealised P&L is what closing at each
  leg's last stored trade would give: per leg ``q · (exit fill - entry fill)`` and in
  total after all four fees.
* **Closing.** By request (page button, API) or automatically when the user set an exit
  z (long: z >= -exit; short: z <= exit), a stop z (long: z <= -stop; short: z >= stop)
  or a maximum holding time; z is the pair's newest z from the position's own settings.
* **Storage.** ``database`` "Paper-trading positions": positions survive restarts and are
  shared by every browser tab and the API.

Statuses: ``opening`` (waiting for the entry trades) -> ``open`` -> ``closing`` (waiting
for the exit trades) -> ``closed``; ``cancelled`` when closed before the entry filled.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import pandas as pd

import alerts
import analytics
import backtest
import dashboard_data as dd
import database

log = logging.getLogger("paper")

SIDES = ("long", "short")
OPEN_STATUSES = ("opening", "open", "closing")
CLOSED_STATUSES = ("closed", "cancelled")
MAX_LISTED = 1_000
MONITOR_INTERVAL_S = 0.5
CLOCK_TOLERANCE_MS = 60_000  # a feed whose newest trade is this close to now is live
# Columns of the page's tables and of the history export.
OPEN_COLUMNS = ("id", "status", "side", "y_symbol", "x_symbol", "notional", "beta",
                "qty_y", "qty_x", "entry_fill_y", "entry_fill_x", "last_y", "last_x",
                "upnl_y", "upnl_x", "upnl", "fees_so_far", "z_at_request", "z_now",
                "holding_s", "exit_z", "stop_z", "max_holding_s", "requested_ms")
HISTORY_COLUMNS = ("id", "status", "side", "y_symbol", "x_symbol", "notional", "beta",
                   "qty_y", "qty_x", "entry_ts_y", "entry_ts_x", "entry_ref_y",
                   "entry_ref_x", "entry_fill_y", "entry_fill_x", "exit_ts_y", "exit_ts_x",
                   "exit_ref_y", "exit_ref_x", "exit_fill_y", "exit_fill_x", "gross_pnl",
                   "fees", "slippage_cost", "pnl", "z_at_request", "z_at_close",
                   "close_reason", "requested_ms", "closed_ms", "fee_bps", "slippage_bps")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, kw_only=True)
class PaperOrder:
    """What a user asks for when opening a position; validated in the constructor.

    ``exit_z``, ``stop_z`` and ``max_holding_s`` are optional automatic closes (None = no).
    ``notify``: record an alert event when the position fills and when it closes (shown in
    the Alerts history and as a toast in every open page, logged).
    ``timeframe``, ``window``, ``z_window``, ``method`` and ``log_prices`` choose the hedge
    and z-score the position is opened and watched with (the page passes its own).
    """

    y: str
    x: str
    side: str
    notional: float
    timeframe: str = "1s"
    window: int = 60
    z_window: int | None = None
    method: str = "ols"
    log_prices: bool = True
    fee_bps: float = 5.0
    slippage_bps: float = 1.0
    exit_z: float | None = None
    stop_z: float | None = None
    max_holding_s: float | None = None
    notify: bool = False

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "y", alerts.one_symbol("y", self.y))
        put(self, "x", alerts.one_symbol("x", self.x))
        if self.y == self.x:
            raise ValueError(f"x ({self.x}) must differ from y")
        if self.side not in SIDES:
            raise ValueError(f"side ({self.side!r}) must be 'long' or 'short'")
        put(self, "notional", _number("notional", self.notional, low=0.0, high=1e12))
        try:
            put(self, "timeframe", analytics.normalize_timeframe(self.timeframe))
        except (TypeError, ValueError):
            raise ValueError(f"timeframe ({self.timeframe!r}) must be one of "
                             f"{', '.join(analytics.TIMEFRAME_MS)}") from None
        put(self, "window", _whole("window", self.window, 10, 20_000))
        z_window = self.window if self.z_window is None else self.z_window
        put(self, "z_window", _whole("z_window", z_window, 2, 20_000))
        if self.method not in analytics.PAIR_METHODS:
            raise ValueError(f"method ({self.method!r}) must be one of "
                             f"{', '.join(analytics.PAIR_METHODS)}")
        for name in ("log_prices", "notify"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} ({getattr(self, name)!r}) must be true or false")
        put(self, "fee_bps", _number("fee_bps", self.fee_bps, low=0.0, high=1_000.0,
                                     inclusive=True))
        put(self, "slippage_bps", _number("slippage_bps", self.slippage_bps, low=0.0,
                                          high=1_000.0, inclusive=True))
        for name in ("exit_z", "stop_z", "max_holding_s"):
            value = getattr(self, name)
            if value is not None:
                put(self, name, _number(name, value, low=0.0, high=1e9, inclusive=True))
        if self.exit_z is not None and self.stop_z is not None and self.stop_z <= self.exit_z:
            raise ValueError(f"stop_z ({self.stop_z:g}) must be above exit_z "
                             f"({self.exit_z:g})")


def _number(name: str, value, *, low: float, high: float, inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} ({value!r}) must be a number")
    number = float(value)
    above = number >= low if inclusive else number > low
    if not (math.isfinite(number) and above and number <= high):
        bound = ">=" if inclusive else ">"
        raise ValueError(f"{name} ({value!r}) must be {bound} {low:g} and at most {high:g}")
    return number


def _whole(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not float(value).is_integer() or not low <= value <= high:
        raise ValueError(f"{name} ({value!r}) must be a whole number in {low}..{high}")
    return int(value)


def order_from_fields(values: Mapping) -> PaperOrder:
    """A ``PaperOrder`` from a JSON object; an unknown field is a ValueError naming it."""
    allowed = {f.name for f in fields(PaperOrder)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    missing = [name for name in ("y", "x", "side", "notional") if name not in values]
    if missing:
        raise ValueError(f"{missing[0]}: missing")
    return PaperOrder(**values)


# --------------------------------------------------------------------------------------
# Signals: the pair's β and z with a position's settings
# --------------------------------------------------------------------------------------


def _lookback_ms(timeframe: str, window: int, z_window: int) -> int:
    # Twice the bars the first z needs, so gaps in a quiet leg still leave enough.
    return 2 * (window + z_window + 10) * analytics.TIMEFRAME_MS[timeframe]


def current_signal(db_path: str, y: str, x: str, *, timeframe: str, window: int,
                   z_window: int, method: str, log_prices: bool) -> dd.LiveValues:
    """The newest β and z of the pair (``dashboard_data.live_values`` of its view)."""
    view = dd.pair_view(db_path, y, x, timeframe=timeframe, window=window,
                        z_window=z_window, method=method, log_prices=log_prices,
                        lookback_ms=_lookback_ms(timeframe, window, z_window))
    return dd.live_values(view)


def _row_signal(db_path: str, row: Mapping, cache: dict) -> float:
    key = (row["y_symbol"], row["x_symbol"], row["timeframe"], int(row["window"]),
           int(row["z_window"]), row["method"], bool(row["log_prices"]))
    if key not in cache:
        try:
            cache[key] = current_signal(db_path, key[0], key[1], timeframe=key[2],
                                        window=key[3], z_window=key[4], method=key[5],
                                        log_prices=key[6]).z
        except ValueError as exc:  # e.g. too few bars: no z, no automatic close
            log.debug("no z for %s: %s", key, exc)
            cache[key] = math.nan
    return cache[key]


# --------------------------------------------------------------------------------------
# Orders
# --------------------------------------------------------------------------------------


def _fill_after(conn, y: str, x: str, click_ms: int) -> tuple[tuple, tuple]:
    """Per leg, the ``(ts, trade_id)`` an order's fill must come after.

    The newest stored trade; and when the feed runs on the wall clock (its newest trade
    is within ``CLOCK_TOLERANCE_MS`` of the click: Binance, the demo market) also the
    click itself, so a trade made before the click but written after it (the collector
    flushes every 0.25 s) never fills the order. A replay's trades carry recorded times:
    there only the stored order counts.
    """
    marks = []
    for name, symbol in (("y", y), ("x", x)):
        newest = database.newest_trade(conn, symbol)
        if newest is None:
            raise ValueError(f"{name}: no trades of {symbol} stored yet")
        ts, trade_id = int(newest[0]), int(newest[1])
        if abs(click_ms - ts) <= CLOCK_TOLERANCE_MS and click_ms - 1 > ts:
            ts, trade_id = click_ms - 1, 2**62  # any trade at ts >= click_ms comes after
        marks.append((ts, trade_id))
    return marks[0], marks[1]


def open_position(db_path: str, order: PaperOrder, *, at_ms: int | None = None) -> int:
    """Place the entry orders of ``order``; returns the position id (status ``opening``).

    β and z are the pair's newest (``current_signal``); ValueError when β does not exist
    yet (the hedge window is still filling), a leg has no stored trade, or an automatic
    close the order sets (exit_z, stop_z) is already due at the current z.
    """
    signal = current_signal(db_path, order.y, order.x, timeframe=order.timeframe,
                            window=order.window, z_window=order.z_window,
                            method=order.method, log_prices=order.log_prices)
    if not math.isfinite(signal.beta):
        raise ValueError(f"beta: the {order.window}-bar hedge of {order.y} on {order.x} "
                         f"({order.timeframe}) is not ready yet; wait for more bars")
    # An automatic close that is already due would close the position at once.
    due = auto_close_reason({"side": order.side, "exit_z": order.exit_z,
                             "stop_z": order.stop_z, "max_holding_s": None}, signal.z, 0)
    if due is not None:
        name = "stop_z" if due == "stop" else "exit_z"
        raise ValueError(f"{name}: z is {signal.z:.2f} now, so a {order.side} spread with "
                         f"{name} {getattr(order, name):g} would close at once; leave it "
                         "empty or open when z is further from 0")
    click = now_ms() if at_ms is None else int(at_ms)
    with dd.writing(db_path) as conn:
        newest_y, newest_x = _fill_after(conn, order.y, order.x, click)
        return database.insert_paper_position(
            conn, y_symbol=order.y, x_symbol=order.x, side=order.side,
            notional=order.notional, beta=signal.beta, timeframe=order.timeframe,
            window=order.window, z_window=order.z_window, method=order.method,
            log_prices=int(order.log_prices), fee_bps=order.fee_bps,
            slippage_bps=order.slippage_bps, exit_z=order.exit_z, stop_z=order.stop_z,
            max_holding_s=order.max_holding_s, notify=int(order.notify), status="opening",
            requested_ms=click,
            z_at_request=signal.z if math.isfinite(signal.z) else None,
            entry_after_ts_y=newest_y[0], entry_after_id_y=newest_y[1],
            entry_after_ts_x=newest_x[0], entry_after_id_x=newest_x[1])


def request_close(db_path: str, position_id: int, *, reason: str = "manual",
                  z_now: float | None = None, at_ms: int | None = None) -> str:
    """Place the closing orders (status ``closing``); returns the new status.

    ``z_now``: the pair's z at the request (computed when None).

    A position whose entry has not filled yet is cancelled instead. LookupError when the
    id does not exist, ValueError when it is already closing or closed.
    """
    at = now_ms() if at_ms is None else int(at_ms)
    with dd.writing(db_path) as conn:
        return _request_close(conn, db_path, position_id, reason=reason, z_now=z_now, at=at)


def _request_close(conn, db_path: str, position_id: int, *, reason: str,
                   z_now: float | None, at: int) -> str:
    """``request_close`` on an open writable connection (the monitor's own)."""
    rows = database.list_paper_positions(conn, position_id=position_id)
    if rows.empty:
        raise LookupError(f"{position_id} does not exist")
    row = rows.iloc[0]
    if row["status"] == "opening":
        database.update_paper_position(conn, position_id, expect_status="opening",
                                       status="cancelled", close_reason=reason,
                                       close_requested_ms=at, closed_ms=at)
        return "cancelled"
    if row["status"] != "open":
        raise ValueError(f"position {position_id} is already {row['status']}")
    newest_y, newest_x = _fill_after(conn, row["y_symbol"], row["x_symbol"], at)
    if z_now is None:
        z_now = _row_signal(db_path, row, {})
    changed = database.update_paper_position(
        conn, position_id, expect_status="open", status="closing", close_reason=reason,
        close_requested_ms=at, z_at_close=z_now if math.isfinite(z_now) else None,
        exit_after_ts_y=newest_y[0], exit_after_id_y=newest_y[1],
        exit_after_ts_x=newest_x[0], exit_after_id_x=newest_x[1])
    if not changed:
        raise ValueError(f"position {position_id} is already being closed")
    return "closing"


# --------------------------------------------------------------------------------------
# Fills and P&L
# --------------------------------------------------------------------------------------


def _units(row: Mapping) -> tuple[float, float]:
    """Unsigned ``units_y`` and β-signed ``units_x`` back from the stored signed qty."""
    direction = 1.0 if row["side"] == "long" else -1.0
    return direction * float(row["qty_y"]), -direction * float(row["qty_x"])


def mark(row: Mapping, last_y: float, last_x: float) -> dict:
    """Unrealised P&L of an open position if both legs closed at ``last_y``/``last_x``.

    Returns ``upnl_y, upnl_x`` (each leg's ``q · (exit fill - entry fill)``, slippage of
    both fills inside), ``upnl`` (their sum minus the four fees: ``position_pnl.net``) and
    ``fees_so_far`` (the entry fee).
    """
    units_y, units_x = _units(row)
    pnl = backtest.position_pnl(row["side"], units_y, units_x, float(row["entry_ref_y"]),
                                float(row["entry_ref_x"]), last_y, last_x,
                                float(row["fee_bps"]), float(row["slippage_bps"]))
    return {"upnl_y": pnl.gross_y, "upnl_x": pnl.gross_x, "upnl": pnl.net,
            "fees_so_far": pnl.entry_fee}


def _next_trades(conn, row: Mapping, prefix: str) -> tuple[tuple, tuple] | None:
    found = []
    for leg in ("y", "x"):
        trade = database.first_trade_after(conn, row[f"{leg}_symbol"],
                                           int(row[f"{prefix}_after_ts_{leg}"]),
                                           int(row[f"{prefix}_after_id_{leg}"]))
        if trade is None:
            return None
        found.append(trade)
    return found[0], found[1]


def _fill_entry(conn, row: Mapping, at_ms: int) -> bool:
    trades = _next_trades(conn, row, "entry")
    if trades is None:
        return False
    (ts_y, _, ref_y), (ts_x, _, ref_x) = trades
    units_y, units_x = backtest.leg_units(float(row["notional"]), float(row["beta"]), ref_y,
                                          ref_x, bool(row["log_prices"]))
    # Entry fills and fee do not depend on the exit prices: price them as an exit at entry.
    pnl = backtest.position_pnl(row["side"], units_y, units_x, ref_y, ref_x, ref_y, ref_x,
                                float(row["fee_bps"]), float(row["slippage_bps"]))
    filled = database.update_paper_position(
        conn, int(row["id"]), expect_status="opening", status="open", entry_ts_y=ts_y,
        entry_ts_x=ts_x, entry_ref_y=ref_y, entry_ref_x=ref_x, qty_y=pnl.qty_y, qty_x=pnl.qty_x,
        entry_fill_y=pnl.entry_fill_y, entry_fill_x=pnl.entry_fill_x,
        entry_fee=pnl.entry_fee)
    if filled and _optional(row.get("notify")):
        _notify(conn, row, at_ms, "opened", pnl.entry_fee,
                f"{row['side']} {row['y_symbol']}/{row['x_symbol']} filled: "
                f"{row['y_symbol']} {pnl.entry_fill_y:.10g}, {row['x_symbol']} "
                f"{pnl.entry_fill_x:.10g}, fee {pnl.entry_fee:.2f}")
    return filled


def _notify(conn, row: Mapping, at_ms: int, what: str, value: float, text: str) -> None:
    """An alert event for a position's fill or close (rule id 0: no rule fired it)."""
    message = f"paper position {int(row['id'])}: {text}"
    database.insert_alert_event(
        conn, rule_id=0, ts=at_ms, value=value, threshold=0.0, message=message,
        rule_name=f"paper position {int(row['id'])}", metric="paper",
        subject=f"{row['y_symbol']}/{row['x_symbol']}", comparison=what)
    log.warning("%s", message)


def _fill_exit(conn, row: Mapping, at_ms: int) -> bool:
    trades = _next_trades(conn, row, "exit")
    if trades is None:
        return False
    (ts_y, _, ref_y), (ts_x, _, ref_x) = trades
    units_y, units_x = _units(row)
    pnl = backtest.position_pnl(row["side"], units_y, units_x, float(row["entry_ref_y"]),
                                float(row["entry_ref_x"]), ref_y, ref_x,
                                float(row["fee_bps"]), float(row["slippage_bps"]))
    closed = database.update_paper_position(
        conn, int(row["id"]), expect_status="closing", status="closed", exit_ts_y=ts_y,
        exit_ts_x=ts_x, exit_ref_y=ref_y, exit_ref_x=ref_x, exit_fill_y=pnl.exit_fill_y,
        exit_fill_x=pnl.exit_fill_x, exit_fee=pnl.exit_fee, gross_pnl=pnl.gross,
        fees=pnl.fees, slippage_cost=pnl.slippage, pnl=pnl.net, closed_ms=at_ms)
    if closed and _optional(row.get("notify")):
        _notify(conn, row, at_ms, "closed", pnl.net,
                f"{row['side']} {row['y_symbol']}/{row['x_symbol']} closed "
                f"({row['close_reason']}): P&L {pnl.net:,.2f} after fees {pnl.fees:,.2f}")
    return closed


def auto_close_reason(row: Mapping, z_now: float, held_ms: int) -> str | None:
    """``"stop"``, ``"exit"`` or ``"max_holding"`` when an automatic close is due, else None.

    The backtest's rules: a long spread (bought when z was low) exits once z >= -exit_z
    and stops once z <= -stop_z; a short one mirrors them. The stop is checked first.
    """
    direction = 1.0 if row["side"] == "long" else -1.0
    stop_z, exit_z, max_s = (_optional(row["stop_z"]), _optional(row["exit_z"]),
                             _optional(row["max_holding_s"]))
    if math.isfinite(z_now):
        if stop_z is not None and direction * z_now <= -stop_z:
            return "stop"
        if exit_z is not None and direction * z_now >= -exit_z:
            return "exit"
    if max_s is not None and held_ms >= max_s * 1000:
        return "max_holding"
    return None


def _optional(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) \
        else float(value)


def process(db_path: str, *, at_ms: int | None = None) -> dict:
    """One monitor step: fill pending orders, close positions whose automatic close is due.

    Returns counts ``{"entries": n, "exits": n, "auto_closed": n}``.
    """
    at = now_ms() if at_ms is None else int(at_ms)
    with dd.writing(db_path) as conn:
        return _process(conn, db_path, at)


def _process(conn, db_path: str, at: int) -> dict:
    """``process`` on an open writable connection (the monitor keeps one)."""
    counts = {"entries": 0, "exits": 0, "auto_closed": 0}
    if not database.has_paper_positions(conn, OPEN_STATUSES):
        return counts  # the monitor's usual step: no frames built twice a second for nothing
    pending = database.list_paper_positions(conn, statuses=OPEN_STATUSES)
    for row in pending.to_dict("records"):
        if row["status"] == "opening" and _fill_entry(conn, row, at):
            counts["entries"] += 1
        elif row["status"] == "closing" and _fill_exit(conn, row, at):
            counts["exits"] += 1
    opened = database.list_paper_positions(conn, statuses=("open",))
    signals: dict = {}
    for row in opened.to_dict("records"):
        if all(_optional(row[k]) is None for k in ("exit_z", "stop_z", "max_holding_s")):
            continue
        z_now = _row_signal(db_path, row, signals)
        reason = auto_close_reason(row, z_now, at - int(row["requested_ms"]))
        if reason is not None:
            try:
                _request_close(conn, db_path, int(row["id"]), reason=reason, z_now=z_now,
                               at=at)
                counts["auto_closed"] += 1
            except ValueError:  # closed meanwhile by a click: nothing to do
                pass
    if counts["auto_closed"]:  # a trade after the close request may already be stored
        for row in database.list_paper_positions(conn, statuses=("closing",)
                                                 ).to_dict("records"):
            counts["exits"] += int(_fill_exit(conn, row, at))
    return counts


# --------------------------------------------------------------------------------------
# Tables for the page and the API
# --------------------------------------------------------------------------------------


def positions_table(db_path: str, *, status: str = "all", limit: int = 200,
                    at_ms: int | None = None, with_z: bool = True) -> pd.DataFrame:
    """Positions, newest first, with live values for the open ones.

    ``status``: "open" (opening/open/closing, with ``OPEN_COLUMNS``: last prices, per-leg
    and total unrealised P&L, z now, holding time), "closed" (``HISTORY_COLUMNS``) or
    "all" (every stored column plus the live ones).
    """
    statuses = {"open": OPEN_STATUSES, "closed": CLOSED_STATUSES, "all": None}[status]
    at = now_ms() if at_ms is None else int(at_ms)
    with dd.reading(db_path) as conn:
        table = database.list_paper_positions(conn, statuses=statuses, limit=limit)
        last = {s: database.newest_trade(conn, s)
                for s in set(table["y_symbol"]) | set(table["x_symbol"])}
    live_columns = ("last_y", "last_x", "upnl_y", "upnl_x", "upnl", "fees_so_far", "z_now",
                    "holding_s")
    live = {name: [] for name in live_columns}
    signals: dict = {}
    for row in table.to_dict("records"):
        values = dict.fromkeys(live_columns, math.nan)
        if row["status"] in OPEN_STATUSES:
            values["holding_s"] = (at - int(row["requested_ms"])) / 1000
            trade_y, trade_x = last.get(row["y_symbol"]), last.get(row["x_symbol"])
            if trade_y and trade_x:
                values["last_y"], values["last_x"] = float(trade_y[2]), float(trade_x[2])
                if row["status"] != "opening":
                    values.update(mark(row, values["last_y"], values["last_x"]))
            if with_z:
                values["z_now"] = _row_signal(db_path, row, signals)
        for name in live_columns:
            live[name].append(values[name])
    table = table.assign(**live)
    if status == "open":
        return table[list(OPEN_COLUMNS)]
    if status == "closed":
        return table[list(HISTORY_COLUMNS)]
    return table


# --------------------------------------------------------------------------------------
# The monitor thread (one per process, started with the collector)
# --------------------------------------------------------------------------------------


class Monitor:
    """Calls ``process`` every ``interval`` seconds on the collector's database.

    It keeps one writable connection (opened once the collector has created the file,
    reopened when the path changes or after an error): opening a writable connection
    takes the write lock to check the schema, which twice a second would stall the
    collector's writes. An idle step is then two index reads and no lock.
    """

    def __init__(self, db_path_provider: Callable[[], str | None] | str, *,
                 interval: float = MONITOR_INTERVAL_S) -> None:
        self._provider = (db_path_provider if callable(db_path_provider)
                          else (lambda: db_path_provider))
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = None
        self._conn_path: str | None = None
        self.steps = 0
        self.entries = 0
        self.exits = 0
        self.auto_closed = 0
        self.last_error = ""

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="paper-monitor", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._close()  # steps ran on the caller's thread (tests): close there

    def step(self) -> None:
        """One ``process`` on the monitor's connection; tests call it on a monitor that was
        not started (never both: the connection belongs to one thread)."""
        path = self._provider()
        if self._conn is None or path != self._conn_path:
            self._close()
            if not path or not dd.database_ready(path):
                return
            self._conn, self._conn_path = database.connect(path), path
        counts = _process(self._conn, path, now_ms())
        self.steps += 1
        self.entries += counts["entries"]
        self.exits += counts["exits"]
        self.auto_closed += counts["auto_closed"]

    def _close(self) -> None:
        conn, self._conn, self._conn_path = self._conn, None, None
        if conn is not None:
            conn.close()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.step()
                    self.last_error = ""
                except Exception as exc:  # keep monitoring; the error is shown in Health/API
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("paper monitor step failed")
                    self._close()  # the next step opens a fresh connection
        finally:
            self._close()

    def status(self) -> dict:
        return {"running": self.running, "steps": self.steps, "entries": self.entries,
                "exits": self.exits, "auto_closed": self.auto_closed,
                "last_error": self.last_error}


_PROCESS = sys.__dict__.setdefault("_pairs_dashboard_paper", {"lock": threading.Lock(),
                                                              "monitor": None})


def start_monitor(db_path_provider: Callable[[], str | None] | str, *,
                  interval: float = MONITOR_INTERVAL_S) -> Monitor:
    """Start this process's monitor, or return the one already running."""
    with _PROCESS["lock"]:
        current = _PROCESS["monitor"]
        if current is not None and current.running:
            return current
        monitor = Monitor(db_path_provider, interval=interval)
        _PROCESS["monitor"] = monitor
        return monitor.start()


def stop_monitor(timeout: float = 5.0) -> None:
    with _PROCESS["lock"]:
        current = _PROCESS["monitor"]
        _PROCESS["monitor"] = None
    if current is not None:
        current.stop(timeout)


def monitor_status() -> dict:
    current = _PROCESS["monitor"]
    return current.status() if current is not None else {"running": False}
