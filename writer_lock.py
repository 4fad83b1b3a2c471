"""One writing process per SQLite file: the writer lock, and the collector CLI's early look at it.

Standard library only, so that ``python collector.py`` can refuse a database another process
writes before it imports pandas, numpy and the built-in market: those imports take 1-2 s on an
idle machine and over 10 s when the cores are busy, and a second collector started by mistake
should hear "locked" at once. ``database`` re-exports ``WriterLock`` and ``WriterLockError``;
they live here only to be importable without the data stack.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

# The lock's log lines keep the logger name they had while the lock lived in database.py.
log = logging.getLogger("database")


class WriterLockError(RuntimeError):
    """Another process writes this SQLite file; the message names the file and the process."""

    def __init__(self, db_path: str, holder: str) -> None:
        self.db_path = db_path
        self.holder = holder
        super().__init__(f"database {db_path} is locked: it is being written by another "
                         f"process ({holder}); one writer per file - stop that process, or "
                         "use another --db / CRYPTO_DB_PATH (viewing it read-only is fine)")


class WriterLock:
    """One writing process per SQLite file: an OS lock on ``<db>.writer.lock``.

    SQLite itself lets two processes write one file in turns, which silently interleaves two
    collectors' ticks (two simulations in one ``demo.db``: sawtooth candles). The collector
    therefore holds ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a lock file next to the database for
    as long as it writes. The kernel releases it when the process ends in any way (kill -9
    included), so a crash never leaves a stale lock; the file itself stays and only says
    who held it last (pid, host, command, since). Readers take no lock.

    ``flock`` locks belong to an open file, so a second collector in the *same* process is
    refused too; the page shares one collector per process and never gets here twice.
    """

    def __init__(self, db_path: str) -> None:
        self.db_path = os.fspath(db_path)
        self.path = self.db_path + ".writer.lock"
        self._fd: int | None = None

    @classmethod
    def acquire(cls, db_path: str) -> WriterLock:
        """Take the lock or raise ``WriterLockError`` naming the process that holds it."""
        import fcntl  # POSIX only; imported here so that readers never need it

        lock = cls(db_path)
        os.makedirs(os.path.dirname(os.path.abspath(lock.path)), exist_ok=True)
        fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            raise WriterLockError(lock.db_path, _describe_holder(holder)) from None
        lock._fd = fd
        lock._write_holder()
        return lock

    def _write_holder(self) -> None:
        import socket

        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "command": " ".join(sys.argv)[:300], "since_ms": int(time.time() * 1000)}
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(holder).encode(), 0)
        except OSError as exc:  # a full disk: the lock holds, only the description is missing
            log.warning("could not describe the writer in %s: %s", self.path, exc)

    def release(self) -> None:
        """Release the lock (the file stays: removing it would race with a new holder)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None


def _describe_holder(text: str) -> str:
    """'pid 123 on host x: python collector.py ...' from the lock file's JSON."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}: {holder['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that did not describe itself"


def locked_database_message(argv: Sequence[str],
                            environ: Mapping[str, str] | None = None) -> str | None:
    """The collector CLI's first step: the error when its database is written by another process.

    Parameters
    ----------
    argv : sequence of str
        The CLI's arguments (``sys.argv[1:]``); only ``--db PATH`` / ``--db=PATH`` is read,
        everything else is left to the real argument parser.
    environ : mapping, optional
        Environment (default ``os.environ``) when there is no ``--db``: ``CRYPTO_DB_URL``,
        else ``CRYPTO_DB_PATH`` (config.Settings' order: the URL wins when both are set).

    Returns
    -------
    str or None
        ``WriterLockError``'s message (the file and the holding process) when another process
        holds the lock, else None (free, no explicit database, or no lock file yet).

    Notes
    -----
    It only looks: the lock is held for real by ``Collector.start`` as before, so a start that
    races another one is still refused there (just later). A free lock is released at once,
    nothing is created (no lock file, no directory) and nothing is written into the lock file.
    The per-feed default database (``data/<feed>.db``) needs the full settings and is checked
    by ``Collector.start`` only; a ``postgresql://`` URL has no lock file and passes.
    """
    import fcntl

    environ = os.environ if environ is None else environ
    db_path = _db_argument(argv)
    for variable in ("CRYPTO_DB_URL", "CRYPTO_DB_PATH"):
        if db_path is None:
            db_path = (environ.get(variable) or "").strip() or None
    if not db_path:
        return None
    try:
        fd = os.open(db_path + ".writer.lock", os.O_RDWR)
    except OSError:  # no lock file: nobody holds it (or not a local path at all)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return str(WriterLockError(db_path, _describe_holder(holder)))
    finally:
        os.close(fd)  # also releases the lock if this look took it
    return None


# The collector CLI's "could not start" code (collector.EXIT_CANNOT_START).
EXIT_LOCKED = 2


def exit_if_locked(argv: Sequence[str]) -> None:
    """Print ``error: <message>`` to stderr and exit ``EXIT_LOCKED`` when
    ``locked_database_message(argv)`` finds the database locked; else return."""
    message = locked_database_message(argv)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_LOCKED)


def _db_argument(argv: Sequence[str]) -> str | None:
    """The value of the last ``--db`` in ``argv`` (argparse keeps the last one too)."""
    value = None
    for position, word in enumerate(argv):
        if word == "--":
            break
        if word == "--db" and position + 1 < len(argv):
            value = argv[position + 1]
        elif word.startswith("--db="):
            value = word.removeprefix("--db=")
    return value
