# Sourced by the kernel harness scripts: which Debian archive to use, and apt
# options that reach a suite the host does not use (trixie, for the 7.x
# kernels) without touching the host's own apt configuration or state.
#
#   debian_mirror              the archive URI (CDP_DEBIAN_MIRROR overrides it)
#   apt_for bookworm|trixie    sets the array APT to the options for that suite
#                              (empty for bookworm: the host's own apt)
#   apt_refresh                apt-get update for the suite apt_for chose

# The URI the host's apt already uses for bookworm (not its -security one).
_host_mirror() {
    { sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
      sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) bookworm .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
    } | grep -v -- '-security' | head -1 || true
}

debian_mirror() {
    local m="${CDP_DEBIAN_MIRROR:-$(_host_mirror)}"
    echo "${m:-http://deb.debian.org/debian}"
}

# trixie and trixie-backports through a sources list, package lists and cache
# of our own under kernel/.build/apt-trixie: the host stays on bookworm (its
# sources, lists, pkgcache and preferences are never read or written).
apt_for() {
    APT=(-o APT::Sandbox::User=root)    # downloads into kernel/.build, which _apt may not write
    APT_SUITE="$1"
    [ "$1" = bookworm ] && return 0
    [ "$1" = trixie ] || { echo "apt.sh: unknown suite $1" >&2; return 2; }
    local d="$build/apt-trixie"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/empty.d"
    local src="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror)"
    printf '%s trixie main\n%s trixie-backports main\n' "$src" "$src" > "$d/sources.list.new"
    cmp -s "$d/sources.list.new" "$d/sources.list" 2>/dev/null || { mv "$d/sources.list.new" "$d/sources.list"; rm -f "$d/lists/"*_Packages* "$d/.updated"; }
    rm -f "$d/sources.list.new"
    APT=(-o Dir::Etc::sourcelist="$d/sources.list" -o Dir::Etc::sourceparts="$d/empty.d" -o Dir::Etc::preferencesparts="$d/empty.d"
         -o Dir::Etc::preferences=/dev/null -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache"
         -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
    # Lists older than a day are refreshed: a warm run costs nothing, a new
    # kernel upload is seen within a day.
    if [ -z "$(find "$d/.updated" -mmin -1440 2>/dev/null)" ]; then
        apt_refresh || return 1
    fi
}

apt_refresh() {
    if [ "$APT_SUITE" = bookworm ]; then
        [ "$(id -u)" = 0 ] || return 0
        apt-get update -qq >&2 || true     # a machine whose package lists were never fetched
        return 0
    fi
    local d="$build/apt-trixie"
    apt-get "${APT[@]}" update -qq >&2 || { echo "apt.sh: apt-get update for trixie failed ($(debian_mirror))" >&2; return 1; }
    touch "$d/.updated"
}
