"""`cdp init --no-compress` and what `cdp status` says of a journal's compression."""

from __future__ import annotations

import json
from pathlib import Path

from journal.codec import DEFAULT_LEVEL
from tests.support.cli import cdp
from tests.support.devices import write_device


def test_compression_is_on_by_default_and_off_when_asked(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    write_device(image, 1 << 20, 1)
    assert cdp("init", "--journal", tmp_path / "on", "--device", image).code == 0
    run = cdp("init", "--journal", tmp_path / "off", "--device", image, "--no-compress", "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["compression"] == {"codec": "none", "level": 0}
    on = json.loads(cdp("status", "--journal", tmp_path / "on", "--json").out)
    assert on["compression"] == {"codec": "zstd", "level": DEFAULT_LEVEL}
    off = json.loads(cdp("status", "--journal", tmp_path / "off", "--json").out)
    assert off["compression"]["codec"] == "none"
    assert f"compress  zstd level {DEFAULT_LEVEL}" in cdp("status", "--journal", tmp_path / "on").out
    assert "compress  off" in cdp("status", "--journal", tmp_path / "off").out
    assert "--no-compress" in cdp("attach", "--help").out


def test_no_compress_onto_an_existing_journal_is_one_line(tmp_path: Path) -> None:
    """A reattach keeps the journal's own setting: asking otherwise is refused before anything attaches."""
    image = tmp_path / "disk.img"
    write_device(image, 1 << 20, 2)
    assert cdp("init", "--journal", tmp_path / "j", "--device", image).code == 0
    run = cdp("attach", str(image), "--journal", tmp_path / "j", "--no-compress")
    assert run.code != 0 and len(run.err.strip().splitlines()) == 1
    assert "--no-compress is for a new journal" in run.err
    assert json.loads(cdp("status", "--journal", tmp_path / "j", "--json").out)["compression"]["codec"] == "zstd"
