#!/usr/bin/env bash
# make e2e-dataplane: the standalone agent against Debian's kernel in a VM.
#
# Boots the harness (run.sh) with the release binary, the test manifests and socat (for UDP),
# and runs dataplane-guest.sh, which checks the agent against the seed document's own commands,
# real traffic through the VIP, drift, ownership, restarts, draining and bad input.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${LVS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}/release/lvs-operator}
[[ -x "$BIN" ]] || { echo "dataplane.sh: $BIN missing; run make release" >&2; exit 2; }
command -v socat >/dev/null || { apt-get update -qq && apt-get install -y -qq socat >/dev/null; }
exec bash "$HERE/run.sh" --timeout "${LVS_VM_TIMEOUT:-900}" \
  --add "$BIN:/usr/local/bin/lvs-operator" \
  --add "$(command -v socat):/usr/bin/socat" \
  --add "$ROOT/tests/invalid:/lvs/invalid" \
  --add "$ROOT/tests/valid/reference.yaml:/lvs/reference.yaml" \
  --add "$HERE/snapshot.sh:/lvs/snapshot.sh" \
  --add "$HERE/crash-guest.sh:/lvs/crash-guest.sh" \
  --add "$HERE/health-guest.sh:/lvs/health-guest.sh" \
  --add "$HERE/failover-guest.sh:/lvs/failover-guest.sh" \
  --add "$HERE/failover-lib.sh:/lvs/failover-lib.sh" \
  "$HERE/dataplane-guest.sh"
