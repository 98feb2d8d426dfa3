#!/usr/bin/env bash
# Fetch one Debian kernel (image + headers, unpacked, never installed) and
# build dm-cdp.ko against it.  Cached under kernel/.build/k-<release>/.
#
#   kernel/vm/kernel.sh SERIES     prints the kernel release it prepared
#
# SERIES is 6.1 (bookworm), 6.12 (bookworm-security), 7.N (trixie-backports),
# with -rt for the PREEMPT_RT flavour (6.1-rt, 6.12-rt, 7.3-rt).  The newest
# package of the series in the archive's indexes is used: security updates
# and new uploads move it, nothing here names a point release.
#
# Why unpacked: the machines that run this boot another kernel and load no
# modules; the module is built against Debian's headers and tested by
# booting Debian's own vmlinuz in qemu (see docs/kernel.md).  The 7.x headers
# need trixie's gcc-14: their module is compiled in a trixie chroot
# (buildroot.sh), while the host's apt stays on bookworm (apt.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kdir="$(dirname "$here")"
build="$kdir/.build"
series="${1:?usage: kernel.sh 6.1|6.12|7.3[-rt]}"
# shellcheck source=apt.sh
. "$here/apt.sh"

base="${series%-rt}"
flavour=amd64; [ "$base" = "$series" ] || flavour=rt-amd64
case "$base" in
    6.1)  suite=bookworm; ver='6\.1\.0-[0-9]+' ;;                 # 6.1.0-57-amd64
    6.12) suite=bookworm; ver='6\.12\.[0-9]+\+deb12' ;;           # 6.12.118+deb12-amd64
    7.[0-9]|7.[0-9][0-9]) suite=trixie; ver="${base/./\\.}\.[0-9]+\+deb13" ;;   # 7.3.4+deb13-amd64
    *) echo "kernel.sh: unknown kernel series $series (6.1, 6.12 or 7.N, each with or without -rt)" >&2; exit 2 ;;
esac
apt_for "$suite"

# The newest linux-headers-<release> of the series the indexes list.
resolve() {
    apt-cache "${APT[@]}" pkgnames linux-headers- 2>/dev/null |
        sed -n -E "s/^linux-headers-(${ver}-${flavour})\$/\\1/p" | sort -V | tail -1
}
rel="$(resolve)"
if [ -z "$rel" ]; then
    apt_refresh; rel="$(resolve)"
fi
[ -n "$rel" ] || { echo "kernel.sh: the $suite package lists have no linux-headers-${ver//\\/}-$flavour (apt-get update?)" >&2; exit 1; }

out="$build/k-$rel"
root="$out/root"
mkdir -p "$build/debs"
if [ ! -e "$out/.unpacked" ]; then
    # The image and headers, and the kernel's own packages they depend on:
    # common headers and kbuild; on 7.x also linux-binary (vmlinuz),
    # linux-modules and linux-base (config, System.map, modules.builtin).
    pkgs="$(apt-cache "${APT[@]}" depends "linux-image-$rel" "linux-headers-$rel" |
            sed -n -E 's/^ *\|?Depends: (linux-(image|binary|modules|base|headers|kbuild)-[0-9][^ ]*)$/\1/p' |
            grep -v -e '-unsigned$' -e '-dbg$' || true)"
    pkgs="$(printf '%s\n' "linux-image-$rel" "linux-headers-$rel" $pkgs | sort -u)"
    get() {
        local p missing=()
        for p in $pkgs; do ls "$build/debs/${p}"_*.deb >/dev/null 2>&1 || missing+=("$p"); done
        [ ${#missing[@]} -eq 0 ] || ( cd "$build/debs" && apt-get "${APT[@]}" download -q "${missing[@]}" >&2 )
    }
    get || { apt_refresh; get; } || { echo "kernel.sh: could not download $rel's packages" >&2; exit 1; }
    rm -rf "$out"; mkdir -p "$root"
    for p in $pkgs; do
        dpkg -x "$(ls "$build/debs/${p}"_*.deb | sort -V | tail -1)" "$root"
    done
    # trixie's packages put the modules under /usr/lib only (merged /usr);
    # bookworm's depmod and the initramfs read lib/modules.
    [ -e "$root/lib" ] || [ ! -d "$root/usr/lib/modules" ] || ln -s usr/lib "$root/lib"
    depmod -b "$root" "$rel"
    touch "$out/.unpacked"
fi
# The headers Makefile names the common tree (and on 7.x its own directory)
# by absolute path: /usr/src in the package, this tree's path once unpacked.
# Pointed here on every run, so a kernel/.build copied from another checkout
# (or reached through a symbolic link) builds against itself.
sed -i -E -e "s#^include .*/usr/src/#include $root/usr/src/#" \
          -e "s#^KBUILD_OUTPUT=.*/usr/src/#KBUILD_OUTPUT=$root/usr/src/#" "$root/usr/src/linux-headers-$rel/Makefile"
# What qemu boots: bookworm's packages put it in /boot, trixie's next to the modules.
for v in "$root/boot/vmlinuz-$rel" "$root/lib/modules/$rel/vmlinuz"; do
    [ -e "$out/vmlinuz" ] || { [ -e "$v" ] && ln -sfn "${v#"$out/"}" "$out/vmlinuz"; } || true
done
[ -e "$out/vmlinuz" ] || { echo "kernel.sh: no vmlinuz in $rel's packages" >&2; exit 1; }

# Build the module out of tree, in a copy, so two kernels never share objects.
src="$out/mod"
mkdir -p "$src"
rm -f "$src/dm-cdp.c"     # the single-file module before the core/entries split
# A file is copied when its content differs (not by mtime: a tree checked out
# later, or a .build shared with another checkout, must not keep stale sources).
for f in "$kdir"/*.c "$kdir"/*.h "$here/probe/cdp_atomic_probe.c"; do
    cmp -s "$f" "$src/$(basename "$f")" || cp "$f" "$src/"
done
# The project's Kbuild, plus the guest's test-only probe (probe/: the dmesg
# scan's positive control), in the same build and under the same no-warning rule.
{ cat "$kdir/Kbuild"; echo 'obj-m += cdp_atomic_probe.o'; } > "$src/Kbuild.new"
if cmp -s "$src/Kbuild.new" "$src/Kbuild"; then rm "$src/Kbuild.new"; else mv "$src/Kbuild.new" "$src/Kbuild"; fi
hdr="$root/usr/src/linux-headers-$rel"
if [ "$suite" = bookworm ]; then
    make -s -C "$hdr" M="$src" modules >"$out/build.log" 2>&1 || failed=1
else
    kbuild="$(cd "$hdr" && basename "$(dirname "$(readlink scripts)")")"    # linux-kbuild-7.3.4+deb13
    chroot_dir="$("$here/buildroot.sh" "linux-headers-$rel" "$kbuild")"
    # The kernel tree and the module at the same path inside the chroot; proc
    # for objtool.  The mounts live and die with this private namespace.
    unshare --mount --propagation private sh -c '
        set -e
        mkdir -p "$1$2"
        mount --bind "$2" "$1$2"
        mount -t proc proc "$1/proc"
        exec chroot "$1" make -s -C "$3" M="$4" modules' \
        sh "$chroot_dir" "$out" "$hdr" "$src" >"$out/build.log" 2>&1 || failed=1
fi
if [ -n "${failed:-}" ]; then
    cat "$out/build.log" >&2; echo "kernel.sh: module build failed for $rel" >&2; exit 1
fi
if grep -E -i 'warning|error' "$out/build.log" >&2; then
    echo "kernel.sh: the module build printed warnings for $rel" >&2; exit 1
fi
echo "$rel"
