"""CRC-32C of 4 KiB pieces, and the whole payload's CRC made from theirs.

The block index keeps a CRC-32C per 4 KiB block and the segment record one
for the whole payload; the ring reader must check the producer's CRC of the
whole payload too. Computing the pieces once and combining them gives all
three from one pass over the data, which matters where CRC-32C runs in
software (no SSE4.2; a guest under emulation): there it is most of the
drain's CPU.

Combining rests on CRC-32C being affine in its register:
``crc(A || B) == shift(crc(A), len(B)) ^ crc(B)``, where ``shift`` is the
linear map "advance the register over len(B) zero bytes". For 4 KiB it is
tabulated once, a byte of the register at a time, from 32 CRCs of a zero
block (the images of the 32 single-bit registers).
"""

from __future__ import annotations

import crc32c

BLOCK = 4096
_crc = crc32c.crc32c
_ZERO_BLOCK = bytes(BLOCK)


def _shift_tables() -> tuple[list[int], list[int], list[int], list[int]]:
    base = _crc(_ZERO_BLOCK, 0)
    # crc32c(Z, v) == shift(v) ^ crc32c(Z, 0): the image of each bit
    column = [_crc(_ZERO_BLOCK, 1 << bit) ^ base for bit in range(32)]
    tables = []
    for byte in range(4):
        table = [0] * 256
        for value in range(1, 256):
            low = value & -value
            table[value] = table[value ^ low] ^ column[8 * byte + low.bit_length() - 1]
        tables.append(table)
    return tables[0], tables[1], tables[2], tables[3]


_T0, _T1, _T2, _T3 = _shift_tables()


def block_crcs(data: bytes | memoryview) -> list[int]:
    """CRC-32C of each 4 KiB piece of ``data`` (its length a multiple of 4 KiB)."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    return [_crc(view[at:at + BLOCK]) for at in range(0, len(view), BLOCK)]


def combined(crcs: list[int]) -> int:
    """CRC-32C of the concatenation of 4 KiB pieces whose CRCs are ``crcs``."""
    it = iter(crcs)
    c = next(it, 0)
    for piece in it:
        c = _T0[c & 255] ^ _T1[(c >> 8) & 255] ^ _T2[(c >> 16) & 255] ^ _T3[c >> 24] ^ piece
    return c
