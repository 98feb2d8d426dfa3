"""Every journal verb through the installed `cdp`: the happy path and each kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from journal import Journal
from journal.units import NS
from tests.support.cli import cdp
from tests.support.devices import random_device
from tests.support.history import build_history, ts_arg


def _journal_intact(path: Path, last_seq: int) -> None:
    """Nothing journaled was lost: same last seq, and verify finds no damage."""
    with Journal.open(path, readonly=True) as journal:
        assert journal.last_seq == last_seq
        assert journal.verify().ok


# ------------------------------------------------------------------ the front door

def test_unknown_command_is_one_line_and_exit_2() -> None:
    cdp("frobnicate").one_line_error(2, "unknown command 'frobnicate'")


def test_no_command_prints_usage_and_exit_2() -> None:
    run = cdp()
    assert run.code == 2
    assert "usage: cdp" in run.err and run.out == ""


def test_python_dash_m_is_the_same_command() -> None:
    run = cdp("--help", module=True)
    assert run.code == 0 and "usage: cdp" in run.out
    cdp("nope", module=True).one_line_error(2, "unknown command")


@pytest.mark.parametrize("verb", ["init", "run", "status", "points", "mark", "verify", "restore", "demo"])
def test_every_verb_help_teaches_with_examples(verb: str) -> None:
    top = cdp("--help")
    if f"    {verb} " not in top.out:
        pytest.skip(f"{verb} is not registered yet")
    run = cdp(verb, "--help")
    assert run.code == 0
    assert "examples:" in run.out
    if verb != "demo":
        assert "--journal DIR" in run.out and "CDP_JOURNAL" in run.out


def test_time_grammar_is_explained_in_restore_help() -> None:
    out = cdp("restore", "--help").out
    for form in ("ISO 8601", "@", "-90s", "mark:NAME", "twice"):
        assert form in out


def test_bad_option_is_one_line_and_exit_2(journal_dir: Path) -> None:
    cdp("points", "--journal", journal_dir, "--bogus").one_line_error(2, "cdp: points:", "--bogus")
    cdp("restore", "--journal", journal_dir, "--at", "now").one_line_error(2, "--to")


def test_help_does_not_import_heavy_modules() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom cdp.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('textual', 'rich', 'lmdb', 'journal') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in proc.stdout


# -------------------------------------------------------------------- --journal

@pytest.mark.parametrize("verb", [["status"], ["points"], ["mark", "x"], ["verify"],
                                  ["restore", "--at", "now", "--to", "out.img"]])
def test_missing_journal_option_and_env(verb: list[str], tmp_path: Path) -> None:
    cdp(*verb, cwd=tmp_path).one_line_error(2, "no journal given", "CDP_JOURNAL")


@pytest.mark.parametrize("verb", [["status"], ["points"], ["mark", "x"], ["verify"],
                                  ["restore", "--at", "now", "--to", "out.img"]])
def test_journal_that_does_not_exist(verb: list[str], tmp_path: Path) -> None:
    cdp(*verb, "--journal", tmp_path / "nothing", cwd=tmp_path).one_line_error(1, "no journal at")
    assert not (tmp_path / "out.img").exists()


@pytest.mark.parametrize("verb", [["status"], ["points"], ["mark", "x"], ["verify"],
                                  ["restore", "--at", "now", "--to", "out.img"]])
def test_directory_that_is_not_a_journal(verb: list[str], tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    cdp(*verb, "--journal", other, cwd=tmp_path).one_line_error(1, "not a cdp journal")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_journal_from_environment(journal_dir: Path) -> None:
    run = cdp("status", "--json", env={"CDP_JOURNAL": str(journal_dir)})
    assert run.code == 0
    assert json.loads(run.out)["journal"] == str(journal_dir)


# ------------------------------------------------------------------------- init

def test_init_copies_the_baseline(tmp_path: Path, device: tuple[Path, bytes]) -> None:
    path = tmp_path / "j"
    run = cdp("init", "--journal", path, "--device", device[0], "--json")
    assert run.code == 0, run.err
    doc = json.loads(run.out)
    assert doc["device_bytes"] == len(device[1]) and doc["block_size"] == 512
    with Journal.open(path, readonly=True) as journal:
        assert journal.read(0, len(device[1])) == device[1]


def test_init_text_says_what_to_do_next(tmp_path: Path, device: tuple[Path, bytes]) -> None:
    run = cdp("init", "--journal", tmp_path / "j", "--device", device[0])
    assert run.code == 0 and "created journal" in run.out and "cdp run" in run.out


def test_an_init_killed_midway_is_started_over_by_the_next(tmp_path: Path) -> None:
    """SIGKILL during the baseline copy leaves no marker file: the next init starts over and is exact.

    Anything else in the directory is never taken for such leftovers, and a create still running
    (its writer lock held) is not touched."""
    import signal
    import subprocess
    import time

    from journal.facts import lock_writer
    from tests.support.cli import CDP

    image = tmp_path / "device.img"
    data = os.urandom(128 << 20)
    image.write_bytes(data)
    path = tmp_path / "j"
    proc = subprocess.Popen([os.fspath(CDP), "init", "--journal", os.fspath(path), "--device", os.fspath(image)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seg = path / "segments" / "00000001.seg"
    deadline = time.monotonic() + 60
    while not (seg.exists() and seg.stat().st_size > 8 << 20) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (path / "cdp-journal").exists(), "the init finished before the kill: make the image bigger"
    fd = lock_writer(path)  # as if that init were still running
    try:
        cdp("init", "--journal", path, "--device", image).one_line_error(1, "another process")
    finally:
        os.close(fd)
    run = cdp("init", "--journal", path, "--device", image)
    assert run.code == 0 and "cut short" in run.err and "started over" in run.err, run.err
    with Journal.open(path, readonly=True) as journal:
        assert journal.read(0, len(data)) == data
        assert journal.verify().ok
    other = tmp_path / "other"
    (other / "segments").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    cdp("init", "--journal", other, "--device", image).one_line_error(1, "not an empty directory")
    assert (other / "notes.txt").read_text() == "mine"


def test_init_refuses_an_existing_journal(journal_dir: Path, device: tuple[Path, bytes]) -> None:
    cdp("mark", "keep-me", "--journal", journal_dir)
    cdp("init", "--journal", journal_dir, "--device", device[0]).one_line_error(1, "is a journal already")
    points = json.loads(cdp("points", "--journal", journal_dir, "--json").out)
    assert [p["name"] for p in points if p["kind"] == "user-mark"] == ["keep-me"]


def test_init_never_touches_a_non_empty_directory(tmp_path: Path, device: tuple[Path, bytes]) -> None:
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "letter.txt").write_text("keep me")
    (precious / "sub").mkdir()
    cdp("init", "--journal", precious, "--device", device[0]).one_line_error(1, "not an empty directory")
    assert sorted(p.name for p in precious.iterdir()) == ["letter.txt", "sub"]
    assert (precious / "letter.txt").read_text() == "keep me"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cdp("init", "--journal", a_file, "--device", device[0]).one_line_error(1, "not an empty directory")
    assert a_file.read_text() == "x"


def test_init_missing_device(tmp_path: Path) -> None:
    cdp("init", "--journal", tmp_path / "j", "--device", tmp_path / "nope.img").one_line_error(
        1, "nope.img", "No such file")
    assert not (tmp_path / "j").exists()


def test_init_device_of_odd_size(tmp_path: Path) -> None:
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"x" * 1000)
    cdp("init", "--journal", tmp_path / "j", "--device", odd).one_line_error(1, "multiple of 512")


def test_init_device_that_is_a_directory(tmp_path: Path) -> None:
    cdp("init", "--journal", tmp_path / "j", "--device", tmp_path).one_line_error(1, "neither")


def test_init_unwritable_journal_path(tmp_path: Path, device: tuple[Path, bytes]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cdp("init", "--journal", blocker / "j", "--device", device[0]).one_line_error(1, "cannot create")


def test_init_in_a_read_only_directory(read_only_dir: Path, device: tuple[Path, bytes]) -> None:
    cdp("init", "--journal", read_only_dir / "j", "--device", device[0]).one_line_error(1)
    assert not (read_only_dir / "j").exists()


# ------------------------------------------------------------- status / points

def test_status_text_and_json(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 1), records=200, seed=1)
    run = cdp("status", "--journal", hist.path)
    assert run.code == 0
    assert "last seq 200" in run.out and "not running" in run.out
    doc = json.loads(cdp("status", "--journal", hist.path, "--json").out)
    assert doc["last_seq"] == 200 and doc["records"] == 200
    assert doc["service"]["running"] is False
    assert doc["last"]["ts_ns"] == hist.states[-1][1]


def test_status_sees_the_writer_lock(journal_dir: Path) -> None:
    with Journal.open(journal_dir):  # this test process holds the writer lock, as `cdp run` would
        doc = json.loads(cdp("status", "--journal", journal_dir, "--json").out)
    assert doc["service"]["running"] is True and doc["service"]["pid"] == os.getpid()


def test_points_lists_flushes_and_marks_exactly(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 2), records=300, seed=2)
    points = json.loads(cdp("points", "--journal", hist.path, "--json").out)
    assert points[0]["kind"] == "baseline"
    assert [(p["seq"], p["ts_ns"]) for p in points if p["kind"] == "flush"] == hist.flushes
    assert {p["name"]: p["ts_ns"] for p in points if p["kind"] == "mark"} == hist.marks
    marks = json.loads(cdp("points", "--journal", hist.path, "--json", "--marks").out)
    assert {p["kind"] for p in marks} == {"mark"}
    text = cdp("points", "--journal", hist.path)
    assert text.code == 0 and text.out.splitlines()[0].split() == ["SEQ", "TIME", "KIND", "NAME"]
    assert len(text.out.splitlines()) == len(points) + 1


def test_points_since_until(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 3), records=300, seed=3)
    lo, hi = hist.flushes[3][1], hist.flushes[-3][1]
    points = json.loads(cdp("points", "--journal", hist.path, "--json", "--kind", "flush",
                            "--since", ts_arg(lo), "--until", ts_arg(hi)).out)
    assert [(p["seq"], p["ts_ns"]) for p in points] == [f for f in hist.flushes if lo <= f[1] <= hi]


def test_points_relative_since_works_despite_the_dash(journal_dir: Path) -> None:
    cdp("mark", "recent", "--journal", journal_dir)
    points = json.loads(cdp("points", "--journal", journal_dir, "--json", "--since", "-1h").out)
    assert "recent" in [p["name"] for p in points]
    assert json.loads(cdp("points", "--journal", journal_dir, "--json", "--until", "-1h").out) == []


@pytest.mark.parametrize("bad", ["10:00", "yesterday", "2026-01-01T00:00:00.0000000001Z", "mark:nope"])
def test_points_bad_time(journal_dir: Path, bad: str) -> None:
    cdp("points", "--journal", journal_dir, "--since", bad).one_line_error(2, "--since")


def test_points_since_after_until(journal_dir: Path) -> None:
    cdp("points", "--journal", journal_dir, "--since", "-1m", "--until", "-2m").one_line_error(2, "after")


# ------------------------------------------------------------------------- mark

def test_mark_then_restore_by_name(tmp_path: Path, journal_dir: Path, device: tuple[Path, bytes]) -> None:
    run = cdp("mark", "before-upgrade", "--journal", journal_dir, "--json")
    assert run.code == 0
    point = json.loads(run.out)
    assert point["kind"] == "user-mark" and point["name"] == "before-upgrade" and point["seq"] == 0
    out = tmp_path / "restored.img"
    run = cdp("restore", "--journal", journal_dir, "--at", "mark:before-upgrade", "--to", out)
    assert run.code == 0, run.err
    assert "before-upgrade" in run.out
    assert out.read_bytes() == device[1]


def test_mark_at_a_time(journal_dir: Path) -> None:
    point = json.loads(cdp("mark", "earlier", "--at", "-0.05s", "--journal", journal_dir, "--json").out)
    assert point["name"] == "earlier"


@pytest.mark.parametrize("name", ["two\nlines", "x" * 300])
def test_mark_bad_name(journal_dir: Path, name: str) -> None:
    cdp("mark", name, "--journal", journal_dir).one_line_error(1, "mark name")


def test_mark_before_the_journal_began(journal_dir: Path) -> None:
    cdp("mark", "old", "--at", "@1000", "--journal", journal_dir).one_line_error(1, "before the journal began")


def test_two_marks_with_one_name_are_ambiguous(tmp_path: Path, journal_dir: Path) -> None:
    cdp("mark", "twice", "--journal", journal_dir)
    cdp("mark", "twice", "--journal", journal_dir)
    cdp("restore", "--journal", journal_dir, "--at", "mark:twice", "--to", tmp_path / "o.img").one_line_error(
        2, "2 marks are named 'twice'")
    assert not (tmp_path / "o.img").exists()


# ----------------------------------------------------------------------- verify

def test_verify_ok(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 4), records=100, seed=4)
    run = cdp("verify", "--journal", hist.path)
    assert run.code == 0 and run.out.startswith("ok: ")
    doc = json.loads(cdp("verify", "--journal", hist.path, "--json").out)
    assert doc["ok"] is True and doc["problems"] == []


def test_verify_reports_damage_one_problem_per_line(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 5), records=100, seed=5)
    segment = sorted((hist.path / "segments").glob("*.seg"))[-1]
    raw = bytearray(segment.read_bytes())
    for pos in (len(raw) // 3, len(raw) // 2, len(raw) - 100):
        raw[pos] ^= 0xFF
    segment.write_bytes(bytes(raw))
    run = cdp("verify", "--journal", hist.path)
    assert run.code == 1
    assert run.out and all("segment" in line for line in run.out.splitlines())
    assert len(run.err.splitlines()) == 1 and "problem" in run.err
    doc = json.loads(cdp("verify", "--journal", hist.path, "--json").out)
    assert doc["ok"] is False and len(doc["problems"]) == len(run.out.splitlines())


# ---------------------------------------------------------------------- restore

def test_restore_many_times_matches_the_model(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(512 << 10, 6), records=600, seed=6)
    seqs = [0, 1, 2, 17, 100, 299, 300, 451, 599, 600]
    times = [hist.states[s][1] for s in seqs]
    times += [t - 1 for t in times[1:]] + [t + 1 for t in times]
    for i, ts in enumerate(times):
        out = tmp_path / f"r{i}.img"
        run = cdp("restore", "--journal", hist.path, "--at", ts_arg(ts), "--to", out, "--json")
        assert run.code == 0, run.err
        assert out.read_bytes() == hist.at(ts), f"restore at {ts} differs from the model"
        doc = json.loads(run.out)
        assert doc["requested"]["ts_ns"] == ts and doc["whole"] is True
        assert doc["seq"] == max(s for s, t, _ in hist.states if t <= ts)


def test_restore_by_seq_and_at_marks_and_flushes(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 8), records=300, seed=8)
    name, ts = sorted(hist.marks.items())[0]
    out = tmp_path / "m.img"
    doc = json.loads(cdp("restore", "--journal", hist.path, "--at", f"mark:{name}", "--to", out, "--json").out)
    assert doc["kind"] == "mark" and doc["name"] == name and doc["mark"] == name
    assert out.read_bytes() == hist.at(ts)
    seq, fts = hist.flushes[2]
    out = tmp_path / "f.img"
    run = cdp("restore", "--journal", hist.path, "--seq", str(seq), "--to", out)
    assert run.code == 0 and f"seq {seq} (flush)" in run.out
    assert out.read_bytes() == hist.at(fts)


def test_restore_output_is_sparse(tmp_path: Path) -> None:
    image = bytearray(8 << 20)
    image[4096:8192] = b"\x01" * 4096
    hist = build_history(tmp_path / "j", bytes(image), records=0, seed=9)
    out = tmp_path / "sparse.img"
    assert cdp("restore", "--journal", hist.path, "--at", "now", "--to", out).code == 0
    assert out.stat().st_size == 8 << 20
    assert out.stat().st_blocks * 512 < 1 << 20
    assert out.read_bytes() == bytes(image)


def test_restore_refuses_an_existing_file_without_force(tmp_path: Path, journal_dir: Path,
                                                         device: tuple[Path, bytes]) -> None:
    out = tmp_path / "precious.img"
    out.write_bytes(b"precious" * 64)
    cdp("restore", "--journal", journal_dir, "--at", "now", "--to", out).one_line_error(
        1, "precious.img exists", "--force")
    assert out.read_bytes() == b"precious" * 64
    run = cdp("restore", "--journal", journal_dir, "--at", "now", "--to", out, "--force")
    assert run.code == 0 and out.read_bytes() == device[1]


@pytest.mark.parametrize("bad,code,needle", [
    ("10:00", 2, "no date"), ("soon", 2, "cannot read"), ("@1.0000000001", 2, "at most 9"),
    ("@1000", 1, "before the journal began"), ("mark:absent", 2, "no mark named"),
])
def test_restore_bad_time(tmp_path: Path, journal_dir: Path, bad: str, code: int, needle: str) -> None:
    out = tmp_path / "o.img"
    cdp("restore", "--journal", journal_dir, "--at", bad, "--to", out).one_line_error(code, needle)
    assert not out.exists()


def test_restore_to_bad_targets(tmp_path: Path, journal_dir: Path) -> None:
    at = ("restore", "--journal", journal_dir, "--at", "now")
    cdp(*at, "--to", tmp_path).one_line_error(1, "is a directory")
    cdp(*at, "--to", tmp_path / "no" / "such" / "dir.img").one_line_error(1, "not a directory")
    cdp(*at, "--to", "/dev/null", "--force").one_line_error(1, "neither a regular file nor a block device")
    cdp(*at, "--to", "/proc/version", "--force").one_line_error(1, "/proc/version")
    segment = sorted((journal_dir / "segments").glob("*.seg"))[0]
    cdp(*at, "--to", segment, "--force").one_line_error(1, "inside the journal")
    cdp(*at, "--to", journal_dir / "new.img", "--force").one_line_error(1, "inside the journal")
    _journal_intact(journal_dir, 0)


def test_restore_to_unwritable_directory(read_only_dir: Path, journal_dir: Path) -> None:
    cdp("restore", "--journal", journal_dir, "--at", "now", "--to", read_only_dir / "o.img").one_line_error(
        1, "not writable")


def test_bad_input_loses_nothing(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 10), records=150, seed=10)
    for args in (["restore", "--at", "garbage", "--to", tmp_path / "x"], ["mark", ""], ["points", "--since", "x"],
                 ["init", "--device", tmp_path / "none"], ["restore", "--seq", "9999", "--to", tmp_path / "y"]):
        run = cdp(*args, "--journal", hist.path)
        assert run.code != 0 and len(run.err.splitlines()) == 1
    _journal_intact(hist.path, 150)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert NS  # the module constant is the one the history used


def _run_on_a_terminal(*args: str | os.PathLike[str]) -> tuple[int, str]:
    """Run `cdp ARGS` with stdout and stderr on a pseudo-terminal; return (status, output)."""
    import pty
    import subprocess

    from tests.support.cli import CDP

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([os.fspath(CDP), *map(os.fspath, args)], stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(30), b"".join(chunks).decode("utf-8", "replace")


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    image = tmp_path / "big.img"
    with open(image, "wb") as fh:
        for _ in range(96):
            fh.write(os.urandom(1 << 20))
    code, output = _run_on_a_terminal("init", "--journal", tmp_path / "j", "--device", image)
    assert code == 0 and "Traceback" not in output
    assert "baseline of" in output and "MiB" in output and "created journal" in output
    piped = cdp("init", "--journal", tmp_path / "j2", "--device", image)
    assert piped.err == "" and "baseline of" not in piped.out


def test_mark_through_a_ring_needs_the_filter_device(tmp_path: Path) -> None:
    ring_file = tmp_path / "ring"
    ring_file.write_bytes(bytes(8192))
    cdp("mark", "x", "--ring", ring_file).one_line_error(1, "not a filter's ring device")
    cdp("mark", "x", "--ring", "no-such-target").one_line_error(1, "/dev/cdp/no-such-target", "attached")
    cdp("mark", "x", "--ring", ring_file, "--at", "now").one_line_error(2, "--at cannot be used with --ring")


def test_restore_inside_an_overflow_window_needs_allow_partial(tmp_path: Path) -> None:
    import struct

    from journal import Record, RecordType

    hist = build_history(tmp_path / "j", random_device(256 << 10, 11), records=50, seed=11)
    last_ts = hist.states[-1][1]
    with Journal.open(hist.path) as journal:  # writes were dropped from last_ts + 10 on, never resynced
        journal.append([Record(51, last_ts + 20, RecordType.OVERFLOW, 0, 0, 64 << 10,
                               struct.pack("<Q", last_ts + 10))])
    before, inside = ts_arg(last_ts + 5), ts_arg(last_ts + 30)
    ok = cdp("restore", "--journal", hist.path, "--at", before, "--to", tmp_path / "a.img")
    assert ok.code == 0 and "[whole]" in ok.out
    assert (tmp_path / "a.img").read_bytes() == hist.at(last_ts)
    cdp("restore", "--journal", hist.path, "--at", inside, "--to", tmp_path / "b.img").one_line_error(
        1, "not whole")
    assert not (tmp_path / "b.img").exists()
    run = cdp("restore", "--journal", hist.path, "--at", inside, "--to", tmp_path / "b.img",
              "--allow-partial", "--json")
    assert run.code == 0 and json.loads(run.out)["whole"] is False
    assert "warning" in run.err and len(run.err.splitlines()) == 1
    points = json.loads(cdp("points", "--journal", hist.path, "--json", "--kind", "overflow").out)
    assert [(p["seq"], p["whole"]) for p in points] == [(51, False)]
    assert "(partial)" in cdp("points", "--journal", hist.path, "--kind", "overflow").out


@pytest.mark.skipif(not Path("/usr/share/zoneinfo/Europe/Berlin").exists(), reason="no tzdata")
def test_ambiguous_local_time_is_refused_not_guessed(tmp_path: Path, journal_dir: Path) -> None:
    env = {"TZ": "Europe/Berlin"}
    out = tmp_path / "o.img"
    line = cdp("restore", "--journal", journal_dir, "--at", "2026-10-25T02:30", "--to", out,
               env=env).one_line_error(2, "happens twice", "+02:00", "+01:00")
    assert "--at" in line and not out.exists()
    cdp("points", "--journal", journal_dir, "--until", "2026-03-29 02:30", env=env).one_line_error(
        2, "does not exist")


def test_points_newest_first_and_limit(tmp_path: Path) -> None:
    hist = build_history(tmp_path / "j", random_device(256 << 10, 12), records=200, seed=12)
    every = json.loads(cdp("points", "--journal", hist.path, "--json").out)
    newest = json.loads(cdp("points", "--journal", hist.path, "--json", "--newest-first", "--limit", "3").out)
    assert newest == every[::-1][:3]
    cdp("points", "--journal", hist.path, "--limit", "0").one_line_error(2, "--limit")


def test_init_interrupted_leaves_nothing_behind(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from tests.support.cli import CDP

    big = tmp_path / "big.img"
    with open(big, "wb") as fh:
        fh.truncate(64 << 30)
        # a byte of data every 4 MiB: the baseline copy cannot skip it as one hole,
        # so copying it takes far longer than this test waits
        for pos in range(0, 64 << 30, 4 << 20):
            os.pwrite(fh.fileno(), b"x", pos)
    target = tmp_path / "j"
    proc = subprocess.Popen([os.fspath(CDP), "init", "--journal", os.fspath(target), "--device", os.fspath(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (target / "segments").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err == "cdp: init: terminated\n" and out == ""
    assert not target.exists()
    small = tmp_path / "small.img"
    small.write_bytes(random_device(64 << 10, 13))
    assert cdp("init", "--journal", target, "--device", small).code == 0  # the path is free again
