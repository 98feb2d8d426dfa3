"""The producer end of a ring file: :class:`RingWriter`, which behaves as the kernel filter does.

The simulator (:mod:`cdp.sim`), the demo, the tests and the benchmarks
produce into ring files with it; the kernel module (``kernel/cdp-core.c``)
is the producer of a real device's ring. The drain service only ever reads
(:mod:`cdp.ring`).

Publishing order (ABI v1, :mod:`cdp.ringabi`): the header goes first with
state BUSY, then ``head`` is published, then the payload; the state word
(COMMITTED or DISCARDED) is the last thing written for a record. The
consumer's ``tail`` is trusted only within ``[old tail, head]``. On
x86-64 those stores become visible in program order, which is why ring
files between two Python processes are supported on x86-64 only (see
:mod:`cdp.ring` for the consumer's half of the argument).
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path
from typing import Self

from cdp.ringabi import (
    CONTROL_SIZE,
    DEVICE_ID_SIZE,
    I_FLAGS,
    I_STATE,
    MAX_MARK_NAME,
    MIN_DATA_SIZE,
    OVERFLOW_PAYLOAD_SIZE,
    Q_DROPPED,
    Q_HEAD,
    Q_TAIL,
    REC_ALIGN,
    REC_HDR_SIZE,
    RING_FLAG_DETACHED,
    RING_FLAG_OVERFLOW,
    RING_MAGIC,
    RING_VERSION,
    SECTOR,
    RecFlag,
    RecState,
    RecType,
    RingError,
    check_host,
    data_crc,
    is_power_of_two,
    pack_control,
    pack_record_header,
    range_ok,
    rec_len_for,
    unpack_control,
)

_FIRST_DROP = struct.Struct("<Q")  # an OVERFLOW record's payload
_EMPTY = memoryview(b"")
#: Record types that change a device range (dropped ones become OVERFLOW ranges).
_RANGE_WRITES = (RecType.WRITE, RecType.DISCARD, RecType.WRITE_ZEROES)
Buffer = bytes | bytearray | memoryview


class Slot:
    """A reserved record whose header and payload are in the ring, state BUSY."""

    __slots__ = ("_writer", "done", "pos", "seq", "ts_ns")

    def __init__(self, writer: RingWriter, pos: int, seq: int, ts_ns: int) -> None:
        self._writer = writer
        self.pos = pos
        self.seq = seq
        self.ts_ns = ts_ns
        self.done = False

    def commit(self) -> None:
        """The write reached the device: let the consumer journal it."""
        self._finish(RecState.COMMITTED)

    def discard(self) -> None:
        """The write failed or was cancelled: the consumer skips it."""
        self._finish(RecState.DISCARDED)

    def _finish(self, state: int) -> None:
        if self.done:
            raise RingError(f"ring record seq {self.seq} was already committed or discarded")
        self._writer._set_state(self.pos, state)
        self.done = True


#: The most OVERFLOW records emitted for one window; more ranges are merged.
MAX_OVERFLOW_RECORDS = 64


class RingWriter:
    """The producer end of a ring file, behaving as the kernel filter does.

    Reserves records in ``seq`` order (a PAD fills the rest of the data area
    when a record would cross its end), lets them be committed in any order,
    and when the ring is full drops writes into the OVERFLOW state: the
    ranges are remembered in a chunk bitmap and emitted as OVERFLOW records
    once room returns.
    """

    def __init__(self, path: str | os.PathLike[str], fd: int, mm: mmap.mmap) -> None:
        check_host()
        self.path = os.fspath(path)
        self._fd = fd
        self._mm = mm
        view = memoryview(mm)
        self._ctl = view[:CONTROL_SIZE]
        self._ctl64 = self._ctl.cast("Q")
        self._ctl32 = self._ctl.cast("I")
        self._data = view[CONTROL_SIZE:]
        self._data32 = self._data.cast("I")
        view.release()
        control = unpack_control(self._ctl)
        self.data_size = control.data_size
        self.device_bytes = control.device_bytes
        self.block_size = control.block_size
        self.device_id = bytes(control.device_id)
        self._mask = self.data_size - 1
        self._head = control.head
        self._tail = control.tail
        self._seq = 1
        self._last_ts = 0
        self._dropped = control.dropped
        #: Largest payload of one record: big writes are split into pieces this size.
        self.max_payload = min(1 << 20, self.data_size >> 2)
        # Overflow bookkeeping: one byte per chunk of the device.
        chunk = 64 << 10
        while self.device_bytes // chunk > 65536:
            chunk <<= 1
        self._chunk = chunk
        self._dirty = bytearray(-(-self.device_bytes // chunk))
        self._first_drop_ts: int | None = None
        self.records = 0
        self.closed = False

    # ----------------------------------------------------------------- opening

    @staticmethod
    def create_file(
        path: str | os.PathLike[str], data_size: int, device_bytes: int, block_size: int = 512,
        device_id: bytes = bytes(DEVICE_ID_SIZE),
    ) -> None:
        """Write a fresh ring file (atomically replacing any old one)."""
        if data_size < MIN_DATA_SIZE or not is_power_of_two(data_size):
            raise RingError(f"ring data size {data_size} is not a power of two of at least {MIN_DATA_SIZE}")
        if device_bytes <= 0 or device_bytes % SECTOR:
            raise RingError(f"device size {device_bytes} is not a positive multiple of {SECTOR}")
        if block_size not in (512, 4096):
            raise RingError(f"block size {block_size} is not 512 or 4096")
        if len(device_id) != DEVICE_ID_SIZE:
            raise RingError(f"device id must be {DEVICE_ID_SIZE} bytes")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                os.fchmod(f.fileno(), 0o600)  # every write to the device passes through it
                f.write(pack_control(data_size, device_bytes, block_size, device_id))
                f.truncate(CONTROL_SIZE + data_size)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RingError(f"cannot create ring {path}: {exc.strerror}") from None

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], data_size: int, device_bytes: int, block_size: int = 512,
        device_id: bytes = bytes(DEVICE_ID_SIZE),
    ) -> RingWriter:
        """Create a fresh ring file and become its producer."""
        cls.create_file(path, data_size, device_bytes, block_size, device_id)
        return cls.attach(path)

    @classmethod
    def attach(cls, path: str | os.PathLike[str]) -> RingWriter:
        """Become the producer of a fresh ring file (one never produced into)."""
        check_host()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < CONTROL_SIZE:
                raise RingError(f"{path} is too small to be a ring ({size} bytes)")
            head = unpack_control(os.pread(fd, CONTROL_SIZE, 0))
            if head.magic != RING_MAGIC or head.version != RING_VERSION:
                raise RingError(f"{path} is not a cdp ring of ABI version {RING_VERSION}")
            if (not is_power_of_two(head.data_size) or head.data_size < MIN_DATA_SIZE
                    or size != CONTROL_SIZE + head.data_size):
                raise RingError(f"{path}: ring data size {head.data_size} does not match the file")
            if head.head or head.tail or head.flags:
                raise RingError(f"{path} was already used by a producer; create a fresh ring")
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm)

    # ---------------------------------------------------------------- helpers

    def now(self) -> int:
        """The clock for the next request: CLOCK_REALTIME, clamped to move forward.

        The ABI only asks that it never decreases; stepping at least 1 ns per
        request also keeps a MARK strictly before the writes that follow it,
        so restoring "at the mark" never includes them.
        """
        ts = time.time_ns()
        if ts <= self._last_ts:
            ts = self._last_ts + 1
        self._last_ts = ts
        return ts

    @property
    def head(self) -> int:
        return self._head

    @property
    def overflow(self) -> bool:
        return self._first_drop_ts is not None

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def next_seq(self) -> int:
        return self._seq

    def _refresh_tail(self) -> int:
        """The consumer's ``tail``, ignored unless it lies in [old tail, head]."""
        tail = self._ctl64[Q_TAIL]
        if self._tail <= tail <= self._head and not tail % REC_ALIGN:
            self._tail = tail
        return self._tail

    def free(self) -> int:
        """Bytes the producer may reserve right now."""
        return self.data_size - (self._head - self._refresh_tail())

    def _need(self, rec_lens: list[int]) -> int:
        """Bytes of ring (PADs included) that records of these lengths take from ``head``."""
        pos = self._head
        for rec_len in rec_lens:
            room = self.data_size - (pos & self._mask)
            if room < rec_len:
                pos += room
            pos += rec_len
        return pos - self._head

    def _set_flags(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        self._ctl32[I_FLAGS] = (self._ctl32[I_FLAGS] | set_bits) & ~clear_bits

    def _set_state(self, pos: int, state: int) -> None:
        self._data32[((pos & self._mask) >> 2) + I_STATE] = state

    def _put(self, rtype: int, flags: int, seq: int, ts: int, offset: int, length: int,
             data: memoryview, state: int, rec_len: int = 0) -> int:
        """Write one record at ``head`` (which must have room) and advance ``head``.

        The header goes first, then ``head`` is published, then the payload;
        a non-BUSY ``state`` (a PAD) is part of the header itself.
        """
        data_len = data.nbytes
        rec_len = rec_len or rec_len_for(data_len)
        o = self._head & self._mask
        d = self._data
        d[o:o + REC_HDR_SIZE] = pack_record_header(rtype, flags, rec_len, data_len, seq, ts, offset, length,
                                                   data_crc(data), state)
        pos = self._head
        self._head = pos + rec_len
        self._ctl64[Q_HEAD] = self._head  # the header is in place: publish the reservation
        if data_len:
            start = o + REC_HDR_SIZE
            d[start:start + data_len] = data
            pad = rec_len - REC_HDR_SIZE - data_len
            if pad and rtype != RecType.PAD:
                d[start + data_len:o + rec_len] = bytes(pad)
        return pos

    def _pad_if_needed(self, rec_len: int) -> None:
        """Fill the rest of the data area with a committed PAD if the record would cross its end."""
        room = self.data_size - (self._head & self._mask)
        if room < rec_len:
            self._put(RecType.PAD, 0, 0, self._last_ts, 0, 0, _EMPTY, RecState.COMMITTED, room)

    # -------------------------------------------------------------- reserving

    def reserve(self, rtype: int, *, offset: int = 0, length: int = 0, data: Buffer = b"",
                flags: int = 0, ts_ns: int | None = None) -> Slot | None:
        """Put one record in the ring, state BUSY; ``None`` when there is no room.

        The header (with the payload's CRC) goes first, then ``head``, then the
        payload; :meth:`Slot.commit` or :meth:`Slot.discard` writes the state.
        """
        if self.closed:
            raise RingError(f"ring {self.path} is closed")
        view = data if isinstance(data, memoryview) else memoryview(data)
        data_len = view.nbytes
        if data_len > self.max_payload:
            raise RingError(f"a record payload of {data_len} bytes exceeds {self.max_payload}")
        rec_len = rec_len_for(data_len)
        if self._need([rec_len]) > self.free():
            return None
        self._pad_if_needed(rec_len)
        ts = self.now() if ts_ns is None else max(ts_ns, self._last_ts)
        self._last_ts = ts
        seq = self._seq
        pos = self._put(rtype, flags, seq, ts, offset, length, view, RecState.BUSY)
        self._seq = seq + 1
        self.records += 1
        return Slot(self, pos, seq, ts)

    def _wait_room(self, nbytes: int, deadline: float) -> bool:
        while self.free() < nbytes:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0005)
        return True

    def _overflow_ranges(self) -> list[tuple[int, int]]:
        """Runs of dirty chunks as device ranges, merged down to at most MAX_OVERFLOW_RECORDS."""
        dirty, chunk = self._dirty, self._chunk
        runs: list[tuple[int, int]] = []
        i = dirty.find(1)
        while i >= 0:
            j = dirty.find(0, i)
            if j < 0:
                j = len(dirty)
            runs.append((i, j))
            i = dirty.find(1, j)
        if len(runs) > MAX_OVERFLOW_RECORDS:
            per = -(-len(runs) // MAX_OVERFLOW_RECORDS)
            runs = [(runs[k][0], runs[min(k + per, len(runs)) - 1][1]) for k in range(0, len(runs), per)]
        return [(a * chunk, min(b * chunk, self.device_bytes) - a * chunk) for a, b in runs]

    def emit_overflow(self, then: int = 0, deadline: float = 0.0) -> bool:
        """Leave the OVERFLOW state if its records fit (followed by a record of ``then`` bytes).

        Waits for room until ``deadline`` (a ``time.monotonic()`` value).
        """
        if self._first_drop_ts is None:
            return True
        ranges = self._overflow_ranges()
        rec_lens = [rec_len_for(OVERFLOW_PAYLOAD_SIZE)] * len(ranges)
        need = self._need(rec_lens + [then] if then else rec_lens)
        if not self._wait_room(need, deadline):
            return False
        payload = _FIRST_DROP.pack(self._first_drop_ts)
        for offset, length in ranges:
            slot = self.reserve(RecType.OVERFLOW, offset=offset, length=length, data=payload)
            assert slot is not None  # room was checked for all of them
            slot.commit()
        self._dirty[:] = bytes(len(self._dirty))
        self._first_drop_ts = None
        self._set_flags(clear_bits=RING_FLAG_OVERFLOW)
        return True

    def drop(self, offset: int, length: int, ts_ns: int) -> None:
        """Count a write that could not be put in the ring and remember its range."""
        if self._first_drop_ts is None:
            self._first_drop_ts = ts_ns
            self._set_flags(set_bits=RING_FLAG_OVERFLOW)
        self._dropped += 1
        self._ctl64[Q_DROPPED] = self._dropped
        if length > 0:
            a = offset // self._chunk
            b = -(-(offset + length) // self._chunk)
            self._dirty[a:b] = b"\x01" * (b - a)

    def submit(self, rtype: int, *, offset: int = 0, length: int = 0, data: Buffer = b"",
               flags: int = 0, wait_s: float = 0.0) -> list[Slot]:
        """Reserve the records for one request as the kernel would; ``[]`` if it was dropped.

        A WRITE larger than :attr:`max_payload` becomes several records with
        consecutive ``seq`` and one ``ts_ns``. When the ring stays full for
        ``wait_s`` seconds the request is dropped: WRITE, DISCARD and
        WRITE_ZEROES are remembered as OVERFLOW ranges, FLUSH and MARK are
        simply lost (they change no byte). A WRITE cut short by a full ring
        returns the slots of its first pieces; the rest of its range is
        remembered. The caller commits (or discards) the slots.
        """
        view = memoryview(data).cast("B") if data else memoryview(b"")
        size = view.nbytes
        if rtype == RecType.WRITE and size != length:
            raise RingError(f"a WRITE of {length} bytes needs {length} bytes of data, got {size}")
        if rtype == RecType.MARK and not 0 < size <= MAX_MARK_NAME:
            raise RingError(f"a mark name must be 1..{MAX_MARK_NAME} bytes")
        if rtype in _RANGE_WRITES and not range_ok(offset, length, self.device_bytes):
            raise RingError(f"range {offset}+{length} is not sector-aligned inside the device")
        step = self.max_payload
        pieces = [(offset + k, view[k:k + step]) for k in range(0, size, step)] if rtype == RecType.WRITE else [(offset, view)]
        ts = self.now()
        # already dropping: do not stall the device again, drop until room returns
        deadline = time.monotonic() + (0.0 if self._first_drop_ts is not None else wait_s)
        slots: list[Slot] = []
        for i, (off, piece) in enumerate(pieces):
            plen = piece.nbytes if rtype == RecType.WRITE else length
            pflags = flags if i == 0 else flags & ~RecFlag.PREFLUSH
            rec_len = rec_len_for(piece.nbytes)
            slot = None
            if self.emit_overflow(rec_len, deadline):
                slot = self.reserve(rtype, offset=off, length=plen, data=piece, flags=pflags, ts_ns=ts)
                if slot is None and self._wait_room(self._need([rec_len]), deadline):
                    slot = self.reserve(rtype, offset=off, length=plen, data=piece, flags=pflags, ts_ns=ts)
            if slot is None:
                if rtype in _RANGE_WRITES:
                    end = offset + length
                    self.drop(off, end - off, ts)
                return slots
            slots.append(slot)
        return slots

    def close(self, *, detach: bool = True, wait_s: float = 5.0) -> None:
        """Emit pending OVERFLOW records (waiting up to ``wait_s``), set DETACHED, unmap."""
        if self.closed:
            return
        if detach:
            self.emit_overflow(0, time.monotonic() + wait_s)
            self._set_flags(set_bits=RING_FLAG_DETACHED)
        self.closed = True
        for view in (self._data32, self._data, self._ctl64, self._ctl32, self._ctl):
            view.release()
        self._mm.close()
        os.close(self._fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
