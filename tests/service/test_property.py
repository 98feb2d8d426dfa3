"""Hypothesis: whatever the producer does and however the ring is damaged, the drained
journal ends equal to the device, with every overflow window closed and no seq gap."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cdp.ring import Ring
from cdp.ringabi import CONTROL_SIZE
from cdp.ringwriter import RingWriter
from cdp.service import drain
from cdp.sim import SimDevice, Workload, apply
from journal import Journal
from tests.support.devices import write_device

SIZE = 1 << 20


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31), ops=st.integers(1, 80), ring_kib=st.sampled_from([64, 128, 4096]),
       policy=st.sampled_from(["overflow", "block"]), drain_every=st.integers(1, 40),
       damage=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), max_size=3),
       split=st.integers(0, 2))
def test_drained_journal_equals_the_device(seed: int, ops: int, ring_kib: int, policy: str, drain_every: int,
                                           damage: list[tuple[int, int]], split: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        image = tmp_path / "img"
        write_device(image, SIZE, seed, zero_fraction=0.0)
        Journal.create(tmp_path / "j", device_bytes=SIZE, source=image).close()
        RingWriter.create_file(tmp_path / "ring", ring_kib << 10, SIZE)
        device = SimDevice(image, RingWriter.attach(tmp_path / "ring"), policy=policy, wait_ms=0)
        workload = Workload(seed, SIZE, max_write=64 << 10)
        for i in range(ops):
            apply(device, workload.next())
            if split == 1 and i % drain_every == drain_every - 1:
                # a consumer that stops and restarts between batches
                drain(tmp_path / "j", tmp_path / "ring", stop=_stopped(), handle_signals=False)
                _drain_some(tmp_path)
            elif split == 2 and i % drain_every == drain_every - 1:
                _drain_some(tmp_path)
            device.tick()
        with Ring(tmp_path / "ring") as ring:
            tail, head, mask = ring.tail, ring.head, ring.data_size - 1
        device.close()
        if head > tail:
            with open(tmp_path / "ring", "r+b") as f:  # damage what is still waiting in the ring
                for where, value in damage:
                    pos = tail + (where * 64 + value) % (head - tail)
                    f.seek(CONTROL_SIZE + (pos & mask))
                    f.write(bytes([value ^ 0x5A]))
        stats = drain(tmp_path / "j", tmp_path / "ring", until_detached=True, handle_signals=False)
        assert stats.stopped_by == "detached"
        event(f"damaged records: {min(stats.corrupt, 2)}")
        event(f"dropped writes: {device.stats.dropped > 0}")
        with Journal.open(tmp_path / "j", readonly=True) as j:
            assert j.read(0, SIZE) == image.read_bytes()
            assert all(w.resync_seq is not None for w in j.overflow_windows())
            assert [r.seq for r in j.records()] == list(range(1, j.last_seq + 1))


def _stopped():
    import threading

    event = threading.Event()
    event.set()
    return event


def _drain_some(tmp_path: Path) -> None:
    """One pass of the service over what is in the ring now, then stop."""
    import threading

    stop = threading.Event()
    progress = lambda _stats: stop.set()
    timer = threading.Timer(0.05, stop.set)  # or soon, if the ring holds nothing
    timer.start()
    drain(tmp_path / "j", tmp_path / "ring", stop=stop, on_progress=progress, handle_signals=False,
          poll_interval=0.001, batch_records=7)
    timer.cancel()
