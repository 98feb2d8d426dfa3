"""The consumer end of the write ring: :class:`Ring`, which the drain service reads.

The ring (ABI v1, :mod:`cdp.ringabi`) is shared memory between one producer
(the kernel filter, or the simulator's :class:`cdp.ringwriter.RingWriter`)
and one consumer (the drain service). The consumer reads records from its
private cursor, checks every one of them before it trusts it, and hands
back :class:`Entry` tuples whose payload is a zero-copy view into the
mapping. It moves ``tail`` (:meth:`Ring.release`) only after the journal
made the records durable: until then the producer cannot reuse the bytes,
so the views stay valid.

Memory ordering
---------------
Head, tail and state words are accessed through native ``memoryview.cast``
views: an aligned 8- or 4-byte item access is one ``memcpy`` of that size,
which compiles to a single load or store, so a word is never seen torn.
The producer writes the header (state BUSY), then ``head``, then the payload,
then, for a WRITE, may rewrite ``data_crc`` and ``hdr_crc`` (the kernel
computes the CRC after the bio completed), then the state word; the consumer
loads ``head``, then a record's state, stops there if it is BUSY, and only
then loads the header and payload. A BUSY header is never checked: its CRCs
may be half written. On x86-64 (TSO) stores become visible to other cores
in program order and loads are not reordered with older loads, and CPython
cannot reorder these stores across its own opaque C calls, so a consumer that
sees COMMITTED also sees the payload, and a producer that sees a new ``tail``
knows the consumer's loads of the released bytes are done (loads are not
reordered with later stores). That makes ring *files* between two Python
processes safe on x86-64. Weakly ordered CPUs (arm64) would need barriers
Python cannot express; ring files are supported on x86-64 only.

The kernel side must publish with release semantics and read ``tail`` with
acquire semantics: header then ``smp_store_release(&ctl->head, ...)``,
payload then ``smp_store_release(&rec->state, COMMITTED)``, and
``smp_load_acquire(&ctl->tail)`` checked against ``[old tail, head]`` before
any reuse of the space.

(Over 500 lines on purpose: opening, the cursor and the record checks share
the mapping, the expected seq and the ordering argument above; the producer
is apart, in :mod:`cdp.ringwriter`.)
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import stat
import struct
import time
from typing import NamedTuple, Self

import crc32c

from cdp.ringabi import (
    CONTROL_SIZE,
    HDR_CRC_SPAN,
    I_FLAGS,
    I_STATE,
    MAX_MARK_NAME,
    MIN_DATA_SIZE,
    OVERFLOW_PAYLOAD_SIZE,
    Q_DROPPED,
    Q_HEAD,
    Q_TAIL,
    REC_ALIGN,
    REC_HDR,
    REC_HDR_SIZE,
    REC_MAGIC,
    REC_OFF_TS_NS,
    RING_FLAG_DETACHED,
    RING_FLAG_OVERFLOW,
    RING_MAGIC,
    RING_VERSION,
    SECTOR,
    Control,
    RecState,
    RecType,
    RingError,
    check_host,
    is_power_of_two,
    range_ok,
    unpack_control,
)
from journal.blockcrc import block_crcs as _block_crcs
from journal.blockcrc import combined as _combined
from journal.format import BLOCK

__all__ = ["Corrupt", "Entry", "Ring", "RingError"]

_crc = crc32c.crc32c
_unpack_hdr = REC_HDR.unpack_from
_U64 = struct.Struct("<Q")
_PREFIX = struct.Struct("<IHHI")  # magic, type, flags, rec_len: enough to step over a record
_WRITE = int(RecType.WRITE)
_WRITE_ZEROES = int(RecType.WRITE_ZEROES)
_FLUSH = int(RecType.FLUSH)
_MARK = int(RecType.MARK)
_OVERFLOW = int(RecType.OVERFLOW)
_PAD = int(RecType.PAD)
_BUSY = int(RecState.BUSY)
_COMMITTED = int(RecState.COMMITTED)
_DISCARDED = int(RecState.DISCARDED)
_BLOCK_MASK = BLOCK - 1
_CRC_FAILED = "payload fails its CRC-32C"
_new_entry = tuple.__new__


class Entry(NamedTuple):
    """One committed record that passed every check.

    ``payload`` is a read-only view into the ring: valid until the consumer
    releases ``end``; copy it (the journal does) before that. ``data_crc`` is
    the producer's CRC-32C of it, checked; ``block_crcs`` those of its 4 KiB
    pieces when it is a block-aligned WRITE (the check computed them), else
    None. The journal stores both instead of computing them again.
    """

    pos: int
    end: int
    seq: int
    ts_ns: int
    type: int
    flags: int
    offset: int
    length: int
    payload: memoryview
    data_crc: int
    block_crcs: list[int] | None


class Corrupt(NamedTuple):
    """A stretch of the ring that failed its checks and was not applied.

    ``offset``/``length`` give the device range the record touched when its
    header was trustworthy (``length == 0``: it touched nothing, e.g. a
    MARK); ``None`` when the range is unknown: the consumer must treat the
    whole device as changed. ``end`` is where reading resumed.
    """

    pos: int
    end: int
    seq: int | None
    ts_ns: int | None
    reason: str
    offset: int | None = None
    length: int | None = None

    @property
    def range_known(self) -> bool:
        return self.offset is not None and self.length is not None


def _views(buf: mmap.mmap | memoryview) -> tuple[memoryview, memoryview, memoryview]:
    view = memoryview(buf)
    return view, view.cast("Q"), view.cast("I")


def _sound_header(data: memoryview, o: int, room: int, size: int) -> tuple | None:
    """The header at data offset ``o`` if it can be trusted, else None.

    Sound means: the magic, ``hdr_crc`` over its first bytes, a ``rec_len``
    that is aligned, holds the header and the payload and fits both the data
    area and the ``room`` up to ``head``, and a known type. Only then are its
    seq, time and range worth reading.
    """
    hdr = _unpack_hdr(data, o)
    magic, rtype, _flags, rec_len, data_len = hdr[:5]
    if (magic != REC_MAGIC or _crc(data[o:o + HDR_CRC_SPAN]) != hdr[10] or rec_len < REC_HDR_SIZE
            or rec_len % REC_ALIGN or o + rec_len > size or rec_len > room
            or data_len > rec_len - REC_HDR_SIZE or not _WRITE <= rtype <= _PAD):
        return None
    return hdr


def _payload_problem(rtype: int, offset: int, length: int, payload: memoryview,
                     dcrc: int) -> tuple[str | None, list[int] | None]:
    """(why the payload is wrong or None, the 4 KiB CRCs of a block-aligned WRITE)."""
    data_len = len(payload)
    if rtype == _WRITE:
        if data_len != length:
            return f"WRITE carries {data_len} bytes for {length}", None
        if not (offset | data_len) & _BLOCK_MASK:
            # one pass gives the journal's block CRCs and the check
            crcs = _block_crcs(payload)
            return (None, crcs) if _combined(crcs) == dcrc else (_CRC_FAILED, None)
    elif rtype == _MARK:
        if not 0 < data_len <= MAX_MARK_NAME:
            return f"MARK name of {data_len} bytes", None
    elif rtype == _OVERFLOW:
        if data_len != OVERFLOW_PAYLOAD_SIZE:
            return f"OVERFLOW payload of {data_len} bytes", None
    elif data_len:
        return f"{RecType(rtype).name} with a {data_len}-byte payload", None
    if (_crc(payload) if data_len else 0) != dcrc:
        return _CRC_FAILED, None
    return None, None


class Ring:
    """The consumer end of a ring: a kernel character device or a ring file.

    Only the consumer writes ``tail``. Control fields are read live from the
    mapping; the geometry (data size, device size, block size, device id) is
    read once at open and checked.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        check_host()
        self.path = os.fspath(path)
        self._fd = -1
        self._lock_fd = -1
        self._maps: list[mmap.mmap] = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        """Open, lock, map and check; every failure is a :class:`RingError` naming the path."""
        st = self._open_locked()
        ctl = self._map_control(st)
        control = unpack_control(ctl)
        self._check_geometry(control, st)
        self.data_size = size = control.data_size
        self.device_bytes = control.device_bytes
        self.block_size = control.block_size
        self.device_id = bytes(control.device_id)
        self._mask = size - 1
        data = self._map_data(ctl, size)
        self._data = data.toreadonly()
        self._data32 = data.cast("I")
        tail = self._ctl64[Q_TAIL]
        head = self._ctl64[Q_HEAD]
        if tail % REC_ALIGN or head % REC_ALIGN or tail > head or head - tail > size:
            raise RingError(f"{self.path}: ring control page is inconsistent (head {head}, tail {tail})")
        self._released = tail
        self._cursor = tail
        self._next_seq: int | None = None
        #: seq of the last record the cursor passed (committed, discarded or
        #: damaged but with a trustworthy seq); 0 before any.
        self.last_seq = 0
        #: (seq, ts_ns) of the first record with a trustworthy header read since open.
        self.first_seen: tuple[int, int] | None = None
        self._poll: select.poll | None = None
        if self.is_device:
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def _open_locked(self) -> os.stat_result:
        """Open the ring and take the one-consumer lock; the ring's stat."""
        path = self.path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
        st = os.fstat(self._fd)
        self.is_device = stat.S_ISCHR(st.st_mode)
        if not self.is_device and not stat.S_ISREG(st.st_mode):
            raise RingError(f"{path} is neither a ring file nor a ring character device")
        # One consumer at a time. A file is locked through a descriptor of its own:
        # mmap keeps a dup of the mapping's descriptor, which would hold the lock for
        # as long as any payload view lives, even after close().
        lock_fd = self._fd
        if not self.is_device:
            try:
                lock_fd = self._lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
            if os.fstat(lock_fd).st_ino != st.st_ino:
                raise RingError(f"ring {path} was replaced while opening it; try again")
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RingError(f"ring {path} is being drained by another process") from None
            raise RingError(f"cannot lock ring {path}: {exc.strerror}") from None
        return st

    def _map_control(self, st: os.stat_result) -> mmap.mmap:
        """Map the control page (a device) or the whole ring (a file)."""
        if not self.is_device and st.st_size < CONTROL_SIZE:
            raise RingError(f"{self.path} is too small to be a ring ({st.st_size} bytes)")
        length = CONTROL_SIZE if self.is_device else st.st_size
        try:
            ctl = mmap.mmap(self._fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise RingError(f"cannot map ring {self.path}: {exc.strerror}") from None
        self._maps.append(ctl)
        return ctl

    def _check_geometry(self, control: Control, st: os.stat_result) -> None:
        """The control page names a cdp ring of this ABI that this mapping can hold."""
        path, size = self.path, control.data_size
        if control.magic != RING_MAGIC:
            raise RingError(f"{path} is not a cdp ring (bad magic {control.magic:#010x})")
        if control.version != RING_VERSION:
            raise RingError(f"{path} is a ring of ABI version {control.version}; this cdp reads version {RING_VERSION}")
        if size < MIN_DATA_SIZE or not is_power_of_two(size):
            raise RingError(f"{path}: ring data size {size} is not a power of two of at least {MIN_DATA_SIZE}")
        if not self.is_device and st.st_size != CONTROL_SIZE + size:
            raise RingError(f"{path}: ring file holds {st.st_size} bytes, expected {CONTROL_SIZE + size}")
        if control.device_bytes <= 0 or control.device_bytes % SECTOR:
            raise RingError(f"{path}: ring names a device of {control.device_bytes} bytes, not a multiple of {SECTOR}")

    def _map_data(self, ctl: mmap.mmap, size: int) -> memoryview:
        """Set the control views; the data area (a read-only second mapping of a device)."""
        if not self.is_device:
            whole = memoryview(ctl)
            self._ctl = whole[:CONTROL_SIZE]
            self._ctl64 = self._ctl.cast("Q")
            self._ctl32 = self._ctl.cast("I")
            return whole[CONTROL_SIZE:]
        try:
            data_map = mmap.mmap(self._fd, size, mmap.MAP_SHARED, mmap.PROT_READ, offset=CONTROL_SIZE)
        except OSError as exc:
            raise RingError(f"cannot map the ring data of {self.path}: {exc.strerror}") from None
        self._maps.append(data_map)
        self._ctl, self._ctl64, self._ctl32 = _views(ctl)
        return memoryview(data_map)

    # ------------------------------------------------------------ live fields

    @property
    def head(self) -> int:
        return self._ctl64[Q_HEAD]

    @property
    def tail(self) -> int:
        return self._ctl64[Q_TAIL]

    @property
    def flags(self) -> int:
        return self._ctl32[I_FLAGS]

    @property
    def dropped(self) -> int:
        return self._ctl64[Q_DROPPED]

    @property
    def overflow(self) -> bool:
        return bool(self._ctl32[I_FLAGS] & RING_FLAG_OVERFLOW)

    @property
    def detached(self) -> bool:
        return bool(self._ctl32[I_FLAGS] & RING_FLAG_DETACHED)

    @property
    def cursor(self) -> int:
        """Position of the next record this consumer will read."""
        return self._cursor

    @property
    def released(self) -> int:
        """The ``tail`` this consumer last stored."""
        return self._released

    def fill(self) -> float:
        """Fraction of the data area not yet released (0.0 .. 1.0)."""
        return min(1.0, max(0, self.head - self._released) / self.data_size)

    # ---------------------------------------------------------------- reading

    def _load_head(self) -> int:
        head = self._ctl64[Q_HEAD]
        if head < self._cursor or head % REC_ALIGN or head - self._released > self.data_size:
            raise RingError(f"{self.path}: ring head {head} is impossible (tail {self._released}, "
                            f"cursor {self._cursor}); was the producer restarted?")
        return head

    def pending(self) -> bool:
        """Whether records (committed or not) lie between the cursor and ``head``."""
        return self._load_head() > self._cursor

    def read(self, max_records: int = 4096, max_bytes: int = 8 << 20) -> list[Entry | Corrupt]:
        """Check and return the records from the cursor on, stopping at the first BUSY one.

        PAD and DISCARDED records are skipped; every record that fails a check
        comes back as :class:`Corrupt` instead of an :class:`Entry`. A header
        that cannot be trusted is stepped over by :meth:`_scan`; a sound one
        is judged by :meth:`_take`.
        """
        out: list[Entry | Corrupt] = []
        head = self._load_head()
        pos = self._cursor
        data, data32, mask, size, ctl32 = self._data, self._data32, self._mask, self.data_size, self._ctl32
        nbytes = 0
        while pos < head and len(out) < max_records and nbytes < max_bytes:
            o = pos & mask
            state = data32[(o >> 2) + I_STATE]
            if state == _BUSY and not ctl32[I_FLAGS] & RING_FLAG_DETACHED:
                # nothing of a BUSY record is final yet, its CRCs included (the
                # kernel seals a WRITE after its bio completed): read the state
                # first, then the header, never the other way round
                break
            hdr = _sound_header(data, o, head - pos, size)
            if hdr is None:
                corrupt = self._scan(pos, head)
                out.append(corrupt)
                pos = corrupt.end
                self._next_seq = None
                continue
            end = pos + hdr[3]
            if self._take(pos, end, o, hdr, state, out):
                nbytes += hdr[3]
            pos = end
        self._cursor = pos
        if self._next_seq is not None:
            self.last_seq = self._next_seq - 1
        return out

    def _take(self, pos: int, end: int, o: int, hdr: tuple, state: int, out: list[Entry | Corrupt]) -> bool:
        """Judge one record whose header is sound; append what it yields; True if an :class:`Entry`."""
        _magic, rtype, flags, _rec_len, data_len, seq, ts, offset, length, dcrc, _hcrc, _state = hdr
        if state == _BUSY:  # read only because the producer detached
            state = self._data32[(o >> 2) + I_STATE]  # re-read after seeing DETACHED
            if state == _BUSY:
                out.append(self._bad(pos, end, seq, ts, rtype, offset, length,
                                     "record left BUSY by a producer that detached"))
                if rtype != _PAD and seq:
                    self._next_seq = seq + 1
                    if self.first_seen is None:
                        self.first_seen = (seq, ts)
                return False
        if rtype == _PAD:
            if seq != 0 or state != _COMMITTED:
                out.append(Corrupt(pos, end, seq, ts, f"PAD record with seq {seq} state {state}"))
            return False
        if not self._in_order(pos, end, seq, ts, out) or state == _DISCARDED:
            return False
        if state != _COMMITTED:
            out.append(self._bad(pos, end, seq, ts, rtype, offset, length, f"unknown state {state}"))
            return False
        if (rtype <= _WRITE_ZEROES or rtype == _OVERFLOW) and not range_ok(offset, length, self.device_bytes):
            out.append(Corrupt(pos, end, seq, ts, f"range {offset}+{length} is not sector-aligned inside the device"))
            return False
        payload = self._data[o + REC_HDR_SIZE:o + REC_HDR_SIZE + data_len]
        reason, crcs = _payload_problem(rtype, offset, length, payload, dcrc)
        if reason is not None:
            out.append(self._bad(pos, end, seq, ts, rtype, offset, length, reason))
            return False
        out.append(_new_entry(Entry, (pos, end, seq, ts, rtype, flags, offset, length, payload, dcrc, crcs)))
        return True

    def _in_order(self, pos: int, end: int, seq: int, ts: int, out: list[Entry | Corrupt]) -> bool:
        """Follow the seq: False (with a :class:`Corrupt`) for seq 0 or one going back; a jump is noted."""
        if seq == 0:
            out.append(Corrupt(pos, end, None, ts, "record with seq 0"))
            self._next_seq = None
            return False
        if self.first_seen is None:
            self.first_seen = (seq, ts)
        expected = self._next_seq
        if expected is not None and seq != expected:
            if seq < expected:
                out.append(Corrupt(pos, end, seq, ts, f"seq goes back from {expected - 1} to {seq}"))
                return False
            out.append(Corrupt(pos, pos, seq, ts, f"seq jumps from {expected - 1} to {seq}: records are missing"))
        self._next_seq = seq + 1
        return True

    def _bad(self, pos: int, end: int, seq: int, ts: int, rtype: int, offset: int, length: int,
             reason: str) -> Corrupt:
        """A record with a trustworthy header that must not be applied."""
        if rtype in (_FLUSH, _MARK, _PAD):
            return Corrupt(pos, end, seq, ts, reason, 0, 0)
        if not range_ok(offset, length, self.device_bytes):
            return Corrupt(pos, end, seq, ts, reason)
        return Corrupt(pos, end, seq, ts, reason, offset, length)

    def _scan(self, pos: int, head: int) -> Corrupt:
        """Step over a header that cannot be trusted: find the next plausible one at a 64-byte step.

        Plausible: a sound header of a PAD, or of a record whose seq could
        follow the last good one given the bytes skipped.
        """
        data, mask, size, next_seq = self._data, self._mask, self.data_size, self._next_seq
        o = pos & mask
        magic, hcrc = _PREFIX.unpack_from(data, o)[0], _unpack_hdr(data, o)[10]
        if magic != REC_MAGIC:
            reason = f"bad record magic {magic:#010x}"
        elif _crc(data[o:o + HDR_CRC_SPAN]) != hcrc:
            reason = "record header fails its CRC-32C"
        else:
            reason = "record header has an impossible length or type"
        q = pos + REC_ALIGN
        while q < head:
            hdr = _sound_header(data, q & mask, head - q, size)
            if hdr is not None:
                rtype, seq = hdr[1], hdr[5]
                if rtype == _PAD and seq == 0:
                    break
                if rtype != _PAD and seq > 0 and (
                        next_seq is None or next_seq <= seq <= next_seq + (q - pos) // REC_ALIGN):
                    break
            q += REC_ALIGN
        return Corrupt(pos, q, None, None, f"{reason}; skipped {q - pos} bytes to the next valid header")

    def oldest_ts(self) -> int | None:
        """``ts_ns`` of the oldest record not yet read, if one is waiting."""
        head = self._ctl64[Q_HEAD]
        pos = self._cursor
        for _ in range(2):
            if pos >= head:
                return None
            o = pos & self._mask
            magic, rtype, _fl, rec_len = _PREFIX.unpack_from(self._data, o)
            if magic != REC_MAGIC:
                return None
            if rtype != _PAD:
                return _U64.unpack_from(self._data, o + REC_OFF_TS_NS)[0]
            if rec_len < REC_HDR_SIZE or rec_len % REC_ALIGN:
                return None
            pos += rec_len
        return None

    def release(self, pos: int) -> None:
        """Store ``tail = pos``: the producer may reuse everything before it.

        Call only once the records before ``pos`` are durable in the journal.
        """
        if not self._released <= pos <= self._cursor or pos % REC_ALIGN:
            raise RingError(f"cannot release ring position {pos} (released {self._released}, cursor {self._cursor})")
        if pos != self._released:
            self._ctl64[Q_TAIL] = pos
            self._released = pos

    def rewind(self) -> None:
        """Forget what was read but not released: read again from ``tail``."""
        self._cursor = self._released
        self._next_seq = None

    def wait(self, timeout: float) -> None:
        """Sleep until records may be waiting (POLLIN on a device) or ``timeout`` seconds."""
        if self._poll is not None:
            try:
                self._poll.poll(max(0, int(timeout * 1000)))
            except InterruptedError:
                pass
        else:
            time.sleep(timeout)

    def close(self) -> None:
        """Unmap and close; payload views handed out must no longer be used."""
        for name in ("_data", "_data32", "_ctl", "_ctl64", "_ctl32"):
            view = getattr(self, name, None)
            if isinstance(view, memoryview):
                view.release()
            setattr(self, name, None)
        for m in self._maps:
            try:
                m.close()
            except BufferError:
                pass  # a caller still holds a payload view; the GC unmaps it later
        self._maps = []
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
