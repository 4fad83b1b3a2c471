"""Alert rules: validated, stored in SQLite, evaluated by a background thread, delivered.

A trader sets "z-score of BTCUSDT/ETHUSDT above 2" and walks away. Rules therefore live in the
database (``database.py``, section "Alert rules and events"), and one evaluator thread per
process - started next to the collector, needing no browser - checks every enabled rule on each
new bar, stores each firing as an event, logs it and hands it to a webhook sender.

Parts, each usable on its own:

* **Rules** - ``METRICS``, ``COMPARISONS``, ``AlertRule`` (validated in its constructor),
  ``validate_rule``, ``create_rule``, ``edit_rule``, ``list_rules``, ``default_rules``,
  ``ensure_default_rules``.
* **Trigger logic** - ``RuleState`` and the pure ``evaluate(rule, value, state, now_ms)``:
  comparison, cooldown and hysteresis, nothing else.
* **Metrics** - ``compute_metric(conn, rule, now_ms)`` reads only the bars a rule needs and
  calls ``analytics`` (``pair_signals``, ``align``, ``rolling_correlation``).
* **Evaluator** - ``start_evaluator(db_path_provider)`` / ``stop_evaluator()`` /
  ``evaluator_status()``; the ``Evaluator`` thread ticks once per ``interval`` seconds.
* **Webhooks** - ``WebhookSender``: one worker thread per destination URL with a bounded
  queue, so a slow chat endpoint delays only its own messages and never the evaluator.

Which bar is evaluated. Bar metrics use the LAST COMPLETE bar: the newest bar whose interval
ended at least ``BAR_SETTLE_MS`` (0.5 s) ago, so late trades of that second have been written
by the collector (it flushes every 0.25 s). A half-built bar would make a rule flicker. Each
rule is evaluated once per new complete bar of its timeframe; ``last_trade_age`` is evaluated
on every tick.

Dependency direction: imports ``analytics``, ``database`` and ``config`` only (never
``collector`` or ``streamlit``); the page passes the collector's database path in as a
callable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import queue
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.client import HTTPException

import numpy as np

import analytics
import database
from config import ConfigError, parse_symbols

log = logging.getLogger("alerts")


def now_ms() -> int:
    """Wall clock, epoch ms."""
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures, in plain words, and what it is measured on.

    Attributes
    ----------
    label : str
        Short name for lists ("z-score").
    subject : {"pair", "symbol"}
        A pair metric needs ``y_symbol`` and ``x_symbol``; a symbol metric needs ``symbol``.
    unit : str
        Unit of the value compared with the threshold.
    description : str
        One or two sentences for the page and the README.
    """

    label: str
    subject: str
    unit: str
    description: str


METRICS: dict[str, MetricInfo] = {
    "zscore": MetricInfo(
        "z-score", "pair", "std devs",
        "z-score of the pair's spread at the last complete bar: (spread - mean) / std over "
        "the last z_window spreads, the spread using a hedge ratio fitted on the `window` "
        "bars before (analytics.pair_signals, the page's function; windows in bars of clock "
        "time; no look-ahead). Needs window + z_window bars."),
    "spread": MetricInfo(
        "spread", "pair", "log price (price when log_prices is off)",
        "The pair's spread y - beta*x - alpha at the last complete bar, beta and alpha "
        "fitted on the `window` bars before it. Needs window + 1 bars."),
    "price": MetricInfo(
        "price", "symbol", "quote currency",
        "Last traded price up to the end of the last complete bar (that bar's close)."),
    "price_change_pct": MetricInfo(
        "price change %", "symbol", "%",
        "Price change over the last `window` bars: 100 * (price now / price at the start of "
        "the window - 1), the start price being the last trade before the window."),
    "correlation": MetricInfo(
        "correlation", "pair", "-1..1",
        "Rolling correlation of the two legs' log returns over the last `window` bars in "
        "which both legs traded (analytics.rolling_correlation). Needs window + 1 such bars."),
    "volume_spike": MetricInfo(
        "volume spike", "symbol", "x average",
        "Volume of the last complete bar divided by the average volume per bar over the "
        "`window` bars before it (bars without trades count as 0). 3 = three times usual."),
    "trades_spike": MetricInfo(
        "trades/s spike", "symbol", "x average",
        "Trades per second in the last complete bar divided by the average over the "
        "`window` bars before it (bars without trades count as 0)."),
    "beta_change": MetricInfo(
        "beta change %", "pair", "%",
        "Change of the trailing hedge ratio over the last `window` bars: 100 * (beta now - "
        "beta `window` bars ago) / |beta `window` bars ago|. Needs 2 * window + 1 bars."),
    "last_trade_age": MetricInfo(
        "last trade age", "symbol", "s",
        "Seconds since the newest stored trade of the symbol (its exchange time against "
        "this machine's clock, never negative): a stale-feed alarm. Checked every tick."),
}

COMPARISONS = (">", "<", "crosses_above", "crosses_below", "abs>")
COMPARISON_WORDS = {">": "above", "<": "below", "crosses_above": "crossed above",
                    "crosses_below": "crossed below", "abs>": "beyond ±"}

MIN_PAIR_WINDOW = 10  # analytics.pair_signals needs a hedge window of at least 10 bars
# Bars. Measured per rule on the 2-core dev machine, 1 s bars: OLS/TLS 60/60 4-5 ms and
# 1000/1000 15-27 ms; Huber 16-26 ms; Theil-Sen 18 ms at 120, 38 ms at 250, 360 ms at 1000.
MAX_WINDOW = 5_000
MAX_THEIL_SEN_WINDOW = 250
# Every method: the Kalman filter restarts at absolute bar numbers (analytics.pair_signals),
# so a read from its anchor (analytics.kalman_history_start) reproduces the page's number.
ALERT_METHODS = ("ols", "tls", "huber", "theil-sen", "kalman")
HEDGE_METRICS = ("zscore", "spread", "beta_change")  # the metrics that use `method`
MAX_NAME_LENGTH = 120
DEFAULT_COOLDOWN_S = 60.0
BAR_SETTLE_MS = 500
# A pair whose newest bar is older than this many bars has no live value (align()'s fill limit).
STALE_BARS = analytics.DEFAULT_FFILL_LIMIT

RULE_FIELDS = ("id",) + database.ALERT_RULE_FIELDS


def _as_number(name: str, value) -> float:
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{name} ({value!r}) must be a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({value!r}) must be a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} ({value!r}) must be a finite number")
    return number


def _as_int(name: str, value, minimum: int, maximum: int) -> int:
    number = _as_number(name, value)
    if not number.is_integer():
        raise ValueError(f"{name} ({value!r}) must be a whole number of bars")
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} ({value!r}) must be between {minimum} and {maximum}")
    return int(number)


def _as_bool(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer))
                                               and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{name} ({value!r}) must be True or False")


def one_symbol(name: str, value) -> str:
    """One symbol, upper case (``config.parse_symbols``' rules); ValueError naming ``name``
    (also used by ``paper.PaperOrder``)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{name} ({value!r}) is missing: give a symbol such as BTCUSDT")
    if not isinstance(value, str):
        raise ValueError(f"{name} ({value!r}) must be a symbol such as BTCUSDT")
    try:
        symbols = parse_symbols(value)
    except ConfigError as exc:
        raise ValueError(f"{name} ({value!r}) is not valid: {exc}") from None
    if len(symbols) != 1:
        raise ValueError(f"{name} ({value!r}) must be one symbol, got {len(symbols)}")
    return symbols[0].upper()


def _webhook(value) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"webhook_url ({value!r}) must be an http:// or https:// URL")
    url = value.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise ValueError(f"webhook_url ({value!r}) must be an http:// or https:// URL "
                         "with a host, e.g. https://hooks.example.com/T000/B000")
    if len(url) > 2_000:
        raise ValueError(f"webhook_url ({url[:40]!r}...) is longer than 2000 characters")
    return url


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    """One alert rule, validated and normalised in the constructor.

    Build it with ``validate_rule(**fields)`` (or directly); a bad value raises
    ``ValueError`` naming the field and the value. ``dataclasses.replace`` validates again.

    Attributes
    ----------
    metric : str
        A key of ``METRICS``.
    comparison : {">", "<", "crosses_above", "crosses_below", "abs>"}
        See ``evaluate``.
    threshold : float
        Finite. ``abs>`` needs a threshold > 0; ``correlation`` one in [-1, 1].
    symbol : str or None
        For symbol metrics; stored upper-case.
    y_symbol, x_symbol : str or None
        For pair metrics: the dependent and independent leg (different symbols).
    timeframe : str, default "1s"
        Bar size ("1m"/"5m" are accepted and stored as "1min"/"5min").
    window : int, default 60
        Bars: the hedge window (pair metrics, >= 10), the correlation window, the
        price-change span, the spike baseline (>= 1). At most ``MAX_WINDOW``.
    z_window : int or None, default None
        Bars in the z-score window (zscore only matters); None means ``window``.
    method : {"ols", "tls", "huber", "theil-sen", "kalman"}, default "ols"
        Hedge method of ``HEDGE_METRICS`` (zscore, spread, beta_change), as on the page;
        Theil-Sen windows at most ``MAX_THEIL_SEN_WINDOW`` (250) bars. Other metrics ignore it (any
        ``analytics.PAIR_METHODS`` value is accepted and stored).
    log_prices : bool, default True
        Pair model in log prices.
    cooldown_s : float, default 60
        Minimum seconds between two firings (>= 0).
    hysteresis : float, default 0
        After a firing the rule re-arms only once the value is back past
        ``threshold -/+ hysteresis`` (>= 0; for ``abs>`` smaller than the threshold).
    enabled : bool, default True
    webhook_url : str or None
        http:// or https:// URL that receives a JSON POST per firing.
    name : str or None
        Shown in lists and messages; None builds one ("z-score BTCUSDT/ETHUSDT abs> 2").
    id : int or None
        The stored id; None before saving.
    """

    metric: str
    comparison: str
    threshold: float
    symbol: str | None = None
    y_symbol: str | None = None
    x_symbol: str | None = None
    timeframe: str = "1s"
    window: int = 60
    z_window: int | None = None
    method: str = "ols"
    log_prices: bool = True
    cooldown_s: float = DEFAULT_COOLDOWN_S
    hysteresis: float = 0.0
    enabled: bool = True
    webhook_url: str | None = None
    name: str | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.metric, str) or self.metric not in METRICS:
            raise ValueError(f"metric ({self.metric!r}) is not known: use one of "
                             f"{', '.join(METRICS)}")
        info = METRICS[self.metric]
        if info.subject == "pair":
            if self.symbol not in (None, ""):
                raise ValueError(f"metric {self.metric!r} needs a pair: give y_symbol and "
                                 f"x_symbol, not symbol ({self.symbol!r})")
            y_symbol = one_symbol("y_symbol", self.y_symbol)
            x_symbol = one_symbol("x_symbol", self.x_symbol)
            if y_symbol == x_symbol:
                raise ValueError(f"y_symbol and x_symbol ({y_symbol!r}) must differ: a pair "
                                 "needs two symbols")
            put(self, "symbol", None)
            put(self, "y_symbol", y_symbol)
            put(self, "x_symbol", x_symbol)
        else:
            if self.y_symbol not in (None, "") or self.x_symbol not in (None, ""):
                raise ValueError(f"metric {self.metric!r} takes one symbol: give symbol, not a "
                                 f"pair ({self.y_symbol!r}/{self.x_symbol!r})")
            put(self, "symbol", one_symbol("symbol", self.symbol))
            put(self, "y_symbol", None)
            put(self, "x_symbol", None)
        try:
            put(self, "timeframe", analytics.normalize_timeframe(self.timeframe))
        except (ValueError, TypeError):
            raise ValueError(f"timeframe ({self.timeframe!r}) must be one of "
                             f"{', '.join(analytics.TIMEFRAME_MS)}") from None
        minimum = MIN_PAIR_WINDOW if info.subject == "pair" else 1
        put(self, "window", _as_int("window", self.window, minimum, MAX_WINDOW))
        z_window = self.window if self.z_window is None else self.z_window
        put(self, "z_window", _as_int("z_window", z_window, 2, MAX_WINDOW))
        if self.method not in analytics.PAIR_METHODS:
            raise ValueError(f"method ({self.method!r}) must be one of "
                             f"{', '.join(ALERT_METHODS)}")
        uses_hedge = self.metric in HEDGE_METRICS
        if (uses_hedge and self.method == "theil-sen"
                and max(self.window, self.z_window) > MAX_THEIL_SEN_WINDOW):
            raise ValueError(f"window ({self.window}) and z_window ({self.z_window}) must be at "
                             f"most {MAX_THEIL_SEN_WINDOW} with method 'theil-sen' (its cost "
                             "grows with the square of the window); use ols, tls or huber")
        put(self, "log_prices", _as_bool("log_prices", self.log_prices))
        if self.comparison not in COMPARISONS:
            raise ValueError(f"comparison ({self.comparison!r}) must be one of "
                             f"{', '.join(COMPARISONS)}")
        put(self, "threshold", _as_number("threshold", self.threshold))
        put(self, "cooldown_s", _as_number("cooldown_s", self.cooldown_s))
        put(self, "hysteresis", _as_number("hysteresis", self.hysteresis))
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s ({self.cooldown_s!r}) must be >= 0 seconds")
        if self.hysteresis < 0:
            raise ValueError(f"hysteresis ({self.hysteresis!r}) must be >= 0")
        if self.comparison == "abs>":
            if self.threshold <= 0:
                raise ValueError(f"threshold ({self.threshold!r}) must be > 0 for 'abs>' "
                                 "(|value| > threshold)")
            if self.hysteresis >= self.threshold:
                raise ValueError(f"hysteresis ({self.hysteresis!r}) must be smaller than the "
                                 f"threshold ({self.threshold!r}) for 'abs>', or the rule "
                                 "could never re-arm")
        if self.metric == "correlation" and not -1 <= self.threshold <= 1:
            raise ValueError(f"threshold ({self.threshold!r}) must be between -1 and 1 for "
                             "metric 'correlation'")
        put(self, "enabled", _as_bool("enabled", self.enabled))
        put(self, "webhook_url", _webhook(self.webhook_url))
        name = self.name.strip() if isinstance(self.name, str) else self.name
        if name is None or name == "":
            name = f"{info.label} {self.subject} {self.comparison} {self.threshold:g}"
        if not isinstance(name, str):
            raise ValueError(f"name ({self.name!r}) must be text")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"name ({name[:30]!r}...) must be at most {MAX_NAME_LENGTH} "
                             "characters")
        put(self, "name", name)
        if self.id is not None:
            put(self, "id", _as_int("id", self.id, 1, 2**63 - 1))

    @property
    def needs_pair(self) -> bool:
        return METRICS[self.metric].subject == "pair"

    @property
    def subject(self) -> str:
        """``"BTCUSDT"`` or ``"BTCUSDT/ETHUSDT"`` (y/x)."""
        return f"{self.y_symbol}/{self.x_symbol}" if self.needs_pair else self.symbol

    @property
    def settings_text(self) -> str:
        """The settings that matter for the metric: ``1s, ols 60/60, log`` (may be empty)."""
        if self.metric in ("zscore", "spread", "beta_change"):
            scale = "log" if self.log_prices else "raw"
            windows = (f"{self.window}/{self.z_window}" if self.metric == "zscore"
                       else f"{self.window}")
            return f"{self.timeframe}, {self.method} {windows}, {scale}"
        if self.metric == "last_trade_age":
            return ""
        if self.metric == "price":
            return f"{self.timeframe} bars"
        return f"{self.timeframe}, {self.window} bars"

    def describe(self) -> str:
        """The rule in words: ``z-score of BTCUSDT/ETHUSDT (1s, ols 60/60, log) abs> 2``."""
        settings = f" ({self.settings_text})" if self.settings_text else ""
        return (f"{METRICS[self.metric].label} of {self.subject}{settings} {self.comparison} "
                f"{self.threshold:g}")


def validate_rule(**fields) -> AlertRule:
    """Build a validated ``AlertRule`` from keyword fields (form input, a stored row).

    Parameters
    ----------
    **fields
        The ``AlertRule`` fields; numbers may come as strings ("2.5"), booleans as 0/1,
        symbols in any case. Columns a stored row adds (``created_ms``, status columns) are
        not accepted here: use ``rule_from_row`` for rows.

    Returns
    -------
    AlertRule

    Raises
    ------
    ValueError
        Naming the field and value: an unknown field or metric, a non-numeric threshold, a
        malformed symbol, a pair with y == x, a pair metric given one symbol (or the
        reverse), a negative cooldown or hysteresis, a webhook that is not http(s), ...
    """
    allowed = {f.name for f in dataclasses.fields(AlertRule)}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"unknown rule fields {unknown}; allowed: {', '.join(sorted(allowed))}")
    for required in ("metric", "comparison", "threshold"):
        if required not in fields:
            raise ValueError(f"{required} is missing")
    return AlertRule(**fields)


def rule_from_row(row: Mapping) -> AlertRule:
    """An ``AlertRule`` from a ``database.list_alert_rules`` row (extra columns ignored)."""
    values = {name: row[name] for name in RULE_FIELDS}
    for name in ("symbol", "y_symbol", "x_symbol", "webhook_url"):
        if isinstance(values[name], float) and math.isnan(values[name]):
            values[name] = None
    return AlertRule(**values)


def create_rule(conn, **fields) -> int:
    """Validate ``fields`` (see ``validate_rule``), store the rule, return its id."""
    if fields.get("id") is not None:
        raise ValueError(f"id ({fields['id']!r}) must not be given for a new rule")
    return database.save_alert_rule(conn, validate_rule(**fields))


def duplicate_rule_id(conn, **fields) -> int | None:
    """Id of a stored rule that measures and triggers exactly like ``fields`` would
    (every field but ``name``, ``enabled`` and ``id`` equal after validation), else None.

    Two such rules fire together and post the same webhook twice: the page refuses to
    create the second. Raises ValueError like ``validate_rule`` for invalid fields.
    """
    def identity(rule: AlertRule) -> AlertRule:
        return dataclasses.replace(rule, name=None, enabled=True, id=None)

    wanted = identity(validate_rule(**fields))
    for rule in list_rules(conn):
        if identity(rule) == wanted:
            return rule.id
    return None


def get_rule(conn, rule_id: int) -> AlertRule:
    """The stored rule ``rule_id``; ValueError when there is none."""
    rules = database.list_alert_rules(conn)
    match = rules[rules["id"] == int(rule_id)]
    if match.empty:
        raise ValueError(f"rule_id ({rule_id!r}) does not exist")
    return rule_from_row(match.iloc[0])


def edit_rule(conn, rule_id: int, **fields) -> AlertRule:
    """Validate the stored rule with ``fields`` changed, store the change, return the rule.

    Notes
    -----
    A change of what is measured or of the trigger (metric, subject, settings, comparison,
    threshold, hysteresis, enabled) re-arms the rule (``database.update_alert_rule``).
    """
    unknown = sorted(set(fields) - set(database.ALERT_RULE_FIELDS))
    if unknown:
        raise ValueError(f"unknown rule fields {unknown} (id cannot be edited); allowed: "
                         f"{', '.join(database.ALERT_RULE_FIELDS)}")
    current = get_rule(conn, rule_id)
    edited = dataclasses.replace(current, **fields)
    if "name" not in fields and current.name == dataclasses.replace(current, name=None).name:
        # The name was generated: follow the edit.
        edited = dataclasses.replace(edited, name=None)
    changes = {name: getattr(edited, name) for name in database.ALERT_RULE_FIELDS}
    database.update_alert_rule(conn, rule_id, **changes)
    return edited


def list_rules(conn, *, enabled_only: bool = False) -> list[AlertRule]:
    """Stored rules as ``AlertRule`` objects (use ``database.list_alert_rules`` for status)."""
    frame = database.list_alert_rules(conn, enabled_only=enabled_only)
    return [rule_from_row(row) for row in frame.to_dict("records")]


def default_rules(y: str, x: str, *, timeframe: str = "1s", window: int = 60,
                  z_window: int | None = None, method: str = "ols",
                  log_prices: bool = True) -> list[AlertRule]:
    """Ready-made rules for a pair: |z| > 2 and |z| > 3, disabled until the user enables them.

    Parameters
    ----------
    y, x : str
        Dependent and independent leg.
    timeframe, window, z_window, method, log_prices
        The pair's settings, as on the page.

    Returns
    -------
    list of AlertRule
        ``zscore abs> 2`` and ``zscore abs> 3``, hysteresis 0.5 (re-arm once |z| < 1.5 /
        2.5), cooldown 60 s, ``enabled=False``, not stored (see ``ensure_default_rules``).

    Notes
    -----
    A method alerts cannot use with these windows ("theil-sen" beyond
    ``MAX_THEIL_SEN_WINDOW``) is replaced by "ols", so a page can pass its settings as they
    are; the rules' settings and messages show the method used.
    """
    windows = [w for w in (window, z_window) if isinstance(w, int)]
    if method == "theil-sen" and max(windows, default=0) > MAX_THEIL_SEN_WINDOW:
        method = "ols"
    common = dict(metric="zscore", comparison="abs>", y_symbol=y, x_symbol=x,
                  timeframe=timeframe, window=window, z_window=z_window, method=method,
                  log_prices=log_prices, cooldown_s=DEFAULT_COOLDOWN_S, hysteresis=0.5,
                  enabled=False)
    return [validate_rule(threshold=2.0, **common), validate_rule(threshold=3.0, **common)]


def ensure_default_rules(conn, y: str, x: str, **settings) -> list[int]:
    """Store ``default_rules(y, x, **settings)`` once per pair; returns the new ids.

    Notes
    -----
    A marker ``alert_defaults:Y/X`` in ``meta`` records that the pair got its defaults, in the
    same transaction as the rules: calling this on every page rerun adds nothing more, and a
    user who deletes the ready-made rules does not get them back. Other settings of the same
    pair do not add another set.
    """
    rules = default_rules(y, x, **settings)
    key = f"alert_defaults:{rules[0].subject}"
    return database.save_alert_rules_once(conn, key, rules)


# --------------------------------------------------------------------------------------
# Trigger logic (pure)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleState:
    """Trigger state of one rule between evaluations (stored in ``alert_status``).

    Attributes
    ----------
    armed : bool, default True
        False after a firing until the value has come back past the re-arm level.
    last_fired_ms : int or None
        Time of the last firing (epoch ms), for the cooldown.
    previous_value : float or None
        The last finite value evaluated, for ``crosses_*``.
    """

    armed: bool = True
    last_fired_ms: int | None = None
    previous_value: float | None = None


def _rearm_level(rule: AlertRule) -> tuple[str, float]:
    """(how, level): the value must be ``how`` ("below", "above", "|value| below") level."""
    if rule.comparison in (">", "crosses_above"):
        return "below", rule.threshold - rule.hysteresis
    if rule.comparison in ("<", "crosses_below"):
        return "above", rule.threshold + rule.hysteresis
    return "|value| below", rule.threshold - rule.hysteresis


def _rearms(rule: AlertRule, value: float) -> bool:
    how, level = _rearm_level(rule)
    if how == "below":
        return value < level
    if how == "above":
        return value > level
    return abs(value) < level


def _condition(rule: AlertRule, value: float, previous: float | None) -> bool:
    threshold = rule.threshold
    if rule.comparison == ">":
        return value > threshold
    if rule.comparison == "<":
        return value < threshold
    if rule.comparison == "abs>":
        return abs(value) > threshold
    if previous is None:
        return False
    if rule.comparison == "crosses_above":
        return previous < threshold <= value
    return previous > threshold >= value  # crosses_below


def evaluate(rule: AlertRule, value: float, state: RuleState,
             now_ms: int) -> tuple[bool, RuleState]:
    """Decide whether ``rule`` fires for ``value`` at ``now_ms``; pure, no I/O.

    Parameters
    ----------
    rule : AlertRule
    value : float
        The metric value; NaN means "no value" (waiting for data).
    state : RuleState
        The state returned by the previous call (``RuleState()`` for a new rule).
    now_ms : int
        Evaluation time, epoch ms (cooldowns are measured on it).

    Returns
    -------
    (fired, new_state) : (bool, RuleState)

    Notes
    -----
    With ``t`` = threshold, ``h`` = hysteresis, ``cooldown_ok`` = no earlier firing or
    ``now_ms - last_fired_ms >= 1000 * cooldown_s``:

    * Condition: ``>``: value > t. ``<``: value < t. ``abs>``: |value| > t.
      ``crosses_above``: previous < t <= value. ``crosses_below``: previous > t >= value
      (previous = the last finite value evaluated; none on the first evaluation, so a
      crossing rule never fires on its first value).
    * Fires when condition AND armed AND cooldown_ok. Firing disarms the rule and records
      ``now_ms``.
    * Re-arm: a disarmed rule re-arms when the value is back past the threshold by the
      hysteresis: ``>``/``crosses_above``: value < t - h; ``<``/``crosses_below``: value > t
      + h; ``abs>``: |value| < t - h. Re-arm and condition exclude each other, so one value
      never re-arms and fires at once. With h = 0 a crossing rule behaves as a plain
      crossing detector.
    * Cooldown: a level rule (``>``, ``<``, ``abs>``) that is armed and true during the
      cooldown stays armed and fires at the first evaluation after the cooldown if still
      true; a crossing that happens during the cooldown is lost (it is an instant).
    * NaN value: no firing and the state is returned unchanged (so a crossing is judged
      against the last finite value, across a gap in the data).
    """
    if value is None or not math.isfinite(value):
        return False, state
    armed = state.armed or _rearms(rule, value)
    cooldown_ok = (state.last_fired_ms is None
                   or now_ms - state.last_fired_ms >= rule.cooldown_s * 1000.0)
    fired = armed and cooldown_ok and _condition(rule, value, state.previous_value)
    if fired:
        return True, RuleState(armed=False, last_fired_ms=int(now_ms), previous_value=value)
    return False, RuleState(armed=armed, last_fired_ms=state.last_fired_ms,
                            previous_value=value)


def describe_state(rule: AlertRule, state: RuleState, now_ms: int) -> tuple[str, str]:
    """(state, detail) for the page: armed / cooling down / disarmed, in words.

    Returns e.g. ``("disarmed", "disarmed until below 1.8")``, ``("cooling down",
    "cooling down: 42 s left")`` or ``("armed", "armed: fires when value > 2")``.
    """
    if not state.armed:
        how, level = _rearm_level(rule)
        return "disarmed", f"disarmed until {how} {level:g}"
    if state.last_fired_ms is not None:
        left = rule.cooldown_s - (now_ms - state.last_fired_ms) / 1000.0
        if left > 0:
            return "cooling down", f"cooling down: {math.ceil(left)} s left"
    condition = {">": f"value > {rule.threshold:g}", "<": f"value < {rule.threshold:g}",
                 "abs>": f"|value| > {rule.threshold:g}",
                 "crosses_above": f"value crosses above {rule.threshold:g}",
                 "crosses_below": f"value crosses below {rule.threshold:g}"}[rule.comparison]
    return "armed", f"armed: fires when {condition}"


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricValue:
    """A metric's value for one rule at one time.

    Attributes
    ----------
    value : float
        NaN when not ready.
    ready : bool
        False while there is not enough data ("waiting for data").
    detail : str
        Why not ready ("waiting for data: needs 120 bars, has 14") or what the value is.
    as_of_ts : int
        Open of the bar the value belongs to (the last complete bar); the evaluation time
        for ``last_trade_age``.
    """

    value: float
    ready: bool
    detail: str
    as_of_ts: int


def last_complete_bar(now_ms: int, timeframe: str) -> int:
    """Open (epoch ms) of the newest bar whose interval ended ``BAR_SETTLE_MS`` ago or more."""
    size = analytics.TIMEFRAME_MS[analytics.normalize_timeframe(timeframe)]
    settled = int(now_ms) - BAR_SETTLE_MS
    return settled - settled % size - size


def _waiting(detail: str, as_of: int) -> MetricValue:
    return MetricValue(math.nan, False, f"waiting for data: {detail}", as_of)


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts / 1000, dt.UTC).strftime("%H:%M:%S UTC")


def _pair_needed(rule: AlertRule) -> int:
    """Bars (where both legs have a price) before the rule's pair metric exists."""
    if rule.metric == "zscore":
        return rule.window + rule.z_window  # as analytics.pair_signals(...).needed
    if rule.metric == "beta_change":
        return 2 * rule.window + 1  # the first beta is at bar `window`, plus `window` more
    return rule.window + 1  # spread; correlation: window returns need window + 1 bars


# pair_signals' memo of Huber / Theil-Sen fits and Kalman filter runs (by a digest of their
# exact inputs): consecutive ticks refit only the newest window and re-run only the filter
# that sees the new bar. Cleared past this many entries (a Kalman run is up to 3,600 rows).
_FIT_CACHE: dict = {}
_FIT_CACHE_MAX = 256


def _history_span(rule: AlertRule, as_of: int) -> int:
    """Bars to read up to ``as_of`` so that the pair metric at ``as_of`` is the value the
    page shows at that bar: the history ``analytics.pair_signals`` needs for the rule's
    method (windows in clock time; Kalman: from its filter's anchor), for beta_change at
    ``as_of - window`` too, plus a margin of 5 bars."""
    size = analytics.TIMEFRAME_MS[rule.timeframe]
    if rule.metric == "correlation":
        return math.ceil(_pair_needed(rule) * 1.5) + 5  # co-traded bars, not clock time
    # Every hedge metric reads the same span (beta_change's, which also needs the bar
    # `window` bars back), so zscore, spread and beta_change of one pair and settings
    # share one read and one computation in a tick.
    first = as_of - rule.window * size
    start = analytics.history_start(first, size, rule.method, rule.window, rule.z_window)
    return (as_of - start) // size + 5


def _aligned(conn, rule: AlertRule, as_of: int, span_bars: int, cache: dict):
    size = analytics.TIMEFRAME_MS[rule.timeframe]
    key = ("aligned", rule.y_symbol, rule.x_symbol, rule.timeframe, span_bars, as_of)
    if key not in cache:
        end = as_of + size
        start = end - span_bars * size
        bars_y = database.read_bars(conn, rule.y_symbol, start, end, rule.timeframe)
        bars_x = database.read_bars(conn, rule.x_symbol, start, end, rule.timeframe)
        empty = [symbol for symbol, bars in ((rule.y_symbol, bars_y), (rule.x_symbol, bars_x))
                 if bars.empty]
        if empty:
            cache[key] = f"no trades of {' or '.join(empty)} in the last {span_bars} bars"
        else:
            cache[key] = analytics.align(bars_y, bars_x, timeframe=rule.timeframe)
    return cache[key]


def _pair_metric(conn, rule: AlertRule, as_of: int, cache: dict) -> MetricValue:
    size = analytics.TIMEFRAME_MS[rule.timeframe]
    needed = _pair_needed(rule)
    span = _history_span(rule, as_of)
    aligned = _aligned(conn, rule, as_of, span, cache)
    if isinstance(aligned, str):
        return _waiting(f"needs {needed} bars, has 0 ({aligned})", as_of)
    frame = aligned.frame
    last_ts = int(frame.index[-1])
    if as_of - last_ts > STALE_BARS * size:
        return _waiting(f"no trade of {rule.y_symbol} or {rule.x_symbol} since "
                        f"{_clock(last_ts + size)}", as_of)
    last = frame.iloc[-1]
    quiet = [name for name, leg in ((rule.y_symbol, "y"), (rule.x_symbol, "x"))
             if not np.isfinite(last[leg])]
    if rule.metric == "correlation":
        both = aligned.both_traded
        have = int(both.sum())
        if have < needed:
            return _waiting(f"needs {needed} bars where both legs traded, has {have}", as_of)
        correlation = analytics.rolling_correlation(aligned.y, aligned.x, rule.window,
                                                    co_traded=both).dropna()
        if correlation.empty or as_of - int(correlation.index[-1]) > STALE_BARS * size:
            return _waiting("no recent bar in which both legs traded", as_of)
        value = float(correlation.iloc[-1])
        return MetricValue(value, True, f"correlation {value:.4f} over the last "
                           f"{rule.window} co-traded bars", as_of)
    key = ("signals", rule.y_symbol, rule.x_symbol, rule.timeframe, span, as_of, rule.method,
           rule.window, rule.z_window, rule.log_prices)
    if key not in cache:
        # The page's function on the page's terms: windows in bars of clock time.
        if len(_FIT_CACHE) > _FIT_CACHE_MAX:
            _FIT_CACHE.clear()
        cache[key] = analytics.pair_signals(aligned.y, aligned.x, method=rule.method,
                                            window=rule.window, z_window=rule.z_window,
                                            log_prices=rule.log_prices,
                                            bar_ms=int(aligned.bar_ms), fit_cache=_FIT_CACHE)
    signals = cache[key]
    if quiet:
        return _waiting(f"{' and '.join(quiet)} without a trade for more than {STALE_BARS} "
                        "bars", as_of)
    frame = signals.frame
    row = frame.iloc[-1]
    note = str(row["beta_note"])
    if not np.isfinite(row["beta"]):
        covered = (last_ts - int(frame.index[0])) // size + 1
        if note in ("", analytics.BETA_NOTES[1], analytics.KALMAN_WARMUP_NOTE) and \
                covered < signals.needed:
            return _waiting(f"needs {needed} bars, has {covered}", as_of)
        return _waiting(f"no hedge ratio at the last bar ({note or 'not enough data'})",
                        as_of)
    if rule.metric == "beta_change":
        # beta `window` bars of clock time ago: the newest bar at or before that time.
        earlier = int(np.searchsorted(frame.index.to_numpy(), last_ts - rule.window * size,
                                      side="right")) - 1
        beta_then = float(frame["beta"].iloc[earlier]) if earlier >= 0 else math.nan
        beta_now = float(row["beta"])
        if not (np.isfinite(beta_now) and np.isfinite(beta_then)):
            return _waiting(f"needs {needed} bars with a hedge ratio", as_of)
        if abs(beta_then) < 1e-12:
            return _waiting(f"beta {rule.window} bars ago is 0 (no % change)", as_of)
        value = 100.0 * (beta_now - beta_then) / abs(beta_then)
        return MetricValue(value, True, f"beta {beta_then:.4f} -> {beta_now:.4f}", as_of)
    column = "z" if rule.metric == "zscore" else "spread"
    value = float(row[column])
    if not np.isfinite(value):
        if column == "z" and not signals.enough_data:
            covered = (last_ts - int(frame.index[0])) // size + 1
            return _waiting(f"needs {needed} bars, has {covered}", as_of)
        why = "the spread window is flat or too sparse" if column == "z" else "no hedge ratio"
        return _waiting(f"{rule.metric} undefined at the last bar ({why})", as_of)
    return MetricValue(value, True, f"{rule.metric} {value:.4g} (beta {row['beta']:.4f})",
                       as_of)


def _last_trade(conn, symbol: str, before_ms: int | None):
    """(ts, price) of the newest stored trade with ts < before_ms (any when None), or None."""
    end = None if before_ms is None else int(before_ms)
    ticks = database.read_ticks(conn, symbol, -(2**62), end, limit=1, latest=True)
    if ticks.empty:
        return None
    return int(ticks["ts"].iloc[-1]), float(ticks["price"].iloc[-1])


def _spike_metric(conn, rule: AlertRule, as_of: int) -> MetricValue:
    size = analytics.TIMEFRAME_MS[rule.timeframe]
    baseline_start = as_of - rule.window * size
    first = database.first_bar_ts(conn, rule.symbol)
    if first is None:
        return _waiting(f"needs {rule.window + 1} bars, has 0 (no trades of {rule.symbol})",
                        as_of)
    if first > baseline_start:
        have = max(0, (as_of - (first - first % size)) // size + 1)
        return _waiting(f"needs {rule.window + 1} bars of history, has {have}", as_of)
    bars = database.read_bars(conn, rule.symbol, baseline_start, as_of + size, rule.timeframe)
    column = "volume" if rule.metric == "volume_spike" else "trades"
    values = bars[column].astype(float)
    last = float(values.get(as_of, 0.0))
    baseline = float(values[values.index < as_of].sum()) / rule.window
    if baseline <= 0:
        return _waiting(f"no {column} in the {rule.window} bars before", as_of)
    value = last / baseline
    return MetricValue(value, True, f"{column} {last:g} in the last bar vs {baseline:.4g} per "
                       f"bar before", as_of)


def compute_metric(conn, rule: AlertRule, now_ms: int, *,
                   cache: dict | None = None) -> MetricValue:
    """The value of ``rule``'s metric at ``now_ms``, from the stored bars and ticks.

    Parameters
    ----------
    conn : sqlite3.Connection
        Read-only connections work.
    rule : AlertRule
    now_ms : int
        Epoch ms; the value is for the last complete bar (``last_complete_bar``).
    cache : dict, optional
        Shared between the rules of one evaluator tick: bars and pair signals with the same
        subject and settings are read and computed once.

    Returns
    -------
    MetricValue
        ``ready=False`` with "waiting for data: needs N bars, has M" (or another reason)
        instead of a misleading number.

    Notes
    -----
    Reads only what the rule needs: pair metrics read the history ``analytics.pair_signals``
    needs for the rule's method (``analytics.history_start``: window + z_window (+ the
    refit step of Huber/Theil-Sen) bars of clock time; Kalman: from its filter's anchor,
    up to two segments) of each leg at the rule's timeframe (``database.read_bars``),
    ``align`` them and call ``analytics.pair_signals`` with ``bar_ms`` (zscore, spread,
    beta_change), or ``analytics.rolling_correlation`` on co-traded log returns
    (correlation). So the value equals what the page shows at the same bar, for every
    method: windows count clock time on both sides, robust refits and Kalman restarts are
    anchored to absolute bar numbers. A bar whose β the guard refused reports waiting with
    the reason (e.g. "x did not move enough in this window").
    A pair with no trade in either leg for more than ``STALE_BARS`` bars reports waiting.
    ``price`` and ``price_change_pct`` use the newest trades before a time (one index seek
    each); spikes read ``window + 1`` bars; ``last_trade_age`` one trade.
    """
    cache = {} if cache is None else cache
    if rule.metric == "last_trade_age":
        last = _last_trade(conn, rule.symbol, None)
        if last is None:
            return _waiting(f"no trades of {rule.symbol} stored", int(now_ms))
        age = max(0.0, (int(now_ms) - last[0]) / 1000.0)
        return MetricValue(age, True, f"last trade at {_clock(last[0])}", int(now_ms))
    as_of = last_complete_bar(now_ms, rule.timeframe)
    size = analytics.TIMEFRAME_MS[rule.timeframe]
    if rule.needs_pair:
        return _pair_metric(conn, rule, as_of, cache)
    if rule.metric in ("volume_spike", "trades_spike"):
        return _spike_metric(conn, rule, as_of)
    current = _last_trade(conn, rule.symbol, as_of + size)
    if current is None:
        return _waiting(f"no trades of {rule.symbol} before {_clock(as_of + size)}", as_of)
    if rule.metric == "price":
        return MetricValue(current[1], True, f"last trade at {_clock(current[0])}", as_of)
    window_start = as_of + size - rule.window * size
    reference = _last_trade(conn, rule.symbol, window_start)
    if reference is None:
        return _waiting(f"needs a price before {_clock(window_start)} ({rule.window} bars "
                        "ago)", as_of)
    value = 100.0 * (current[1] / reference[1] - 1.0)
    return MetricValue(value, True, f"{reference[1]:g} -> {current[1]:g}", as_of)


def readable_number(value: float) -> str:
    """A number for a message: ``87,060.12``, ``-2.315``, ``0.0001235`` — never
    ``8.706e+04`` (prices of 1,000 and more get thousands separators and two decimals,
    smaller numbers four significant digits)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.2f}"
    if value == 0 or abs(value) >= 1e-4:
        return f"{value:.4g}"
    return f"{value:.10f}".rstrip("0")


def event_message(rule: AlertRule, value: float) -> str:
    """The line stored, logged and sent for a firing.

    E.g. ``|z| > 2: z-score of ETHUSDT/BTCUSDT = -2.31, beyond ± 2 (1s, ols 60/60, log)``.
    """
    suffix = {"%": " %", "s": " s", "x average": "x"}.get(METRICS[rule.metric].unit, "")
    settings = f" ({rule.settings_text})" if rule.settings_text else ""
    return (f"{rule.name}: {METRICS[rule.metric].label} of {rule.subject} = "
            f"{readable_number(value)}{suffix}, {COMPARISON_WORDS[rule.comparison]} "
            f"{readable_number(rule.threshold)}{suffix}{settings}")


# --------------------------------------------------------------------------------------
# Webhooks
# --------------------------------------------------------------------------------------

WEBHOOK_TIMEOUT_S = 3.0
WEBHOOK_ATTEMPTS = 3
WEBHOOK_BACKOFF_S = 0.5  # then 1 s: doubles per retry
WEBHOOK_QUEUE_MAX = 1_000  # events waiting per destination
WEBHOOK_MAX_DESTINATIONS = 32  # worker threads at most
WEBHOOK_IDLE_S = 30.0  # a destination's worker exits after this long without work


@dataclass(frozen=True)
class WebhookJob:
    """One event to POST: where to record the result, where to send, what."""

    db_path: str
    event_id: int
    url: str
    payload: dict


def webhook_payload(rule: AlertRule, rule_id: int, value: float, ts: int,
                    message: str) -> dict:
    """The JSON body POSTed for a firing.

    Keys: ``rule_id, rule`` (name), ``metric, subject, value, threshold, comparison``,
    ``ts`` (epoch ms), ``time_utc`` (ISO 8601), ``message`` and ``text`` (= message, the
    field Slack and Mattermost incoming webhooks display).
    """
    time_utc = dt.datetime.fromtimestamp(ts / 1000, dt.UTC).isoformat(timespec="milliseconds")
    return {"rule_id": int(rule_id), "rule": rule.name, "metric": rule.metric,
            "subject": rule.subject, "value": float(value), "threshold": rule.threshold,
            "comparison": rule.comparison, "ts": int(ts),
            "time_utc": time_utc.replace("+00:00", "Z"), "message": message, "text": message}


def post_json(url: str, payload: dict, timeout: float) -> tuple[bool, bool, str]:
    """POST ``payload`` as JSON once.

    Returns
    -------
    (ok, retry, reason) : (bool, bool, str)
        ``ok`` for a 2xx answer; ``retry`` for 5xx, 408, 429, timeouts and connection
        errors (a 4xx is the receiver refusing the message: not retried).
    """
    body = json.dumps(payload, allow_nan=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": "pairs-dashboard-alerts/1"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return True, False, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        exc.close()
        return False, exc.code >= 500 or exc.code in (408, 429), f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return False, True, f"{type(exc.reason).__name__}: {exc.reason}"
    except (TimeoutError, OSError, HTTPException) as exc:
        return False, True, f"{type(exc).__name__}: {exc or 'timed out'}"


class WebhookSender:
    """Delivers webhook jobs on worker threads, one per destination URL, never blocking.

    Parameters
    ----------
    timeout : float, default 3
        Seconds per attempt (connect, and each read).
    attempts : int, default 3
        Tries per event; retried on 5xx/408/429, timeouts and connection errors.
    backoff : float, default 0.5
        Seconds before the second attempt, doubling after each.

    Notes
    -----
    ``submit`` only appends to the destination's bounded queue (``WEBHOOK_QUEUE_MAX``) and
    returns at once; a full queue or more than ``WEBHOOK_MAX_DESTINATIONS`` destinations makes
    it return a failure reason instead. Per destination, events go out in order; a slow
    endpoint delays only its own queue. The worker records the result on the event
    (``database.set_alert_event_delivery``: "ok" or "failed: <reason> after N attempts")
    through its own short-lived connection.
    """

    def __init__(self, *, timeout: float = WEBHOOK_TIMEOUT_S, attempts: int = WEBHOOK_ATTEMPTS,
                 backoff: float = WEBHOOK_BACKOFF_S) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout ({timeout!r}) must be > 0 seconds")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts ({attempts!r}) must be an integer >= 1")
        if not backoff >= 0:
            raise ValueError(f"backoff ({backoff!r}) must be >= 0 seconds")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._lock = threading.Lock()
        self._workers: dict[str, tuple[queue.Queue, threading.Thread]] = {}
        self._stop = threading.Event()
        self.delivered = 0
        self.failed = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(q.qsize() for q, _ in self._workers.values())

    def submit(self, job: WebhookJob) -> str | None:
        """Queue ``job``; None when queued, else why it was not (the event is not sent)."""
        with self._lock:
            if self._stop.is_set():
                return "alert evaluator stopping"
            worker = self._workers.get(job.url)
            if worker is None:
                if len(self._workers) >= WEBHOOK_MAX_DESTINATIONS:
                    return f"more than {WEBHOOK_MAX_DESTINATIONS} webhook destinations busy"
                jobs: queue.Queue = queue.Queue(maxsize=WEBHOOK_QUEUE_MAX)
                thread = threading.Thread(target=self._work, args=(job.url, jobs),
                                          name="alerts-webhook", daemon=True)
                worker = self._workers[job.url] = (jobs, thread)
                thread.start()
            try:
                worker[0].put_nowait(job)
            except queue.Full:
                return f"webhook queue full ({WEBHOOK_QUEUE_MAX} events waiting)"
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop retrying and join the workers (an attempt in flight ends by its timeout)."""
        self._stop.set()
        with self._lock:
            threads = [thread for _, thread in self._workers.values()]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self, url: str, jobs: queue.Queue) -> None:
        idle_since = time.monotonic()
        while True:
            try:
                job = jobs.get(timeout=0.25)
            except queue.Empty:
                if self._stop.is_set() or time.monotonic() - idle_since >= WEBHOOK_IDLE_S:
                    with self._lock:  # submit() puts under this lock: no job is stranded
                        if jobs.empty():
                            del self._workers[url]
                            return
                continue
            self._deliver(job)
            idle_since = time.monotonic()

    def _deliver(self, job: WebhookJob) -> None:
        attempts, ok, reason = 0, False, "not sent: the evaluator stopped"
        while attempts < self.attempts and not self._stop.is_set():
            if attempts and self._stop.wait(self.backoff * 2 ** (attempts - 1)):
                reason = f"{reason}; the evaluator stopped before retrying"
                break
            attempts += 1
            ok, retry, reason = post_json(job.url, job.payload, self.timeout)
            if ok or not retry:
                break
        with self._lock:
            if ok:
                self.delivered += 1
            else:
                self.failed += 1
        if ok:
            result = database.DELIVERY_OK
        else:
            result = f"failed: {reason} after {attempts} attempt{'s' * (attempts != 1)}"
            log.warning("webhook for alert event %d to %s %s", job.event_id,
                        _redacted(job.url), result)
        self._record(job, result, attempts)

    @staticmethod
    def _record(job: WebhookJob, result: str, attempts: int) -> None:
        try:
            conn = database.connect(job.db_path)
            try:
                database.set_alert_event_delivery(conn, job.event_id, result,
                                                  attempts=attempts,
                                                  delivered_ms=now_ms())
            finally:
                conn.close()
        except (sqlite3.Error, OSError, RuntimeError) as exc:
            log.error("could not record the webhook result of event %d: %s", job.event_id, exc)


def _redacted(url: str) -> str:
    """Scheme and host only: webhook paths usually carry a secret token."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/..."


# --------------------------------------------------------------------------------------
# Evaluator
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """What one rule's evaluation wants written (applied only if the rule is unchanged)."""

    rule: AlertRule | None  # None: the stored row is not a valid rule
    version: int  # updated_ms of the rule row evaluated
    status: dict  # keyword arguments of database.write_alert_status
    fired: bool = False
    value: float = math.nan


def _status(rule_id: int, name: str, detail: str, now: int, value: float | None,
            state: RuleState, as_of: int | None) -> dict:
    return {"rule_id": rule_id, "state": name, "detail": detail, "checked_ms": now,
            "value": value, "armed": state.armed, "last_fired_ms": state.last_fired_ms,
            "previous_value": state.previous_value, "as_of_ts": as_of}


class Evaluator:
    """Evaluates every enabled rule once per ``interval`` on a background thread.

    Parameters
    ----------
    db_path_provider : callable returning str, or str
        Zero-argument callable giving the database path now (the collector's path may
        change once, when feed 'auto' falls back to the built-in market); a plain path is
        accepted too. Returning None, or a path that does not exist yet (the collector
        creates the file with its first trades), skips the tick.
    interval : float, default 1.0
        Seconds between ticks; ticks are aligned to the interval grid plus
        ``BAR_SETTLE_MS``, so with 1 s bars every tick sees exactly one new complete bar.
    clock : callable returning int, optional
        Epoch ms "now" (tests); default the wall clock.
    webhook_timeout, webhook_attempts, webhook_backoff
        Passed to ``WebhookSender``.

    Notes
    -----
    One tick: open (once) a read/write connection with ``database.connect``; take the
    evaluator lease (``database.claim_alert_evaluator``: one evaluator per database file
    or PostgreSQL database even across processes and machines - a second one stands by
    and takes over at its next tick once the holder stops: on SQLite when the lease row
    expires or is released, on PostgreSQL as soon as the holder's session ends, since the
    lease is an advisory lock of the evaluator's own connection); load the enabled rules
    and their stored ``RuleState``; compute each distinct subject and settings once
    (``compute_metric`` with a shared cache) for rules whose bar has not been evaluated
    yet; ``evaluate``; then in ONE transaction store the events and statuses of rules that
    were not edited or deleted meanwhile. After the commit: a WARNING log line per event
    (logger "alerts") and webhook jobs handed to the sender (never waited for).

    Restart: the trigger state (armed, last firing, previous value, bar evaluated) lives in
    ``alert_status``, so a new process continues where the old one stopped. A rule that fired
    and is still beyond its threshold stays disarmed (no second firing), the cooldown counts
    from the stored firing time, and a crossing rule compares the first new value with the
    last one stored before the stop - a crossing that happened while the process was down
    fires once. Webhooks still queued when a process stopped are marked "failed: ..." when
    the next evaluator starts.
    """

    def __init__(self, db_path_provider: Callable[[], str | None] | str, *,
                 interval: float = 1.0, clock: Callable[[], int] | None = None,
                 webhook_timeout: float = WEBHOOK_TIMEOUT_S,
                 webhook_attempts: int = WEBHOOK_ATTEMPTS,
                 webhook_backoff: float = WEBHOOK_BACKOFF_S) -> None:
        if isinstance(db_path_provider, (str, os.PathLike)):
            path = os.fspath(db_path_provider)

            def db_path_provider() -> str:
                return path
        if not callable(db_path_provider):
            raise ValueError(f"db_path_provider ({db_path_provider!r}) must be a callable "
                             "returning the database path")
        if not (isinstance(interval, (int, float)) and 0.05 <= interval <= 60):
            raise ValueError(f"interval ({interval!r}) must be between 0.05 and 60 seconds")
        self.db_path_provider = db_path_provider
        self.interval = float(interval)
        self.clock = clock or now_ms
        self.owner = uuid.uuid4().hex
        self.lease_ttl_ms = int(max(10.0, 5 * self.interval) * 1000)
        self.webhooks = WebhookSender(timeout=webhook_timeout, attempts=webhook_attempts,
                                      backoff=webhook_backoff)
        self._conn = None
        self._conn_path: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()
        self._rules_cache: dict[tuple[int, int], AlertRule | str] = {}
        self._cleaned_paths: set[str] = set()
        # Read by the page without locks; each written by the evaluator thread only.
        self.started_ms = 0
        self.stopped = False
        self.ticks = 0
        self.last_tick_ms: int | None = None
        self.last_tick_duration_ms: float | None = None
        self.rules_evaluated = 0
        self.events_fired = 0
        self.standby_owner: str | None = None
        self.last_error = ""
        self.db_path: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Evaluator:
        """Start the thread; idempotent. Use ``start_evaluator`` in applications."""
        with self._lifecycle_lock:
            if self._thread is None and not self.stopped:
                self.started_ms = now_ms()
                self._thread = threading.Thread(target=self._run, name="alerts-evaluator",
                                                daemon=True)
                self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> dict:
        """Stop ticking, release the lease, stop the webhook workers; returns ``status()``."""
        with self._lifecycle_lock:
            self.stopped = True
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            self._close()  # ticks ran on the caller's thread (tests): close there
        self.webhooks.stop(timeout)
        _forget(self)
        return self.status()

    def status(self) -> dict:
        """Snapshot for the page (no locks)."""
        return {
            "running": self.running,
            "db_path": self.db_path,
            "interval_s": self.interval,
            "started_ms": self.started_ms or None,
            "ticks": self.ticks,
            "last_tick_ms": self.last_tick_ms,
            "last_tick_duration_ms": self.last_tick_duration_ms,
            "rules_evaluated": self.rules_evaluated,
            "events_fired": self.events_fired,
            "standby": self.standby_owner is not None,
            "last_error": self.last_error,
            "webhooks_pending": self.webhooks.pending,
            "webhooks_delivered": self.webhooks.delivered,
            "webhooks_failed": self.webhooks.failed,
        }

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.tick()
                except Exception as exc:  # keep evaluating: the next tick may succeed
                    error = f"{type(exc).__name__}: {exc}"
                    if error != self.last_error:  # once per distinct error, not every second
                        log.exception("alert evaluation failed")
                    self.last_error = error
                    self._close()
                else:
                    self.last_error = ""
                self._stop.wait(self._seconds_to_next_tick())
        finally:
            self._close()

    def _seconds_to_next_tick(self) -> float:
        now = time.time()
        phase = BAR_SETTLE_MS / 1000.0 + 0.05
        next_tick = (math.floor((now - phase) / self.interval) + 1) * self.interval + phase
        return max(0.01, next_tick - now)

    def _connection(self):
        path = self.db_path_provider()
        if path is None:
            return None
        path = str(path)
        if self._conn is not None and path != self._conn_path:
            self._close()
        if self._conn is None:
            if not database.database_exists(path):
                return None  # the collector creates the file with its first trades
            # The evaluator's own connection, kept while it runs: on PostgreSQL its session
            # holds the evaluator lease (database.claim_alert_evaluator).
            self._conn = database.connect(path)
            self._conn_path = path
            self.db_path = path
            if path not in self._cleaned_paths:
                self._cleaned_paths.add(path)
                if database.claim_alert_evaluator(self._conn, self.owner, self.clock(),
                                                  self.lease_ttl_ms) == self.owner:
                    self._fail_lost_deliveries(self._conn)
        return self._conn

    def _fail_lost_deliveries(self, conn) -> None:
        """Webhooks queued by an evaluator that stopped (a previous run, or the holder this
        one took over from) were never sent: mark them failed instead of pending forever."""
        lost = database.mark_pending_deliveries_failed(
            conn, "the process stopped before the webhook was sent")
        if lost:
            log.warning("%d webhook deliveries of a stopped evaluator were lost", lost)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            database.release_alert_evaluator(conn, self.owner)
        except sqlite3.Error as exc:
            log.warning("could not release the alert evaluator lease: %s", exc)
            if getattr(conn, "raw", None) is not None:
                # PostgreSQL: this session may still hold the lock; closing it (instead of
                # handing it back to the pool) makes the server end the lock with it.
                conn.raw.close()
        finally:
            conn.close()

    # -- one tick -------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> list[int]:
        """Evaluate every enabled rule once; returns the ids of the events stored.

        Called by the thread every ``interval``; tests call it directly with ``now_ms`` on an
        evaluator that was not started (never both: the connection belongs to one thread).
        """
        started = time.perf_counter()
        now = int(self.clock() if now_ms is None else now_ms)
        conn = self._connection()
        if conn is None:
            return []
        holder = database.claim_alert_evaluator(conn, self.owner, now, self.lease_ttl_ms)
        if holder != self.owner:
            self.standby_owner = holder
            return []
        if self.standby_owner is not None:  # took over: the holder stopped, its queue is gone
            self._fail_lost_deliveries(conn)
        self.standby_owner = None
        rules = database.list_alert_rules(conn, enabled_only=True)
        stored = database.read_alert_status(conn)
        cache: dict = {}
        rows = rules.to_dict("records")
        outcomes = [self._evaluate_row(conn, row, stored.get(int(row["id"])), now, cache)
                    for row in rows]
        current = {(int(row["id"]), int(row["updated_ms"])) for row in rows}
        self._rules_cache = {k: v for k, v in self._rules_cache.items() if k in current}
        events = self._store(conn, now, outcomes)
        for event_id, outcome in events:
            self._announce(event_id, outcome, now)
        self.ticks += 1
        self.rules_evaluated = len(outcomes)
        self.last_tick_ms = now
        self.last_tick_duration_ms = round((time.perf_counter() - started) * 1000, 3)
        return [event_id for event_id, _ in events]

    def _rule(self, row: Mapping) -> AlertRule | str:
        key = (int(row["id"]), int(row["updated_ms"]))
        if key not in self._rules_cache:
            try:
                self._rules_cache[key] = rule_from_row(row)
            except ValueError as exc:
                self._rules_cache[key] = f"invalid stored rule: {exc}"
        return self._rules_cache[key]

    def _evaluate_row(self, conn, row: Mapping, stored: dict | None, now: int,
                      cache: dict) -> _Outcome:
        rule_id, version = int(row["id"]), int(row["updated_ms"])
        state = RuleState()
        if stored is not None:
            state = RuleState(bool(stored["armed"]), stored["last_fired_ms"],
                              stored["previous_value"])
        rule = self._rule(row)
        if isinstance(rule, str):
            return _Outcome(None, version, _status(rule_id, "error", rule, now, None, state,
                                                   None))
        if (stored is not None and rule.metric != "last_trade_age"
                and stored["state"] not in ("waiting for data", "error")
                and stored["as_of_ts"] == last_complete_bar(now, rule.timeframe)):
            # This bar was evaluated already: refresh the words (cooldown left), keep the rest.
            name, detail = describe_state(rule, state, now)
            return _Outcome(rule, version, _status(rule_id, name, detail, now, stored["value"],
                                                   state, stored["as_of_ts"]))
        try:
            metric = compute_metric(conn, rule, now, cache=cache)
        except (ValueError, ArithmeticError) as exc:
            return _Outcome(rule, version, _status(rule_id, "error",
                                                   f"{type(exc).__name__}: {exc}", now, None,
                                                   state, None))
        if not metric.ready:
            return _Outcome(rule, version, _status(rule_id, "waiting for data", metric.detail,
                                                   now, None, state, metric.as_of_ts))
        fired, new_state = evaluate(rule, metric.value, state, now)
        name, detail = describe_state(rule, new_state, now)
        return _Outcome(rule, version, _status(rule_id, name, f"{detail}; {metric.detail}", now,
                                               metric.value, new_state, metric.as_of_ts),
                        fired=fired, value=metric.value)

    def _store(self, conn, now: int, outcomes: list) -> list[tuple[int, _Outcome]]:
        events = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if database.claim_alert_evaluator(conn, self.owner, now,
                                              self.lease_ttl_ms) != self.owner:
                conn.execute("ROLLBACK")
                return []
            versions = dict(conn.execute(
                "SELECT id, updated_ms FROM alert_rules WHERE enabled = 1").fetchall())
            for outcome in outcomes:
                rule_id = outcome.status["rule_id"]
                if versions.get(rule_id) != outcome.version:
                    continue  # edited, disabled or deleted while we computed: drop
                database.write_alert_status(conn, **outcome.status)
                if outcome.fired:
                    rule = outcome.rule
                    event_id = database.insert_alert_event(
                        conn, rule_id=rule_id, ts=now, value=outcome.value,
                        threshold=rule.threshold, message=event_message(rule, outcome.value),
                        rule_name=rule.name, metric=rule.metric, subject=rule.subject,
                        comparison=rule.comparison, as_of_ts=outcome.status["as_of_ts"],
                        delivered=(database.DELIVERY_PENDING if rule.webhook_url
                                   else database.DELIVERY_NOT_REQUESTED))
                    events.append((event_id, outcome))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return events

    def _announce(self, event_id: int, outcome: _Outcome, now: int) -> None:
        rule = outcome.rule
        message = event_message(rule, outcome.value)
        self.events_fired += 1
        log.warning("ALERT event %d rule %d: %s", event_id, rule.id, message)
        if not rule.webhook_url:
            return
        job = WebhookJob(self._conn_path, event_id, rule.webhook_url,
                         webhook_payload(rule, rule.id, outcome.value, now, message))
        refused = self.webhooks.submit(job)
        if refused is not None:
            database.set_alert_event_delivery(self._conn, event_id, f"failed: {refused}",
                                              attempts=0, delivered_ms=self.clock())


# --------------------------------------------------------------------------------------
# One evaluator per process
# --------------------------------------------------------------------------------------

# Streamlit re-imports changed modules, which would re-create a module-level singleton and
# start a second evaluator (every alert twice); the ``sys`` module is never re-imported, so
# the registry lives there (as collector.py does for the collector).
_PROCESS = sys.__dict__.setdefault("_pairs_dashboard_alert_evaluator",
                                   {"lock": threading.Lock(), "evaluator": None})


def start_evaluator(db_path_provider: Callable[[], str | None] | str, *,
                    interval: float = 1.0) -> Evaluator:
    """Start this process's alert evaluator, or return the one already running.

    Parameters
    ----------
    db_path_provider : callable or str
        Zero-argument callable returning the current database path (e.g.
        ``lambda: collector.running_collector().db_path``), or a path.
    interval : float, default 1.0
        Seconds between evaluations.

    Returns
    -------
    Evaluator
        The running one is returned as it is (its provider and interval unchanged); call
        ``stop_evaluator()`` first to change them.
    """
    with _PROCESS["lock"]:
        current = _PROCESS["evaluator"]
        if current is not None and current.running:
            return current
        evaluator = Evaluator(db_path_provider, interval=interval)
        _PROCESS["evaluator"] = evaluator
        return evaluator.start()


def running_evaluator() -> Evaluator | None:
    """The evaluator running in this process, if any."""
    current = _PROCESS["evaluator"]
    return current if current is not None and current.running else None


def stop_evaluator(timeout: float = 5.0) -> dict | None:
    """Stop this process's evaluator (if one runs) and return its final status."""
    current = _PROCESS["evaluator"]
    return current.stop(timeout) if current is not None else None


def evaluator_status() -> dict:
    """The page's view of the evaluator: ``Evaluator.status()``, or ``{"running": False}``.

    Keys: running, db_path, interval_s, started_ms, ticks, last_tick_ms,
    last_tick_duration_ms, rules_evaluated, events_fired, standby (another evaluator holds
    this database), last_error, webhooks_pending, webhooks_delivered, webhooks_failed.
    """
    current = _PROCESS["evaluator"]
    if current is None:
        return {"running": False, "ticks": 0, "last_tick_ms": None, "rules_evaluated": 0,
                "events_fired": 0, "last_error": "", "standby": False}
    return current.status()


def _forget(evaluator: Evaluator) -> None:
    with _PROCESS["lock"]:
        if _PROCESS["evaluator"] is evaluator:
            _PROCESS["evaluator"] = None
