#!/usr/bin/env bash
# Boots Debian's cloud kernel in qemu with a busybox initramfs, sets up the
# LVS-DR reference topology (see lib.sh) and runs GUEST_SCRIPT inside.
#
#   run.sh [--add HOSTPATH:GUESTPATH]... [--net-user] [--tap IFNAME] [--timeout SECS] GUEST_SCRIPT
#
# --tap IFNAME: a second NIC (MAC 52:54:00:0a:63:02) on the host's existing tap device IFNAME,
# for traffic from the host into the VM (qemu's user-mode NIC only carries the guest's outbound).
#
# The serial console streams to stdout and to a log file; the exit code is the
# guest script's (124 on timeout, 125 if the VM died without reporting).
#
# Env: LVS_CACHE (cache root, default ~/.cache/lvs-operator), LVS_VM_REBUILD=1
# (rebuild the cached base initramfs), LVS_VM_REFRESH=1 (re-resolve the kernel
# from apt), LVS_VM_LOG (log file path), LVS_VM_ACCEL (default tcg: this
# machine's KVM does not work nested), LVS_VM_APPEND (extra kernel cmdline),
# LVS_VM_MEM (MiB, default 2048).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="${LVS_CACHE:-$HOME/.cache/lvs-operator}/vm"
export PATH="$PATH:/usr/sbin:/sbin" # ipvsadm/ip live there; non-login shells may lack it
# One VM at a time on this machine: two under TCG halve each other's speed, and the tests time
# failures in milliseconds.
exec 9>"${TMPDIR:-/tmp}/lvs-operator-vm.lock"
flock 9

usage() {
  sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

adds=()
net_user=0
tap=
timeout_s=${LVS_VM_TIMEOUT:-300}
script=
while (($#)); do
  case $1 in
    --add)
      [[ $# -ge 2 && "$2" == *:* ]] || usage
      adds+=(--add "$2")
      shift 2
      ;;
    --net-user) net_user=1; shift ;;
    --tap) tap=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *)
      [[ -z "$script" ]] || usage
      script=$1
      shift
      ;;
  esac
done
[[ -n "$script" && -f "$script" ]] || { echo "run.sh: guest script missing: ${script:-<none>}" >&2; usage; }

kver=$(bash "$HERE/fetch.sh")
kernel="$CACHE/kernel/$kver/boot/vmlinuz-$kver"

# The base image only changes when the harness, the kernel or the copied host
# tools change; key the cache on exactly that.
key=$(
  {
    echo "$kver"
    cat "$HERE/build-initramfs.sh" "$HERE/init" "$HERE/lib.sh"
    for t in /bin/busybox "$(command -v ip)" "$(command -v ipvsadm)" "$(command -v nft)"; do
      echo "$t $(stat -L -c '%s %Y' "$t")"
    done
  } | sha256sum | cut -c1-16
)
base="$CACHE/initramfs/base-$kver-$key.cpio.gz"
if [[ "${LVS_VM_REBUILD:-0}" == 1 || ! -f "$base" ]]; then
  rm -f "$CACHE"/initramfs/base-*.cpio.gz # stale keys are never read again
  bash "$HERE/build-initramfs.sh" base "$base"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'LVS_NET_USER=%s\n' "$net_user" >"$work/lvs-vm.env"
bash "$HERE/build-initramfs.sh" overlay "$work/overlay.cpio.gz" \
  --add "$script:/lvs/guest.sh" --add "$work/lvs-vm.env:/etc/lvs-vm.env" "${adds[@]}"
cat "$base" "$work/overlay.cpio.gz" >"$work/initrd.img"

mkdir -p "$CACHE/logs"
log=${LVS_VM_LOG:-$CACHE/logs/$(basename "$script" .sh)-$(date +%Y%m%d-%H%M%S)-$$.log}
echo "run.sh: kernel $kver, guest script $script, log $log" >&2

net_args=(-nic none)
if [[ $net_user == 1 ]]; then
  # romfile= : no iPXE option ROM needed (we boot with -kernel), and
  # ipxe-qemu is only a Recommends of qemu-system-x86.
  # shellcheck disable=SC2054 # commas are qemu option syntax
  net_args=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=)
fi
if [[ -n $tap ]]; then
  [[ $net_user == 1 ]] || net_args=()
  # shellcheck disable=SC2054 # commas are qemu option syntax
  net_args+=(-netdev "tap,id=t0,ifname=$tap,script=no,downscript=no"
    -device virtio-net-pci,netdev=t0,romfile=,mac=52:54:00:0a:63:02)
fi

# panic=-1 + -no-reboot: any guest crash ends qemu instead of hanging.
# The sed drops CRs and the terminal-reset escapes SeaBIOS prints.
# quiet/loglevel keep kernel chatter out of the test output (errors still show).
set +e
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
  -accel "${LVS_VM_ACCEL:-tcg}" -m "${LVS_VM_MEM:-2048}" -smp 2 \
  -nographic -no-reboot \
  -kernel "$kernel" -initrd "$work/initrd.img" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 ${LVS_VM_APPEND:-}" \
  "${net_args[@]}" </dev/null 2>&1 |
  sed -u -e 's/\r$//' -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | tee "$log"
qemu_rc=${PIPESTATUS[0]}
set -e

rc=$(sed -n 's/.*LVS-VM-RESULT: exit=\([0-9][0-9]*\).*/\1/p' "$log" | tail -n1)
if [[ -z "$rc" ]]; then
  if [[ $qemu_rc == 124 ]]; then
    echo "run.sh: TIMEOUT after ${timeout_s}s, no result marker (log: $log)" >&2
    rc=124
  else
    echo "run.sh: VM ended (qemu exit $qemu_rc) without a result marker (log: $log)" >&2
    rc=125
  fi
fi
echo "run.sh: guest exit code $rc (log: $log)" >&2
# Repeat the guest's summary as our last stdout line, so CI parsers that only
# read the closing lines see it rather than kernel power-off noise.
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n1 || true)
[[ -z "$summary" ]] || echo "$summary"
exit "$rc"
