"""Hold kernel/cdp_filter_abi.h (the filter's control ioctls) to cdp/filter.py.

As tests/kernel/test_abi_header.py does for the ring: a tiny C program
compiled against the header prints each size, offset and number, and each
must equal the Python value. No kernel needed: the header is plain UAPI C.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cdp import filter as cdpfilter
from tests.support.cheader import header_values

HEADER = Path(__file__).resolve().parents[2] / "kernel" / "cdp_filter_abi.h"

C_VALUES: dict[str, str] = {
    "size": "sizeof(struct cdp_filter_ioc)",
    "off_device": "offsetof(struct cdp_filter_ioc, device)",
    "off_name": "offsetof(struct cdp_filter_ioc, name)",
    "off_opts": "offsetof(struct cdp_filter_ioc, opts)",
    "PATH_MAX": "CDP_FILTER_PATH_MAX",
    "NAME_MAX": "CDP_FILTER_NAME_MAX",
    "OPTS_MAX": "CDP_FILTER_OPTS_MAX",
    "CTL_STATUS": "CDP_FILTER_CTL_STATUS",
    "IOC_ATTACH": "CDP_FILTER_IOC_ATTACH",
    "IOC_DETACH": "CDP_FILTER_IOC_DETACH",
    "IOC_CTL": "CDP_FILTER_IOC_CTL",
}

PYTHON: dict[str, int] = {
    "size": cdpfilter.IOC_STRUCT.size,
    "off_device": 8,
    "off_name": 8 + cdpfilter.PATH_MAX,
    "off_opts": 8 + cdpfilter.PATH_MAX + cdpfilter.NAME_MAX,
    "PATH_MAX": cdpfilter.PATH_MAX,
    "NAME_MAX": cdpfilter.NAME_MAX,
    "OPTS_MAX": cdpfilter.OPTS_MAX,
    "CTL_STATUS": cdpfilter.CTL_STATUS,
    "IOC_ATTACH": cdpfilter.IOC_ATTACH,
    "IOC_DETACH": cdpfilter.IOC_DETACH,
    "IOC_CTL": cdpfilter.IOC_CTL,
}


@pytest.fixture(scope="module")
def c_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    return header_values(HEADER, C_VALUES, tmp_path_factory.mktemp("fabi"))


@pytest.mark.parametrize("name", sorted(C_VALUES))
def test_header_matches_python(c_values: dict[str, int], name: str) -> None:
    assert c_values[name] == PYTHON[name], f"{name}: C says {c_values[name]}, Python says {PYTHON[name]}"


def test_the_control_path_is_the_same() -> None:
    assert f'CDP_FILTER_CTL_PATH\t"{cdpfilter.CTL_PATH}"' in HEADER.read_text()
