#!/usr/bin/env bash
# build-base.sh — build kvstore's base image offline, from Debian's packages.
#
# For machines that cannot pull from a container registry (CI here): debootstrap
# a minimal Debian bookworm root file system with python3 and python3-venv from
# the apt mirror this machine already uses, and `docker import` it as a tag
# (default kvstore-base:bookworm). The project image is then built FROM it with
# `--build-arg BASE_IMAGE=kvstore-base:bookworm` (see scripts/docker/build.sh).
#
# Cached: does nothing when the tag already exists (set KVSTORE_BASE_REBUILD=1
# to force). Needs root (debootstrap chroots) and a reachable Docker engine.
#
# Environment:
#   KVSTORE_BASE_IMAGE    tag to produce            (default kvstore-base:bookworm)
#   KVSTORE_DEBIAN_MIRROR Debian mirror URL         (default: read from apt sources)
#   KVSTORE_BASE_REBUILD  1 = rebuild even if cached
set -euo pipefail

TAG="${KVSTORE_BASE_IMAGE:-kvstore-base:bookworm}"
SUITE=bookworm

if [[ "${KVSTORE_BASE_REBUILD:-0}" != 1 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "build-base: $TAG already exists; skipping (KVSTORE_BASE_REBUILD=1 to force)"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "build-base: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "build-base: debootstrap not installed" >&2; exit 1; }

# The mirror: the first Debian (not -security) URI the host's apt is configured with,
# so the build uses the same (possibly proxied) mirror apt uses here.
mirror_from_apt() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        uri=$(awk '/^URIs:/ {print $2}' "$f" | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true)
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2}' "$f" | head -n1 || true)
        [[ -n "$uri" ]] && { echo "$uri"; return; }
    done
    echo "http://deb.debian.org/debian"
}
MIRROR="${KVSTORE_DEBIAN_MIRROR:-$(mirror_from_apt)}"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kvstore-base.XXXXXX")
ROOTFS="$WORK/rootfs"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

echo "build-base: debootstrap $SUITE from $MIRROR into $ROOTFS"
start=$(date +%s)
debootstrap --variant=minbase --include=python3,python3-venv \
    --components=main "$SUITE" "$ROOTFS" "$MIRROR"

# Point the image's apt at the same mirror (users may apt-get install debug tools).
cat > "$ROOTFS/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
SOURCES

# Slim it down: package caches, lists, docs and man pages are not needed at runtime.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin \
       "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
       "$ROOTFS"/usr/share/info/* "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
# A container gets its own resolv.conf/hosts from the engine; do not bake the host's.
: > "$ROOTFS/etc/resolv.conf"

echo "build-base: importing as $TAG"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE + python3 python3-venv from $MIRROR" \
    - "$TAG" >/dev/null

echo "build-base: $TAG built in $(( $(date +%s) - start ))s"
docker image ls "$TAG"
