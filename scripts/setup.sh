#!/usr/bin/env bash
# Install everything cni-flannel needs on a fresh Debian 12 machine (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ "${CNI_FLANNEL_SKIP_APT:-}" != 1 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    iproute2 iptables nftables conntrack containernetworking-plugins \
    iputils-ping netcat-openbsd procps util-linux binutils openssl >/dev/null
  # flanneld: a real etcd (the tests start their own, never the packaged service) and iperf3
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends etcd-server etcd-client iperf3 debootstrap curl >/dev/null
  rm -f /usr/sbin/policy-rc.d
  systemctl disable --now etcd >/dev/null 2>&1 || true
  # real clients for tests/runtimes: podman 4.3 and containerd 1.6 with runc, busybox for the test
  # image. The tests start their own containerd: keep apt from starting the packaged one.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends podman runc conmon uidmap busybox-static \
    golang-github-containers-common containerd >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test,build]'
