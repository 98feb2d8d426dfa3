#!/usr/bin/env bash
# Build (once, cached) a Debian trixie chroot to compile modules in, for the
# kernels whose headers need trixie's compiler (7.x from trixie-backports
# depends on gcc-14-for-host; bookworm has gcc-12).  What it installs comes
# from the archive's indexes: the non-kernel dependencies of the given
# headers and kbuild packages (gcc-14-for-host, pahole, libelf, ...), plus
# make and binutils.  The chroot is rebuilt only when that set grows.
#
#   kernel/vm/buildroot.sh PKG...     prints the chroot's path
#
# Modules are built in it by kernel.sh (a bind mount of the kernel's build
# directory at the same path, in a private mount namespace).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="$(dirname "$here")/.build"
[ $# -gt 0 ] || { echo "usage: buildroot.sh PKG..." >&2; exit 2; }
# shellcheck source=apt.sh
. "$here/apt.sh"
apt_for trixie

# Depends of the packages, first alternative of each, no virtual packages and
# nothing from the kernel itself (that is unpacked, not installed).
wanted="$(apt-cache "${APT[@]}" depends "$@" | awk '
    /^ *\|Depends:/ { if (!skip) print $2; skip = 1; next }
    /^ *Depends:/   { if (!skip) print $2; skip = 0; next }
    { skip = 0 }' | grep -v -e '^<' -e '^linux-' | sort -u)"
[ -n "$wanted" ] || { echo "buildroot.sh: apt knows no dependencies of $*" >&2; exit 1; }
wanted="$(printf '%s\n' $wanted make binutils | sort -u | tr '\n' ' ')"

dir="$build/trixie-root"
stamp="$dir/.cdp-includes"
if [ -e "$stamp" ]; then
    have=" $(cat "$stamp") "
    for p in $wanted; do
        case "$have" in *" $p "*) ;; *) rm -f "$stamp"; break ;; esac
    done
fi
if [ ! -e "$stamp" ]; then
    rm -rf "$dir"
    log="$build/debootstrap-trixie.log"
    echo "buildroot.sh: debootstrap trixie with $wanted" >&2
    debootstrap --variant=minbase --include="$(echo $wanted | tr ' ' ',')" \
        trixie "$dir" "$(debian_mirror)" >"$log" 2>&1 || {
        tail -20 "$log" >&2; echo "buildroot.sh: debootstrap trixie failed (log: $log)" >&2; exit 1; }
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/{doc,man,locale}
    echo "$wanted" > "$stamp"
fi
echo "$dir"
