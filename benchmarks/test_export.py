"""`cdp export` speed, each against a baseline measured in the same run.

One journal per device size: a dense 1 GiB (or 64 MiB) baseline plus the
device's size again in 64 KiB writes at random places; the point served is
the newest.

- time from starting `cdp export` to the first 4 KiB read, against `cdp
  restore` of the same point (target: under 1 s whatever the size);
- sequential read of the whole export (``nbdcopy URI null:``) against a
  plain read of the restored image (``dd bs=1M``, warm; target >= 0.5x),
  and against nbdkit's own C ``file`` plugin serving that image over the
  same kind of socket (what any NBD export of a fully restored image gets);
- random 4 KiB reads through libnbd: median and p99 latency (and the same
  reads with ``os.pread`` on the restored image, for scale).

``CDP_BENCH_SCALE`` shrinks the devices (CI's smoke run).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conftest import Ratio, compare, figure, scaled
from journal import Journal, Record, RecordType

CDP = Path(sys.executable).parent / "cdp"
MIB = 1 << 20


def _build(root: Path, size: int) -> tuple[Path, int]:
    """A journal of ``size`` bytes: dense baseline, then the size again in 64 KiB writes."""
    rng = random.Random(size)
    image = root / "device.img"
    with open(image, "wb") as f:
        block = rng.randbytes(MIB)
        for i in range(size // MIB):
            f.write(block[i % 7:] + block[:i % 7])
    path = root / "j"
    with Journal.create(path, device_bytes=size, source=image) as journal:
        payload = rng.randbytes(65536)
        ts, seq = journal.info.created_ns, 1
        for _ in range(max(1, size // (8 * MIB))):
            journal.append([Record(seq + i, ts + seq + i, RecordType.WRITE, 0,
                                   rng.randrange(size // 65536) * 65536, 65536, payload) for i in range(128)])
            seq += 128
        last = journal.last_seq
    image.unlink()
    return path, last


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, int]]:
    """{"64 MiB": (journal, last seq, size), "1 GiB": ...} at the run's scale."""
    out = {}
    for label, size in (("64 MiB", 64 * MIB), ("1 GiB", 1024 * MIB)):
        size = max(4 * MIB, scaled(size) // MIB * MIB)
        path, last = _build(tmp_path_factory.mktemp(label.replace(" ", "")), size)
        out[label] = (path, last, size)
    return out


class _Export:
    """A `cdp export` subprocess and its URI."""

    def __init__(self, journal: Path, seq: int) -> None:
        self.proc = subprocess.Popen([os.fspath(CDP), "export", "--journal", os.fspath(journal), "--seq",
                                      str(seq), "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        self.uri = json.loads(self.proc.stdout.readline())["uri"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _nbd():  # noqa: ANN202 - the libnbd module
    from tests.export.conftest import libnbd

    return libnbd()


@pytest.mark.parametrize("label", ["64 MiB", "1 GiB"])
def test_first_byte_vs_restore(benchmark, journals, tmp_path: Path, label: str) -> None:
    path, last, size = journals[label]
    nbd = _nbd()
    out = tmp_path / "restored.img"
    running: list[_Export] = []

    def baseline() -> None:
        out.unlink(missing_ok=True)
        subprocess.run([os.fspath(CDP), "restore", "--journal", os.fspath(path), "--seq", str(last),
                        "--to", os.fspath(out)], check=True, capture_output=True)

    def subject() -> None:
        exp = _Export(path, last)
        running.append(exp)
        h = nbd.NBD()
        h.connect_uri(exp.uri)
        assert len(h.pread(4096, 0)) == 4096
        h.shutdown()

    def stop_previous() -> None:
        while running:
            running.pop().stop()

    name = f"export to first byte, {size // MIB} MiB device"
    ratio = compare(benchmark, Ratio(name, units=size,
                                     baseline_name="cdp restore of the same point"),
                    subject, baseline, rounds=3, prepare=stop_previous)
    stop_previous()
    figure(f"{name}: median {statistics.median(ratio.subject_s):.3f} s "
           f"(target < 1 s) vs restore {statistics.median(ratio.baseline_s):.2f} s")


def test_sequential_read_vs_plain_read(benchmark, journals, tmp_path: Path) -> None:
    path, last, size = journals["1 GiB"]
    image = tmp_path / "restored.img"
    subprocess.run([os.fspath(CDP), "restore", "--journal", os.fspath(path), "--seq", str(last),
                    "--to", os.fspath(image)], check=True, capture_output=True)
    exp = _Export(path, last)
    try:
        def plain_read() -> None:
            subprocess.run(["dd", f"if={image}", "of=/dev/null", "bs=1M", "status=none"], check=True)

        def export_read() -> None:
            subprocess.run(["nbdcopy", exp.uri, "null:"], check=True)

        plain_read()  # warm the image's pages, as the journal's are
        compare(benchmark, Ratio(f"sequential read of the export, {size // MIB} MiB", units=size,
                                 baseline_name="dd of the restored image (warm)", target=0.5),
                export_read, plain_read, rounds=5)
    finally:
        exp.stop()
    # the ceiling of any NBD export on this machine: nbdkit's C file plugin serving the image
    sock = tmp_path / "file.sock"
    server = subprocess.Popen(["nbdkit", "-f", "-r", "-U", os.fspath(sock), "file", os.fspath(image)],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if sock.exists():
                break
            time.sleep(0.01)
        exp = _Export(path, last)
        try:
            ceiling = Ratio(f"sequential read of the export, {size // MIB} MiB", units=size,
                            baseline_name="nbdkit file plugin serving the restored image")
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run(["nbdcopy", f"nbd+unix:///?socket={sock}", "null:"], check=True)
                ceiling.baseline_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                subprocess.run(["nbdcopy", exp.uri, "null:"], check=True)
                ceiling.subject_s.append(time.perf_counter() - start)
            figure(ceiling.line())
        finally:
            exp.stop()
    finally:
        server.terminate()
        server.wait()


def test_random_4k_reads(journals, tmp_path: Path) -> None:
    path, last, size = journals["1 GiB"]
    image = tmp_path / "restored.img"
    subprocess.run([os.fspath(CDP), "restore", "--journal", os.fspath(path), "--seq", str(last),
                    "--to", os.fspath(image)], check=True, capture_output=True)
    rng = random.Random(9)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(scaled(4000, 200))]
    nbd = _nbd()
    exp = _Export(path, last)
    try:
        h = nbd.NBD()
        h.connect_uri(exp.uri)
        for offset in offsets[:50]:
            h.pread(4096, offset)  # warm up the connection and the plugin
        lat = []
        for offset in offsets:
            start = time.perf_counter()
            h.pread(4096, offset)
            lat.append(time.perf_counter() - start)
        h.shutdown()
    finally:
        exp.stop()
    fd = os.open(image, os.O_RDONLY)
    try:
        local = []
        for offset in offsets:
            start = time.perf_counter()
            os.pread(fd, 4096, offset)
            local.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    lat.sort()
    local.sort()
    p99 = lat[int(len(lat) * 0.99) - 1]
    figure(f"random 4 KiB reads of the export ({len(lat)} reads, {size // MIB} MiB): median "
           f"{statistics.median(lat) * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us "
           f"(os.pread of the restored image: median {statistics.median(local) * 1e6:.1f} us)")
