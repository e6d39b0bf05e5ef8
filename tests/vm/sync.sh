#!/usr/bin/env bash
# make e2e-sync: IPVS connection synchronisation, started by our netlink client, in the VM.
#
# Boots the harness (run.sh) with examples/ipvs_sync (release build; LVS_BIN), the library's test
# binary (LVS_TEST_BIN, found with `cargo test --lib --no-run` when unset) and socat, and runs
# sync-guest.sh: the root tests of src/ipvs/kernel_tests.rs, then a standby director that learns
# the active director's connections from the sync daemons and keeps them alive after the VIP moves.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}
BIN=${LVS_BIN:-$TARGET/release/examples/ipvs_sync}
[[ -x "$BIN" ]] || {
  echo "sync.sh: $BIN missing; run: cargo build --release --example ipvs_sync" >&2
  exit 2
}
command -v socat >/dev/null || { apt-get update -qq && apt-get install -y -qq socat >/dev/null; }

tests=${LVS_TEST_BIN:-}
if [[ -z "$tests" ]]; then
  tests=$(cd "$ROOT" && cargo test --lib --no-run 2>&1 |
    sed -n 's/^ *Executable unittests src\/lib.rs (\(.*\))$/\1/p' | tail -n1)
  [[ -z "$tests" || "$tests" == /* ]] || tests=$ROOT/$tests
fi
[[ -x "$tests" ]] || { echo "sync.sh: the library's test binary was not found" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Without its debug info the test binary is a fifth of the size, which the initramfs feels.
objcopy --strip-debug "$tests" "$work/lvs-lib-tests" 2>/dev/null || cp "$tests" "$work/lvs-lib-tests"

bash "$HERE/run.sh" --timeout "${LVS_VM_TIMEOUT:-600}" \
  --add "$BIN:/usr/local/bin/ipvs_sync" \
  --add "$work/lvs-lib-tests:/usr/local/bin/lvs-lib-tests" \
  --add "$(command -v socat):/usr/bin/socat" \
  "$HERE/sync-guest.sh"
