"""An export while `cdp run` drains the simulator at full speed: readers never fail, never differ.

The journal's LMDB map starts at 1 MiB here, in the drain service and in the
export's nbdkit alike (a ``sitecustomize`` on PYTHONPATH shrinks it in both),
so the drain grows the map several times under the export's readers, which
must adopt each new size between their short transactions.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType

import journal.index as index_module
from journal import Journal
from journal.pointview import open_readonly
from tests.export.conftest import connect, start_export
from tests.support.service import REPO, check_journal, make_setup, sim_process

SMALL_MAP = 1 << 20


def _small_map_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with a sitecustomize that shrinks the initial LMDB map of any Python it starts in."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(
        "import site, sys\n"
        f"site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import journal.index\n"
        f"journal.index._INITIAL_MAP = {SMALL_MAP}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir), str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_export_keeps_answering_while_the_drain_runs_at_full_speed(tmp_path: Path, nbd: ModuleType,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(index_module, "_INITIAL_MAP", SMALL_MAP)
    s = make_setup(tmp_path, size=16 << 20, ring_size=8 << 20, seed=4)
    env = _small_map_env(tmp_path)
    drainer = subprocess.Popen([sys.executable, "-m", "cdp.service", "--journal", str(s.journal),
                                "--ring", str(s.ring), "--until-detached"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sim = sim_process(s, "--seconds", "6", "--seed", "4", "--max-write", str(256 << 10))
    reader = open_readonly(s.journal)  # the map grows under this open too
    deadline = time.monotonic() + 30
    while reader.last_seq < 300:
        assert time.monotonic() < deadline and sim.poll() is None, "the drain made no progress"
        time.sleep(0.05)
    seq = reader.last_seq
    want = reader.read(0, s.size, seq=seq)
    map_at_start = reader.index.env.info()["map_size"]
    exp = start_export(s.journal, "--seq", str(seq), "--allow-partial", env=env)
    rng = random.Random(1)
    reads = full = 0
    try:
        h = connect(nbd, exp.uri)
        while sim.poll() is None:
            offset = rng.randrange(s.size)
            length = rng.randint(1, min(s.size - offset, 1 << 20))
            assert h.pread(length, offset) == want[offset:offset + length], (offset, length)
            reads += 1
            if reads % 200 == 0:
                copy = tmp_path / "copy.img"
                subprocess.run(["nbdcopy", exp.uri, str(copy)], check=True, timeout=60)
                assert copy.read_bytes() == want
                full += 1
        grown_seq = reader.last_seq
        assert h.pread(s.size, 0) == want  # still the old point, after all that
        h.shutdown()
    finally:
        code, err = exp.stop()
    assert code == 0, err
    assert sim.returncode == 0
    _out, derr = drainer.communicate(timeout=120)
    assert drainer.returncode == 0, derr
    assert reads > 200 and full >= 1 and grown_seq > seq + 1000, (reads, full, seq, grown_seq)
    with Journal.open(s.journal, readonly=True) as after:
        assert after.index.env.info()["map_size"] >= 4 * map_at_start, "the map did not grow under the export"
    reader.close()
    check_journal(s).close()
    result_path = tmp_path / "restored.img"
    with Journal.open(s.journal, readonly=True) as j:
        j.restore(result_path, seq=seq, allow_partial=True)
    assert result_path.read_bytes() == want
