"""A scripted WebSocket server on 127.0.0.1 for collector tests.

Each test hands in an async ``script(connection, index)`` that decides what one connection
sees: Binance-shaped frames, garbage, silence, an abrupt TCP drop. ``refuse`` makes the
handshake fail with HTTP 503 for the first N connection attempts. The server runs its own
event loop in a daemon thread so the collector under test (threads, websocket-client) talks
to it over a real socket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from http import HTTPStatus

import orjson
from websockets.asyncio.server import serve


def trade_frame(symbol: str, trade_id: int, ts: int, price: float, qty: float = 0.01,
                *, buyer_is_maker: bool = False, status: str = "MARKET",
                combined: bool = True, event: str = "trade") -> str:
    """One futures trade (or aggTrade) frame exactly as Binance sends it: a text frame.

    (websockets sends ``bytes`` as a binary frame, which the collector rejects.)
    """
    if event == "trade":
        data = {"e": "trade", "E": ts + 3, "T": ts, "s": symbol, "t": trade_id,
                "p": f"{price:.2f}", "q": f"{qty:.3f}", "X": status, "m": buyer_is_maker}
    else:
        data = {"e": "aggTrade", "E": ts + 3, "s": symbol, "a": trade_id, "p": f"{price:.2f}",
                "q": f"{qty:.3f}", "f": trade_id * 2, "l": trade_id * 2 + 1, "T": ts,
                "m": buyer_is_maker}
    if combined:
        return orjson.dumps({"stream": f"{symbol.lower()}@{event}", "data": data}).decode()
    return orjson.dumps(data).decode()


class ScriptedServer:
    """Serve ``script`` to every connection; count attempts, handshakes and paths."""

    def __init__(self, script, *, refuse: int = 0, ping_interval: float | None = 20):
        self.script = script
        self.refuse = refuse
        self.ping_interval = ping_interval
        self.attempts: list[float] = []  # monotonic time of every handshake attempt
        self.paths: list[str] = []
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedServer:
        self._thread = threading.Thread(target=self._run, name="scripted-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("scripted server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", 0, process_request=self._process_request,
                         ping_interval=self.ping_interval, max_queue=None,
                         write_limit=2**20) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    def _process_request(self, connection, request):
        self.attempts.append(time.monotonic())
        self.paths.append(request.path)
        if len(self.attempts) <= self.refuse:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "refused by test\n")
        return None

    async def _handle(self, connection) -> None:
        index = self.connections
        self.connections += 1
        await self.script(connection, index)


async def hold_open(connection, seconds: float = 60.0) -> None:
    """Keep a connection open without sending data (pings still flow)."""
    try:
        await asyncio.wait_for(connection.wait_closed(), seconds)
    except asyncio.TimeoutError:
        pass


def drop_tcp(connection) -> None:
    """Cut the TCP connection without a close frame, like a 1006 abnormal closure."""
    connection.transport.abort()
