"""The page's view in the URL, and the defaults a new view starts from.

A *view* is what the sidebar and the tab bar chose: the source (live or one uploaded file),
the pair, timeframe, lookback, rolling window, regression method, log or raw prices, the
entry/exit z and the open tab. The page keeps each in its widget's session-state key; this
module maps those keys to short URL query parameters and back, so that a reload or a pasted
link (``?y=ETHUSDT&x=BTCUSDT&tf=1m&tab=Backtest``) restores the view.

A link is input like any other: ``read_url`` checks every parameter against what the page
can show (the stored uploads, the source's symbols, the widgets' bounds) and keeps the
valid ones; each rejected one is named in ``UrlView.problems`` with the reason, and its
widget keeps its default. Unknown parameters are left alone (other features may use them).

Pure functions: no Streamlit, no I/O (the caller passes the choices it read).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dashboard_data as dd

# URL parameter -> the widget's session-state key (page.py), in the order they are checked:
# the source decides which symbols exist; entry bounds exit.
URL_KEYS = {"source": "source_kind", "upload": "upload_name", "y": "y_symbol",
            "x": "x_symbol", "tf": "timeframe", "lookback": "lookback", "window": "window",
            "method": "method", "prices": "log_prices", "entry": "entry_z", "exit": "exit_z",
            "tab": "tab"}
WINDOW_RANGE = (10, 20_000)  # rolling window, bars (the sidebar's number input)
ENTRY_RANGE = (0.1, 10.0)  # entry |z|
EXIT_RANGE = (0.0, 10.0)  # exit |z|, also below entry
DEFAULT_ENTRY = 2.0
PREFERRED_PAIR = ("ETHUSDT", "BTCUSDT")  # y, x: README's and the simulated market's pair


@dataclass
class UrlView:
    """What a URL asked for: ``state`` (session-state key -> checked value) and the
    parameters that were ignored, as ``"name=value (reason)"``."""

    state: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _number(text: str, kind: type, bounds: tuple) -> tuple[object, str | None]:
    try:
        value = kind(text)
    except ValueError:
        return None, "not a number" if kind is float else "not a whole number"
    if kind is float and not math.isfinite(value):
        return None, "not a number"
    low, high = bounds
    if not low <= value <= high:
        return None, f"outside {low:g}…{high:g}"
    return value, None


def read_url(params: Mapping[str, str], *, uploads: Sequence[str],
             symbols_of: Callable[[str, str], Sequence[str]],
             tabs: Sequence[str]) -> UrlView:
    """Check the view parameters of a URL.

    Parameters
    ----------
    params : mapping
        The query parameters (``st.query_params.to_dict()``: one string per name).
    uploads : sequence of str
        Names of the stored uploads (a link may name one that was deleted since).
    symbols_of : callable
        ``symbols_of(source_kind, upload_name)`` -> the symbols the pair can use there.
    tabs : sequence of str
        The tab labels.

    Returns
    -------
    UrlView
        Session-state values for the valid parameters and a message for each ignored one.
    """
    view = UrlView()

    def take(name: str, value, problem: str | None) -> None:
        if problem is None:
            view.state[URL_KEYS[name]] = value
        else:
            view.problems.append(f"{name}={params[name]} ({problem})")

    def choice(name: str, options: Sequence[str], value: str | None = None) -> None:
        value = params[name] if value is None else value
        take(name, value, None if value in options else
             f"not one of {', '.join(options) or 'nothing yet'}")

    kind = params.get("source", "live")
    if "source" in params:
        choice("source", ["live", "uploaded"])
        if kind == "uploaded" and not uploads:
            view.state.pop("source_kind", None)
            view.problems.append("source=uploaded (no file has been uploaded)")
            kind = "live"
    upload = ""
    if "upload" in params and kind == "uploaded":
        choice("upload", list(uploads))
        upload = view.state.get("upload_name", "")
    elif kind == "uploaded" and uploads:
        upload = uploads[0]
    symbols = [s.upper() for s in symbols_of(kind, upload)]
    for name in ("y", "x"):
        if name in params:
            choice(name, symbols, params[name].upper())
    if "tf" in params:
        choice("tf", dd.TIMEFRAME_LABELS)
    if "lookback" in params:
        choice("lookback", [k for k in dd.LOOKBACKS_MS if kind == "uploaded" or k != "all"])
    if "window" in params:
        take("window", *_number(params["window"], int, WINDOW_RANGE))
    if "method" in params:
        choice("method", list(dd.METHODS))
    if "prices" in params:
        take("prices", params["prices"] == "log",
             None if params["prices"] in ("log", "raw") else "not log or raw")
    if "entry" in params:
        take("entry", *_number(params["entry"], float, ENTRY_RANGE))
    if "exit" in params:
        value, problem = _number(params["exit"], float, EXIT_RANGE)
        entry = view.state.get("entry_z", DEFAULT_ENTRY)
        if problem is None and value >= entry:
            problem = f"must be below entry {entry:g}"
        take("exit", value, problem)
    if "tab" in params:
        choice("tab", list(tabs))
    return view


def url_params(state: Mapping) -> dict[str, str]:
    """URL parameters of a view given by session-state key (keys missing are left out);
    the inverse of ``read_url`` for valid values."""
    text = {"window": lambda v: str(int(v)), "log_prices": lambda v: "log" if v else "raw",
            "entry_z": lambda v: f"{float(v):g}", "exit_z": lambda v: f"{float(v):g}"}
    return {name: text.get(key, str)(state[key]) for name, key in URL_KEYS.items()
            if key in state and state[key] is not None}


def default_pair(symbols: Sequence[str]) -> tuple[str, str]:
    """(y, x) a new view starts with: ETH on BTC when both exist, else the first two."""
    upper = [s.upper() for s in symbols]
    if all(s in upper for s in PREFERRED_PAIR):
        return PREFERRED_PAIR
    return upper[0], upper[1]


def timeframe_label_for(bar_ms: int | None) -> str:
    """The timeframe label to show bars of ``bar_ms``: the largest label not finer than
    the bars (a 15-minute file shows as 5m, whose buckets hold one file bar each); "1s"
    when unknown."""
    fitting = [label for label in dd.TIMEFRAME_LABELS
               if bar_ms is not None and dd.bar_ms_of(label) <= bar_ms]
    return fitting[-1] if fitting else dd.TIMEFRAME_LABELS[0]
