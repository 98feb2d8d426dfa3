"""End to end through real processes: a simulated workload, `cdp run`, then `cdp restore --at`.

The device model is this test's own: the op stream from
:func:`tests.cli.e2e_workload.ops` applied to a bytearray. The workload
process logs the wall clock around every op, which tells the test which
ops a given moment includes; every restore is compared with the model at
that moment.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdp.ringwriter import RingWriter
from journal import Journal
from journal.identity import device_id
from tests.cli.e2e_workload import ops
from tests.support.cli import CDP, cdp
from tests.support.devices import random_device
from tests.support.history import ts_arg

REPO = Path(__file__).resolve().parents[2]
DEVICE = 8 << 20
RING = 4 << 20  # small, so the workload wraps it many times (but fits a 1 MiB write)


def model_states(seed: int, count: int, baseline: bytes, wanted: set[int]) -> dict[int, bytes]:
    """The device after op ``i`` for every wanted ``i`` (-1: the baseline)."""
    model = bytearray(baseline)
    states = {-1: bytes(model)} if -1 in wanted else {}
    for i, op in enumerate(ops(seed, count, len(baseline))):
        if op.kind == "write":
            model[op.offset:op.offset + op.length] = op.data
        elif op.kind == "zero":
            model[op.offset:op.offset + op.length] = bytes(op.length)
        if i in wanted:
            states[i] = bytes(model)
    return states


class Setup:
    """A device image, a fresh ring and a journal made by `cdp init`."""

    def __init__(self, tmp: Path, seed: int) -> None:
        self.tmp = tmp
        self.seed = seed
        self.baseline = random_device(DEVICE, seed)
        self.image = tmp / "device.img"
        self.image.write_bytes(self.baseline)
        self.ring = tmp / "ring"
        RingWriter.create_file(self.ring, RING, DEVICE, device_id=device_id(self.image))
        self.journal = tmp / "journal"
        assert cdp("init", "--journal", self.journal, "--device", self.image).code == 0
        self.log = tmp / "ops.json"

    def start_run(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen([os.fspath(CDP), "run", "--journal", os.fspath(self.journal), "--ring",
                                 os.fspath(self.ring), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def start_workload(self, count: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "tests.cli.e2e_workload", "--ring", os.fspath(self.ring),
                                 "--image", os.fspath(self.image), "--seed", str(self.seed), "--ops", str(count),
                                 "--log", os.fspath(self.log)], cwd=REPO, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in (out or "") + (err or ""), err
    return proc.returncode, out or "", err or ""


def _moments(log: list[list[int]], created_ns: int, rng: random.Random, n: int) -> list[tuple[int, int]]:
    """(time, ops done) pairs: moments between ops, where the device state is known exactly."""
    gaps = [(i, log[i][1], log[i + 1][0]) for i in range(len(log) - 1) if log[i + 1][0] > log[i][1]]
    picked = rng.sample(gaps, min(n, len(gaps)))
    out = [(created_ns, -1), (log[0][0] - 1, -1), (log[-1][1], len(log) - 1)]
    for i, lo, hi in picked:
        out.append((lo, i))                      # the instant op i completed
        out.append((rng.randrange(lo, hi), i))   # any time before op i+1 started
    return sorted(out)


def _check_restores(setup: Setup, count: int, n_moments: int, seed: int) -> None:
    log = json.loads(setup.log.read_text())
    assert len(log) == count
    with Journal.open(setup.journal, readonly=True) as journal:
        created = journal.info.created_ns
        marks = {p.name: p for p in journal.points(kinds={"mark"})}
        assert journal.verify().ok
    moments = _moments(log, created, random.Random(seed), n_moments)
    mark_ops = {i: op.name for i, op in enumerate(ops(setup.seed, count, DEVICE)) if op.kind == "mark"}
    assert set(marks) == set(mark_ops.values())
    wanted = {i for _, i in moments} | set(mark_ops) | {count - 1}
    states = model_states(setup.seed, count, setup.baseline, wanted)
    assert setup.image.read_bytes() == states[count - 1], "the model and the simulated device disagree"
    out = setup.tmp / "restored.img"
    for ts, done in moments:
        run = cdp("restore", "--journal", setup.journal, "--at", ts_arg(ts), "--to", out, "--force", "--json")
        assert run.code == 0, run.err
        assert out.read_bytes() == states[done], f"restore at {ts} (after op {done}) differs from the model"
    for i, name in list(mark_ops.items())[:5]:
        run = cdp("restore", "--journal", setup.journal, "--at", f"mark:{name}", "--to", out, "--force")
        assert run.code == 0, run.err
        assert out.read_bytes() == states[i], f"restore at mark {name} differs from the model"


@pytest.mark.slow
def test_workload_and_run_in_two_processes_restore_like_the_model(tmp_path: Path) -> None:
    setup = Setup(tmp_path, seed=21)
    count = 1500
    drain = setup.start_run("--until-detached")
    work = setup.start_workload(count)
    deadline = time.monotonic() + 20
    while True:  # `cdp status` sees the live service and its figures
        doc = json.loads(cdp("status", "--journal", setup.journal, "--json").out)["service"]
        if doc["running"] and doc.get("state") == "running":
            break
        assert time.monotonic() < deadline, f"status never showed the service running: {doc}"
        time.sleep(0.05)
    assert doc["pid"] == drain.pid and {"lag_bytes", "lag_seconds", "ring_fill"} <= set(doc)
    text = cdp("status", "--journal", setup.journal).out
    assert f"running (pid {drain.pid})" in text and "behind the device" in text
    code, _out, err = _finish(work)
    assert code == 0, err
    code, _out, err = _finish(drain)
    assert code == 0, err
    assert "ring detached and drained" in err
    with Journal.open(setup.journal, readonly=True) as journal:
        seqs = [r.seq for r in journal.records()]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in the journal's seqs"
    _check_restores(setup, count, n_moments=12, seed=1)


@pytest.mark.slow
def test_sigterm_is_a_clean_stop_and_a_restart_resumes(tmp_path: Path) -> None:
    setup = Setup(tmp_path, seed=22)
    count = 1200
    first = setup.start_run()
    work = setup.start_workload(count)
    deadline = time.monotonic() + 30
    while True:  # let the first service journal part of the workload
        with Journal.open(setup.journal, readonly=True) as journal:
            if journal.last_seq >= 200:
                break
        assert time.monotonic() < deadline, "the service journaled nothing"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    code, _out, err = _finish(first, timeout=30)
    assert code == 0, err
    assert "stopped by SIGTERM" in err and len(err.strip().splitlines()) == 1
    with Journal.open(setup.journal, readonly=True) as journal:
        stopped_at = journal.last_seq
    status = json.loads(cdp("status", "--journal", setup.journal, "--json").out)
    assert status["service"]["running"] is False and status["service"]["state"] == "stopped"
    second = setup.start_run("--until-detached")
    code, _out, err = _finish(work)
    assert code == 0, err
    code, _out, err = _finish(second)
    assert code == 0, err
    with Journal.open(setup.journal, readonly=True) as journal:
        seqs = [r.seq for r in journal.records()]
        assert journal.last_seq > stopped_at
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a duplicate in the journal's seqs"
    _check_restores(setup, count, n_moments=8, seed=2)


def test_run_bad_input_is_one_line(tmp_path: Path) -> None:
    setup = Setup(tmp_path, seed=23)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(random.Random(1).randbytes(8192))
    other = tmp_path / "other-ring"
    RingWriter.create_file(other, RING, DEVICE * 2)
    base = ("run", "--journal", setup.journal, "--until-detached", "--ring")
    cdp(*base, tmp_path / "absent").one_line_error(1, "absent")
    cdp(*base, garbage).one_line_error(1, "not a cdp ring")
    cdp(*base, other).one_line_error(1, "protects a device of")
    cdp("run", "--ring", setup.ring).one_line_error(2, "no journal given")
    cdp("run", "--journal", setup.journal).one_line_error(2, "--ring")
    with Journal.open(setup.journal, readonly=True) as journal:
        assert journal.last_seq == 0 and journal.verify().ok


def test_run_does_not_load_the_tui(tmp_path: Path) -> None:
    setup = Setup(tmp_path, seed=24)
    RingWriter.attach(setup.ring).close()  # a producer that came and went: detached, empty
    code = ("import sys\nfrom cdp.cli import main\n"
            f"rc = main(['run', '--journal', {os.fspath(setup.journal)!r}, '--ring', {os.fspath(setup.ring)!r}, "
            "'--until-detached'])\n"
            "print('RC', rc, 'TEXTUAL', any(m == 'textual' or m.startswith('textual.') for m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "RC 0 TEXTUAL False" in proc.stdout, proc.stdout + proc.stderr
