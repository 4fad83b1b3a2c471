"""Fuzz test of the upload parsers: malformed input gives a result or a message, never an
exception (issue 12).

A seeded generator makes 250 malformed variants of small real fixtures (OHLC CSV, tick
CSV, NDJSON), the way broken or hostile uploads look: truncated and bit-flipped bytes,
other encodings cut at odd places, lone surrogates, NaN/Infinity/1e400, deep nesting, huge
fields, NUL bytes, stray quotes and delimiters, formula cells. Every input goes through
both parsers (about 5 s of CPU). The seed is fixed, so a failure names a reproducible case
(its index and mutation).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from uploads import OhlcUpload, TickUpload, parse_ohlc_csv, parse_tick_file

DATA = Path(__file__).parent / "data"
N_CASES = 250
SEED = 20261206


def first_lines(name: str, n: int) -> bytes:
    with open(DATA / name, "rb") as handle:
        return b"".join(handle.readline() for _ in range(n))


SAMPLES = [
    first_lines("upload_spot_1m_2025-12-15_btc_eth.csv", 30),
    first_lines("upload_spot_2025-12-16T1914Z_btc_eth_first3000.csv", 30),
    first_lines("upload_futures_2025-12-15T0843Z_btc_eth_first2000.ndjson", 30),
    first_lines("upload_spot_bars_1s_1m_5m_IST_naive_first3000.csv", 30),
]
HOSTILE_TOKENS = [
    b"Infinity", b"-Infinity", b"NaN", b"1e400", b"-1e400", b"\\ud800", b"\\udfff", b"\x00",
    b"\r", b'"', b'""', b",,,,,,", b";", b"\t", b"\xff\xfe", b"\xef\xbb\xbf", b"\xed\xa0\x80",
    b"[" * 5000, b"{" * 5000, b'{"a":' * 3000, b"9" * 5000, b"=cmd|' /C calc'!A0", b"+1+1",
    b"-1e308", b"1e-400", b"0x1F", b"true", b"null", b"[]", b"{}", b'{"symbol":null}',
    b"\n\n\n", b"\xc3\x28", b"\xf0\x28\x8c\xbc", b"2025-02-30T25:61:61Z", b"-0", b"1" * 30,
]
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]


def mutate(rng: random.Random, raw: bytes) -> tuple[str, bytes]:
    """One malformed variant of ``raw`` and the name of the mutation."""
    kind = rng.choice(
        ["truncate", "flip", "insert", "replace_line", "reencode", "reencode_cut", "junk",
         "huge_field", "repeat_line", "shuffle_lines", "strip_header", "several"]
    )
    data = bytearray(raw)
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(len(data) + 1)])
    if kind == "flip":
        for _ in range(rng.randint(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return kind, bytes(data)
    if kind == "insert":
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(data) + 1)
            data[at:at] = rng.choice(HOSTILE_TOKENS)
        return kind, bytes(data)
    lines = raw.split(b"\n")
    if kind == "replace_line":
        lines[rng.randrange(len(lines))] = rng.choice(HOSTILE_TOKENS)
        return kind, b"\n".join(lines)
    if kind == "reencode":
        return kind, raw.decode("utf-8", "replace").encode(rng.choice(ENCODINGS))
    if kind == "reencode_cut":
        encoded = raw.decode("utf-8", "replace").encode(rng.choice(ENCODINGS))
        cut = encoded[: rng.randrange(1, len(encoded))]
        return kind, cut + rng.choice([b"", b"\x00", b"\x00\xd8", b"\xd8\x00", b"\x00\xdc"])
    if kind == "junk":
        return kind, bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    if kind == "huge_field":
        at = rng.randrange(1, len(lines))
        lines[at] = lines[at] + b"," + b"x" * rng.choice([1000, 140_000])
        return kind, b"\n".join(lines)
    if kind == "repeat_line":
        at = rng.randrange(len(lines))
        lines[at:at] = [lines[at]] * rng.randint(1, 50)
        return kind, b"\n".join(lines)
    if kind == "shuffle_lines":
        rng.shuffle(lines)
        return kind, b"\n".join(lines)
    if kind == "strip_header":
        return kind, b"\n".join(lines[1:])
    first_kind, first = mutate(rng, raw)
    second_kind, second = mutate(rng, first or raw)
    return f"{first_kind}+{second_kind}", second


def cases() -> list[tuple[int, str, bytes]]:
    rng = random.Random(SEED)
    out = []
    for index in range(N_CASES):
        name, data = mutate(rng, rng.choice(SAMPLES))
        out.append((index, name, data))
    return out


def check(result, kind: type) -> None:
    assert isinstance(result, kind)
    if result.ok:
        assert result.error is None and result.n_accepted > 0
    else:
        assert isinstance(result.error, str) and result.error
        assert not result.error.startswith("internal error"), result.error


def test_malformed_uploads_give_a_result_or_a_message_never_an_exception():
    seen_kinds = set()
    outcomes = {"ok": 0, "message": 0}
    for index, name, data in cases():
        seen_kinds.add("several" if "+" in name else name)
        try:
            bars = parse_ohlc_csv(data, filename=f"case{index}.csv")
            ticks = parse_tick_file(data, filename=f"case{index}.ndjson")
        except Exception as exc:  # the assertion names the reproducible case
            pytest.fail(f"case {index} ({name}) raised {type(exc).__name__}: {exc}")
        check(bars, OhlcUpload)
        check(ticks, TickUpload)
        # Every data row is in exactly one counter whenever rows were looked at one by one.
        if bars.n_accepted or bars.n_rejected:
            assert bars.n_rows == bars.n_accepted + bars.n_rejected + bars.n_skipped, index
            assert len(bars.bars) == bars.n_accepted and len(bars.rejected) == bars.n_rejected
        if ticks.n_accepted or ticks.n_rejected:
            total = ticks.n_accepted + ticks.n_rejected + ticks.n_filtered_zero
            assert ticks.n_rows == total, index
            assert len(ticks.trades) == ticks.n_accepted
        for result in (bars, ticks):
            outcomes["ok" if result.ok else "message"] += 1
    # The corpus exercises every mutation and both outcomes (a fuzz that only ever produces
    # unreadable junk would prove nothing about partly valid files).
    assert len(seen_kinds) == 12
    assert outcomes["ok"] > 50 and outcomes["message"] > 50


def kept_cells(table) -> list[list[str]]:
    """Every row of a reader's table as its list of text cells (all columns kept as text)."""
    columns = [table.columns[i].astype(object).tolist() for i in range(len(table.header))]
    return [list(row) for row in zip(*columns)] if columns else []


def test_fast_and_exact_csv_readers_agree_on_the_corpus():
    """Files without quotes take the pyarrow reader; it must split them exactly like the
    csv-module reader (same header, cells, line numbers, ragged rows and blank count)."""
    from uploads import _read_quoted_csv, _read_unquoted_csv, _to_utf8

    compared = 0
    for index, name, data in cases():
        try:
            raw, _ = _to_utf8(data)
        except Exception:  # undecodable: neither reader sees it
            continue
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b'"' in raw or not raw.strip():
            continue
        for delimiter in (",", ";"):
            try:
                exact = _read_quoted_csv(raw, delimiter)
            except Exception as exc:  # e.g. "the file is empty": the fast one must agree
                try:  # ... by raising the same, or by handing the file to the exact reader
                    assert _read_unquoted_csv(raw, delimiter) is None, (index, name)
                except type(exc):
                    pass
                continue
            fast = _read_unquoted_csv(raw, delimiter)
            assert fast is not None, (index, name)
            assert fast.header == exact.header, (index, name)
            assert fast.lines.tolist() == exact.lines.tolist(), (index, name)
            assert fast.n_blank == exact.n_blank, (index, name)
            assert [r[:2] for r in fast.ragged] == [r[:2] for r in exact.ragged], (index, name)
            cells = kept_cells(exact)
            assert kept_cells(fast) == cells, (index, name)
            # The fast reader reads rows again from the bytes for messages: the same cells.
            everywhere = np.arange(len(fast.lines))
            assert fast.row_texts(everywhere) == exact.row_texts(everywhere) == cells, (
                index, name)
            compared += 1
    assert compared > 100


def test_the_fast_readers_kept_columns_hold_the_cells_the_exact_reader_reads():
    """The fast reader keeps only the validated columns, numbers as float64 and symbols as
    categories, and reads a row's cells again from the bytes: each kept column must hold
    what the csv-module reader reads in that column (text, number or category alike)."""
    import pyarrow as pa

    from uploads import (_arrow_text_to_float, _cell_texts, _NumberCells, _ohlc_kinds,
                         _read_quoted_csv, _read_unquoted_csv, _tick_kinds, _to_utf8)

    compared = {"number": 0, "category": 0, "text": 0}
    for index, name, data in cases():
        try:
            raw, _ = _to_utf8(data)
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if b'"' in raw or not raw.strip():
                continue
            exact = _read_quoted_csv(raw, ",")
        except Exception:  # unreadable: the previous tests cover what happens then
            continue
        for kinds_of in (_ohlc_kinds, _tick_kinds):
            fast = _read_unquoted_csv(raw, ",", kinds_of)
            if fast is None:
                continue
            assert fast.lines.tolist() == exact.lines.tolist(), (index, name)
            everywhere = np.arange(len(fast.lines))
            for position, column in fast.columns.items():
                cells = exact.columns[position].astype(object).tolist()
                if isinstance(column, _NumberCells):
                    kind = "number"
                    expected = _arrow_text_to_float(pa.array(exact.columns[position].array))
                    np.testing.assert_array_equal(column.values, expected)
                    assert column.empty.tolist() == [c == "" for c in cells], (index, name)
                else:
                    kind = "category" if column.dtype == "category" else "text"
                assert _cell_texts(column, everywhere) == cells, (index, name, position)
                compared[kind] += 1
    assert min(compared.values()) > 50, compared


def parse_fields(result) -> dict:
    """Every field of a parse result, its frames as lists of rows (NaN as None), so two
    results compare with ==."""
    frames = {k: v for k, v in vars(result).items() if isinstance(v, pd.DataFrame)}
    others = {k: v for k, v in vars(result).items() if k not in frames}
    return {**others, **{k: v.astype(object).where(v.notna(), None).values.tolist()
                         for k, v in frames.items()}}


def test_fast_and_exact_readers_give_the_same_parse_results(monkeypatch):
    """End to end: every corpus file parses to the same bars, trades, rejected rows,
    counts and warnings whether the fast reader (typed columns) or the exact reader (text
    cells) split it."""
    import uploads

    fast_reader = uploads._read_unquoted_csv
    fast_tables = []

    def counted(*args):
        table = fast_reader(*args)
        fast_tables.append(table is not None)
        return table

    monkeypatch.setattr(uploads, "_read_unquoted_csv", counted)
    corpus = cases()[:100]  # a fifth of the fuzz test's time
    results = [(parse_fields(parse_ohlc_csv(data)), parse_fields(parse_tick_file(data)))
               for _, _, data in corpus]
    assert sum(fast_tables) > 60  # the fast reader really split most of the corpus
    monkeypatch.setattr(uploads, "_read_unquoted_csv", lambda *args: None)
    for (index, name, data), (bars, ticks) in zip(corpus, results):
        assert parse_fields(parse_ohlc_csv(data)) == bars, (index, name)
        assert parse_fields(parse_tick_file(data)) == ticks, (index, name)


def test_fast_reader_block_by_block_gives_the_same_results_as_the_exact_reader(monkeypatch):
    """Files of many 2 KB blocks (the real reader uses 1 MB ones): a symbol first seen in a
    late block, number columns that turn to text halfway, blank lines, trailing delimiters,
    spaces and ragged rows must all come out as the exact reader's results."""
    import uploads

    rng = random.Random(SEED)
    ohlc, ticks = ["time,symbol,open,high,low,close,volume,note"], ["ts,symbol,price,size,side"]
    for i in range(3000):
        symbol = rng.choice(["btcusdt", "ETHUSDT"] + (["solusdt", " xrpusdt "] if i > 2000 else []))
        price = f"{100 + rng.random():.2f}"
        bad = rng.random() < 0.02
        cells = [str(1_765_839_780 + 60 * i), symbol, price, "abc" if bad else "101",
                 "99", price, rng.choice(["1.5", "", " 2 "]), "x"]
        row = ",".join(cells)
        ohlc.append(rng.choice([row, row, row, row + ",,", "", ",,,", row + ",1"]))
        tick = [str(1_765_839_780_000 + 7 * i), symbol, price if not bad else "",
                rng.choice(["0.5", "1e-3", "-1"]), rng.choice(["true", "0", "maybe", ""])]
        ticks.append(rng.choice([",".join(tick)] * 5 + [""]))
    files = ["\n".join(ohlc).encode(), "\r\n".join(ticks).encode()]

    monkeypatch.setattr(uploads, "_CSV_BLOCK_BYTES", 2048)
    for data, kinds_of in zip(files, (uploads._ohlc_kinds, uploads._tick_kinds)):
        table = uploads._read_csv_table(data, kinds_of)
        assert table.columns[1].dtype == "category"  # only the fast reader encodes symbols
    fast = [parse_fields(parse_ohlc_csv(files[0])), parse_fields(parse_tick_file(files[1]))]
    assert fast[0]["n_accepted"] > 1000 and fast[0]["n_rejected"] > 20
    assert fast[1]["n_accepted"] > 500 and fast[1]["n_rejected"] > 500
    monkeypatch.setattr(uploads, "_read_unquoted_csv", lambda *args: None)
    assert parse_fields(parse_ohlc_csv(files[0])) == fast[0]
    assert parse_fields(parse_tick_file(files[1])) == fast[1]
