"""The spill journal: trades the database could not take, kept on disk until it can.

When the collector's writer cannot commit a batch (disk full, the file locked beyond the busy
timeout, an I/O error), the batch goes here instead of being dropped. As soon as the database
accepts writes again the writer replays the journal, in the order it was written, through the
same de-duplicating ``database.TickWriter`` path, and empties it. A journal left behind by a
stopped or killed collector is replayed by the next collector on the same database.

File format: one JSON array per line (UTF-8, ``\\n``-terminated), appended and never edited
in place::

    ["BTCUSDT", 6613467015, 1765788195120, 89761.3, 0.004, 1, 1765788195123]   # a trade
    ["BTCUSDT", 6613467016]                                                      # a seen id

A trade row is the collector's trade tuple ``(symbol, trade_id, ts, price, qty,
is_buyer_maker, received_ms)``; a two-element row is an id consumed by a frame that is not
stored (a futures ``"X":"NA"`` placeholder), kept so that the gap tracking stays right.

Guarantees
    * A batch is appended whole or not at all: a failed write or ``fsync`` truncates the file
      back to where the batch began, and the caller counts the batch as dropped.
    * Replay is at-least-once per row and exactly-once in the database: the file is truncated
      only after every row in it was committed; a crash in between replays some rows again,
      which the database's unique ``(symbol, trade_id)`` absorbs as duplicates.
    * A line cut short by a crash (no final newline) is discarded when the journal is opened.

The journal belongs to one thread (the collector's writer): no locks. Its name is
``<database file name>.spill`` in the chosen directory (default: next to the database).
"""

from __future__ import annotations

import logging
import os

import orjson

import database_postgres  # standard library only: is_url and the journal name of a URL

log = logging.getLogger("collector.spill")

READ_BLOCK_BYTES = 1 << 20


def journal_path(db_path: str, spill_dir: str | None = None) -> str:
    """Where the journal of ``db_path`` lives: ``<spill_dir or db dir>/<db name>.spill``.

    >>> journal_path("data/demo.db")
    'data/demo.db.spill'
    >>> journal_path("data/demo.db", "/var/spill")
    '/var/spill/demo.db.spill'

    A PostgreSQL URL has no directory: its journal is local, under ``data/`` by default.

    >>> journal_path("postgresql://me@db.example:5432/ticks")
    'data/db.example_5432_ticks.spill'
    """
    if database_postgres.is_url(db_path):
        directory = spill_dir if spill_dir else "data"
        return os.path.join(directory, database_postgres.spill_name(db_path) + ".spill")
    directory = spill_dir if spill_dir else os.path.dirname(db_path)
    return os.path.join(directory, os.path.basename(db_path) + ".spill")


def encode(trades, seen_ids=()) -> bytes:
    """The journal lines of one batch (trade tuples, then seen ids)."""
    lines = [orjson.dumps(list(trade)) for trade in trades]
    lines.extend(orjson.dumps([symbol, trade_id]) for symbol, trade_id in seen_ids)
    return b"\n".join(lines) + b"\n" if lines else b""


class SpillJournal:
    """An append-only file of trades waiting for the database; see the module docstring.

    Attributes
    ----------
    path : str
    db_path : str
        The database this journal belongs to.
    pending_trades : int
        Trade rows in the journal not yet replayed: ``inherited_trades + new_trades``.
    inherited_trades : int
        Of those, rows an earlier process wrote (found when the journal was opened).
    new_trades : int
        Of those, rows this process appended (the collector's ``spilled``).
    corrupt_rows : int
        Unreadable complete lines found when opening (skipped at replay, logged).
    """

    def __init__(self, path: str, db_path: str) -> None:
        self.path = path
        self.db_path = db_path
        self._fd: int | None = None
        self._size = 0  # bytes in the file
        self._offset = 0  # bytes already replayed
        self._inherited_end = 0  # rows before this offset were written by an earlier process
        self.inherited_trades = 0
        self.new_trades = 0
        self.corrupt_rows = 0

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, db_path: str) -> SpillJournal:
        """Open (creating the directory if needed) and take stock of what an earlier run left.

        Raises ``OSError`` when the directory or the file cannot be created or read.
        """
        journal = cls(path, db_path)
        if os.path.exists(path):
            journal._take_stock()
        return journal

    def _take_stock(self) -> None:
        self._ensure_open()
        size = os.fstat(self._fd).st_size
        complete = 0
        trades = 0
        with open(self.path, "rb") as reader:
            while True:
                block = reader.read(READ_BLOCK_BYTES)
                if not block:
                    break
                cut = block.rfind(b"\n")
                if cut < 0:
                    if len(block) < READ_BLOCK_BYTES:
                        break
                    raise OSError(f"spill journal {self.path!r} has a line over "
                                  f"{READ_BLOCK_BYTES} bytes: not a journal")
                for line in block[:cut].split(b"\n"):
                    row = _parse_row(line)
                    if row is None:
                        self.corrupt_rows += 1
                    elif len(row) == 7:
                        trades += 1
                complete += cut + 1
                reader.seek(complete)
        if complete < size:
            log.warning("spill journal %s: discarding %d bytes of a line cut short by a crash",
                        self.path, size - complete)
            os.ftruncate(self._fd, complete)
        if self.corrupt_rows:
            log.error("spill journal %s: %d unreadable lines will be skipped", self.path,
                      self.corrupt_rows)
        self._size = self._inherited_end = complete
        self.inherited_trades = trades

    def _ensure_open(self) -> None:
        if self._fd is None:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size

    # -- writing --------------------------------------------------------------------------

    @property
    def pending_trades(self) -> int:
        return self.inherited_trades + self.new_trades

    @property
    def empty(self) -> bool:
        """True when nothing is waiting to be replayed."""
        return self._offset >= self._size

    def append(self, trades, seen_ids=()) -> None:
        """Append one batch durably (written and fsync'ed), or not at all.

        Raises ``OSError`` (disk full, I/O error, permission) after truncating the file back
        to its length before the call, so a failed batch leaves no partial rows behind.
        """
        data = encode(trades, seen_ids)
        if not data:
            return
        self._ensure_open()
        start = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError as exc:  # the rows may stay; a replay would store them, not lose
                log.error("spill journal %s could not be cut back after a failed write: %s",
                          self.path, exc)
            raise
        self._size = start + len(data)
        self.new_trades += len(trades)

    # -- replaying ------------------------------------------------------------------------

    def read(self, max_rows: int) -> tuple[list[tuple], list[tuple], bool, int]:
        """The next rows to replay, without consuming them.

        Returns ``(trades, seen_ids, inherited, end)``: up to ``max_rows`` rows, all written by
        an earlier process (``inherited``) or all by this one, and the offset after them;
        pass ``end`` to ``consumed`` once they are committed.
        """
        if self.empty:
            return [], [], False, self._offset
        inherited = self._offset < self._inherited_end
        stop = self._inherited_end if inherited else self._size
        trades: list[tuple] = []
        seen: list[tuple] = []
        position = self._offset
        with open(self.path, "rb") as reader:
            reader.seek(position)
            while position < stop and len(trades) + len(seen) < max_rows:
                block = reader.read(min(READ_BLOCK_BYTES, stop - position))
                if not block:
                    break
                cut = block.rfind(b"\n")
                if cut < 0:
                    break
                for line in block[:cut + 1].split(b"\n")[:-1]:
                    position += len(line) + 1
                    row = _parse_row(line)
                    if row is None:
                        continue
                    if len(row) == 7:
                        trades.append(tuple(row))
                    else:
                        seen.append(tuple(row))
                    if len(trades) + len(seen) >= max_rows:
                        break
                reader.seek(position)
        return trades, seen, inherited, position

    def consumed(self, end: int, trades: int, inherited: bool) -> None:
        """Mark rows up to ``end`` as committed; empty the file once everything is."""
        self._offset = end
        if inherited:
            self.inherited_trades -= trades
        else:
            self.new_trades -= trades
        if self._offset >= self._size:
            os.ftruncate(self._fd, 0)
            self._size = self._offset = self._inherited_end = 0
            self.inherited_trades = self.new_trades = 0

    def close(self) -> None:
        """Close the file; remove it when nothing is left in it."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._size == 0 or self.empty:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def _parse_row(line: bytes) -> list | None:
    """A journal line as a list, or None when it is not a well-formed row."""
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(row, list) or len(row) not in (2, 7):
        return None
    if not isinstance(row[0], str) or type(row[1]) is not int:
        return None
    if len(row) == 7 and not (type(row[2]) is int and isinstance(row[3], (int, float))
                              and isinstance(row[4], (int, float)) and type(row[5]) is int
                              and type(row[6]) is int):
        return None
    return row
