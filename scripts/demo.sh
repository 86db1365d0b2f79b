#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine (as root): install deps, build the frozen
# plugin set, install it with install-cni into ./sandbox, and run the live demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "==> building the frozen plugin set (pyinstaller build.spec)"
python3 -m PyInstaller --noconfirm --clean --log-level WARN build.spec
exec dist/cni-flannel/cni-flannel demo --bundle dist/cni-flannel --sandbox sandbox
