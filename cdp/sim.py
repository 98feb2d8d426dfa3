"""A simulated protected device: an image file plus a ring, fed by a seeded workload.

:class:`SimDevice` stands where the kernel filter stands: every request is
applied to the image file *and* published in a ring file exactly as the
filter publishes it (header and payload first, state last, large writes
split, OVERFLOW when the ring stays full). The drain service cannot tell the
difference, so the demo, the tests and the benchmarks exercise the real
consumer path without a kernel.

:class:`Workload` makes a reproducible stream of requests from a seed: mixed
sizes from 512 B to 1 MiB (512-aligned), overlapping writes on a hot region,
flushes, marks, discards and write-zeroes.

Run as a separate producer process::

    python -m cdp.sim --ring R --image I --seconds S --seed N --rate-mb M

which creates the ring if it does not exist (or attaches to a fresh one),
writes until the time or op budget is spent (or SIGTERM), then marks the
ring DETACHED and prints a one-line JSON summary.

Keep ring files on tmpfs (``/dev/shm``) when speed matters: the kernel's
ring is memory, while a ring file on a disk makes the kernel write its dirty
pages back, competing with the journal's own writes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Self

import crc32c

from cdp.ringabi import MAX_MARK_NAME, SECTOR, RecFlag, RecType, RingError
from cdp.ringwriter import RingWriter, Slot
from journal.format import BLOCK
from journal.identity import device_id

POLICIES = ("block", "overflow")
_ZERO_CHUNK = bytes(1 << 20)


@dataclass
class SimStats:
    """What a simulated device did."""

    ops: int = 0
    writes: int = 0
    bytes_written: int = 0
    discards: int = 0
    zeroes: int = 0
    flushes: int = 0
    marks: int = 0
    records: int = 0
    dropped: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """One record the device published, for tests that compare with the journal."""

    seq: int
    type: int
    flags: int
    offset: int
    length: int
    crc: int


class SimDevice:
    """An image file and a ring producer, updated together as the filter would."""

    def __init__(self, image: str | os.PathLike[str], writer: RingWriter, *, policy: str = "block",
                 wait_ms: float = 1000.0, durable_flush: bool = False, keep_log: bool = False) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.image = os.fspath(image)
        self.writer = writer
        self.policy = policy
        self.wait_s = wait_ms / 1000.0 if policy == "block" else 0.0
        self.durable_flush = durable_flush
        self.stats = SimStats()
        self.log: list[LoggedRecord] | None = [] if keep_log else None
        self._fd = os.open(self.image, os.O_RDWR | os.O_CLOEXEC)
        size = os.lseek(self._fd, 0, os.SEEK_END)
        if size != writer.device_bytes:
            os.close(self._fd)
            raise RingError(f"image {self.image} holds {size} bytes but the ring protects {writer.device_bytes}")
        self.device_bytes = size

    # ----------------------------------------------------------------- requests

    def _publish(self, rtype: int, *, offset: int = 0, length: int = 0, data: bytes | memoryview = b"",
                 flags: int = 0) -> list[Slot]:
        slots = self.writer.submit(rtype, offset=offset, length=length, data=data, flags=flags, wait_s=self.wait_s)
        self.stats.dropped = self.writer.dropped
        return slots

    def _commit(self, slots: list[Slot], rtype: int, flags: int, offset: int, data: memoryview | None,
                length: int) -> None:
        for i, slot in enumerate(slots):
            slot.commit()
            if self.log is not None:
                if data is not None:
                    step = self.writer.max_payload
                    piece = data[i * step:(i + 1) * step]
                    rec = LoggedRecord(slot.seq, rtype, flags if i == 0 else flags & ~RecFlag.PREFLUSH,
                                       offset + i * step, len(piece), crc32c.crc32c(piece))
                else:
                    rec = LoggedRecord(slot.seq, rtype, flags, offset, length, 0)
                self.log.append(rec)
        self.stats.records += len(slots)

    def write(self, offset: int, data: bytes | memoryview, flags: int = 0) -> int:
        """Write ``data`` at ``offset``; returns the ring records published (0: dropped)."""
        view = memoryview(data).cast("B")
        slots = self._publish(RecType.WRITE, offset=offset, length=view.nbytes, data=view, flags=flags)
        try:
            written = os.pwrite(self._fd, view, offset)
            if written != view.nbytes:
                raise OSError(f"short write to {self.image}")
        except BaseException:
            for slot in slots:
                slot.discard()
            raise
        self._commit(slots, RecType.WRITE, flags, offset, view, view.nbytes)
        self.stats.ops += 1
        self.stats.writes += 1
        self.stats.bytes_written += view.nbytes
        return len(slots)

    def _zero(self, rtype: int, offset: int, length: int) -> int:
        slots = self._publish(rtype, offset=offset, length=length)
        done = 0
        while done < length:
            n = min(len(_ZERO_CHUNK), length - done)
            os.pwrite(self._fd, memoryview(_ZERO_CHUNK)[:n], offset + done)
            done += n
        self._commit(slots, rtype, 0, offset, None, length)
        self.stats.ops += 1
        return len(slots)

    def discard(self, offset: int, length: int) -> int:
        """Discard a range: the image reads zeros there afterwards."""
        self.stats.discards += 1
        return self._zero(RecType.DISCARD, offset, length)

    def write_zeroes(self, offset: int, length: int) -> int:
        """Zero a range."""
        self.stats.zeroes += 1
        return self._zero(RecType.WRITE_ZEROES, offset, length)

    def flush(self) -> int:
        """A completed cache flush: a crash-consistent point."""
        if self.durable_flush:
            os.fdatasync(self._fd)
        slots = self._publish(RecType.FLUSH)
        self._commit(slots, RecType.FLUSH, 0, 0, None, 0)
        self.stats.ops += 1
        self.stats.flushes += 1
        return len(slots)

    def mark(self, name: str) -> int:
        """A named rewind point."""
        raw = name.encode("utf-8")
        if not 0 < len(raw) <= MAX_MARK_NAME:
            raise ValueError(f"a mark name must be 1..{MAX_MARK_NAME} bytes of UTF-8")
        slots = self._publish(RecType.MARK, data=raw)
        self._commit(slots, RecType.MARK, 0, 0, None, 0)
        if self.log is not None and slots:
            self.log[-1] = LoggedRecord(slots[0].seq, RecType.MARK, 0, 0, 0, crc32c.crc32c(raw))
        self.stats.ops += 1
        self.stats.marks += 1
        return len(slots)

    def tick(self) -> None:
        """Idle moment: leave the OVERFLOW state if the ring has room again."""
        self.writer.emit_overflow()

    def close(self, *, detach: bool = True) -> None:
        """Close the image and the ring (DETACHED unless told otherwise)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.writer.close(detach=detach)
        self.stats.dropped = self.writer.dropped

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------- workload


@dataclass(frozen=True, slots=True)
class Op:
    """One request of a workload. ``kind``: write, discard, zeroes, flush, mark."""

    kind: str
    offset: int = 0
    length: int = 0
    data: bytes = b""
    flags: int = 0
    name: str = ""


#: Write sizes in sectors, with their weights: mostly small, some up to 1 MiB.
_SIZES = [(1, 3), (2, 2), (8, 8), (16, 3), (32, 3), (64, 2), (128, 2), (256, 1), (512, 1), (2048, 1)]


@dataclass
class Workload:
    """A reproducible request stream for a device of ``device_bytes``."""

    seed: int
    device_bytes: int
    max_write: int = 1 << 20
    p_flush: float = 0.05
    p_mark: float = 0.01
    p_discard: float = 0.015
    p_zeroes: float = 0.015
    hot_fraction: float = 0.125
    _rng: random.Random = field(init=False, repr=False)
    _pool: bytes = field(init=False, repr=False)
    _n: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        if self.device_bytes < 64 * 1024 or self.device_bytes % SECTOR:
            raise ValueError("the device must hold at least 64 KiB, in whole sectors")
        self._rng = random.Random(self.seed)
        self._pool = self._rng.randbytes(2 << 20)
        sizes = [(s * SECTOR, w) for s, w in _SIZES if s * SECTOR <= min(self.max_write, self.device_bytes // 4)]
        self._sizes = [s for s, _ in sizes]
        self._weights = [w for _, w in sizes]

    def _range(self, size: int) -> int:
        rng = self._rng
        span = self.device_bytes
        if rng.random() < 0.5:  # a hot region: writes overlap and overwrite each other
            span = max(size, int(self.device_bytes * self.hot_fraction) // SECTOR * SECTOR)
        align = BLOCK if size % BLOCK == 0 and rng.random() < 0.8 else SECTOR
        return rng.randrange(0, (span - size) // align + 1) * align

    def next(self) -> Op:
        """The next request."""
        rng = self._rng
        self._n += 1
        r = rng.random()
        if r < self.p_flush:
            return Op("flush")
        r -= self.p_flush
        if r < self.p_mark:
            return Op("mark", name=f"mark-{self.seed}-{self._n}")
        r -= self.p_mark
        if r < self.p_discard + self.p_zeroes:
            size = rng.choice(self._sizes)
            return Op("discard" if r < self.p_discard else "zeroes", self._range(size), size)
        size = rng.choices(self._sizes, self._weights)[0]
        start = rng.randrange(0, len(self._pool) - size + 1) // SECTOR * SECTOR
        data = self._n.to_bytes(8, "little") + self._pool[start + 8:start + size]
        flags = (RecFlag.FUA if rng.random() < 0.05 else 0) | (RecFlag.PREFLUSH if rng.random() < 0.05 else 0)
        return Op("write", self._range(size), size, data, flags)

    def __iter__(self) -> Iterator[Op]:
        while True:
            yield self.next()


def apply(device: SimDevice, op: Op) -> int:
    """Run one request on the device; returns the bytes it wrote (0 for the rest)."""
    if op.kind == "write":
        device.write(op.offset, op.data, op.flags)
        return op.length
    if op.kind == "flush":
        device.flush()
    elif op.kind == "mark":
        device.mark(op.name)
    elif op.kind == "discard":
        device.discard(op.offset, op.length)
    elif op.kind == "zeroes":
        device.write_zeroes(op.offset, op.length)
    else:
        raise ValueError(f"unknown op {op.kind!r}")
    return 0


def run(device: SimDevice, workload: Workload, *, seconds: float | None = None, ops: int | None = None,
        rate_mb: float | None = None, stop: threading.Event | None = None,
        on_progress: Callable[[SimStats], None] | None = None) -> SimStats:
    """Feed the workload to the device until the time or op budget is spent or ``stop`` is set.

    ``rate_mb`` caps the write rate (MiB/s); idle moments let the producer
    leave the OVERFLOW state.
    """
    if seconds is None and ops is None and stop is None:
        raise ValueError("give seconds, ops or a stop event")
    start = time.monotonic()
    rate = rate_mb * (1 << 20) if rate_mb else None
    written = 0
    count = 0
    last_progress = start
    while True:
        now = time.monotonic()
        if (seconds is not None and now - start >= seconds) or (ops is not None and count >= ops) \
                or (stop is not None and stop.is_set()):
            break
        if rate is not None:
            ahead = written / rate - (now - start)
            if ahead > 0:
                device.tick()
                time.sleep(min(ahead, 0.05))
                continue
        written += apply(device, workload.next())
        count += 1
        if on_progress is not None and now - last_progress >= 0.25:
            last_progress = now
            on_progress(device.stats)
    device.stats.seconds = time.monotonic() - start
    return device.stats


# ------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cdp.sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--ring", required=True, help="ring file (created if missing)")
    p.add_argument("--image", required=True, help="device image file")
    p.add_argument("--seconds", type=float, help="run this long")
    p.add_argument("--ops", type=int, help="run this many requests")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate-mb", type=float, default=None, help="cap writes at this many MiB/s")
    p.add_argument("--policy", choices=POLICIES, default="block")
    p.add_argument("--wait-ms", type=float, default=1000.0, help="block policy: wait this long for room")
    p.add_argument("--ring-mb", type=float, default=16.0, help="data area of a new ring (power of two)")
    p.add_argument("--device-mb", type=float, help="create the image with this size if missing")
    p.add_argument("--max-write", type=int, default=1 << 20, help="largest write in bytes")
    p.add_argument("--log", help="write one line per published record here (seq type flags offset length crc)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seconds is None and args.ops is None:
        print("cdp.sim: give --seconds or --ops", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        image = Path(args.image)
        if not image.exists():
            if args.device_mb is None:
                raise RingError(f"image {image} does not exist (give --device-mb to create it)")
            with open(image, "wb") as f:
                f.truncate(int(args.device_mb * (1 << 20)) // SECTOR * SECTOR)
        device_bytes = image.stat().st_size
        ring = Path(args.ring)
        if ring.exists():
            writer = RingWriter.attach(ring)
        else:
            writer = RingWriter.create(ring, int(args.ring_mb * (1 << 20)), device_bytes,
                                        device_id=device_id(image))
        device = SimDevice(image, writer, policy=args.policy, wait_ms=args.wait_ms, keep_log=bool(args.log))
    except (RingError, OSError, ValueError) as exc:
        print(f"cdp.sim: {exc}", file=sys.stderr)
        return 1
    try:
        stats = run(device, Workload(args.seed, device_bytes, max_write=args.max_write),
                    seconds=args.seconds, ops=args.ops, rate_mb=args.rate_mb, stop=stop)
    finally:
        device.close()
    if args.log and device.log is not None:
        with open(args.log, "w") as f:
            f.writelines(f"{rec.seq} {rec.type} {rec.flags} {rec.offset} {rec.length} {rec.crc}\n" for rec in device.log)
    print(json.dumps(asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
