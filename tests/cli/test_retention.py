"""`cdp retain`, `cdp compact`, `cdp mark --keep-forever` and retention in `cdp status`, end to end.

The journal is built through the library with time stamps hours in the
past (so a policy of hours has history to fold); then the installed `cdp`
sets the policy, compacts, lists and restores, as an admin would; and a
running drain service answers a `cdp compact` itself.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

from cdp.service import drain
from journal import Journal, Record, RecordType
from tests.journal.model import DeviceModel
from tests.support.cli import cdp
from tests.support.service import make_setup

SIZE = 256 * 1024
S = 1_000_000_000


def created_at(ts_ns: int) -> Any:
    """Journal.create as if run at ``ts_ns``: history in the past needs a journal older than it."""
    return mock.patch("journal.journal.time.time_ns", return_value=ts_ns)


def old_journal(tmp_path: Path, hours: int = 6) -> tuple[Path, DeviceModel, int]:
    """A journal whose records span ``hours`` hours ending now: a flush every minute, writes between."""
    rng = random.Random(4)
    base = rng.randbytes(SIZE)
    (tmp_path / "dev.img").write_bytes(base)
    model = DeviceModel(base)
    now = time.time_ns()
    start = now - hours * 3600 * S
    path = tmp_path / "j"
    default, Journal.segment_target = Journal.segment_target, 64 * 1024
    try:
        with created_at(start - S), Journal.create(path, device_bytes=SIZE, source=tmp_path / "dev.img") as j:
            recs = []
            seq = 1
            for minute in range(hours * 60):
                ts = start + minute * 60 * S + S
                for k in range(3):
                    length = rng.randrange(1, 9) * 512
                    recs.append(Record(seq, ts + k, RecordType.WRITE, 0, rng.randrange(0, 64) * 512, length,
                                       rng.randbytes(length)))
                    seq += 1
                recs.append(Record(seq, ts + 5, RecordType.FLUSH))
                seq += 1
                if minute % 10 == 9:  # a batch per ten minutes: many segments
                    j.append(recs)
                    for r in recs:
                        model.apply(r)
                    recs = []
    finally:
        Journal.segment_target = default
    return path, model, now


def test_retain_sets_shows_and_clears_the_policy(tmp_path: Path) -> None:
    path, _model, _now = old_journal(tmp_path, hours=1)
    j = ["--journal", str(path)]
    assert "retention none" in cdp("retain", *j).out
    assert "nothing to fold" in cdp("compact", *j).out
    r = cdp("retain", *j, "--keep", "7d", "--max-size", "200G", "--thin", "1h:all,1d:1m,30d:1h")
    assert r.code == 0 and "retention keep 7d, thin 1h:all,1d:1m,30d:1h, at most 200.0 GiB" in r.out
    doc = json.loads(cdp("retain", *j, "--json").out)
    assert doc["policy"] == {"keep": "7d", "keep_seconds": 604800.0, "max_size": "200.0 GiB",
                             "max_size_bytes": 200 << 30, "thin": "1h:all,1d:1m,30d:1h"}
    assert doc["active"] and doc["horizon"] is None
    assert "at most 200.0 GiB" in cdp("status", *j).out
    status = json.loads(cdp("status", *j, "--json").out)
    assert status["retention"]["policy"]["keep"] == "7d" and status["health"]["max_size"] == 200 << 30
    assert "retention none" in cdp("retain", *j, "--clear").out
    assert not json.loads(cdp("retain", *j, "--json").out)["active"]


def test_bad_policies_are_one_line_errors(tmp_path: Path) -> None:
    path, _model, _now = old_journal(tmp_path, hours=1)
    j = ["--journal", str(path)]
    cdp("retain", *j, "--keep", "7x").one_line_error(2, "--keep", "DURATION")
    cdp("retain", *j, "--max-size", "lots").one_line_error(2, "--max-size", "SIZE")
    cdp("retain", *j, "--thin", "1d:1m,1h:all").one_line_error(2, "--thin", "youngest to the oldest")
    cdp("retain", *j, "--thin", "1h").one_line_error(2, "--thin", "AGE:EVERY")
    cdp("retain", *j, "--thin", "1h:1m,1d:all").one_line_error(2, "--thin", "'all' can only follow 'all'")
    cdp("retain", *j, "--clear", "--keep", "1d").one_line_error(2, "--clear")
    cdp("mark", *j, "x", "--keep-forever", "--ring", "/dev/null").one_line_error(2, "--keep-forever")
    assert not json.loads(cdp("retain", *j, "--json").out)["active"]  # nothing was stored


def test_compact_folds_thins_and_says_what_a_thinned_time_restores(tmp_path: Path) -> None:
    path, model, now = old_journal(tmp_path, hours=6)
    j = ["--journal", str(path)]
    pinned = cdp("mark", *j, "golden", "--at", "-5h30m", "--keep-forever", "--json")
    assert pinned.code == 0, pinned.err
    pin = json.loads(pinned.out)
    assert cdp("retain", *j, "--keep", "3h", "--thin", "30m:all,3h:15m").code == 0
    before = sum(p.stat().st_size for p in (path / "segments").glob("*.seg"))
    r = cdp("compact", *j, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["compacted"] and doc["segments_deleted"] > 0 and doc["bytes_freed"] > 0
    after = sum(p.stat().st_size for p in (path / "segments").glob("*.seg"))
    assert after < before * 0.75
    points = json.loads(cdp("points", *j, "--json").out)
    listed = points if isinstance(points, list) else points["points"]
    times = sorted(p["ts_ns"] for p in listed)
    assert pin["ts_ns"] in times  # pinned: kept though older than --keep
    assert len({p["seq"] for p in listed if p["ts_ns"] < now - 3 * 3600 * S}) <= 2  # the pin, the new base
    # every 15 minutes between 3 h and 30 min ago, every point of the last 30 minutes
    assert len([t for t in times if now - 3 * 3600 * S <= t < now - 1800 * S]) <= 11
    assert len([t for t in times if t >= now - 1800 * S]) >= 29
    for seq in sorted({p["seq"] for p in listed}):
        out = tmp_path / f"p{seq}.img"
        assert cdp("restore", *j, "--seq", str(seq), "--to", str(out)).code == 0
        assert out.read_bytes() == model.states[seq]
    # a time between two kept points: the newest kept point before it, and a note saying so
    thinned_kept = [t for t in times if now - 3 * 3600 * S <= t < now - 1800 * S]
    at = thinned_kept[len(thinned_kept) // 2] - 30 * S  # half a minute before a kept point: a folded minute
    r = cdp("restore", *j, "--at", f"@{at // S}.{at % S:09d}", "--to", str(tmp_path / "thin.img"), "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert any("thinned by retention" in n for n in result["notes"]), result
    assert (tmp_path / "thin.img").read_bytes() == model.states[result["seq"]]
    # between the pinned mark and the horizon: the pin answers; before the pin: nothing does
    r = cdp("restore", *j, "--at", "-4h", "--to", str(tmp_path / "pin.img"), "--json")
    assert json.loads(r.out)["seq"] == pin["seq"] and (tmp_path / "pin.img").read_bytes() == model.states[pin["seq"]]
    cdp("restore", *j, "--at", "-5h45m", "--to", str(tmp_path / "gone.img")).one_line_error(1, "retention horizon")
    assert cdp("compact", *j).code == 0  # seconds later: at most the few points that aged since
    status = cdp("status", *j).out
    assert "horizon   oldest point" in status and "compact   last finished" in status
    assert cdp("verify", *j).code == 0


def test_the_running_service_compacts_when_asked(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    shutil.rmtree(s.journal)
    start = time.time_ns() - 6 * 3600 * S
    with created_at(start - S):
        Journal.create(s.journal, device_bytes=s.size, source=s.image).close()
    with Journal.open(s.journal) as journal:
        # six hours of history, in the past, for the service's journal
        rng = random.Random(1)
        recs = []
        for i in range(1, 721):
            recs.append(Record(i, start + i * 30 * S, RecordType.WRITE, 0, rng.randrange(0, 32) * 4096, 4096,
                               rng.randbytes(4096)) if i % 4 else Record(i, start + i * 30 * S, RecordType.FLUSH))
        journal.append(recs)
    stop = threading.Event()
    drainer = threading.Thread(target=drain, args=(s.journal, s.ring),
                               kwargs={"stop": stop, "handle_signals": False})
    drainer.start()
    try:
        j = ["--journal", str(s.journal)]
        assert cdp("retain", *j, "--keep", "1h").code == 0
        r = cdp("compact", *j, "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert doc["compacted"] and doc["horizon_ts_ns"] >= time.time_ns() - 3600 * S - 60 * S
        status = json.loads(cdp("status", *j, "--json").out)
        assert status["retention"]["horizon"]["ts_ns"] == doc["horizon_ts_ns"]
    finally:
        stop.set()
        drainer.join()


def test_compact_beside_a_holder_that_never_answers_is_one_line_within_seconds(tmp_path: Path) -> None:
    """A process holds the journal but runs no retention (an older 'cdp run', a reindex): say so at once."""
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    j = ["--journal", str(s.journal)]
    assert cdp("retain", *j, "--keep", "1h").code == 0
    with Journal.open(s.journal):  # the writer lock, and nobody looking for requests
        t0 = time.monotonic()
        r = cdp("compact", *j)
        took = time.monotonic() - t0
    assert r.code != 0 and len(r.err.strip().splitlines()) == 1, r.err
    assert "did not take the request up" in r.err
    assert took < 30
