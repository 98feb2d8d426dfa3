#!/usr/bin/env bash
# `make -C kernel check`: run.sh for each kernel series (default 6.1, 6.12,
# 7.3 and 7.3-rt: see kernel.sh) and a summary with each one's time.
# CDP_VM_BENCH=1 adds the speed comparison in each guest.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
series=("$@"); [ ${#series[@]} -gt 0 ] || series=(6.1 6.12 7.3 7.3-rt)
extra=(); [ "${CDP_VM_BENCH:-0}" = 1 ] && extra+=(cdpvm.bench=1)
[ -n "${CDP_VM_TESTS:-}" ] && extra+=("cdpvm.tests=$CDP_VM_TESTS")
failed=()
times=()
for s in "${series[@]}"; do
    t0=$SECONDS
    "$here/run.sh" "$s" "${extra[@]}" || failed+=("$s")
    times+=("$s $((SECONDS - t0))s")
done
echo "check: times: $(IFS=,; echo "${times[*]}" | sed 's/,/, /g'), total ${SECONDS}s"
if [ ${#failed[@]} -gt 0 ]; then echo "check: FAILED on ${failed[*]}"; exit 1; fi
echo "check: dm-cdp passed on ${series[*]}"
