"""The producer process of the end-to-end tests: seeded ops on a simulated device.

``python -m tests.cli.e2e_workload --ring R --image I --seed N --ops K --log L``

The ops come from :func:`ops`, which the test calls too, with the same seed,
to apply them to its own bytearray model: the model never looks at the sim,
the ring or the journal. For every op the process logs the wall clock just
before it was submitted and just after it completed; the ring stamps the op
between the two, so any time in ``[after_i, before_{i+1})`` is a moment
when the device held exactly the effect of ops ``0..i``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One request: ``kind`` is write, zero, flush or mark."""

    kind: str
    offset: int = 0
    length: int = 0
    data: bytes = b""
    name: str = ""


def ops(seed: int, count: int, device_bytes: int) -> Iterator[Op]:
    """A reproducible mix: mostly small writes, some large ones, zeroing, flushes and marks."""
    rng = random.Random(seed)
    sectors_total = device_bytes // 512
    for i in range(count):
        roll = rng.random()
        if roll < 0.78:
            sectors = rng.choice([1, 8, 8, 8, 16, 64, 256, 1024, 2048])
            offset = rng.randrange(0, sectors_total - sectors + 1) * 512
            yield Op("write", offset, sectors * 512, rng.randbytes(sectors * 512))
        elif roll < 0.85:
            sectors = rng.choice([8, 128, 1024])
            offset = rng.randrange(0, sectors_total - sectors + 1) * 512
            yield Op("zero", offset, sectors * 512)
        elif roll < 0.97:
            yield Op("flush")
        else:
            yield Op("mark", name=f"e2e-{i}")


def main(argv: list[str] | None = None) -> int:
    from cdp.ringwriter import RingWriter
    from cdp.sim import SimDevice

    p = argparse.ArgumentParser()
    p.add_argument("--ring", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--ops", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pause-every", type=int, default=25, help="sleep 1 ms after every N ops")
    args = p.parse_args(argv)
    device = SimDevice(args.image, RingWriter.attach(args.ring), policy="block", wait_ms=30_000)
    log = []
    try:
        for i, op in enumerate(ops(args.seed, args.ops, device.device_bytes)):
            before = time.time_ns()
            if op.kind == "write":
                published = device.write(op.offset, op.data)
            elif op.kind == "zero":
                published = device.write_zeroes(op.offset, op.length)
            elif op.kind == "flush":
                published = device.flush()
            else:
                published = device.mark(op.name)
            after = time.time_ns()
            if not published:
                print(f"op {i} was dropped", file=sys.stderr)
                return 1
            log.append([before, after])
            if i % args.pause_every == 0:
                time.sleep(0.001)
    finally:
        device.close()
    with open(args.log, "w") as fh:
        json.dump(log, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
