"""Alerts: `cdp status --check` for monitoring scripts and `cdp run --metrics` for Prometheus.

Both read one :class:`journal.health.Health`; these tests hold each to the
journal itself (the records, the newest point) and to the states an admin
must be told about: no service, a stalled one, a lag or a filesystem over
its limit, a journal that cannot be read.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from journal import Journal, heads
from journal.health import assess, problems
from journal.status import RUNNING, Service, ServiceStatus
from journal.units import NS
from tests.support.cli import cdp
from tests.support.service import env, make_setup, sim_process
from tests.support.writer import holding_writer

CDP = [sys.executable, "-m", "cdp"]


def test_check_says_the_service_is_not_running(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    r = cdp("status", "--journal", str(s.journal), "--check")
    assert r.code == 2, r.out
    assert r.out.splitlines() == ["CDP CRITICAL: the drain service is not running: writes are not being journaled"]
    doc = json.loads(cdp("status", "--journal", str(s.journal), "--check", "--json").out)
    assert doc["status"] == "CRITICAL" and doc["health"]["running"] is False


def test_check_of_a_missing_journal_is_unknown(tmp_path: Path) -> None:
    r = cdp("status", "--journal", str(tmp_path / "none"), "--check")
    assert r.code == 3 and r.out.startswith("CDP UNKNOWN: no journal at ") and len(r.out.splitlines()) == 1


def test_check_names_a_stalled_lagging_service(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    now = time.time_ns()
    with Journal.open(s.journal) as j:
        j.set_status(ServiceStatus(pid=1, state=RUNNING, updated_ns=now - 90 * NS, lag_seconds=42.0,
                                   lag_bytes=4096, dropped=3, overflow=True).as_record())
    with holding_writer(s.journal):
        r = cdp("status", "--journal", str(s.journal), "--check", "--max-lag", "10s")
        relaxed = cdp("status", "--journal", str(s.journal), "--check", "--max-lag", "1m")
    assert r.code == 2
    line = r.out.strip()
    assert re.match(r"CDP CRITICAL: the drain service last reported 1 m 3\d s ago \(stalled\?\); ", line), line
    assert "lag 42.0 s > 10.0 s" in line and "writes are being dropped" in line
    assert "lag" not in relaxed.out.split("(stalled?)")[1].split(";")[1]


def test_check_limits_are_one_line_errors(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    for args, text in ((["--max-lag", "soon"], "--max-lag: cannot read DURATION 'soon'"),
                       (["--max-fill", "150%"], "--max-fill: cannot read '150%'")):
        r = cdp("status", "--journal", str(s.journal), "--check", *args)
        assert r.code == 2 and r.err.startswith(f"cdp: status: {text}"), r.err
        assert len(r.err.splitlines()) == 1


def test_problems_follow_the_limits(tmp_path: Path) -> None:
    """The judgement alone, against figures set by hand: each limit trips just past its value."""
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    now = time.time_ns()
    status = ServiceStatus(state=RUNNING, updated_ns=now - NS, lag_seconds=5.0, lag_bytes=1)
    with Journal.open(s.journal, readonly=True) as j:
        health = assess(j, Service(status, os.getpid()), now)
    assert problems(health, max_lag_ns=5 * NS, max_fill=1.0) == []
    assert [p[:12] for p in problems(health, max_lag_ns=5 * NS - 1, max_fill=1.0)] == ["lag 5.0 s > "]
    assert problems(health, max_lag_ns=5 * NS, max_fill=health.fs_fill) == []
    over = problems(health, max_lag_ns=5 * NS, max_fill=health.fs_fill - 0.01)
    assert len(over) == 1 and over[0].startswith("the journal's filesystem is ")
    assert problems(health, max_silence_ns=NS // 2, max_fill=1.0)[0].startswith("the drain service last reported")


def test_metrics_agree_with_the_journal(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=4 << 20, ring_size=1 << 20)
    run = subprocess.Popen([*CDP, "run", "--journal", str(s.journal), "--ring", str(s.ring), "--metrics",
                            "127.0.0.1:0"], env=env(), stderr=subprocess.PIPE, text=True)
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        url = re.search(r"metrics at (http://\S+)", line)
        assert url, line
        sim = sim_process(s, "--ops", "300", "--seed", "5", "--max-write", "65536")
        sim.communicate(timeout=120)
        assert sim.returncode == 0
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(url[1], timeout=10) as resp:
                metrics = {m.name: m for m in text_string_to_metric_families(resp.read().decode())}
            with Journal.open(s.journal, readonly=True) as j:
                stats = j.stats()
            if ("cdp_journal_records" in metrics and metrics["cdp_lag_bytes"].samples[0].value == 0
                    and metrics["cdp_journal_records"].samples[0].value == stats.records >= 300
                    and "cdp_checkpoint_behind_records" in metrics):  # the service built its checkpoint
                break
            assert time.monotonic() < deadline, "the metrics never showed the drained journal"
            time.sleep(0.2)
        assert metrics["cdp_up"].samples[0].value == 1
        assert metrics["cdp_up"].samples[0].labels == {"journal": str(s.journal)}
        assert metrics["cdp_newest_point_timestamp_seconds"].samples[0].value == stats.last_ts_ns / NS
        assert metrics["cdp_dropped_writes"].samples[0].value == 0
        assert 0 < metrics["cdp_filesystem_fill_ratio"].samples[0].value < 1
        with Journal.open(s.journal, readonly=True) as j, j.index.read() as txn:
            checkpoint = heads.state(j.index, txn)
        assert checkpoint is not None and checkpoint.complete
        assert metrics["cdp_checkpoint_behind_records"].samples[0].value == stats.last_seq - checkpoint.seq
        assert "process_cpu_seconds" in metrics
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
    assert run.returncode == 0


def test_metrics_address_errors_are_one_line(tmp_path: Path) -> None:
    s = make_setup(tmp_path, size=1 << 20, ring_size=1 << 16)
    bad = cdp("run", "--journal", str(s.journal), "--ring", str(s.ring), "--metrics", "localhost")
    assert bad.code == 2 and bad.err.startswith("cdp: run: --metrics: cannot read 'localhost'")
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = cdp("run", "--journal", str(s.journal), "--ring", str(s.ring), "--metrics", f"127.0.0.1:{port}")
    assert busy.code == 1 and busy.err.strip() == \
        f"cdp: run: cannot serve metrics on 127.0.0.1:{port}: Address already in use", busy.err
