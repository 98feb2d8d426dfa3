"""`cdp diff`: the ranges between two points, against the model and an independent sector map."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType
from journal.changes import changed_between, merge
from tests.support.cli import cdp
from tests.support.history import ts_arg
from tests.export.conftest import SECTOR, build_journal, model_at

CHANGING = {RecordType.WRITE, RecordType.DISCARD, RecordType.WRITE_ZEROES, RecordType.RESYNC, RecordType.OVERFLOW}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), data=st.data())
def test_ranges_cover_every_change_and_only_recorded_ones(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                          data: st.DataObject) -> None:
    size = 256 * 1024
    built = build_journal(tmp_path_factory.mktemp("diff") / "j", random.Random(seed), size=size, records=40)
    with Journal.open(built.path, readonly=True) as journal:
        infos = {r.seq: r for r in journal.records()}
        times = {0: journal.info.created_ns} | {s: r.ts_ns for s, r in infos.items()}
        windows = journal.overflow_windows()
        for _ in range(4):
            a = data.draw(st.integers(0, built.last_seq))
            b = data.draw(st.integers(0, built.last_seq))
            changes = changed_between(journal, a, times[a], b, times[b])
            lo, hi = sorted((a, b))
            # independently: a map of the sectors the records between touched
            touched = bytearray(size // SECTOR)
            for s in range(lo + 1, hi + 1):
                r = infos[s]
                if r.type in CHANGING:
                    touched[r.offset // SECTOR:(r.offset + r.length) // SECTOR] = b"\1" * (r.length // SECTOR)
            for w in windows:
                if w.start_ts <= times[hi] and w.end_ts >= times[lo]:
                    touched[w.offset // SECTOR:(w.offset + w.length) // SECTOR] = b"\1" * (w.length // SECTOR)
            reported = bytearray(size // SECTOR)
            last_end = -1
            for offset, length in changes.ranges:
                assert offset > last_end and length > 0  # sorted, disjoint, not touching
                last_end = offset + length
                reported[offset // SECTOR:(offset + length) // SECTOR] = b"\1" * (length // SECTOR)
            assert reported == touched
            # sound: outside the ranges the two states are equal
            sa, sb = model_at(built, a), model_at(built, b)
            for i in range(0, size, SECTOR):
                if not reported[i // SECTOR]:
                    assert sa[i:i + SECTOR] == sb[i:i + SECTOR], (a, b, i)
            assert changes.bytes == sum(reported) * SECTOR


def test_merge() -> None:
    assert merge([]) == []
    assert merge([(10, 5), (0, 3), (3, 2), (12, 10), (40, 0), (50, 1)]) == [(0, 5), (10, 12), (50, 1)]


def test_cli_text_and_json(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 20) as journal:
        t = journal.info.created_ns
        journal.append([
            Record(1, t + 10, RecordType.MARK, data=b"a"),
            Record(2, t + 20, RecordType.WRITE, 0, 4096, 8192, b"x" * 8192),
            Record(3, t + 30, RecordType.DISCARD, 0, 12288, 4096),
            Record(4, t + 40, RecordType.WRITE, 0, 65536, 512, b"y" * 512),
            Record(5, t + 50, RecordType.MARK, data=b"b"),
            Record(6, t + 60, RecordType.WRITE, 0, 0, 512, b"z" * 512),
        ])
    run = cdp("diff", "--journal", tmp_path / "j", "--from", "mark:b", "--to", "mark:a", "--json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["ranges"] == [{"offset": 4096, "length": 12288}, {"offset": 65536, "length": 512}]
    assert doc["bytes"] == 12800 and doc["records"] == 3
    assert (doc["from"]["seq"], doc["to"]["seq"], doc["from"]["name"]) == (5, 1, "b")  # as given
    run = cdp("diff", "--journal", tmp_path / "j", "--from", "mark:a", "--to", ts_arg(t + 60))
    assert run.code == 0 and run.err == ""
    lines = run.out.splitlines()
    assert "seq 1 (mark 'a')" in lines[0] and "seq 6 (write)" in lines[0] and "3 range(s)" in lines[0]
    assert [line.split()[:2] for line in lines[1:]] == [["0", "512"], ["4096", "12288"], ["65536", "512"]]
    run = cdp("diff", "--journal", tmp_path / "j", "--from", "-1d", "--to", "mark:a")
    run.one_line_error(1, "before the journal began")
    cdp("diff", "--journal", tmp_path / "j", "--from", "mark:zz", "--to", "mark:a").one_line_error(2, "--from")
    cdp("diff", "--journal", tmp_path / "nope", "--from", "mark:a", "--to", "mark:a").one_line_error(1, "no journal")
    cdp("diff", "--journal", tmp_path / "j", "--from", "mark:a").one_line_error(2, "--to")
