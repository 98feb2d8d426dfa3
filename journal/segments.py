"""Append-only segment files: the payload half of the journal.

The writer appends a whole batch with ``os.writev`` (no copy of the payload
memoryviews) and makes it durable with one ``fdatasync`` before the index
commits it; the index stores how far the newest segment is committed, so a
crash between the two leaves only a tail the next writer cuts off.
Readers ``pread`` through a small cache of descriptors (or, for a restore,
map whole segments); they never look past what the index points at.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import crc32c

from journal.errors import CorruptJournal
from journal.format import (
    ENC_PIECES,
    ENC_RAW,
    REC_HDR,
    REC_HDR_BODY,
    REC_HDR_CRC_SPAN,
    REC_MAGIC,
    SEGMENT_SCHEMA,
    SEG_HDR,
    SEG_MAGIC,
    segment_name,
)

#: Most buffers one pwritev takes (Linux's UIO_MAXIOV).
IOV_MAX = 1024
_BODY = REC_HDR_BODY
_U32 = struct.Struct("<I")
_crc = crc32c.crc32c


def pack_header(
    rtype: int, flags: int, data_len: int, seq: int,
    ts_ns: int, offset: int, length: int, aux: int, data_crc: int, encoding: int = ENC_RAW,
) -> bytes:
    """Frame one record: the 64-byte header with both CRCs filled in."""
    body = _BODY.pack(REC_MAGIC, rtype, flags, data_len, encoding, seq, ts_ns, offset, length, aux, data_crc)
    return body + _U32.pack(_crc(body))


@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """A record header as found in a segment, for scans and checks."""

    pos: int
    type: int
    flags: int
    data_len: int
    seq: int
    ts_ns: int
    offset: int
    length: int
    aux: int
    data_crc: int
    #: How the payload holds the device bytes (journal.format: ENC_RAW or ENC_PIECES).
    encoding: int = ENC_RAW

    @property
    def end(self) -> int:
        """Position just past the record's payload."""
        return self.pos + REC_HDR.size + self.data_len


def parse_header(buf: bytes, pos: int) -> SegmentRecord | str:
    """Parse and check a record header; return the reason when it is bad."""
    if len(buf) < REC_HDR.size:
        return "truncated record header"
    (magic, rtype, flags, data_len, encoding, seq, ts_ns, offset, length, aux,
     data_crc, hdr_crc) = REC_HDR.unpack_from(buf)
    if magic != REC_MAGIC:
        return "bad record magic"
    if crc32c.crc32c(buf[:REC_HDR_CRC_SPAN]) != hdr_crc:
        return "record header fails its CRC-32C"
    if encoding not in (ENC_RAW, ENC_PIECES):
        return f"record has unknown payload encoding {encoding}"
    return SegmentRecord(pos, rtype, flags, data_len, seq, ts_ns, offset, length, aux, data_crc, encoding)


class SegmentWriter:
    """Appends batches to the newest segment of one journal directory."""

    def __init__(self, directory: Path, device_id: bytes, seg_id: int, seg_end: int) -> None:
        self.directory = directory
        self.device_id = device_id
        self.seg_id = seg_id
        self.end = seg_end
        self._fd = -1
        self._recover()

    def _path(self, seg_id: int) -> Path:
        return self.directory / segment_name(seg_id)

    def _recover(self) -> None:
        """Cut off what the last writer wrote but never committed."""
        for path in self.directory.glob("*.seg"):
            try:
                number = int(path.stem)
            except ValueError:
                continue
            if number > self.seg_id:
                path.unlink()
        path = self._path(self.seg_id)
        if not path.exists():
            if self.end > SEG_HDR.size:
                raise CorruptJournal(f"segment {path.name} is missing; run 'cdp verify'")
            self._create(self.seg_id)
            return
        self._fd = os.open(path, os.O_WRONLY)
        size = os.fstat(self._fd).st_size
        if size < self.end:
            os.close(self._fd)
            self._fd = -1
            raise CorruptJournal(
                f"segment {path.name} holds {size} bytes but the index committed {self.end}; "
                "run 'cdp verify'")
        if size > self.end:
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)

    def _create(self, seg_id: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self._path(seg_id)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(self._fd, 0o600)  # whatever the umask: a journal is its owner's alone
        os.write(self._fd, SEG_HDR.pack(SEG_MAGIC, SEGMENT_SCHEMA, seg_id, self.device_id))
        os.fsync(self._fd)
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.seg_id = seg_id
        self.end = SEG_HDR.size

    def cut_back(self, end: int) -> None:
        """Forget a batch that was not committed: appends go on at ``end``, and what it wrote past
        there is cut off now where the filesystem lets us (on a full disk that is room given back;
        :meth:`roll` and the next writer's recovery cut it otherwise)."""
        self.end = end
        try:
            if os.fstat(self._fd).st_size > end:
                os.ftruncate(self._fd, end)
        except OSError:
            pass

    def roll(self) -> None:
        """Start the next segment (called between batches).

        The segment left ends exactly at its last committed record: a batch
        that failed part way (a full disk) may have left bytes past
        :attr:`end`, which the next batches overwrite only as far as they
        reach, and nothing cuts a segment that is no longer the newest (verify
        and reindex read such a segment to its end).
        """
        if os.fstat(self._fd).st_size > self.end:
            os.ftruncate(self._fd, self.end)
            os.fsync(self._fd)
        self._create(self.seg_id + 1)

    def write(self, buffers: Sequence[bytes | bytearray | memoryview], total: int) -> None:
        """Append ``buffers`` (headers and payloads) at :attr:`end`, not yet durable."""
        pos = self.end + pwritev_all(self._fd, buffers, self.end)
        if pos != self.end + total:
            raise OSError(f"segment write came out at {pos}, expected {self.end + total}")
        self.end = pos

    def sync(self) -> None:
        """Make everything written so far durable."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def pwritev_all(fd: int, buffers: Sequence[bytes | bytearray | memoryview], pos: int) -> int:
    """Write ``buffers`` back to back at ``pos``, all of them; returns the bytes written.

    ``pwritev`` of up to :data:`IOV_MAX` buffers at a time (no copy of the
    payload views); a short write is finished byte-exactly, and a write that
    makes no progress (the end of a block device) is ENOSPC, not a loop.
    """
    done = 0
    for start in range(0, len(buffers), IOV_MAX):
        chunk = buffers[start:start + IOV_MAX]
        want = sum(map(len, chunk))
        written = os.pwritev(fd, chunk, pos + done)
        done += written
        if written < want:
            rest = b"".join(bytes(b) for b in chunk)[written:]
            while rest:
                n = os.pwrite(fd, rest, pos + done)
                if n == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += n
                rest = rest[n:]
    return done


def open_segment(directory: Path, seg_id: int) -> int:
    """A read-only descriptor of segment ``seg_id``; a missing one is damage."""
    try:
        return os.open(directory / segment_name(seg_id), os.O_RDONLY)
    except FileNotFoundError:
        raise CorruptJournal(f"segment {segment_name(seg_id)} is missing; run 'cdp verify'") from None


def short_segment(seg_id: int, end: int) -> CorruptJournal:
    """The error for a segment that ends before ``end``, where the index says it holds bytes."""
    return CorruptJournal(f"segment {segment_name(seg_id)} ends before offset {end}; run 'cdp verify'")


class SegmentReader:
    """Reads payload bytes from any segment of one journal, by position.

    Descriptors are opened once and may be shared by threads (an export's
    requests, a restore's read-ahead): opening takes a lock, reading none.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def fd(self, seg_id: int) -> int:
        """The read-only descriptor of segment ``seg_id``, opened on first use."""
        fd = self._fds.get(seg_id)
        if fd is None:
            with self._lock:
                fd = self._fds.get(seg_id)
                if fd is None:
                    fd = self._fds[seg_id] = open_segment(self.directory, seg_id)
        return fd

    def pread(self, seg_id: int, pos: int, length: int) -> bytes:
        """Read exactly ``length`` bytes, or report the segment as damaged."""
        data = os.pread(self.fd(seg_id), length, pos)
        if len(data) != length:
            raise short_segment(seg_id, pos + length)
        return data

    def readinto(self, seg_id: int, pos: int, dst: memoryview) -> None:
        """Fill ``dst`` from ``pos``: one ``preadv``, repeated only after a short read."""
        fd = self.fd(seg_id)
        done = 0
        while done < len(dst):
            n = os.preadv(fd, [dst[done:]], pos + done)
            if n <= 0:
                raise short_segment(seg_id, pos + len(dst))
            done += n

    def scan(self, seg_id: int, limit: int | None = None) -> Iterator[SegmentRecord | tuple[int, str]]:
        """Walk a segment's records in order, checking headers and payloads.

        Yields good records, or ``(position, reason)`` for damage; after a bad
        header it searches forward for the next header that checks out, so
        one flipped byte does not hide the rest of the segment.
        """
        fd = self.fd(seg_id)
        size = os.fstat(fd).st_size if limit is None else limit
        head = os.pread(fd, SEG_HDR.size, 0)
        if len(head) < SEG_HDR.size or head[:4] != SEG_MAGIC:
            yield (0, "bad segment header")
        pos = SEG_HDR.size
        while pos < size:
            buf = os.pread(fd, REC_HDR.size, pos)
            rec = parse_header(buf, pos)
            if isinstance(rec, str):
                yield (pos, rec)
                pos = self._next_header(fd, pos + 1, size)
                continue
            if rec.end > size:
                yield (pos, f"record seq {rec.seq} runs past the end of the segment")
                return
            data = os.pread(fd, rec.data_len, pos + REC_HDR.size)
            if crc32c.crc32c(data) != rec.data_crc:
                yield (pos, f"record seq {rec.seq} payload fails its CRC-32C")
            else:
                yield rec
            pos = rec.end

    def _next_header(self, fd: int, pos: int, size: int) -> int:
        magic = REC_MAGIC.to_bytes(4, "little")
        window = 1 << 20
        while pos < size:
            buf = os.pread(fd, min(window + 3, size - pos), pos)
            at = buf.find(magic)
            while at >= 0:
                if not isinstance(parse_header(os.pread(fd, REC_HDR.size, pos + at), pos + at), str):
                    return pos + at
                at = buf.find(magic, at + 1)
            pos += window
        return size

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


class SegmentViews:
    """Read-only maps of whole segments, for a restore's bulk reads.

    A restore reads about as many bytes as the device holds; ``pread`` would
    copy each of them into a fresh buffer first. A map lets the CRC check and
    the write to the target use the page cache's own pages. Each segment is
    mapped once, at the size it has then; a range past that size is reported
    as damage, never touched (touching a map past the end of its file is
    SIGBUS). Committed bytes are never truncated: the writer only cuts off a
    tail the index never committed. Threads may share one (a restore's
    workers): mapping takes a lock, viewing none.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._maps: dict[int, tuple[mmap.mmap, memoryview]] = {}
        self._lock = threading.Lock()

    def _map(self, seg_id: int) -> memoryview:
        entry = self._maps.get(seg_id)
        if entry is None:
            with self._lock:
                entry = self._maps.get(seg_id)
                if entry is None:
                    fd = open_segment(self.directory, seg_id)
                    try:
                        size = os.fstat(fd).st_size
                        m = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else mmap.mmap(-1, 1)
                    finally:
                        os.close(fd)
                    m.madvise(mmap.MADV_SEQUENTIAL)
                    entry = self._maps[seg_id] = (m, memoryview(m)[:size])
        return entry[1]

    def view(self, seg_id: int, pos: int, length: int) -> memoryview:
        """``length`` bytes at ``pos``, or report the segment as damaged."""
        whole = self._map(seg_id)
        if pos < 0 or pos + length > len(whole):
            raise short_segment(seg_id, pos + length)
        return whole[pos:pos + length]

    def close(self) -> None:
        """Unmap everything; views still held elsewhere keep their map alive."""
        for m, whole in self._maps.values():
            whole.release()
            try:
                m.close()
            except BufferError:  # a view is still out there: the map goes with it
                pass
        self._maps.clear()
