"""`cdp demo`: the whole system on a simulated device, checked end to end, in seconds.

What it does, in order, with nothing but the installed package:

1. makes a 64 MiB device image with some content and a ring file beside it
   (the simulator stands where the kernel filter would);
2. creates a journal of the device (the baseline copy), as `cdp init` does;
3. starts `cdp run` in a child process, exactly as a user would;
4. runs a seeded workload on the device for a few seconds: thousands of
   writes from 512 B to 1 MiB, discards, cache flushes, and three named
   marks, taking the sha256 of the device at each mark;
5. detaches the device, lets the service drain the ring and exit;
6. restores the device at each mark (and at the end) and compares every
   restore with the sha256 taken at that moment;
7. prints the points and the commands to browse and restore them.

A failed comparison is a bug in cdp: the demo then exits 1.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cdp.errors import CdpError, one_line

DEVICE_BYTES = 64 << 20
RING_BYTES = 8 << 20
#: The three moments the demo names, in the order they happen.
MARKS = ("installed", "before-upgrade", "after-upgrade")
#: Write rate of the workload: a few thousand writes in a few seconds.
RATE_MIB_S = 32.0
SEED = 2026


@dataclass
class MarkCheck:
    """A mark the demo made, and the device's sha256 at that moment."""

    name: str
    sha256: str
    ts_ns: int = 0
    seq: int = 0
    restored_sha256: str = ""


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _initial_content(image: Path) -> None:
    """Give the device a few MiB of 'files' so the baseline is more than zeros."""
    from journal.format import BLOCK

    rng = random.Random(SEED)
    with open(image, "r+b") as fh:
        for _ in range(24):
            offset = rng.randrange(0, DEVICE_BYTES // BLOCK - 64) * BLOCK
            fh.seek(offset)
            fh.write(rng.randbytes(rng.choice([4096, 65536, 262144])))


class Demo:
    """One demo run in ``workdir``; ``say`` prints a line for the user."""

    def __init__(self, workdir: Path, seconds: float, out: TextIO) -> None:
        self.dir = workdir
        self.seconds = seconds
        self.out = out
        self.tty = out.isatty()
        self.image = workdir / "device.img"
        self.ring = workdir / "ring"
        self.journal = workdir / "journal"
        self.log = workdir / "cdp-run.log"
        self.checks: list[MarkCheck] = []
        self.drain: subprocess.Popen[bytes] | None = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # ------------------------------------------------------------------ steps

    def make_device(self) -> None:
        from cdp.ringwriter import RingWriter

        with open(self.image, "wb") as fh:
            fh.truncate(DEVICE_BYTES)
        _initial_content(self.image)
        RingWriter.create_file(self.ring, RING_BYTES, DEVICE_BYTES)
        self.say(f"1. simulated device {self.image} ({DEVICE_BYTES >> 20} MiB) with a "
                 f"{RING_BYTES >> 20} MiB ring {self.ring}")

    def init_journal(self) -> None:
        from journal import Journal

        started = time.monotonic()
        with Journal.create(self.journal, device_bytes=DEVICE_BYTES, source=self.image) as journal:
            stats = journal.stats()
        self.say(f"2. cdp init --journal {self.journal} --device {self.image}   "
                 f"(baseline: {stats.disk_bytes / (1 << 20):.1f} MiB stored, {time.monotonic() - started:.2f} s)")

    def start_service(self) -> None:
        cmd = [sys.executable, "-m", "cdp", "run", "--journal", str(self.journal), "--ring", str(self.ring),
               "--until-detached"]
        log = open(self.log, "wb")
        try:
            self.drain = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        self.say(f"3. cdp run --journal {self.journal} --ring {self.ring} --until-detached   (pid {self.drain.pid})")

    def workload(self) -> dict[str, int]:
        from cdp.ringwriter import RingWriter
        from cdp.sim import SimDevice, Workload, run

        self.say(f"4. workload for {self.seconds:g} s: writes of 512 B..1 MiB, discards, flushes, "
                 f"marks {', '.join(MARKS)}")
        device = SimDevice(self.image, RingWriter.attach(self.ring), policy="block", wait_ms=5000)
        load = Workload(SEED, DEVICE_BYTES, p_mark=0.0, p_flush=0.04)
        phase = self.seconds / len(MARKS)
        try:
            for name in MARKS:
                run(device, load, seconds=phase, rate_mb=RATE_MIB_S, on_progress=self._progress)
                device.mark(name)
                self.checks.append(MarkCheck(name, _sha256_file(self.image)))
                time.sleep(0.002)  # later writes get a later timestamp than the mark
                self._progress(device.stats, done=f"mark {name!r}")
        finally:
            device.close()  # sets DETACHED: the service drains what is left and exits
        stats = device.stats
        return {"writes": stats.writes, "bytes": stats.bytes_written, "flushes": stats.flushes,
                "discards": stats.discards + stats.zeroes, "records": stats.records, "dropped": stats.dropped}

    def _progress(self, stats: object, done: str = "") -> None:
        writes = getattr(stats, "writes", 0)
        nbytes = getattr(stats, "bytes_written", 0)
        line = f"   {writes} writes, {nbytes / (1 << 20):.0f} MiB"
        if done:
            line += f", {done}"
            self.out.write(("\r\033[K" if self.tty else "") + line + "\n")
        elif self.tty:
            self.out.write("\r\033[K" + line)
        self.out.flush()

    def wait_service(self, timeout: float = 60.0) -> None:
        assert self.drain is not None
        try:
            code = self.drain.wait(timeout)
        except subprocess.TimeoutExpired:
            self.drain.terminate()
            self.drain.wait(10)
            raise CdpError(f"the service did not finish draining within {timeout:.0f} s; see {self.log}") from None
        if code != 0:
            last = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise CdpError(f"'cdp run' exited with status {code}: {last[0]}")

    def check_restores(self) -> None:
        from journal import Journal
        from journal.records import PointKind

        final = _sha256_file(self.image)
        scratch = self.dir / "restore-check.img"
        with Journal.open(self.journal, readonly=True) as journal:
            marks = {p.name: p for p in journal.points(kinds={PointKind.MARK})}
            targets = [(c, marks.get(c.name)) for c in self.checks]
            for check, point in targets:
                if point is None:
                    raise CdpError(f"the mark {check.name!r} is missing from the journal")
                check.ts_ns, check.seq = point.ts_ns, point.seq
                scratch.unlink(missing_ok=True)
                journal.restore(scratch, seq=point.seq)  # a mark is a position, not a time
                check.restored_sha256 = _sha256_file(scratch)
            scratch.unlink(missing_ok=True)
            journal.restore(scratch)
            latest = _sha256_file(scratch)
            scratch.unlink(missing_ok=True)
        self.say("5. restored the device at each mark and compared it with the sha256 taken then:")
        ok = True
        for c in self.checks:
            same = c.restored_sha256 == c.sha256
            ok &= same
            self.say(f"   {'ok  ' if same else 'DIFF'} mark:{c.name:<15} seq {c.seq:<6} sha256 {c.sha256[:16]}")
        same = latest == final
        ok &= same
        self.say(f"   {'ok  ' if same else 'DIFF'} {'latest':<20} sha256 {final[:16]}")
        if not ok:
            raise CdpError("a restore differs from the device it should reproduce: this is a bug in cdp")

    def show_points(self) -> None:
        from journal import Journal
        from journal.records import PointKind
        from journal.units import format_ts

        with Journal.open(self.journal, readonly=True) as journal:
            points = journal.points()
            stats = journal.stats()
        kinds = Counter(p.kind for p in points)
        summary = ", ".join(f"{n} {k}{'es' if k == PointKind.FLUSH and n != 1 else '' if n == 1 else 's'}"
                            for k, n in sorted(kinds.items()))
        self.say(f"6. the journal holds {stats.records} records ({stats.data_bytes / (1 << 20):.0f} MiB of writes) "
                 f"and {len(points)} rewind points: {summary}")
        shown = [p for p in points if p.kind in (PointKind.BASELINE, PointKind.MARK)]
        flushes = [p for p in points if p.kind == PointKind.FLUSH]
        if flushes:
            shown.append(flushes[len(flushes) // 2])
        shown.sort(key=lambda p: (p.ts_ns, p.seq))
        for p in shown:
            self.say(f"   seq {p.seq:>6}  {format_ts(p.ts_ns)}  {p.kind:<8} {p.name}".rstrip())
        self.flush_example = flushes[len(flushes) // 2] if flushes else None

    def show_commands(self) -> None:
        from journal.units import format_ts

        j = _quote(self.journal)
        cdp = cdp_command()
        width = len(cdp) + 20
        self.say()
        self.say("Try it yourself:")
        self.say(f"  export CDP_JOURNAL={j}")
        self.say(f"  {cdp + ' points --marks':<{width}}# the named points")
        self.say(f"  {cdp + ' tui':<{width}}# browse points and changes, restore from there")
        self.say(f"  {cdp} restore --at mark:before-upgrade --to {_quote(self.dir / 'before-upgrade.img')}")
        if self.flush_example is not None:
            at = format_ts(self.flush_example.ts_ns)
            self.say(f"  {cdp} restore --at {at} --to {_quote(self.dir / 'at-a-flush.img')}")
        self.say(f"  {cdp} status ; {cdp} verify")
        self.say(f"(everything is in {_quote(self.dir)}; remove it with: rm -r {_quote(self.dir)})")

    def remove_files(self, *, remove_dir: bool) -> None:
        """Remove what the demo made (the directory too if the demo created it)."""
        for path in (self.image, self.ring, self.log, self.dir / "restore-check.img"):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.journal, ignore_errors=True)
        if remove_dir:
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def stop_service(self) -> None:
        """Ask a still-running service to stop (SIGTERM is a clean stop)."""
        if self.drain is not None and self.drain.poll() is None:
            self.drain.terminate()
            try:
                self.drain.wait(10)
            except subprocess.TimeoutExpired:
                self.drain.kill()
                self.drain.wait()


def cdp_command() -> str:
    """How the user can type `cdp` here: plain ``cdp`` if that is on PATH, else the path they used."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "cdp"
    if os.path.basename(argv0) == "cdp":
        found = shutil.which("cdp")
        try:
            if found and os.path.samefile(found, argv0):
                return "cdp"
        except OSError:
            pass
        return _quote(argv0)
    return f"{_quote(sys.executable)} -m cdp"  # run as `python -m cdp`


def _quote(path: Path | str) -> str:
    import shlex

    return shlex.quote(os.fspath(path))


def run_demo(workdir: Path | None, *, seconds: float, keep: bool, out: TextIO = sys.stdout,
             on_dir: Callable[[Path], None] | None = None) -> int:
    """Run the demo; returns 0 when every restore matched.

    ``workdir`` must be absent or empty (default: a new temporary directory).
    The journal and the device image stay afterwards so the printed commands
    work; the ring file and the service log go unless ``keep``.
    """
    created = workdir is None or not workdir.exists()
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="cdp-demo-"))
    else:
        if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
            raise CdpError(f"{workdir} exists and is not an empty directory; give a new --dir")
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CdpError(f"cannot create {workdir}: {exc.strerror}") from None
    workdir = workdir.resolve()
    if on_dir is not None:
        on_dir(workdir)
    demo = Demo(workdir, seconds, out)
    started = time.monotonic()
    try:
        demo.make_device()
        demo.init_journal()
        demo.start_service()
        stats = demo.workload()
        demo.say(f"   done: {stats['writes']} writes ({stats['bytes'] / (1 << 20):.0f} MiB), "
                 f"{stats['flushes']} flushes, {stats['discards']} discards, {len(MARKS)} marks; "
                 f"{stats['records']} ring records, "
                 f"{stats['dropped']} dropped")
        demo.wait_service()
        demo.check_restores()
        demo.show_points()
        demo.show_commands()
    except KeyboardInterrupt:
        demo.stop_service()
        if not keep:
            demo.remove_files(remove_dir=created)
        raise
    except Exception as exc:
        # Keep everything for a look; the message still fits one line.
        demo.stop_service()
        raise CdpError(f"{one_line(exc)} (the demo's files are kept in {workdir})") from exc
    if not keep:
        for scratch in (demo.ring, demo.log):
            scratch.unlink(missing_ok=True)
    demo.say(f"demo finished in {time.monotonic() - started:.1f} s")
    return 0
