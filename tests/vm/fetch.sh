#!/usr/bin/env bash
# Host-side preparation for the VM harness: installs the host tools and
# fetches + unpacks Debian's cloud kernel into the cache.
#
# Why a Debian kernel in qemu at all: the CI/dev host kernel has no IPVS and
# cannot load modules, so LVS behaviour can only be tested in a guest kernel.
# Everything comes from Debian apt so it works on machines that only reach the
# Debian mirrors.
#
# Idempotent and fast when cached: once a kernel is unpacked we do not even ask
# apt again (pinning the kernel makes runs reproducible). Set
# LVS_VM_REFRESH=1 to pick up a newer kernel ABI from apt.
#
# Prints nothing on stdout except, at the end, the cached kernel version.
set -euo pipefail

CACHE="${LVS_CACHE:-$HOME/.cache/lvs-operator}/vm"
mkdir -p "$CACHE"

log() { echo "fetch: $*" >&2; }

apt_updated=0
apt_update_once() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}

# --- host tools --------------------------------------------------------------
# command -> Debian package providing it. busybox-static is checked via dpkg
# because a dynamic busybox would also satisfy `command -v busybox` but is
# useless inside the initramfs (no libc there for it).
declare -A TOOLS=(
  [qemu-system-x86_64]=qemu-system-x86
  [ipvsadm]=ipvsadm
  [ip]=iproute2
  [cpio]=cpio
  [depmod]=kmod
  [nft]=nftables
  [gzip]=gzip
  [dpkg-deb]=dpkg
)
missing=()
for cmd in "${!TOOLS[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${TOOLS[$cmd]}")
done
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  missing+=(busybox-static)
fi
if ((${#missing[@]})); then
  log "installing host packages: ${missing[*]}"
  # --no-install-recommends keeps qemu from dragging in a GUI stack.
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; }
  if ! apt_install "${missing[@]}"; then
    # Most likely stale/empty package lists on a fresh machine.
    apt_update_once
    apt_install "${missing[@]}"
  fi
fi

# --- kernel ------------------------------------------------------------------
current="$CACHE/current-kernel"
if [[ "${LVS_VM_REFRESH:-0}" != 1 && -s "$current" ]]; then
  kver=$(<"$current")
  kroot="$CACHE/kernel/$kver"
  if [[ -f "$kroot/boot/vmlinuz-$kver" && -f "$kroot/lib/modules/$kver/modules.dep" ]]; then
    echo "$kver"
    exit 0
  fi
fi

# The metapackage always points at the current ABI; resolve it to the real
# package so we can unpack it (the metapackage itself holds no files).
resolve_kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
pkg=$(resolve_kernel_pkg || true)
if [[ -z "$pkg" ]]; then
  apt_update_once
  pkg=$(resolve_kernel_pkg)
fi
[[ -n "$pkg" ]] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
kver=${pkg#linux-image-}
kroot="$CACHE/kernel/$kver"

mkdir -p "$CACHE/debs"
find_deb() { find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n1; }
deb=$(find_deb)
if [[ -z "$deb" ]]; then
  log "downloading $pkg"
  # apt-get download writes into the cwd; the "_apt sandbox" warning when
  # running as root in a root-owned dir is harmless.
  (cd "$CACHE/debs" && apt-get download -qq "$pkg" 2>&1) | { grep -v 'unsandboxed' || true; } >&2
  deb=$(find_deb)
  [[ -n "$deb" ]] || { log "download of $pkg failed"; exit 1; }
fi

if [[ ! -f "$kroot/lib/modules/$kver/modules.dep" ]]; then
  log "unpacking $deb"
  # Unpack beside the target and rename, so an interrupted run never leaves a
  # half-extracted tree that the fast path above would trust.
  tmp=$(mktemp -d "$CACHE/kernel.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  dpkg-deb -x "$deb" "$tmp"
  # Debian may ship compressed modules; busybox modprobe/insmod in the guest
  # handle plain .ko best, so decompress once here.
  find "$tmp/lib/modules/$kver" -name '*.ko.xz' -exec xz -d {} + 2>/dev/null || true
  find "$tmp/lib/modules/$kver" -name '*.ko.zst' -exec zstd -q -d --rm {} + 2>/dev/null || true
  depmod -b "$tmp" "$kver"
  rm -rf "$kroot"
  mkdir -p "$CACHE/kernel"
  mv "$tmp" "$kroot"
  trap - EXIT
fi
echo "$kver" >"$current"
echo "$kver"
