"""Both ends of the write ring: the consumer :class:`Ring` and the producer :class:`RingWriter`.

The ring (ABI v1, :mod:`cdp.ringabi`) is shared memory between one producer
(the kernel filter, or the simulator) and one consumer (the drain service).
The consumer reads records from its private cursor, checks every one of them
before it trusts it, and hands back :class:`Entry` tuples whose payload is a
zero-copy view into the mapping. It moves ``tail`` (:meth:`Ring.release`)
only after the journal made the records durable: until then the producer
cannot reuse the bytes, so the views stay valid.

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
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import select
import stat
import struct
import sys
import time
from pathlib import Path
from typing import NamedTuple, Self

import crc32c

from cdp.ringabi import (
    CONTROL_SIZE,
    DEVICE_ID_SIZE,
    MAX_MARK_NAME,
    MIN_DATA_SIZE,
    OFF_DATA_SIZE,
    OFF_DROPPED,
    OFF_FLAGS,
    OFF_HEAD,
    OFF_TAIL,
    OVERFLOW_PAYLOAD_SIZE,
    REC_ALIGN,
    REC_HDR,
    REC_HDR_BODY,
    REC_HDR_SIZE,
    REC_MAGIC,
    REC_OFF_STATE,
    REC_OFF_TS_NS,
    RING_FLAG_DETACHED,
    RING_FLAG_OVERFLOW,
    RING_MAGIC,
    RING_VERSION,
    SECTOR,
    RecFlag,
    RecState,
    RecType,
    is_power_of_two,
    pack_control,
    rec_len_for,
    unpack_control,
)
from journal.blockcrc import block_crcs as _block_crcs
from journal.blockcrc import combined as _combined

_crc = crc32c.crc32c
_unpack_hdr = REC_HDR.unpack_from
_U64 = struct.Struct("<Q")
_STATE_TAIL = struct.Struct("<III")

# Indices of the 64-bit and 32-bit words of the control page / record header.
_Q_HEAD = OFF_HEAD // 8
_Q_TAIL = OFF_TAIL // 8
_Q_DROPPED = OFF_DROPPED // 8
_Q_DATA_SIZE = OFF_DATA_SIZE // 8
_I_FLAGS = OFF_FLAGS // 4
_I_STATE = REC_OFF_STATE // 4

_WRITE = int(RecType.WRITE)
_DISCARD = int(RecType.DISCARD)
_WRITE_ZEROES = int(RecType.WRITE_ZEROES)
_FLUSH = int(RecType.FLUSH)
_MARK = int(RecType.MARK)
_OVERFLOW = int(RecType.OVERFLOW)
_PAD = int(RecType.PAD)
_BUSY = int(RecState.BUSY)
_COMMITTED = int(RecState.COMMITTED)
_DISCARDED = int(RecState.DISCARDED)


class RingError(Exception):
    """A ring that cannot be used; the message is one printable line."""


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


_new_entry = tuple.__new__
_BLOCK_MASK = 4096 - 1
_EMPTY = memoryview(b"")
Buffer = bytes | bytearray | memoryview


def _check_host() -> None:
    if sys.byteorder != "little":
        raise RingError("the ring ABI is little-endian and cdp maps it natively; this host is big-endian")


def _views(buf: mmap.mmap | memoryview) -> tuple[memoryview, memoryview, memoryview]:
    view = memoryview(buf)
    return view, view.cast("Q"), view.cast("I")


class Ring:
    """The consumer end of a ring: a kernel character device or a ring file.

    Only the consumer writes ``tail``. Control fields are read live from the
    mapping; the geometry (data size, device size, block size, device id) is
    read once at open and checked.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        _check_host()
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
        path = self.path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
        self._fd = fd
        st = os.fstat(fd)
        self.is_device = stat.S_ISCHR(st.st_mode)
        if not self.is_device and not stat.S_ISREG(st.st_mode):
            raise RingError(f"{path} is neither a ring file nor a ring character device")
        # One consumer at a time. A file is locked through a descriptor of its own:
        # mmap keeps a dup of the mapping's descriptor, which would hold the lock for
        # as long as any payload view lives, even after close().
        lock_fd = fd
        if not self.is_device:
            try:
                lock_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise RingError(f"cannot open ring {path}: {exc.strerror}") from None
            self._lock_fd = lock_fd
            if os.fstat(lock_fd).st_ino != st.st_ino:
                raise RingError(f"ring {path} was replaced while opening it; try again")
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RingError(f"ring {path} is being drained by another process") from None
            raise RingError(f"cannot lock ring {path}: {exc.strerror}") from None
        if not self.is_device and st.st_size < CONTROL_SIZE:
            raise RingError(f"{path} is too small to be a ring ({st.st_size} bytes)")
        try:
            if self.is_device:
                ctl = mmap.mmap(fd, CONTROL_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
                self._maps.append(ctl)
            else:
                whole = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                self._maps.append(whole)
                ctl = whole
        except OSError as exc:
            raise RingError(f"cannot map ring {path}: {exc.strerror}") from None
        control = unpack_control(ctl)
        if control.magic != RING_MAGIC:
            raise RingError(f"{path} is not a cdp ring (bad magic {control.magic:#010x})")
        if control.version != RING_VERSION:
            raise RingError(f"{path} is a ring of ABI version {control.version}; this cdp reads version {RING_VERSION}")
        size = control.data_size
        if size < MIN_DATA_SIZE or not is_power_of_two(size):
            raise RingError(f"{path}: ring data size {size} is not a power of two of at least {MIN_DATA_SIZE}")
        if not self.is_device and st.st_size != CONTROL_SIZE + size:
            raise RingError(f"{path}: ring file holds {st.st_size} bytes, expected {CONTROL_SIZE + size}")
        if control.device_bytes <= 0 or control.device_bytes % SECTOR:
            raise RingError(f"{path}: ring names a device of {control.device_bytes} bytes, not a multiple of {SECTOR}")
        self.data_size = size
        self.device_bytes = control.device_bytes
        self.block_size = control.block_size
        self.device_id = bytes(control.device_id)
        self._mask = size - 1
        if self.is_device:
            try:
                data_map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ, offset=CONTROL_SIZE)
            except OSError as exc:
                raise RingError(f"cannot map the ring data of {path}: {exc.strerror}") from None
            self._maps.append(data_map)
            self._ctl, self._ctl64, self._ctl32 = _views(ctl)
            data = memoryview(data_map)
        else:
            whole_view = memoryview(ctl)
            self._ctl = whole_view[:CONTROL_SIZE]
            self._ctl64 = self._ctl.cast("Q")
            self._ctl32 = self._ctl.cast("I")
            data = whole_view[CONTROL_SIZE:]
        self._data = data.toreadonly()
        self._data32 = data.cast("I")
        tail = self._ctl64[_Q_TAIL]
        head = self._ctl64[_Q_HEAD]
        if tail % REC_ALIGN or head % REC_ALIGN or tail > head or head - tail > size:
            raise RingError(f"{path}: ring control page is inconsistent (head {head}, tail {tail})")
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
            self._poll.register(fd, select.POLLIN)

    # ------------------------------------------------------------ live fields

    @property
    def head(self) -> int:
        return self._ctl64[_Q_HEAD]

    @property
    def tail(self) -> int:
        return self._ctl64[_Q_TAIL]

    @property
    def flags(self) -> int:
        return self._ctl32[_I_FLAGS]

    @property
    def dropped(self) -> int:
        return self._ctl64[_Q_DROPPED]

    @property
    def overflow(self) -> bool:
        return bool(self._ctl32[_I_FLAGS] & RING_FLAG_OVERFLOW)

    @property
    def detached(self) -> bool:
        return bool(self._ctl32[_I_FLAGS] & RING_FLAG_DETACHED)

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
        head = self._ctl64[_Q_HEAD]
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
        comes back as :class:`Corrupt` instead of an :class:`Entry`.
        """
        out: list[Entry | Corrupt] = []
        head = self._load_head()
        pos = self._cursor
        data = self._data
        data32 = self._data32
        mask = self._mask
        size = self.data_size
        device = self.device_bytes
        next_seq = self._next_seq
        nbytes = 0
        append = out.append
        while pos < head and len(out) < max_records and nbytes < max_bytes:
            o = pos & mask
            state = data32[(o >> 2) + _I_STATE]
            if state == _BUSY and not self._ctl32[_I_FLAGS] & RING_FLAG_DETACHED:
                # nothing of a BUSY record is final yet, its CRCs included
                # (the kernel seals a WRITE after its bio completed): read the
                # state first, then the header, never the other way round
                break
            (magic, rtype, flags, rec_len, data_len, seq, ts, offset, length,
             dcrc, hcrc, _state) = _unpack_hdr(data, o)
            if (magic != REC_MAGIC or _crc(data[o:o + 52]) != hcrc or rec_len < REC_HDR_SIZE
                    or rec_len % REC_ALIGN or o + rec_len > size or rec_len > head - pos
                    or data_len > rec_len - REC_HDR_SIZE or not _WRITE <= rtype <= _PAD):
                corrupt = self._scan(pos, head, next_seq, magic, hcrc, data, o)
                append(corrupt)
                pos = corrupt.end
                next_seq = None
                continue
            end = pos + rec_len
            if state == _BUSY:
                if not self._ctl32[_I_FLAGS] & RING_FLAG_DETACHED:
                    break
                state = data32[(o >> 2) + _I_STATE]  # re-read after seeing DETACHED
                if state == _BUSY:
                    append(self._bad(pos, end, seq, ts, rtype, offset, length,
                                     "record left BUSY by a producer that detached"))
                    if rtype != _PAD and seq:
                        next_seq = seq + 1
                        if self.first_seen is None:
                            self.first_seen = (seq, ts)
                    pos = end
                    continue
            if rtype == _PAD:
                if seq != 0 or state != _COMMITTED:
                    append(Corrupt(pos, end, seq, ts, f"PAD record with seq {seq} state {state}"))
                pos = end
                continue
            if seq == 0:
                append(Corrupt(pos, end, None, ts, "record with seq 0"))
                pos = end
                next_seq = None
                continue
            if self.first_seen is None:
                self.first_seen = (seq, ts)
            if next_seq is not None and seq != next_seq:
                if seq < next_seq:
                    append(Corrupt(pos, end, seq, ts, f"seq goes back from {next_seq - 1} to {seq}"))
                    pos = end
                    continue
                append(Corrupt(pos, pos, seq, ts, f"seq jumps from {next_seq - 1} to {seq}: records are missing"))
            next_seq = seq + 1
            if state == _DISCARDED:
                pos = end
                continue
            if state != _COMMITTED:
                append(self._bad(pos, end, seq, ts, rtype, offset, length, f"unknown state {state}"))
                pos = end
                continue
            if (rtype <= _WRITE_ZEROES or rtype == _OVERFLOW) and (
                    offset % SECTOR or length % SECTOR or length <= 0 or offset + length > device):
                append(Corrupt(pos, end, seq, ts, f"range {offset}+{length} is not sector-aligned inside the device"))
                pos = end
                continue
            payload = data[o + REC_HDR_SIZE:o + REC_HDR_SIZE + data_len]
            reason = None
            if rtype == _WRITE:
                if data_len != length:
                    reason = f"WRITE carries {data_len} bytes for {length}"
            elif rtype == _MARK:
                if not 0 < data_len <= MAX_MARK_NAME:
                    reason = f"MARK name of {data_len} bytes"
            elif rtype == _OVERFLOW:
                if data_len != OVERFLOW_PAYLOAD_SIZE:
                    reason = f"OVERFLOW payload of {data_len} bytes"
            elif data_len:
                reason = f"{RecType(rtype).name} with a {data_len}-byte payload"
            crcs = None
            if reason is None:
                if rtype == _WRITE and not (offset | data_len) & _BLOCK_MASK:
                    # one pass gives the journal's block CRCs and the check
                    crcs = _block_crcs(payload)
                    if _combined(crcs) != dcrc:
                        reason = "payload fails its CRC-32C"
                elif (_crc(payload) if data_len else 0) != dcrc:
                    reason = "payload fails its CRC-32C"
            if reason is not None:
                append(self._bad(pos, end, seq, ts, rtype, offset, length, reason))
                pos = end
                continue
            append(_new_entry(Entry, (pos, end, seq, ts, rtype, flags, offset, length, payload, dcrc, crcs)))
            nbytes += rec_len
            pos = end
        self._cursor = pos
        self._next_seq = next_seq
        if next_seq is not None:
            self.last_seq = next_seq - 1
        return out

    def _bad(self, pos: int, end: int, seq: int, ts: int, rtype: int, offset: int, length: int,
             reason: str) -> Corrupt:
        """A record with a trustworthy header that must not be applied."""
        if rtype in (_FLUSH, _MARK, _PAD):
            return Corrupt(pos, end, seq, ts, reason, 0, 0)
        if offset % SECTOR or length % SECTOR or length <= 0 or offset + length > self.device_bytes:
            return Corrupt(pos, end, seq, ts, reason)
        return Corrupt(pos, end, seq, ts, reason, offset, length)

    def _scan(self, pos: int, head: int, next_seq: int | None, magic: int, hcrc: int,
              data: memoryview, o: int) -> Corrupt:
        """Skip a bad header: find the next plausible one at a 64-byte step."""
        if magic != REC_MAGIC:
            reason = f"bad record magic {magic:#010x}"
        elif _crc(data[o:o + 52]) != hcrc:
            reason = "record header fails its CRC-32C"
        else:
            reason = "record header has an impossible length or type"
        mask, size = self._mask, self.data_size
        q = pos + REC_ALIGN
        while q < head:
            qo = q & mask
            (m, rtype, _fl, rec_len, data_len, seq, _ts, _off, _len, _dcrc, h, _st) = _unpack_hdr(data, qo)
            if (m == REC_MAGIC and _crc(data[qo:qo + 52]) == h and rec_len >= REC_HDR_SIZE
                    and not rec_len % REC_ALIGN and qo + rec_len <= size and rec_len <= head - q
                    and data_len <= rec_len - REC_HDR_SIZE and _WRITE <= rtype <= _PAD):
                if rtype == _PAD and seq == 0:
                    break
                if rtype != _PAD and seq > 0 and (
                        next_seq is None or next_seq <= seq <= next_seq + (q - pos) // REC_ALIGN):
                    break
            q += REC_ALIGN
        return Corrupt(pos, q, None, None, f"{reason}; skipped {q - pos} bytes to the next valid header")

    def oldest_ts(self) -> int | None:
        """``ts_ns`` of the oldest record not yet read, if one is waiting."""
        head = self._ctl64[_Q_HEAD]
        pos = self._cursor
        for _ in range(2):
            if pos >= head:
                return None
            o = pos & self._mask
            magic, rtype, _fl, rec_len = struct.unpack_from("<IHHI", self._data, o)
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
            self._ctl64[_Q_TAIL] = pos
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


# ===================================================================== producer


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
        self._finish(_COMMITTED)

    def discard(self) -> None:
        """The write failed or was cancelled: the consumer skips it."""
        self._finish(_DISCARDED)

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
        _check_host()
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
        _check_host()
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
        tail = self._ctl64[_Q_TAIL]
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
        self._ctl32[_I_FLAGS] = (self._ctl32[_I_FLAGS] | set_bits) & ~clear_bits

    def _set_state(self, pos: int, state: int) -> None:
        self._data32[((pos & self._mask) >> 2) + _I_STATE] = state

    def _put(self, rtype: int, flags: int, seq: int, ts: int, offset: int, length: int,
             data: memoryview, state: int, rec_len: int = 0) -> int:
        """Write one record at ``head`` (which must have room) and advance ``head``.

        The header goes first, then ``head`` is published, then the payload;
        a non-BUSY ``state`` (a PAD) is part of the header itself.
        """
        data_len = data.nbytes
        rec_len = rec_len or rec_len_for(data_len)
        o = self._head & self._mask
        body = REC_HDR_BODY.pack(REC_MAGIC, rtype, flags, rec_len, data_len, seq, ts, offset, length,
                                 _crc(data) if data_len else 0)
        d = self._data
        d[o:o + 52] = body
        d[o + 52:o + 64] = _STATE_TAIL.pack(_crc(body), state, 0)
        pos = self._head
        self._head = pos + rec_len
        self._ctl64[_Q_HEAD] = self._head  # the header is in place: publish the reservation
        if data_len:
            d[o + 64:o + 64 + data_len] = data
            pad = rec_len - 64 - data_len
            if pad and rtype != _PAD:
                d[o + 64 + data_len:o + rec_len] = bytes(pad)
        return pos

    def _pad_if_needed(self, rec_len: int) -> None:
        """Fill the rest of the data area with a committed PAD if the record would cross its end."""
        room = self.data_size - (self._head & self._mask)
        if room < rec_len:
            self._put(_PAD, 0, 0, self._last_ts, 0, 0, _EMPTY, _COMMITTED, room)

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
        pos = self._put(rtype, flags, seq, ts, offset, length, view, _BUSY)
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
        payload = _U64.pack(self._first_drop_ts)
        for offset, length in ranges:
            slot = self.reserve(_OVERFLOW, offset=offset, length=length, data=payload)
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
        self._ctl64[_Q_DROPPED] = self._dropped
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
        if rtype == _WRITE and size != length:
            raise RingError(f"a WRITE of {length} bytes needs {length} bytes of data, got {size}")
        if rtype == _MARK and not 0 < size <= MAX_MARK_NAME:
            raise RingError(f"a mark name must be 1..{MAX_MARK_NAME} bytes")
        if rtype in (_WRITE, _DISCARD, _WRITE_ZEROES) and (
                offset % SECTOR or length % SECTOR or length <= 0 or offset + length > self.device_bytes):
            raise RingError(f"range {offset}+{length} is not sector-aligned inside the device")
        step = self.max_payload
        pieces = [(offset + k, view[k:k + step]) for k in range(0, size, step)] if rtype == _WRITE else [(offset, view)]
        ts = self.now()
        # already dropping: do not stall the device again, drop until room returns
        deadline = time.monotonic() + (0.0 if self._first_drop_ts is not None else wait_s)
        slots: list[Slot] = []
        for i, (off, piece) in enumerate(pieces):
            plen = piece.nbytes if rtype == _WRITE else length
            pflags = flags if i == 0 else flags & ~RecFlag.PREFLUSH
            rec_len = rec_len_for(piece.nbytes)
            slot = None
            if self.emit_overflow(rec_len, deadline):
                slot = self.reserve(rtype, offset=off, length=plen, data=piece, flags=pflags, ts_ns=ts)
                if slot is None and self._wait_room(self._need([rec_len]), deadline):
                    slot = self.reserve(rtype, offset=off, length=plen, data=piece, flags=pflags, ts_ns=ts)
            if slot is None:
                if rtype in (_WRITE, _DISCARD, _WRITE_ZEROES):
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
