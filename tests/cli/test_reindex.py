"""`cdp reindex` rebuilds a damaged or lost index from the segments: every answer comes back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from journal import Journal
from tests.support.cli import cdp


def _restored(journal_dir: Path, tmp_path: Path, name: str) -> str:
    out = tmp_path / name
    run = cdp("restore", "--journal", journal_dir, "--at", "mark:keep-me", "--to", out)
    assert run.code == 0, run.err
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_reindex_after_the_index_is_lost(journal_dir: Path, tmp_path: Path) -> None:
    with Journal.open(journal_dir) as j:
        j.add_mark("keep-me")
    before = _restored(journal_dir, tmp_path, "before.img")
    points = cdp("points", "--journal", journal_dir, "--json").out
    (journal_dir / "index" / "data.mdb").write_bytes(b"")
    cdp("points", "--journal", journal_dir).one_line_error(1, "cdp reindex")
    shutil.rmtree(journal_dir / "index")
    run = cdp("reindex", "--journal", journal_dir, "--json")
    assert run.code == 0, run.err
    assert _restored(journal_dir, tmp_path, "after.img") == before
    assert cdp("points", "--journal", journal_dir, "--json").out == points  # the user mark too
    assert cdp("verify", "--journal", journal_dir).code == 0


def test_reindex_builds_the_checkpoint_status_reports(journal_dir: Path) -> None:
    """A new journal has no block-map checkpoint; a reindex builds one at the newest record."""
    assert "restores  walk the block index (no checkpoint yet" in cdp("status", "--journal", journal_dir).out
    assert cdp("reindex", "--journal", journal_dir).code == 0
    doc = json.loads(cdp("status", "--journal", journal_dir, "--json").out)
    assert doc["health"]["checkpoint_seq"] == doc["last_seq"] and doc["health"]["checkpoint_behind"] == 0
    assert (f"restores  read the block-map checkpoint at seq {doc['last_seq']} (0 records behind the newest)"
            in cdp("status", "--journal", journal_dir).out)


def test_reindex_refuses_while_the_writer_holds_the_journal(journal_dir: Path) -> None:
    with Journal.open(journal_dir):
        cdp("reindex", "--journal", journal_dir).one_line_error(1, "cdp run")
