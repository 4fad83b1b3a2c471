"""AppTest helpers shared by the page tests of issue 14 (test_paper.py, test_exports.py)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

import services

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def closed_feed_env(tmp_path, monkeypatch) -> str:
    """Environment of a page whose collector cannot connect (a closed 127.0.0.1 port), so
    only what a test writes is stored; returns the live database path."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = str(tmp_path / "live.db")
    for name in ("CRYPTO_DEMO_SEED", "CRYPTO_REPLAY_FILE", "CRYPTO_STREAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRYPTO_FEED", "binance-futures")
    monkeypatch.setenv("BINANCE_WS_URL", f"ws://127.0.0.1:{port}")
    monkeypatch.setenv("CRYPTO_SYMBOLS", "btcusdt,ethusdt")
    monkeypatch.setenv("CRYPTO_DB_PATH", path)
    monkeypatch.setenv("CRYPTO_UPLOAD_DB", str(tmp_path / "uploads.db"))
    monkeypatch.setenv("CRYPTO_DISPLAY_TZ", "UTC")
    st.cache_data.clear()
    st.cache_resource.clear()
    return path


def stop_page_services() -> None:
    """Threads started by the page outlive a test: stop them, forget the caches."""
    services.stop_all()
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def media(monkeypatch):
    managers: list[MediaFileManager] = []

    class RecordingManager(MediaFileManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            managers.append(self)

    monkeypatch.setattr(app_test_module, "MediaFileManager", RecordingManager)
    return managers


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def page(**state) -> AppTest:
    """A new page with ``state`` in its session state, run once."""
    at = AppTest.from_file(APP, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    return run(at)


def visible_columns(frame_element) -> dict[str, str]:
    """{column: label} of the columns a table shows (hidden ones left out)."""
    config = json.loads(frame_element.proto.columns or "{}")
    shown = {}
    for name in frame_element.value.columns:
        entry = config.get(f"col:{name}", config.get(str(name), {}))
        if entry is None or entry.get("hidden"):
            continue
        shown[str(name)] = entry.get("label") or str(name)
    return shown


def metric(at: AppTest, label: str) -> str:
    matches = [m.value for m in at.metric if m.label == label]
    assert matches, f"no metric {label!r}; have {[m.label for m in at.metric]}"
    return matches[0]


def download(at: AppTest, managers: list, key: str) -> bytes:
    proto = next(b for b in at.get("download_button") if b.proto.id.endswith(key)).proto
    url = managers[-1].execute_deferred(proto.deferred_file_id)
    return managers[-1].read_file(url.rsplit("/", 1)[1].split(".")[0]).content


