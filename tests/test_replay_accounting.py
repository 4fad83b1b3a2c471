"""Replay accounting (issue 15, point 9): every row of a replayed file lands in exactly one
counter of the collector's summary, zero-price placeholder rows included.

The fixture is the first 4,000 rows of the real burst recording
(futures_2025-12-16T1341Z_burst_btc_eth.ndjson), which hold 7 of its 32 placeholders. The
whole file replayed with the default stream reported ``received 51,281, filtered 0`` for
51,313 rows: the placeholders were in no counter.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "tests" / "data" / "replay_futures_2025-12-16T1341Z_burst_head4000.ndjson"
COUNTERS = ("stored", "duplicates", "rejected", "filtered", "spilled", "dropped")


def file_rows() -> tuple[int, int, dict[str, int]]:
    """(rows, placeholders, market rows per symbol), counted with json from the file."""
    rows = [json.loads(line) for line in RECORDING.read_text().splitlines() if line.strip()]
    placeholders = [r for r in rows if r["price"] == 0]
    per_symbol: dict[str, int] = {}
    for r in rows:
        if r["price"] != 0:
            per_symbol[r["symbol"]] = per_symbol.get(r["symbol"], 0) + 1
    return len(rows), len(placeholders), per_symbol


@pytest.mark.parametrize("stream", [None, "aggTrade", "trade"])
def test_replay_summary_accounts_for_every_row_of_the_file(tmp_path, stream):
    n_rows, n_placeholders, per_symbol = file_rows()
    assert (n_rows, n_placeholders) == (4000, 7)
    db = tmp_path / "replay.db"
    command = [sys.executable, str(ROOT / "collector.py"), "--feed", "replay",
               "--replay-file", str(RECORDING), "--replay-speed", "0", "--db", str(db),
               "--duration", "150", "--no-alerts"]
    if stream is not None:  # None: the default stream (aggTrade on the futures dialect)
        command += ["--stream", stream]
    result = subprocess.run(command, capture_output=True, text=True, timeout=200,
                            cwd=tmp_path, env={**os.environ, "CRYPTO_BACKFILL": "0",
                                               "CRYPTO_BACKFILL_KLINES": "0"})
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    assert summary["received"] == n_rows, (summary, result.stderr[-3000:])
    assert summary["filtered"] == n_placeholders
    assert summary["received"] == sum(summary.get(key, 0) for key in COUNTERS)
    assert summary["stored"] == n_rows - n_placeholders and summary["duplicates"] == 0
    assert summary["gaps"] == 0  # a placeholder consumes no id the trades lack
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT symbol, count(*) FROM ticks GROUP BY symbol"))
        assert conn.execute("SELECT count(*) FROM ticks WHERE price <= 0").fetchone()[0] == 0
    assert stored == per_symbol
