"""`cdp attach` / `detach` / `status` around the in-place filter, without a kernel.

The choice of the way in (dm target or filter) and every refusal of the
filter's control device are pure functions of their inputs: here they are
held to what the README and `cdp attach --help` promise. The kernel side is
proven in the VMs (kernel/vm/guest/filtervm.py).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from cdp import filter as cdpfilter
from cdp.commands.attach import choose_way, default_name
from cdp.errors import UsageError
from tests.support.cli import cdp

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("dm_name,via,want", [
    ("vg0-data", None, "dm"),          # a device-mapper device: the live insertion
    (None, None, "filter"),            # anything else: in place
    (None, "dm", "dm"),                # forced: /dev/mapper/NAME over a plain device
    ("vg0-data", "filter", "filter"),  # forced: the filter on a dm device
])
def test_the_way_in(dm_name: str | None, via: str | None, want: str) -> None:
    assert choose_way(dm_name, via) == want


def test_an_unknown_way_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--via must be one of dm, filter"):
        choose_way(None, "ebpf")


def test_the_default_name() -> None:
    assert default_name("/dev/sdb", None, None) == "sdb"
    assert default_name("/dev/mapper/vg0-data", "vg0-data", None) == "vg0-data"
    assert default_name("/dev/sdb", None, "backup") == "backup"


def test_via_is_checked_by_the_command_line(tmp_path: Path) -> None:
    run = cdp("attach", "/dev/null", "--via", "ebpf", "--journal", tmp_path / "j")
    assert run.code == 2 and "invalid choice: 'ebpf'" in run.err


def test_attach_without_the_module_is_one_line(tmp_path: Path) -> None:
    """A plain file forced through the filter: no control device here (or no block device): one line."""
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    run = cdp("attach", img, "--via", "filter", "--name", "t", "--journal", tmp_path / "j")
    line = run.one_line_error(1)
    assert "filter attach" in line or "/dev/cdpctl" in line, line
    assert not (tmp_path / "j").exists(), "a refused attach must not leave a journal"


def test_a_bad_name_is_refused_before_any_kernel_call(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    cdp("attach", img, "--name", "../x", "--journal", tmp_path / "j").one_line_error(1, "bad name")
    cdp("detach", "../x").one_line_error(1, "bad name")


@pytest.mark.parametrize("err,words", [
    (errno.EEXIST, "already has a cdp filter"),
    (errno.EBUSY, "one per disk"),
    (errno.EADDRINUSE, "name sdb is taken"),
    (errno.EOPNOTSUPP, "zoned"),
    (errno.EINVAL, "refused the name or an option"),
    (errno.ENOTBLK, "not a block device"),
    (errno.ENOENT, "does not exist"),
    (errno.EPERM, "needs root"),
    (errno.EIO, "Input/output error"),    # anything else: the system's words
])
def test_every_attach_errno_is_one_line(err: int, words: str) -> None:
    line = cdpfilter.attach_error(err, "/dev/sdb", "sdb")
    assert "\n" not in line and line.startswith("filter attach /dev/sdb: ") and words in line, line


def test_status_shows_the_mode(journal_dir: Path) -> None:
    """The fixture's journal was made from an image file: not attached, in both forms."""
    doc = json.loads(cdp("status", "--journal", journal_dir, "--json").out)
    assert doc["mode"] == "none"
    assert "mode      not attached" in cdp("status", "--journal", journal_dir).out


def test_the_struct_is_what_the_ioctl_numbers_say() -> None:
    """_IOW/_IOWR carry the struct's size: 4 + 4 + 256 + 32 + 256 bytes."""
    assert cdpfilter.IOC_STRUCT.size == 552
    assert cdpfilter.IOC_ATTACH >> 16 & 0x3FFF == 552 and cdpfilter.IOC_ATTACH & 0xFF == 16
    with pytest.raises(Exception, match="longer than 31 bytes"):
        cdpfilter._pack(name="x" * 32)


def test_the_readme_says_how_the_filter_is_chosen() -> None:
    """The README's line about the two ways in names what the code does."""
    text = README.read_text()
    assert "any other block device gets the in-place filter" in " ".join(text.split())
    assert "--via dm|filter" in text
    assert choose_way(None, None) == "filter" and choose_way("x", None) == "dm"
