#!/usr/bin/env bash
# Build the cni-flannel image (install-cni and flanneld, one image) with podman, without a
# registry and without network inside `podman build`:
#   1. the frozen bundle dist/cni-flannel (PyInstaller, only when it is missing);
#   2. the base: a minimal Debian 12 root filesystem made with debootstrap, kept as a tarball under
#      $CNI_FLANNEL_CACHE_DIR and imported as $CNI_FLANNEL_BASE_IMAGE (each step skipped when done);
#   3. podman build -f install-cni/Dockerfile -t $CNI_FLANNEL_IMAGE .
# Needs root, podman and debootstrap (scripts/setup.sh installs them); Debian's mirror for step 2.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${CNI_FLANNEL_IMAGE:-cni-flannel:dev}
BASE=${CNI_FLANNEL_BASE_IMAGE:-localhost/cni-flannel-base:bookworm}
CACHE=${CNI_FLANNEL_CACHE_DIR:-/var/cache/cni-flannel}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# flanneld's ip-masq needs iptables (or nft with EnableNFTables); iproute2 is for operators.
PACKAGES=iptables,nftables,iproute2,ca-certificates
# The tarball's name carries the package list: a changed list makes a new base.
TAG=$(printf '%s' "bookworm $PACKAGES" | sha256sum | cut -c1-12)
TARBALL=$CACHE/debian-bookworm-minbase-$TAG.tar

log() { printf '== %s\n' "$*" >&2; }

if [ ! -x dist/cni-flannel/cni-flannel ]; then
  log "frozen bundle: dist/cni-flannel is missing, building it"
  python3 -m PyInstaller --noconfirm --clean --log-level WARN build.spec
fi

if [ ! -s "$TARBALL" ]; then
  log "base: debootstrap bookworm ($PACKAGES) into $TARBALL"
  mkdir -p "$CACHE"
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$TARBALL.part"' EXIT
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 ||
    { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
  rm -f "$rootfs.log"
  # What a container never needs: apt's downloaded lists and packages, docs, man pages, locales.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  rm -rf "$rootfs"
  trap - EXIT
fi

# Re-import when the image is missing or was made from another tarball.
if [ "$(podman image inspect --format '{{index .Labels "cni-flannel.rootfs"}}' "$BASE" 2>/dev/null)" != "$TAG" ]; then
  log "base: podman import $TARBALL as $BASE"
  podman import --change "LABEL cni-flannel.rootfs=$TAG" --change 'CMD ["/bin/bash"]' "$TARBALL" "$BASE" >/dev/null
fi

log "image: podman build -t $IMAGE"
old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --network=none --pull=never --build-arg "BASE=$BASE" -f install-cni/Dockerfile -t "$IMAGE" .
# A new bundle makes a new image: drop the one it replaces (only that one, if nothing uses it),
# so that repeated builds do not pile up untagged copies.
new=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
