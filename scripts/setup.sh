#!/usr/bin/env bash
# Install everything cni-flannel needs on a fresh Debian 12 machine (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ "${CNI_FLANNEL_SKIP_APT:-}" != 1 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    iproute2 iptables nftables conntrack containernetworking-plugins \
    iputils-ping netcat-openbsd procps util-linux binutils >/dev/null
  # real clients for tests/runtimes: podman 4.3 with runc, and busybox for the test image
  apt-get install -y -qq --no-install-recommends podman runc conmon uidmap busybox-static \
    golang-github-containers-common >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,build]'
