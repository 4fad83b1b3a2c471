"""What every real-browser script here shares: how ``streamlit run`` is started and stopped,
how Chromium is launched, how a tab is found.

Used by tests/test_browser.py, tests/test_browser_paper.py (the ``server`` and ``browser``
fixtures, ``wait_for``), tests/test_api.py, bench/bench_app.py and bench/screenshots.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app.py"

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own download cannot work here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# Streamlit keeps one stTabPanel per tab; the open one is labelled by the selected tab.
OPEN_PANEL_JS = """name => {
  const tab = Array.from(document.querySelectorAll('[role="tab"]'))
      .find(t => t.innerText.trim() === name);
  if (!tab || tab.getAttribute('aria-selected') !== 'true') return null;
  return Array.from(document.querySelectorAll('[data-testid="stTabPanel"]'))
      .find(p => p.getAttribute('aria-labelledby') === tab.id) || null;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def demo_env(workdir: str | Path, **extra: str) -> dict:
    """The environment of a page on the built-in market (seed 1), SQLite files in ``workdir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTO_", "BINANCE_"))}
    env.update(CRYPTO_FEED="demo", CRYPTO_DEMO_SEED="1", CRYPTO_SYMBOLS="btcusdt,ethusdt",
               CRYPTO_DB_PATH=os.path.join(workdir, "demo.db"),
               CRYPTO_UPLOAD_DB=os.path.join(workdir, "uploads.db"), CRYPTO_DISPLAY_TZ="UTC")
    env.update(extra)
    return env


def server_stack() -> str:
    """What uvicorn, Streamlit's server, runs on in this environment ("auto", as Streamlit
    leaves it): "httptools/uvloop" when both are installed (``streamlit[performance]``),
    else its pure-Python fallbacks, e.g. "h11/asyncio"."""
    import uvicorn

    async def asgi_app(scope, receive, send):  # never called: only the choice is read
        raise AssertionError(scope)

    config = uvicorn.Config(asgi_app, loop="auto", http="auto")
    config.load()
    http = {"HttpToolsProtocol": "httptools", "H11Protocol": "h11"}.get(
        config.http_protocol_class.__name__, config.http_protocol_class.__name__)
    return f"{http}/{config.get_loop_factory().__module__.split('.')[0]}"


class StreamlitServer:
    """``streamlit run <script>`` on a free 127.0.0.1 port, in its own process group.

    As a context manager it waits for ``/_stcore/health`` and stops the whole group on exit.
    """

    def __init__(self, env: dict, workdir: str | Path, script: Path = APP,
                 port: int | None = None, cwd: Path = ROOT) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(workdir) / f"streamlit-{self.port}.log"
        with open(self.log_path, "w") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless",
                 "true", "--server.port", str(self.port), "--server.address", "127.0.0.1",
                 "--browser.gatherUsageStats", "false"],
                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.perf_counter()
        self.healthy_s: float | None = None  # seconds from the start to the first answer

    def wait_healthy(self, timeout: float = 60.0) -> float:
        """Seconds from the process's start until ``/_stcore/health`` answered (also kept
        as ``healthy_s``); RuntimeError (with the log's tail) if the server exits or does
        not answer within ``timeout`` seconds of this call."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        self.healthy_s = time.perf_counter() - self.started
                        return self.healthy_s
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def __enter__(self) -> StreamlitServer:
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# pytest fixtures and waits of the browser tests (import them into the test module)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app.py`` on the built-in market (``demo_env``), one per test module;
    at teardown nothing of its process group may be left."""
    workdir = tmp_path_factory.mktemp("browser")
    with StreamlitServer(demo_env(workdir), workdir) as streamlit:
        yield streamlit
    with pytest.raises(ProcessLookupError):  # nothing of the group is left
        os.killpg(streamlit.process.pid, 0)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright  # the browser tests skip without it

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def wait_for(page, shot: Path, what: str, js: str, arg=None, timeout_s: float = 30):
    """``page.wait_for_function(js, arg)``; on timeout fail naming ``what``, with a
    screenshot at ``shot`` and the start of the page's text."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(js, arg=arg, timeout=timeout_s * 1000, polling=100)
    except PlaywrightTimeout:
        page.screenshot(path=str(shot))
        pytest.fail(f"{what}: not within {timeout_s} s (screenshot {shot}); page text:\n"
                    f"{page.inner_text('body')[:1500]}")
