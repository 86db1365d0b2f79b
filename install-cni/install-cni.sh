#!/bin/sh
# The image's entry point (install-cni/Dockerfile): the bundle carries its own installer.
#   init mode (default): install the plugins and the conflist, then exit
#   sidecar mode:        install, then re-install when the ConfigMap changes; exits on SIGTERM
# A first argument that is not an option is a command to run instead, so the one image also serves
# `podman run cni-flannel:dev /opt/bin/flanneld --version` or `... nft list ruleset`
# (kube-flannel.yml's flanneld container sets `command`, which bypasses this script anyway).
case "${1:-}" in
  "" | -*) exec /opt/cni-flannel/cni-flannel install-cni --source /opt/cni-flannel "$@" ;;
  *) exec "$@" ;;
esac
