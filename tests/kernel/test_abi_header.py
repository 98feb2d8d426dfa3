"""Hold kernel/cdp_ring_abi.h (the C half of the ring ABI) to cdp/ringabi.py.

A tiny C program is compiled against the header with the host's gcc and
prints every size, offset and constant; each must equal the Python value.
The ioctl structs are held to cdp/attach.py the same way. No kernel and no
VM are needed: the header is plain UAPI C (<linux/types.h>).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp import attach, ringabi
from tests.support.cheader import header_values

HEADER = Path(__file__).resolve().parents[2] / "kernel" / "cdp_ring_abi.h"

# name printed by the C program -> C expression
C_VALUES: dict[str, str] = {
    "CONTROL_SIZE": "CDP_CONTROL_SIZE",
    "sizeof_ctl": "sizeof(struct cdp_ring_ctl)",
    "RING_MAGIC": "CDP_RING_MAGIC",
    "RING_VERSION": "CDP_RING_VERSION",
    "MIN_DATA_SIZE": "CDP_MIN_DATA_SIZE",
    "REC_MAGIC": "CDP_REC_MAGIC",
    "REC_HDR_SIZE": "CDP_REC_HDR_SIZE",
    "sizeof_hdr": "sizeof(struct cdp_rec_hdr)",
    "REC_ALIGN": "CDP_REC_ALIGN",
    "HDR_CRC_SPAN": "CDP_HDR_CRC_SPAN",
    "MAX_MARK_NAME": "CDP_MAX_MARK_NAME",
    "OVERFLOW_PAYLOAD_SIZE": "CDP_OVERFLOW_PAYLOAD",
    "SECTOR": "CDP_SECTOR",
    "RING_FLAG_OVERFLOW": "CDP_RING_F_OVERFLOW",
    "RING_FLAG_DETACHED": "CDP_RING_F_DETACHED",
    "OFF_MAGIC": "offsetof(struct cdp_ring_ctl, magic)",
    "OFF_VERSION": "offsetof(struct cdp_ring_ctl, version)",
    "OFF_DATA_SIZE": "offsetof(struct cdp_ring_ctl, data_size)",
    "OFF_DEVICE_BYTES": "offsetof(struct cdp_ring_ctl, device_bytes)",
    "OFF_BLOCK_SIZE": "offsetof(struct cdp_ring_ctl, block_size)",
    "OFF_FLAGS": "offsetof(struct cdp_ring_ctl, flags)",
    "OFF_DEVICE_ID": "offsetof(struct cdp_ring_ctl, device_id)",
    "DEVICE_ID_SIZE": "sizeof(((struct cdp_ring_ctl *)0)->device_id)",
    "OFF_DROPPED": "offsetof(struct cdp_ring_ctl, dropped)",
    "OFF_HEAD": "offsetof(struct cdp_ring_ctl, head)",
    "OFF_TAIL": "offsetof(struct cdp_ring_ctl, tail)",
    "REC_OFF_MAGIC": "offsetof(struct cdp_rec_hdr, magic)",
    "REC_OFF_TYPE": "offsetof(struct cdp_rec_hdr, type)",
    "REC_OFF_FLAGS": "offsetof(struct cdp_rec_hdr, flags)",
    "REC_OFF_REC_LEN": "offsetof(struct cdp_rec_hdr, rec_len)",
    "REC_OFF_DATA_LEN": "offsetof(struct cdp_rec_hdr, data_len)",
    "REC_OFF_SEQ": "offsetof(struct cdp_rec_hdr, seq)",
    "REC_OFF_TS_NS": "offsetof(struct cdp_rec_hdr, ts_ns)",
    "REC_OFF_OFFSET": "offsetof(struct cdp_rec_hdr, offset)",
    "REC_OFF_LENGTH": "offsetof(struct cdp_rec_hdr, length)",
    "REC_OFF_DATA_CRC": "offsetof(struct cdp_rec_hdr, data_crc)",
    "REC_OFF_HDR_CRC": "offsetof(struct cdp_rec_hdr, hdr_crc)",
    "REC_OFF_STATE": "offsetof(struct cdp_rec_hdr, state)",
    "REC_OFF_RESERVED": "offsetof(struct cdp_rec_hdr, reserved)",
    "RecType.WRITE": "CDP_REC_WRITE",
    "RecType.DISCARD": "CDP_REC_DISCARD",
    "RecType.WRITE_ZEROES": "CDP_REC_WRITE_ZEROES",
    "RecType.FLUSH": "CDP_REC_FLUSH",
    "RecType.MARK": "CDP_REC_MARK",
    "RecType.OVERFLOW": "CDP_REC_OVERFLOW",
    "RecType.PAD": "CDP_REC_PAD",
    "RecFlag.FUA": "CDP_RECF_FUA",
    "RecFlag.PREFLUSH": "CDP_RECF_PREFLUSH",
    "RecState.BUSY": "CDP_STATE_BUSY",
    "RecState.COMMITTED": "CDP_STATE_COMMITTED",
    "RecState.DISCARDED": "CDP_STATE_DISCARDED",
    # the ioctl side, held to cdp/attach.py
    "sizeof_mark": "sizeof(struct cdp_ioc_mark)",
    "sizeof_info": "sizeof(struct cdp_ioc_info)",
    "IOC_MARK": "CDP_IOC_MARK",
    "IOC_INFO": "CDP_IOC_INFO",
    "info_name": "offsetof(struct cdp_ioc_info, name)",
    "info_flags": "offsetof(struct cdp_ioc_info, flags)",
    "mark_name": "offsetof(struct cdp_ioc_mark, name)",
}


def python_value(name: str) -> int:
    """The Python side's value for a name of C_VALUES."""
    special = {
        "sizeof_ctl": ringabi.CONTROL_SIZE,
        "sizeof_hdr": ringabi.REC_HDR_SIZE,
        "sizeof_mark": attach.IOC_MARK_STRUCT.size,
        "sizeof_info": attach.IOC_INFO_STRUCT.size,
        "IOC_MARK": attach.CDP_IOC_MARK,
        "IOC_INFO": attach.CDP_IOC_INFO,
        # "<IIQQII9QII64s": name after 6 small fields, 9 u64s and 2 u32s
        "info_name": attach.IOC_INFO_STRUCT.size - 64,
        "info_flags": attach.IOC_INFO_STRUCT.size - 64 - 8,
        "mark_name": attach.IOC_MARK_STRUCT.size - 256,
    }
    if name in special:
        return special[name]
    if "." in name:
        enum_name, member = name.split(".")
        return int(getattr(getattr(ringabi, enum_name), member))
    return int(getattr(ringabi, name))


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return header_values(HEADER, C_VALUES, tmp_path_factory.mktemp("abi"))


@pytest.mark.parametrize("name", sorted(C_VALUES))
def test_header_matches_python(c_values: dict[str, int], name: str) -> None:
    assert c_values[name] == python_value(name), f"{name}: C says {c_values[name]}, Python says {python_value(name)}"


def test_every_python_offset_is_checked() -> None:
    """A field added to cdp/ringabi.py must get its C twin checked here too."""
    py_names = {n for n in dir(ringabi) if n.startswith(("OFF_", "REC_OFF_"))}
    assert py_names <= set(C_VALUES), f"unchecked: {sorted(py_names - set(C_VALUES))}"
    for enum in (ringabi.RecType, ringabi.RecFlag, ringabi.RecState):
        for member in enum:
            assert f"{enum.__name__}.{member.name}" in C_VALUES


def test_python_structs_agree_with_offsets() -> None:
    """The Python packers put each field at the offset the header names."""
    hdr = ringabi.REC_HDR.pack(ringabi.REC_MAGIC, 7, 3, 64, 0, 9, 11, 13, 15, 17, 19, 1)
    assert int.from_bytes(hdr[ringabi.REC_OFF_SEQ:ringabi.REC_OFF_SEQ + 8], "little") == 9
    assert int.from_bytes(hdr[ringabi.REC_OFF_STATE:ringabi.REC_OFF_STATE + 4], "little") == 1
    assert int.from_bytes(hdr[ringabi.REC_OFF_HDR_CRC:ringabi.REC_OFF_HDR_CRC + 4], "little") == 19
