"""`cdp reindex` speed: a journal of 10^6 records of 4 KiB rebuilt from its segments (target < 60 s).

The index is rebuilt through the same batch code that built it at append
time, so the baseline in the same run is that append: the ratio says what
rebuilding costs against journaling the same records once (the append also
wrote and synced the payloads, which a reindex only reads), and the time
for 10^6 records is the figure against the target.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from benchmarks.conftest import figure, scaled
from journal import Journal, Record, RecordType
from journal.reindex import reindex


def test_reindex_a_million_records(tmp_path: Path) -> None:
    count = scaled(1_000_000, 2_000)
    device = 1 << 30
    rng = random.Random(11)
    payload = rng.randbytes(4096)
    path = tmp_path / "j"
    started = time.perf_counter()
    with Journal.create(path, device_bytes=device) as j:
        ts0 = j.info.created_ns
        for start in range(1, count + 1, 4096):
            j.append([Record(s, ts0 + s, RecordType.WRITE, 0, rng.randrange(device // 4096) * 4096, 4096, payload)
                      for s in range(start, min(start + 4096, count + 1))])
    appended = time.perf_counter() - started
    shutil.rmtree(path / "index")
    started = time.perf_counter()
    result = reindex(path)
    took = time.perf_counter() - started
    assert result.records == count and result.last_seq == count
    with Journal.open(path, readonly=True) as j:
        assert j.read(0, 4096) in (payload, bytes(4096))
    per_million = took * 1_000_000 / count
    figure(f"reindex {count:,} records of 4 KiB: {took:.1f} s ({count / took:,.0f} records/s; "
           f"{per_million:.0f} s per 10^6 records, target < 60 s); appending them took {appended:.1f} s, "
           f"{took / appended:.2f}x of that")
