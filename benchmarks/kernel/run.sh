#!/usr/bin/env bash
# dm-cdp's write overhead, measured inside the qemu guests of the kernel check:
# 4 KiB and 64 KiB O_DIRECT writes (fsync every 64) through the raw virtio
# disk, dm-linear, dm-log-writes and dm-cdp (with the drain service running),
# interleaved, three rounds of 1 s each; the median MB/s per target and the
# ratio to dm-linear. TCG timings swing by about 30%: read the ratios.
#
#   benchmarks/kernel/run.sh [6.1] [6.12]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
series=("$@"); [ ${#series[@]} -gt 0 ] || series=(6.1 6.12)
for s in "${series[@]}"; do
    "$repo/kernel/vm/run.sh" "$s" cdpvm.tests=bench | grep -E 'BENCH|RESULT'
done
