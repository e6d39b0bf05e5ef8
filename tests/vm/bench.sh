#!/usr/bin/env bash
# make bench: the standalone agent vs ipvsadm at N services x M destinations, in the VM.
#
# Boots the harness (run.sh) with the release binary, strace and GNU time, and runs
# bench-guest.sh: cold programming (agent --once vs ipvsadm -R, fresh netns each), the no-change
# resync (agent --once vs ipvsadm -Sn), the netlink writes of one destination change, and the
# agent's peak RSS. Prints one table at the end (also saved next to the console log).
#
# Env: BENCH_N (services, default 10000), BENCH_M (destinations each, default 10), BENCH_RUNS
# (runs per median, default 3), BENCH_STRICT=1 (exit non-zero when a performance target is
# missed; correctness checks always do), LVS_BIN, LVS_VM_TIMEOUT (default 3600).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${LVS_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lvs-operator/target}/release/lvs-operator}
[[ -x "$BIN" ]] || { echo "bench.sh: $BIN missing; run make release" >&2; exit 2; }

need=()
command -v strace >/dev/null || need+=(strace)
[[ -x /usr/bin/time ]] || need+=(time) # GNU time: busybox's reports max RSS x4
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/bench.env" <<EOF
BENCH_N=${BENCH_N:-10000}
BENCH_M=${BENCH_M:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_STRICT=${BENCH_STRICT:-0}
EOF

logdir="${LVS_CACHE:-$HOME/.cache/lvs-operator}/vm/logs"
mkdir -p "$logdir"
export LVS_VM_LOG=${LVS_VM_LOG:-$logdir/bench-$(date +%Y%m%d-%H%M%S)-$$.log}
echo "bench.sh: N=${BENCH_N:-10000} M=${BENCH_M:-10} runs=${BENCH_RUNS:-3}; a full run takes several minutes under TCG" >&2

start=$SECONDS
set +e
bash "$HERE/run.sh" --timeout "${LVS_VM_TIMEOUT:-3600}" \
  --add "$BIN:/usr/local/bin/lvs-operator" \
  --add "$(command -v strace):/usr/bin/strace" \
  --add "/usr/bin/time:/usr/bin/gnutime" \
  --add "$work/bench.env:/lvs/bench.env" \
  "$HERE/bench-guest.sh"
rc=$?
set -e

# The table again, last, without the console's prefixes, and next to the log.
table="${LVS_VM_LOG%.log}.table.md"
{ grep -E '^BENCH raw: ' "$LVS_VM_LOG" | sed 's/^BENCH raw: /raw: /'
  echo
  grep -E '^BENCH \|' "$LVS_VM_LOG" | sed 's/^BENCH //'; } >"$table" || true
echo
cat "$table"
echo "bench.sh: guest exit $rc after $((SECONDS - start)) s; table: $table" >&2
exit "$rc"
