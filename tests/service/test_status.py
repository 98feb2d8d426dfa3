"""The service's status as `cdp status` and the TUI read it: the record, and the writer lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cdp.service import drain
from journal import Journal
from journal.status import RUNNING, STOPPED, ServiceStatus, read_service
from tests.support.service import make_setup
from tests.support.writer import holding_writer


def test_running_is_the_writer_lock_and_the_record_reads_back(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    stop = threading.Event()
    drainer = threading.Thread(target=drain, args=(s.journal, s.ring), kwargs={"stop": stop})
    with Journal.open(s.journal, readonly=True) as j:
        assert not read_service(j).is_running() and read_service(j).status is None
        drainer.start()
        deadline = time.monotonic() + 30
        while (service := read_service(j)).status is None:
            assert time.monotonic() < deadline, "the service never published its status"
            time.sleep(0.01)
        assert service.is_running() and service.writer_pid == os.getpid()
        record = j.status()
        assert service.status.state == RUNNING and service.status.ring == str(s.ring)
        assert ServiceStatus.from_record(record).as_record() == record  # every field the service writes
        stop.set()
        drainer.join(timeout=30)
        after = read_service(j)
    assert not after.is_running() and after.writer_pid is None
    assert after.status is not None and after.status.state == STOPPED


def test_a_record_that_says_running_does_not_make_a_service_run(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    with Journal.open(s.journal) as j:
        j.set_status(ServiceStatus(pid=os.getpid(), state=RUNNING, updated_ns=time.time_ns()).as_record())
    with Journal.open(s.journal, readonly=True) as j:
        assert not read_service(j).is_running()
        with holding_writer(s.journal) as pid:
            assert read_service(j).is_running() and read_service(j).writer_pid == pid
        assert not read_service(j).is_running()


def test_fields_of_a_wrong_type_read_as_missing() -> None:
    status = ServiceStatus.from_record({"pid": "12", "state": RUNNING, "overflow": 1, "lag_bytes": True,
                                        "ring_fill": 0.5, "rate_bytes": 7})
    assert status == ServiceStatus(state=RUNNING, ring_fill=0.5, rate_bytes=7)
    assert ServiceStatus.from_record(None) is None and ServiceStatus.from_record({}) is None
