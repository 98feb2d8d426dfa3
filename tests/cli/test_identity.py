"""A journal knows its device: a ring of another device of the same size is refused by `cdp run`."""

from __future__ import annotations

import shutil
from pathlib import Path

from cdp.ringwriter import RingWriter
from journal import Journal
from journal.identity import device_id, identity
from tests.support.cli import cdp


def test_init_records_the_device_and_run_refuses_another(tmp_path: Path, device: tuple[Path, bytes]) -> None:
    image, data = device
    journal = tmp_path / "j"
    assert cdp("init", "--journal", journal, "--device", image).code == 0
    with Journal.open(journal, readonly=True) as j:
        assert j.info.device_id == device_id(image) != bytes(16)
    twin = tmp_path / "twin.img"  # same size, same bytes, another device
    shutil.copyfile(image, twin)
    assert identity(twin) != identity(image)
    ring = tmp_path / "ring"
    RingWriter.create_file(ring, 1 << 16, len(data), device_id=device_id(twin))
    cdp("run", "--journal", journal, "--ring", ring, "--until-detached").one_line_error(1, "not for the device")
    RingWriter.create_file(ring, 1 << 16, len(data))  # a producer that says nothing is refused too
    cdp("run", "--journal", journal, "--ring", ring, "--until-detached").one_line_error(1, "no device id")
