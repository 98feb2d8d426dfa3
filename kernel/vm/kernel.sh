#!/usr/bin/env bash
# Fetch one Debian kernel (image + headers, unpacked, never installed) and
# build dm-cdp.ko against it.  Cached under kernel/.build/k-<release>/.
#
#   kernel/vm/kernel.sh 6.1|6.12     prints the kernel release it prepared
#
# Why unpacked: the machines that run this boot another kernel and load no
# modules; the module is built against Debian's headers and tested by
# booting Debian's own vmlinuz in qemu (see docs/kernel.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kdir="$(dirname "$here")"
build="$kdir/.build"
series="${1:?usage: kernel.sh 6.1|6.12}"

# Resolve the release from apt's metadata: security updates move it.
case "$series" in
    6.1)  meta=linux-image-amd64 ;;
    6.12) meta=linux-headers-6.12-amd64 ;;
    *) echo "kernel.sh: unknown kernel series $series (6.1 or 6.12)" >&2; exit 2 ;;
esac
resolve() {
    apt-cache depends "$meta" 2>/dev/null | sed -n 's/^ *Depends: \(linux-\(image\|headers\)-\(.*\)\)$/\3/p' | head -1
}
dep="$(resolve)"
if [ -z "$dep" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 || true     # a machine whose package lists were never fetched
    dep="$(resolve)"
fi
if [ -z "$dep" ]; then
    echo "kernel.sh: apt-cache does not know $meta; run apt-get update" >&2; exit 1
fi
rel="$dep"                                  # e.g. 6.1.0-56-amd64 / 6.12.117+deb12-amd64
common="${rel%-amd64}-common"
case "$series" in
    6.1)  kbuild=linux-kbuild-6.1 ;;
    6.12) kbuild="linux-kbuild-${rel%-amd64}" ;;
esac

out="$build/k-$rel"
root="$out/root"
mkdir -p "$build/debs"
if [ ! -e "$out/.unpacked" ]; then
    rm -rf "$out"; mkdir -p "$root"
    # The signed image package is what Debian boots; its payload is the same kernel.
    ( cd "$build/debs" && for p in "linux-image-$rel" "linux-headers-$rel" "linux-headers-$common" "$kbuild"; do
          ls "${p}"_*.deb >/dev/null 2>&1 || apt-get download -q "$p" >&2
      done )
    for p in "linux-image-$rel" "linux-headers-$rel" "linux-headers-$common" "$kbuild"; do
        dpkg -x "$(ls "$build/debs/${p}"_*.deb | tail -1)" "$root"
    done
    # The arch headers Makefile includes the common tree by absolute path.
    sed -i "s#^include /usr/src/#include $root/usr/src/#" "$root/usr/src/linux-headers-$rel/Makefile"
    depmod -b "$root" "$rel"
    touch "$out/.unpacked"
fi

# Build the module out of tree, in a copy, so two kernels never share objects.
src="$out/mod"
mkdir -p "$src"
cp -u "$kdir/dm-cdp.c" "$kdir/cdp_ring_abi.h" "$kdir/Kbuild" "$src/"
make -s -C "$root/usr/src/linux-headers-$rel" M="$src" modules >"$out/build.log" 2>&1 || {
    cat "$out/build.log" >&2; echo "kernel.sh: module build failed for $rel" >&2; exit 1; }
if grep -E -i 'warning|error' "$out/build.log" >&2; then
    echo "kernel.sh: the module build printed warnings for $rel" >&2; exit 1
fi
echo "$rel"
