"""Small helpers shared by the tests that run threads, servers and subprocesses."""

import contextlib
import os
import socket
import sqlite3
import time


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def count_rows(db_path, table: str = "ticks") -> int:
    """Rows in ``table`` of the SQLite file ``db_path`` (the connection is closed after)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def count_rows_or_zero(db_path) -> int:
    """Rows in ``ticks``, 0 while the file or its schema does not exist yet."""
    try:
        return count_rows(db_path) if os.path.exists(db_path) else 0
    except sqlite3.OperationalError:
        return 0
