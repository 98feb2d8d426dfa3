#!/usr/bin/env bash
# Build the initramfs for one prepared kernel (kernel.sh ran first): busybox
# (static), the stock modules the guest needs in modules.dep order, dm-cdp.ko,
# the dmesg scan's probe module (probe/) and the init script.  Modules a
# kernel has built in are skipped.
#
#   kernel/vm/initramfs.sh RELEASE      prints the path of initrd.cpio.gz
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(dirname "$here")/.build"
rel="${1:?usage: initramfs.sh RELEASE}"
out="$build/k-$rel"
root="$out/root"
[ -e "$root/lib/modules/$rel/modules.dep" ] || { echo "initramfs.sh: run kernel.sh first" >&2; exit 1; }
bb=/bin/busybox     # from busybox-static: the initramfs has no libc
if [ ! -x "$bb" ] || ldd "$bb" >/dev/null 2>&1; then
    echo "initramfs.sh: /bin/busybox is missing or not static (apt-get install busybox-static)" >&2; exit 1
fi

stage="$out/initrd"
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,proc,sys,dev,newroot,mods}
cp "$bb" "$stage/bin/busybox"
for app in sh mount umount insmod mkdir cat cp echo poweroff sleep chroot dmesg grep ls; do
    ln -s busybox "$stage/bin/$app"
done

# The modules wanted, then their dependencies first (modules.dep order).
want="virtio_blk virtio_pci dm-mod dm-log-writes dm-delay ext4 crc32c_generic libcrc32c loop nbd"
python3 "$here/moddeps.py" "$root/lib/modules/$rel" $want > "$stage/mods/order.txt"
while read -r rel_path; do
    base="$(basename "$rel_path")"
    case "$base" in
        *.xz) xz -dc "$root/lib/modules/$rel/$rel_path" > "$stage/mods/${base%.xz}" ;;
        *.zst) zstd -qdc "$root/lib/modules/$rel/$rel_path" > "$stage/mods/${base%.zst}" ;;
        *) cp "$root/lib/modules/$rel/$rel_path" "$stage/mods/$base" ;;
    esac
done < "$stage/mods/order.txt"
sed -i -e 's#.*/##' -e 's#\.xz$##' -e 's#\.zst$##' "$stage/mods/order.txt"
cp "$out/mod/dm-cdp.ko" "$out/mod/cdp_atomic_probe.ko" "$stage/mods/"
cp "$here/init" "$stage/init"
chmod +x "$stage/init"
( cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1 ) > "$out/initrd.cpio.gz"
echo "$out/initrd.cpio.gz"
