"""Producer and drain in separate processes; kill -9 of the drain under load."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest

from journal import Journal
from tests.support.service import check_journal, drain_process, make_setup, sim_process


def test_producer_and_drain_processes(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    drainer = drain_process(s, "--until-detached")
    sim = sim_process(s, "--seconds", "2", "--seed", "9", "--rate-mb", "80")
    sim_stats = json.loads(sim.communicate(timeout=60)[0])
    out, err = drainer.communicate(timeout=60)
    assert drainer.returncode == 0, err
    stats = json.loads(out)
    assert stats["records"] == sim_stats["records"] > 100 and stats["stopped_by"] == "detached"
    with check_journal(s) as j:
        result = j.restore(tmp_path / "restored.img")
        assert result.whole and result.seq == j.last_seq
        assert (tmp_path / "restored.img").read_bytes() == s.image.read_bytes()


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    s = make_setup(tmp_path)
    drainer = drain_process(s)
    sim = sim_process(s, "--seconds", "1", "--seed", "2", "--rate-mb", "50")
    sim.wait(timeout=60)
    time.sleep(0.3)
    drainer.send_signal(signal.SIGTERM)
    out, err = drainer.communicate(timeout=30)
    assert drainer.returncode == 0 and err == ""
    assert json.loads(out)["stopped_by"] == "stop"
    with Journal.open(s.journal, readonly=True) as j:
        assert j.status()["state"] == "stopped"
    check_journal(s).close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    s = make_setup(tmp_path, size=32 << 20, ring_size=4 << 20, seed=seed)
    # block policy with a long wait: while the drain is dead the producer waits, nothing is dropped
    sim = sim_process(s, "--seconds", "5", "--seed", str(seed), "--rate-mb", "60", "--wait-ms", "60000")
    kills = 0
    while sim.poll() is None:
        drainer = drain_process(s)
        time.sleep(rng.uniform(0.25, 0.9))
        drainer.kill()
        drainer.wait()
        kills += 1
        time.sleep(rng.uniform(0, 0.2))
    assert sim.returncode == 0 and kills >= 3
    final = drain_process(s, "--until-detached")
    _out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    sim_stats = json.loads(sim.stdout.read())
    assert sim_stats["dropped"] == 0
    with check_journal(s) as j:
        assert j.last_seq == sim_stats["records"]


def test_killed_between_journal_commit_and_release(tmp_path: Path) -> None:
    """The worst moment: the batch is durable, the ring's tail not yet moved."""
    s = make_setup(tmp_path, ring_size=4 << 20)
    sim = sim_process(s, "--seconds", "3", "--seed", "5", "--rate-mb", "40", "--wait-ms", "60000")
    crashes = 0
    while sim.poll() is None:
        drainer = drain_process(s, "--until-detached", crash_after=random.randint(1, 4))
        drainer.wait(timeout=60)
        crashes += drainer.returncode == -signal.SIGKILL
    final = drain_process(s, "--until-detached")
    _out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert crashes >= 2
    assert json.loads(sim.stdout.read())["dropped"] == 0
    check_journal(s).close()


def test_restart_skips_what_the_killed_drain_journaled(tmp_path: Path) -> None:
    s = make_setup(tmp_path, ring_size=64 << 20)
    sim = sim_process(s, "--ops", "300", "--seed", "6")
    assert sim.wait(timeout=60) == 0
    drainer = drain_process(s, crash_after=1)
    assert drainer.wait(timeout=60) == -signal.SIGKILL
    final = drain_process(s, "--until-detached")
    out, err = final.communicate(timeout=60)
    assert final.returncode == 0, err
    assert json.loads(out)["duplicates_skipped"] > 0
    check_journal(s).close()


@pytest.mark.parametrize("breakage, message", [
    ("no-journal", "not a cdp journal"),
    ("no-ring", "cannot open ring"),
    ("other-device", "protects a device of"),
    ("busy", "being written by another process"),
])
def test_bad_input_is_one_line(tmp_path: Path, breakage: str, message: str) -> None:
    import shutil

    from cdp.ringwriter import RingWriter

    s = make_setup(tmp_path, size=1 << 20)
    holder = None
    if breakage == "no-journal":
        shutil.rmtree(s.journal)
        s.journal.mkdir()
    elif breakage == "no-ring":
        s.ring.unlink()
    elif breakage == "other-device":
        RingWriter.create_file(s.ring, 1 << 16, 2 << 20)
    elif breakage == "busy":
        holder = Journal.open(s.journal)
    proc = drain_process(s, "--until-detached")
    out, err = proc.communicate(timeout=60)
    if holder is not None:
        holder.close()
    assert proc.returncode == 1 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
