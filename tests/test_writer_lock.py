"""The collector CLI's early look at the writer lock (writer_lock.locked_database_message).

The lock itself (one writer per file, released with the process, the message naming the
holder) is tested end to end in test_collector_faults.py; these tests pin what the early look
adds: it refuses before the data stack is imported, and it never takes or leaves anything.
"""

from __future__ import annotations

import os
import subprocess
import sys

import database
import writer_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_held_lock_is_reported_with_the_file_and_the_holder(tmp_path):
    db = str(tmp_path / "held.db")
    lock = database.WriterLock.acquire(db)
    try:
        for argv in (["--feed", "demo", "--db", db], [f"--db={db}"]):
            message = writer_lock.locked_database_message(argv, environ={})
            assert message is not None
            assert message == str(database.WriterLockError(db, f"pid {os.getpid()} on "
                                                           f"{os.uname().nodename}: "
                                                           + " ".join(sys.argv)[:300]))
        from_env = writer_lock.locked_database_message([], environ={"CRYPTO_DB_PATH": f" {db} "})
        assert from_env is not None and db in from_env
        # --db wins over the environment, and CRYPTO_DB_URL over CRYPTO_DB_PATH, as in
        # Settings.from_env: the database actually used is the one looked at
        other = str(tmp_path / "other.db")
        assert writer_lock.locked_database_message(["--db", other],
                                                   environ={"CRYPTO_DB_PATH": db}) is None
        url = "postgresql://user@127.0.0.1:1/db"
        assert writer_lock.locked_database_message(
            [], environ={"CRYPTO_DB_URL": url, "CRYPTO_DB_PATH": db}) is None
        assert writer_lock.locked_database_message([], environ={"CRYPTO_DB_URL": db}) is not None
    finally:
        lock.release()


def test_a_free_or_missing_lock_is_left_as_it_was(tmp_path):
    missing = tmp_path / "new" / "fresh.db"
    assert writer_lock.locked_database_message(["--db", str(missing)], environ={}) is None
    assert not (tmp_path / "new").exists()  # the look creates no directory and no lock file
    assert writer_lock.locked_database_message(["--feed", "demo"], environ={}) is None

    db = str(tmp_path / "free.db")
    database.WriterLock.acquire(db).release()  # leaves a lock file saying who held it last
    last_holder = open(db + ".writer.lock").read()
    assert writer_lock.locked_database_message(["--db", db], environ={}) is None
    assert open(db + ".writer.lock").read() == last_holder  # nothing written
    database.WriterLock.acquire(db).release()  # and the look did not keep the lock


def test_the_cli_refuses_a_locked_file_before_importing_pandas(tmp_path):
    db = str(tmp_path / "busy.db")
    lock = database.WriterLock.acquire(db)
    try:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", os.path.join(ROOT, "collector.py"),
             "--feed", "demo", "--db", db, "--no-alerts", "--duration", "30"],
            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    finally:
        lock.release()
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and db in error_lines[0] and "locked" in error_lines[0]
    assert f"pid {os.getpid()}" in error_lines[0]
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "writer_lock" in imported
    assert not {"pandas", "numpy", "market", "database"} & imported
