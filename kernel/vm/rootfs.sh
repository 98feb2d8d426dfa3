#!/usr/bin/env bash
# Build (once, cached) the guest's Python root filesystem image:
# debootstrap minbase + python3-minimal, python3-lmdb, python3-msgpack,
# python3-zstandard (payload compression; bookworm has 0.20; debootstrap does not
# resolve its virtual dependency, so python3-cffi-backend is named too) (and
# e2fsprogs, dmsetup, util-linux for the tests; nbdkit, its Python plugin and
# nbd-client for cdp export/mount), plus
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
packages=python3-minimal,python3-lmdb,python3-msgpack,python3-zstandard,python3-cffi-backend,e2fsprogs,dmsetup,util-linux
packages+=,nbdkit,nbdkit-plugin-python,nbd-client     # cdp export and cdp mount (accessvm.py)
# the stamp names the packages: a changed list rebuilds the root
if [ "$(cat "$dir/.cdp-debootstrap-done" 2>/dev/null)" != "$packages" ]; then
    rm -rf "$dir" "$img"
    debootstrap --variant=minbase --include="$packages" \
        bookworm "$dir" "$mirror" >"$build/debootstrap.log" 2>&1 || {
        tail -20 "$build/debootstrap.log" >&2; echo "rootfs.sh: debootstrap failed" >&2; exit 1; }
    # Trim what a test guest never reads.
    rm -rf "$dir"/usr/share/{doc,man,info,locale,i18n,zoneinfo} "$dir"/var/cache/apt/* \
           "$dir"/var/lib/apt/lists/* "$dir"/usr/lib/x86_64-linux-gnu/gconv \
           "$dir"/usr/lib/python3/dist-packages/{boto3,botocore}    # nbdkit's S3 plugin only (85 MB)
    echo "$packages" > "$dir/.cdp-debootstrap-done"
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
