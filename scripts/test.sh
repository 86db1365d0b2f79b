#!/usr/bin/env bash
# The test suite. 1) everything from source; 2) the frozen build, installed with
# install-cni into a temp bin dir, runs the kernel and end-to-end tests again.
# pytest's exit 5 ("no tests ran") counts as a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

run_pytest() {
  python3 -m pytest "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; return 1; fi
  return "$rc"
}

echo "== tests from source (unit, integration, e2e)"
run_pytest -q tests --ignore=tests/reliability || exit 1
echo "== reliability suite (storms, SIGKILL trials, disks, fuzzing, upgrades); FIGURES lines report the numbers"
run_pytest -q -s -p no:warnings tests/reliability || exit 1

if [ "${CNI_FLANNEL_SKIP_FROZEN:-}" = 1 ]; then exit 0; fi
echo "== frozen build"
python3 -m PyInstaller --noconfirm --clean --log-level WARN build.spec || exit 1
bin_dir=$(mktemp -d /tmp/cni-flannel-frozen.XXXXXX)
trap 'rm -rf "$bin_dir"' EXIT
dist/cni-flannel/cni-flannel install-cni --source dist/cni-flannel --bin-dir "$bin_dir/bin" \
  --conf-dir "$bin_dir/net.d" || exit 1
echo "== kernel and end-to-end tests against the frozen binaries in $bin_dir/bin"
# flanneld's integration tests run its modules in-process (nothing frozen to test there); its
# cluster tests (tests/e2e/test_cluster_*.py) run the frozen flanneld and plugins
frozen_skip=(--ignore-glob='tests/integration/test_flanneld_*.py' --ignore=tests/integration/test_kubeapi_server.py)
CNI_FLANNEL_BIN="$bin_dir/bin" run_pytest -q tests/integration tests/e2e tests/runtimes "${frozen_skip[@]}" || exit 1

echo "== the same end-to-end tests with the warm worker on"
sock="$bin_dir/worker/worker.sock"
"$bin_dir/bin/cnitool" >/dev/null 2>&1 || true
"$(readlink -f "$bin_dir/bin/flannel")" worker --socket "$sock" &
worker_pid=$!
trap 'kill $worker_pid 2>/dev/null; rm -rf "$bin_dir"' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
CNI_FLANNEL_BIN="$bin_dir/bin" CNI_FLANNEL_WORKER_SOCKET="$sock" CNI_FLANNEL_EXPECT_WORKER=1 \
  run_pytest -q tests/integration/test_flannel.py tests/integration/test_portmap.py tests/e2e \
  --ignore-glob='tests/e2e/test_cluster_*.py' --ignore=tests/e2e/test_image.py
