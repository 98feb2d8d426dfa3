"""`cdp export` end to end: the real command, nbdkit and the plugin, read with libnbd and nbdcopy.

- For random histories and points: a full read of the export equals
  `cdp restore` of the same point and the model; random reads equal the model.
- The writable overlay reads back what was written; the journal directory
  stays byte-identical (every file hashed before and after).
- A damaged segment byte is an I/O error for the client, never wrong bytes.
- Bad input is one line and a non-zero exit.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import subprocess
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, Record, RecordType
from journal.codec import OFF  # raw payloads: the damage is placed by framing arithmetic
from tests.support.cli import CDP, cdp
from tests.support.history import ts_arg
from tests.export.conftest import build_journal, connect, model_at, read_all, start_export, tree_hashes

SIZE = (2 << 20) + 4096 + 1024  # room for zeroing extents; a partial last block


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), data=st.data())
def test_export_equals_restore_and_model(tmp_path_factory: pytest.TempPathFactory, nbd: ModuleType,
                                         seed: int, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("exp")
    built = build_journal(tmp / "j", random.Random(seed), size=SIZE, records=50)
    for seq in data.draw(st.lists(st.integers(0, built.last_seq), min_size=1, max_size=2, unique=True)):
        want = model_at(built, seq)
        with Journal.open(built.path, readonly=True) as journal:
            with journal.index.read() as txn:
                ts = journal.ts_of(txn, seq)
            whole = journal.is_whole(seq, ts)
        exp = start_export(built.path, "--seq", str(seq), "--allow-partial")
        try:
            assert exp.info["seq"] == seq and exp.info["size"] == SIZE and not exp.info["writable"]
            assert exp.info["whole"] == whole
            h = connect(nbd, exp.uri)
            assert h.get_size() == SIZE and h.is_read_only()
            assert read_all(h, SIZE, chunk=1 << 20) == want
            for _ in range(20):
                offset = data.draw(st.integers(0, SIZE - 1))
                length = data.draw(st.integers(1, min(SIZE - offset, 200_000)))
                assert h.pread(length, offset) == want[offset:offset + length], (seq, offset, length)
            h.shutdown()
            copy = tmp / f"copy-{seq}.img"
            subprocess.run(["nbdcopy", exp.uri, os.fspath(copy)], check=True, timeout=60)
            restored = tmp / f"restored-{seq}.img"
            run = cdp("restore", "--journal", built.path, "--seq", str(seq), "--to", restored, "--allow-partial")
            assert run.code == 0, run.err
            assert copy.read_bytes() == restored.read_bytes() == want
        finally:
            code, err = exp.stop()
        assert code == 0, err


def test_text_output_tcp_and_clean_stop(tmp_path: Path, nbd: ModuleType) -> None:
    built = build_journal(tmp_path / "j", random.Random(5), size=1 << 20, records=30)
    proc = subprocess.Popen([os.fspath(CDP), "export", "--journal",
                             os.fspath(built.path), "--at", ts_arg(time.time_ns()), "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    uri = proc.stdout.readline().strip()
    assert uri.startswith("nbd://127.0.0.1:") and not uri.endswith(":0")
    h = connect(nbd, uri)
    assert h.pread(1 << 20, 0) == model_at(built, built.last_seq)
    h.shutdown()
    proc.send_signal(2)  # Ctrl-C
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "", err
    assert "serving seq" in err and "stopped by SIGINT" in err and "Traceback" not in err
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", int(uri.rsplit(":", 1)[1])), timeout=5).close()


def test_unix_socket_is_removed_and_old_point_is_served(tmp_path: Path, nbd: ModuleType, export_of) -> None:
    built = build_journal(tmp_path / "j", random.Random(6), size=1 << 20, records=40)
    sock = tmp_path / "export.sock"
    exp = export_of(built.path, "--seq", "7", "--unix", str(sock), "--allow-partial")
    assert exp.uri == f"nbd+unix:///?socket={sock}" and sock.exists()
    h = connect(nbd, exp.uri)
    assert h.pread(1 << 20, 0) == model_at(built, 7)
    h.shutdown()
    code, err = exp.stop()
    assert code == 0, err
    assert not sock.exists()


def test_writable_overlay_reads_back_and_leaves_the_journal_alone(tmp_path: Path, nbd: ModuleType,
                                                                  export_of) -> None:
    built = build_journal(tmp_path / "j", random.Random(7), size=SIZE, records=60)
    before = tree_hashes(built.path)
    exp = export_of(built.path, "--seq", str(built.last_seq), "--writable", "--allow-partial")
    assert exp.info["writable"]
    device = bytearray(model_at(built, built.last_seq))
    rng = random.Random(8)
    h = connect(nbd, exp.uri)
    assert not h.is_read_only()
    for _ in range(60):
        offset = rng.randrange(SIZE)
        length = rng.randint(1, min(SIZE - offset, 100_000))
        payload = rng.randbytes(length)
        h.pwrite(payload, offset)
        device[offset:offset + length] = payload
        if rng.random() < 0.2:
            probe = rng.randrange(SIZE)
            n = min(SIZE - probe, rng.randint(1, 70_000))
            assert h.pread(n, probe) == bytes(device[probe:probe + n])
    if h.can_zero():
        h.zero(65536, 4096)
        device[4096:4096 + 65536] = bytes(65536)
    h.flush() if h.can_flush() else None
    assert read_all(h, SIZE, chunk=1 << 20) == bytes(device)
    # a second client sees the same overlay
    h2 = connect(nbd, exp.uri)
    assert h2.pread(SIZE, 0) == bytes(device)
    h.shutdown()
    h2.shutdown()
    code, err = exp.stop()
    assert code == 0, err
    assert tree_hashes(built.path) == before
    # and the journal still gives the point as it was
    with Journal.open(built.path, readonly=True) as journal:
        assert journal.read(0, SIZE) == model_at(built, built.last_seq)


def test_read_only_export_refuses_writes(tmp_path: Path, nbd: ModuleType, export_of) -> None:
    built = build_journal(tmp_path / "j", random.Random(9), size=1 << 20, records=10)
    exp = export_of(built.path, "--seq", "0")
    h = connect(nbd, exp.uri)
    assert h.is_read_only()
    with pytest.raises(nbd.Error):
        h.pwrite(b"x" * 512, 0)
    h.shutdown()


def test_damaged_block_is_an_io_error(tmp_path: Path, nbd: ModuleType, export_of) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 18, compression=OFF) as journal:
        t = journal.info.created_ns
        journal.append([Record(s, t + s, RecordType.WRITE, 0, (s - 1) * 8192, 8192, bytes([s]) * 8192)
                        for s in range(1, 11)])
    seg = tmp_path / "j" / "segments" / "00000001.seg"
    rec3 = 64 + 2 * (64 + 8192)
    with open(seg, "r+b") as f:
        f.seek(rec3 + 64 + 5000)
        byte = f.read(1)
        f.seek(rec3 + 64 + 5000)
        f.write(bytes([byte[0] ^ 0x40]))
    exp = export_of(tmp_path / "j", "--seq", "10")
    h = connect(nbd, exp.uri)
    for offset, length in ((2 * 8192, 8192), (5 * 4096 + 100, 10), (0, 1 << 18)):
        with pytest.raises(nbd.Error) as caught:
            h.pread(length, offset)
        assert caught.value.errnum == errno.EIO
    assert h.pread(2 * 8192, 0) == bytes([1]) * 8192 + bytes([2]) * 8192  # the rest still reads
    assert h.pread(8192, 3 * 8192) == bytes([4]) * 8192
    h.shutdown()
    copy = subprocess.run(["nbdcopy", exp.uri, os.fspath(tmp_path / "copy.img")], capture_output=True, text=True)
    assert copy.returncode != 0
    code, err = exp.stop()
    assert code == 0
    assert "fails its CRC-32C" in err and "Traceback" not in err


def test_overflow_point_is_refused_unless_partial(tmp_path: Path, export_of) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 16) as journal:
        t = journal.info.created_ns
        journal.append([
            Record(1, t + 10, RecordType.WRITE, 0, 0, 4096, b"a" * 4096),
            Record(2, t + 30, RecordType.OVERFLOW, 0, 8192, 8192, (t + 25).to_bytes(8, "little")),
            Record(3, t + 40, RecordType.MARK, data=b"inside"),
        ])
    run = cdp("export", "--journal", tmp_path / "j", "--at", "mark:inside")
    run.one_line_error(1, "not whole")
    exp = export_of(tmp_path / "j", "--at", "mark:inside", "--allow-partial")
    assert exp.info["seq"] == 3 and exp.info["whole"] is False and exp.info["name"] == "inside"


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    built = build_journal(tmp_path / "j", random.Random(11), size=1 << 16, records=5)
    j = built.path
    cdp("export", "--journal", tmp_path / "missing", "--seq", "0").one_line_error(1, "no journal at")
    cdp("export", "--journal", j, "--at", "@1").one_line_error(1, "before the journal began")
    cdp("export", "--journal", j, "--at", "mark:nope").one_line_error(2, "--at")
    cdp("export", "--journal", j, "--at", "yesterday-ish").one_line_error(2, "--at")
    cdp("export", "--journal", j, "--seq", "999").one_line_error(1, "not in the journal")
    cdp("export", "--journal", j, "--seq", "0", "--listen", "nonsense").one_line_error(2, "ADDR:PORT")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        cdp("export", "--journal", j, "--seq", "0", "--listen", f"127.0.0.1:{port}", "--allow-partial").one_line_error(
            1, "cannot listen", "in use")
    finally:
        taken.close()
    existing = tmp_path / "file"
    existing.write_text("keep me")
    cdp("export", "--journal", j, "--seq", "0", "--unix", existing, "--allow-partial").one_line_error(1, "exists")
    assert existing.read_text() == "keep me"
    cdp("export", "--journal", j, "--seq", "0", "--unix", tmp_path / "no" / "dir.sock",
        "--allow-partial").one_line_error(
        1, "not a directory")
    cdp("export", "--journal", j).one_line_error(2)


def test_export_json_names_the_point(tmp_path: Path, export_of) -> None:
    with Journal.create(tmp_path / "j", device_bytes=1 << 16) as journal:
        t = journal.info.created_ns
        journal.append([Record(1, t + 10, RecordType.WRITE, 0, 0, 4096, b"a" * 4096),
                        Record(2, t + 20, RecordType.MARK, data=b"before")])
    exp = export_of(tmp_path / "j", "--at", "mark:before")
    assert exp.info["uri"].startswith("nbd+unix:///?socket=")
    assert {k: exp.info[k] for k in ("seq", "kind", "name", "whole", "size")} == \
        {"seq": 2, "kind": "mark", "name": "before", "whole": True, "size": 1 << 16}
    assert json.loads(json.dumps(exp.info)) == exp.info


def test_plugin_failure_at_start_is_one_line(tmp_path: Path) -> None:
    """What the plugin cannot do (here: open the journal) ends the start with its own message."""
    from cdp.errors import CdpError
    from cdp.export import ExportServer

    server = ExportServer(tmp_path / "gone", 0)
    with pytest.raises(CdpError, match=r"nbdkit failed to start \(exit 1\): .*gone is not a cdp journal") as caught:
        server.start()
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert not list(tmp_path.iterdir())
