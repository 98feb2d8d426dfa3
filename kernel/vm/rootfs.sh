#!/usr/bin/env bash
# Build (once, cached) the guest's Python root filesystem image:
# debootstrap minbase + python3-minimal, python3-lmdb, python3-msgpack (and
# e2fsprogs, dmsetup, util-linux for the tests), plus
# the crc32c extension from the host's Python environment, trimmed and packed
# as ext4.  The project's own packages are NOT baked in: they are copied into
# a small per-run disk so a code change never invalidates this cache.
#
#   kernel/vm/rootfs.sh      prints the path of rootfs.ext4
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(dirname "$here")/.build"
img="$build/rootfs.ext4"
# shellcheck source=apt.sh
. "$here/apt.sh"
mirror="$(debian_mirror)"       # the host's bookworm archive (CDP_DEBIAN_MIRROR overrides it)
py="${CDP_HOST_PYTHON:-python3}"
mkdir -p "$build"
dir="$build/rootfs.dir"
if [ ! -e "$dir/.cdp-debootstrap-done" ]; then
    rm -rf "$dir" "$img"
    debootstrap --variant=minbase --include=python3-minimal,python3-lmdb,python3-msgpack,e2fsprogs,dmsetup,util-linux \
        bookworm "$dir" "$mirror" >"$build/debootstrap.log" 2>&1 || {
        tail -20 "$build/debootstrap.log" >&2; echo "rootfs.sh: debootstrap failed" >&2; exit 1; }
    # Trim what a test guest never reads.
    rm -rf "$dir"/usr/share/{doc,man,info,locale,i18n,zoneinfo} "$dir"/var/cache/apt/* \
           "$dir"/var/lib/apt/lists/* "$dir"/usr/lib/x86_64-linux-gnu/gconv
    touch "$dir/.cdp-debootstrap-done"
fi
if [ ! -s "$img" ]; then
    # crc32c (CRC-32C with a C core) is not in bookworm: take the host's build
    # (CPython 3.11 on both sides), with its metadata (it reads its own version).
    crcdir="$("$py" -c 'import crc32c, os; print(os.path.dirname(crc32c.__file__))' 2>/dev/null)" || {
        echo "rootfs.sh: the host python ($py) has no crc32c module; set CDP_HOST_PYTHON" >&2; exit 1; }
    site="$dir/usr/local/lib/python3.11/dist-packages"
    rm -rf "$site"; mkdir -p "$site"
    cp -r "$crcdir" "$(dirname "$crcdir")"/crc32c-*.dist-info "$site/"
    mkfs.ext4 -q -F -L cdproot -d "$dir" "$img" 400M >/dev/null
fi
echo "$img"
