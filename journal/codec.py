"""The payload codec: a data record's 4 KiB pieces stored raw, as zstd frames, or not at all.

See :mod:`journal.format` ("Payload encoding") for the layout. This module
only turns bytes into pieces and back; framing, positions and index entries
are :mod:`journal.batch`'s, reads and their checks the readers'.

Why these choices:

- zstd at a low level (:data:`DEFAULT_LEVEL`): a 4 KiB piece of text or
  source compresses 2-3x at level 1 at a few hundred MB/s per core, and
  decodes at several hundred MB/s in a restore's worker threads
  (``zstandard`` releases the GIL while it works).
- A piece that does not shrink by at least :data:`MIN_SAVING` is stored raw:
  decoding it would cost a restore time for almost no space.
- Incompressible data must append about as fast as with compression off:
  a record of several pieces is first tried as one sample (the first
  :data:`SAMPLE` bytes of each piece that is not zeros, joined); random data
  (compressed files, encrypted volumes) does not shrink there, and the record
  costs one short call. Otherwise before compressing a whole piece its first
  :data:`PROBE` bytes are tried, about a quarter of a full attempt. (A record
  of random pieces with one compressible piece among them stores that piece
  raw: a small loss, for not probing every piece of every random write.)
- All-zero pieces are told apart first (a memcmp) and stored as nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c
import zstandard

from journal.format import (
    BLOCK,
    KIND_DATA,
    KIND_ZERO,
    KIND_ZSTD,
    PIECE,
    PIECE_KIND_SHIFT,
    PIECE_LEN_MASK,
)

#: zstd level a new journal compresses with.
DEFAULT_LEVEL = 1
#: A compressed piece is kept only when it saves at least this fraction of the piece (1/8).
MIN_SAVING_SHIFT = 3
MIN_SAVING = 1 / (1 << MIN_SAVING_SHIFT)
#: Bytes tried first; a piece whose first PROBE bytes do not shrink is stored raw.
PROBE = 256
#: ...shrink meaning: compress to at most this many bytes (zstd's frame around 256 random bytes
#: takes them to 260 or more; of 7,871 4 KiB blocks of the standard library's sources that
#: compress by 1/8, none failed this probe).
_PROBE_MAX = PROBE - PROBE // 32

#: Records of at least this many pieces are first tried as one sample of SAMPLE bytes per piece.
_SAMPLE_PIECES = 4
SAMPLE = 64

_ZEROS = bytes(BLOCK)
_crc = crc32c.crc32c
_pack_piece = PIECE.pack


class DecodeError(ValueError):
    """Stored bytes that do not decode to the piece they stand for."""


@dataclass(frozen=True, slots=True)
class Compression:
    """A journal's compression setting (the ``compress`` meta value)."""

    codec: str = "zstd"
    level: int = DEFAULT_LEVEL

    @property
    def enabled(self) -> bool:
        return self.codec == "zstd"

    def to_meta(self) -> dict[str, object]:
        return {"codec": self.codec, "level": self.level}

    @classmethod
    def from_meta(cls, value: object) -> Compression:
        """The setting a meta value names; a journal without one (schema 2, reindexed) compresses."""
        if isinstance(value, dict) and value.get("codec") in ("zstd", "none"):
            level = value.get("level", DEFAULT_LEVEL)
            return cls(value["codec"], level if isinstance(level, int) else DEFAULT_LEVEL)
        return cls()

    def describe(self) -> str:
        """What ``cdp status`` prints."""
        return f"zstd level {self.level}, zero blocks elided" if self.enabled else "off"


OFF = Compression("none", 0)


def piece_spans(offset: int, length: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each piece of a record's range, relative to its payload."""
    out = []
    end = offset + length
    at = offset
    while at < end:
        nxt = min(end, (at // BLOCK + 1) * BLOCK)
        out.append((at - offset, nxt - offset))
        at = nxt
    return out


@dataclass(slots=True)
class Encoded:
    """One record's stored payload (pieces then table) and what the index needs of each piece."""

    buffers: list[bytes | memoryview]
    size: int
    crc: int
    #: Per piece: kind, its stored bytes' position in the payload, stored length, CRC-32C of its device bytes.
    pieces: list[tuple[int, int, int, int]]


class Encoder:
    """Encodes data records for one writer (not shared between threads)."""

    def __init__(self, setting: Compression) -> None:
        self.setting = setting
        self._zstd = (zstandard.ZstdCompressor(level=setting.level, write_checksum=False,
                                               write_content_size=True, write_dict_id=False)
                      if setting.enabled else None)

    def encode(self, offset: int, length: int, data: memoryview, crcs: Sequence[int] | None) -> Encoded | None:
        """The record's pieces encoded, or None when none got smaller (store it raw).

        ``crcs``: the device CRC-32C of each piece if the caller has them
        (the ring reader's, for a block-aligned record), else worked out here.
        """
        compress = self._zstd.compress if self._zstd is not None else None
        if length == BLOCK and not offset % BLOCK:
            return self._one_block(data, crcs, compress)
        spans = piece_spans(offset, length) if offset % BLOCK or length % BLOCK else None
        count = len(spans) if spans is not None else length // BLOCK
        if compress is not None and count >= _SAMPLE_PIECES and not self._sample_shrinks(data, spans, count):
            compress = None  # random data (nearly always): only zero pieces can save anything
        kinds: list[int] = []
        stored: list[bytes | None] = []
        smaller = False
        for i in range(count):
            lo, hi = spans[i] if spans is not None else (i * BLOCK, i * BLOCK + BLOCK)
            piece = data[lo:hi]
            if not piece[0] and not piece[-1] and _ZEROS.startswith(piece):
                kinds.append(KIND_ZERO)
                stored.append(None)
                smaller = True
                continue
            if compress is not None and len(compress(piece[:PROBE])) <= _PROBE_MAX:
                z = compress(piece)
                if len(z) <= len(piece) - (len(piece) >> MIN_SAVING_SHIFT):
                    kinds.append(KIND_ZSTD)
                    stored.append(z)
                    smaller = True
                    continue
            kinds.append(KIND_DATA)
            stored.append(None)
        if not smaller:
            return None
        buffers: list[bytes | memoryview] = []
        pieces: list[tuple[int, int, int, int]] = []
        table = bytearray()
        pos = 0
        raw_from = -1  # start (in data) of the run of raw pieces being gathered
        raw_to = -1
        for i in range(count):
            lo, hi = spans[i] if spans is not None else (i * BLOCK, i * BLOCK + BLOCK)
            kind = kinds[i]
            if kind == KIND_DATA:
                if raw_from < 0:
                    raw_from = lo
                raw_to = hi
                n = hi - lo
                crc = crcs[i] if crcs is not None else _crc(data[lo:hi])
                pieces.append((KIND_DATA, pos, n, crc))
                pos += n
                table += _pack_piece(KIND_DATA << PIECE_KIND_SHIFT | n)
                continue
            if raw_from >= 0:
                buffers.append(data[raw_from:raw_to])
                raw_from = -1
            if kind == KIND_ZERO:
                pieces.append((KIND_ZERO, pos, 0, 0))
                table += _pack_piece(KIND_ZERO << PIECE_KIND_SHIFT)
            else:
                z = stored[i]
                crc = crcs[i] if crcs is not None else _crc(data[lo:hi])
                pieces.append((KIND_ZSTD, pos, len(z), crc))
                buffers.append(z)
                pos += len(z)
                table += _pack_piece(KIND_ZSTD << PIECE_KIND_SHIFT | len(z))
        if raw_from >= 0:
            buffers.append(data[raw_from:raw_to])
        buffers.append(bytes(table))
        crc = 0
        for buf in buffers:
            crc = _crc(buf, crc)
        return Encoded(buffers, pos + len(table), crc, pieces)


    def _sample_shrinks(self, data: memoryview, spans: list[tuple[int, int]] | None, count: int) -> bool:
        """Whether the first :data:`SAMPLE` bytes of the record's non-zero pieces, together, compress.

        One call for the whole record instead of one probe per piece: a
        64 KiB write of random data is then turned down in about 2 us, not
        16 probes (20 us).
        """
        starts = [lo for lo, _hi in spans] if spans is not None else range(0, count * BLOCK, BLOCK)
        parts = [data[lo:lo + SAMPLE] for lo in starts]
        sample = b"".join(p for p in parts if not _ZEROS.startswith(p))
        return len(self._zstd.compress(sample)) <= len(sample) - (len(sample) >> 5)

    @staticmethod
    def _one_block(data: memoryview, crcs: Sequence[int] | None, compress) -> Encoded | None:  # noqa: ANN001
        """:meth:`encode` for the commonest record, one aligned 4 KiB block, with less work."""
        if not data[0] and not data[-1] and _ZEROS.startswith(data):
            return Encoded([_ZERO_TABLE], PIECE.size, _ZERO_TABLE_CRC, [(KIND_ZERO, 0, 0, 0)])
        if compress is None or len(compress(data[:PROBE])) > _PROBE_MAX:
            return None
        z = compress(data)
        if len(z) > BLOCK - (BLOCK >> MIN_SAVING_SHIFT):
            return None
        table = _pack_piece(KIND_ZSTD << PIECE_KIND_SHIFT | len(z))
        crc = crcs[0] if crcs is not None else _crc(data)
        return Encoded([z, table], len(z) + PIECE.size, _crc(table, _crc(z)), [(KIND_ZSTD, 0, len(z), crc)])


_ZERO_TABLE = _pack_piece(KIND_ZERO << PIECE_KIND_SHIFT)
_ZERO_TABLE_CRC = _crc(_ZERO_TABLE)


def parse_pieces(payload: bytes | memoryview, offset: int, length: int) -> list[tuple[int, int, int]]:
    """``(kind, position, stored length)`` of each piece of a stored ENC_PIECES payload.

    Raises :class:`DecodeError` when the table does not describe the payload
    exactly (a raw piece of the wrong size, stored bytes that do not add up).
    """
    spans = piece_spans(offset, length)
    table_at = len(payload) - PIECE.size * len(spans)
    if table_at < 0:
        raise DecodeError("its piece table is longer than its payload")
    out = []
    pos = 0
    for i, (lo, hi) in enumerate(spans):
        entry = PIECE.unpack_from(payload, table_at + i * PIECE.size)[0]
        kind, n = entry >> PIECE_KIND_SHIFT, entry & PIECE_LEN_MASK
        if kind == KIND_DATA and n != hi - lo:
            raise DecodeError(f"piece {i} is raw but {n} bytes long for a {hi - lo}-byte piece")
        if kind == KIND_ZERO and n:
            raise DecodeError(f"piece {i} is zeros but has {n} stored bytes")
        if kind == KIND_ZSTD and not 0 < n < hi - lo:
            raise DecodeError(f"piece {i} is compressed to {n} bytes for a {hi - lo}-byte piece")
        if kind not in (KIND_DATA, KIND_ZERO, KIND_ZSTD):
            raise DecodeError(f"piece {i} has unknown kind {kind}")
        out.append((kind, pos, n))
        pos += n
    if pos != table_at:
        raise DecodeError(f"its pieces hold {pos} bytes where its table starts at {table_at}")
    return out


_local = threading.local()


def decode(stored: bytes | memoryview, size: int) -> bytes:
    """The ``size`` device bytes a zstd piece stands for, or :class:`DecodeError`.

    The frame's own content size must be ``size`` before anything is
    allocated: a damaged header could otherwise ask for gigabytes. Each
    thread has its own decompressor (they are not shareable).
    """
    try:
        dctx = _local.dctx
    except AttributeError:
        dctx = _local.dctx = zstandard.ZstdDecompressor()
    try:
        if zstandard.frame_content_size(stored) != size:
            raise DecodeError("its zstd frame is not of the piece's size")
        out = dctx.decompress(stored, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"its zstd frame does not decode ({exc})") from None
    if len(out) != size:
        raise DecodeError("its zstd frame decodes to the wrong size")
    return out


def stored_pieces(payload: memoryview, offset: int, length: int, data_crc: int) -> Encoded:
    """An ENC_PIECES payload as a segment holds it, for indexing it again (reindex).

    Each piece is decoded to find the CRC-32C of its device bytes: the index
    holds that CRC, and the segment holds only the stored bytes' CRC.
    Raises :class:`DecodeError` for a table or frame that does not decode.
    """
    out = []
    spans = piece_spans(offset, length)
    for (kind, pos, n), (lo, hi) in zip(parse_pieces(payload, offset, length), spans):
        if kind == KIND_DATA:
            crc = _crc(payload[pos:pos + n])
        elif kind == KIND_ZSTD:
            crc = _crc(decode(payload[pos:pos + n], hi - lo))
        else:
            crc = 0
        out.append((kind, pos, n, crc))
    return Encoded([payload], len(payload), data_crc, out)


def one_frame(frame: bytes | memoryview, crc: int) -> Encoded:
    """A one-piece ENC_PIECES payload holding a zstd ``frame`` whose device bytes have CRC-32C ``crc``.

    What a compaction moves a compressed block version as (a FOLD record):
    the frame as it was stored, never decoded and compressed again.
    """
    table = _pack_piece(KIND_ZSTD << PIECE_KIND_SHIFT | len(frame))
    return Encoded([frame, table], len(frame) + PIECE.size, _crc(table, _crc(frame)),
                   [(KIND_ZSTD, 0, len(frame), crc)])
