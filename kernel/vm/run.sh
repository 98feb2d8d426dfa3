#!/usr/bin/env bash
# Prove dm-cdp on one Debian kernel: prepare the kernel and the module
# (kernel.sh), the initramfs, the Python root filesystem (cached), a disk with
# the project's packages, then boot qemu (TCG) and run kernel/vm/guest/cdpvm.py.
# The console goes to kernel/.build/k-<release>/console.log; the result lines
# ("CDPVM: ...") are printed here too.  Exit status 0 only when the guest
# booted the kernel the series names (RESULT kernel) and printed DONE ok.
#
#   kernel/vm/run.sh 6.1|6.12|7.3|7.3-rt [cdpvm.tests=a,b] [cdpvm.bench=1]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kdir="$(dirname "$here")"
repo="$(dirname "$kdir")"
build="$kdir/.build"
series="${1:?usage: run.sh 6.1|6.12|7.3|7.3-rt [cdpvm.tests=...]}"; shift
for tool in qemu-system-x86_64 debootstrap mkfs.ext4 cpio depmod apt-get dpkg unshare chroot; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (scripts/setup --vm installs it)" >&2; exit 3; }
done
py="${CDP_HOST_PYTHON:-}"
if [ -z "$py" ]; then
    for cand in "$repo/.venv/bin/python" /work/venv/bin/python python3; do
        if command -v "$cand" >/dev/null && "$cand" -c 'import crc32c' 2>/dev/null; then py="$cand"; break; fi
    done
fi
[ -n "$py" ] || { echo "run.sh: no host python with crc32c (run scripts/setup)" >&2; exit 3; }

rel="$("$here/kernel.sh" "$series")"
out="$build/k-$rel"
initrd="$("$here/initramfs.sh" "$rel")"
rootfs="$(CDP_HOST_PYTHON="$py" "$here/rootfs.sh")"

# The project's packages, fresh every run (small: seconds to build).
stage="$out/project"
rm -rf "$stage"; mkdir -p "$stage"
tar -C "$repo" --exclude=__pycache__ -cf - cdp journal systemd | tar -C "$stage" -xf -
cp -r "$here/guest" "$stage/guest"
# bytecode for the guest's Python (3.11, as the host's): without it every `cdp` the tests start
# compiles the project again, several seconds each under TCG
"$py" -m compileall -q --invalidation-mode unchecked-hash "$stage" >/dev/null
rm -f "$out/project.ext4"
mkfs.ext4 -q -F -d "$stage" "$out/project.ext4" 64M >/dev/null

mem="${CDP_VM_MEM:-2048}"
timeout_s="${CDP_VM_TIMEOUT:-900}"
log="$out/console.log"
disk="$out/disk.img"
hot="$out/hot.img"
qmp="$out/qmp.sock"

# One boot on fresh disks: the 1 GiB test disk (sparse); the filter tests'
# hot-removable disk (serial cdphot, in a high PCI slot so it enumerates after
# vda..vdc) and the monitor socket qmpwatch.py removes it through when the
# guest asks (CDPVM: QMP device_del hot).  Sets rc to qemu's exit status.
boot() {
    rm -f "$disk" "$hot" "$qmp"
    truncate -s 1G "$disk"
    truncate -s 64M "$hot"
    echo "run.sh: booting $rel (log: $log)" >&2
    : > "$log"
    "$py" "$here/qmpwatch.py" "$log" "$qmp" &
    local watcher=$!
    set +e
    timeout "$timeout_s" qemu-system-x86_64 -accel tcg -cpu "${CDP_VM_CPU:-qemu64}" -m "$mem" -smp "${CDP_VM_SMP:-2}" \
        -nodefaults -no-user-config -display none -no-reboot -serial stdio \
        -kernel "$out/vmlinuz" -initrd "$initrd" \
        -append "console=ttyS0 panic=-1 quiet loglevel=4 $*" \
        -drive file="$disk",if=virtio,format=raw,discard=unmap,cache=unsafe \
        -drive file="$rootfs",if=virtio,format=raw,readonly=on \
        -drive file="$out/project.ext4",if=virtio,format=raw,readonly=on \
        -drive file="$hot",if=none,id=hotd,format=raw,cache=unsafe \
        -device virtio-blk-pci,drive=hotd,id=hot,serial=cdphot,addr=0x10 \
        -qmp unix:"$qmp",server=on,wait=off \
        < /dev/null > "$log" 2>&1
    rc=$?
    kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
    set -e
}

# A kernel that panics before the guest's init printed its first line
# (CDPVM: INIT, before any module is loaded) ran none of the project's code.
# Under the TCG of bookworm's qemu 7.2 Debian's 6.12 now and then dies that
# way on an int3 its own boot-time text patching left (seen once in CI; other
# projects booting kernels under TCG report the same and rerun: a stale
# translation of patched code).  Such a boot is tried once more and said so;
# a crash after init never is.
boot "$@"
if ! tr -d '\r' < "$log" | grep -aq '^CDPVM: ' && tr -d '\r' < "$log" | grep -aq 'Kernel panic'; then
    echo "run.sh: $rel panicked before init (qemu TCG; first lines of the panic below); booting again" >&2
    tr -d '\r' < "$log" | grep -a -m3 -e 'Oops' -e 'RIP:' -e 'Kernel panic' >&2 || true
    cp "$log" "$log.panic"
    boot "$@"
fi
tr -d '\r' < "$log" | grep -a '^CDPVM:' | grep -av -e '^CDPVM: KERNEL ' -e '^CDPVM: INIT' | sed "s/^CDPVM:/CDPVM[$series]:/" || true
if [ $rc -eq 124 ]; then echo "CDPVM[$series]: RESULT vm FAIL timeout after ${timeout_s}s"; exit 1; fi
# The guest ran the kernel the series names (init printed its release and
# version): a -rt series must have booted PREEMPT_RT, any other must not.
kline="$(tr -d '\r' < "$log" | grep -a -m1 '^CDPVM: KERNEL ' || true)"
krel="$(echo "$kline" | awk '{print $3}')"
is_rt=no; case "$kline" in *PREEMPT_RT*) is_rt=yes ;; esac
want_rt=no; case "$series" in *-rt) want_rt=yes ;; esac
if [ -n "$kline" ] && [ "$krel" = "$rel" ] && [ "$is_rt" = "$want_rt" ]; then
    echo "CDPVM[$series]: RESULT kernel PASS $krel preempt_rt=$is_rt"
else
    echo "CDPVM[$series]: RESULT kernel FAIL booted '${krel:-?}' preempt_rt=$is_rt, wanted $rel preempt_rt=$want_rt"
    kernel_failed=1
fi
if tr -d '\r' < "$log" | grep -aq '^CDPVM: DONE ok'; then exit "${kernel_failed:-0}"; fi
echo "CDPVM[$series]: RESULT vm FAIL the guest did not finish cleanly (see $log)"
tail -40 "$log" >&2
exit 1
