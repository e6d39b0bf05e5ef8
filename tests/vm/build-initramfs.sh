#!/usr/bin/env bash
# Builds the initramfs pieces for the VM harness.
#
#   build-initramfs.sh base OUT.cpio.gz
#       busybox + kernel modules + ip/ipvsadm/nft (with their libs) + /init +
#       /lvs/lib.sh. Slow-ish and identical between runs, so run.sh caches it.
#   build-initramfs.sh overlay OUT.cpio.gz [--add HOSTPATH:GUESTPATH]...
#       Only the per-run files (guest script, agent binary, manifests...).
#
# The kernel unpacks concatenated cpio archives in order, later files winning,
# so run.sh simply does `cat base overlay > initrd`; that keeps the per-run
# cost to packing the few added files.
#
# Needs fetch.sh to have run (it provides the kernel tree in the cache).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="${LVS_CACHE:-$HOME/.cache/lvs-operator}/vm"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "initramfs: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_elf() { [[ -f "$1" && "$(head -c4 "$1" 2>/dev/null | tr -d '\0')" == $'\x7fELF' ]]; }

# Copies the shared libraries an ELF binary needs into ROOT, at the paths ldd
# reports (glibc's default search dirs, so the guest loader finds them without
# an ld.so.cache). Static binaries make ldd fail, which is fine.
copy_libs() {
  local root=$1 bin=$2 lib
  is_elf "$bin" || return 0
  while read -r lib; do
    [[ -n "$lib" && -e "$lib" ]] || continue
    if [[ ! -e "$root$lib" ]]; then
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    fi
  done < <(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' || true)
}

# Copies HOSTPATH to GUESTPATH inside ROOT; directories recursively. ELF files
# (top level or inside a directory) bring their shared libraries along.
add_path() {
  local root=$1 src=$2 dst=$3 f
  [[ -e "$src" ]] || die "--add: $src does not exist"
  [[ "$dst" == /* ]] || die "--add: guest path must be absolute: $dst"
  mkdir -p "$root$(dirname "$dst")"
  rm -rf "${root:?}$dst"
  if [[ -d "$src" ]]; then
    cp -aL "$src" "$root$dst"
    while IFS= read -r -d '' f; do copy_libs "$root" "$f"; done < <(find "$src" -type f -perm -u+x -print0)
  else
    cp -L "$src" "$root$dst"
    copy_libs "$root" "$src"
  fi
}

pack() {
  local root=$1 out=$2
  mkdir -p "$(dirname "$out")"
  # Write-then-rename so concurrent runs never read a half-written cache file.
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -1 >"$out.tmp.$$"
  mv "$out.tmp.$$" "$out"
}

# Modules loaded at boot, in this order. Whatever they depend on is resolved
# from modules.dep. Missing REQUIRED ones fail the build; OPTIONAL ones only warn
# (e.g. ip_vs_twos only exists from Linux 6.7 on, bookworm ships 6.1).
REQUIRED_MODULES=(
  ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh
  ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh
  nf_conntrack veth bridge virtio_pci virtio_net
)
OPTIONAL_MODULES=(
  ip_vs_twos ip_vs_ftp ipv6 sctp dummy ipip
  nf_conntrack_netlink nf_nat nf_tables nft_chain_nat nft_masq nft_nat overlay
)

build_base() {
  local out=$1 kver kroot stage m line
  kver=$(<"$CACHE/current-kernel") || die "run fetch.sh first"
  kroot="$CACHE/kernel/$kver"
  stage=$(mktemp -d)
  STAGE=$stage

  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,usr/local/sbin,proc,sys,dev,run,tmp,etc,lvs,srv,root,var}
  ln -s ../run "$stage/var/run" # iproute2 keeps named netns under /var/run/netns

  # busybox-static: every applet as a symlink at its canonical path.
  cp /bin/busybox "$stage/bin/busybox"
  while read -r applet; do
    [[ -e "$stage/$applet" || -L "$stage/$applet" ]] || ln -s /bin/busybox "$stage/$applet"
  done < <(/bin/busybox --list-full)

  # Real tools replace busybox's applets of the same name (busybox `ip` has
  # no netns support, and it has no ipvsadm/nft at all). Host paths are kept so
  # code that hardcodes e.g. /usr/sbin/ipvsadm works.
  local tool path name
  for tool in ip ipvsadm nft; do
    path=$(command -v "$tool") || die "$tool missing on host (run fetch.sh)"
    path=$(readlink -f "$path")
    name=$(basename "$path")
    rm -f "$stage"/{bin,sbin,usr/bin,usr/sbin}/"$name"
    add_path "$stage" "$path" "/usr/sbin/$name"
  done
  [[ -d /usr/share/iproute2 ]] && mkdir -p "$stage/usr/share" && cp -a /usr/share/iproute2 "$stage/usr/share/"

  # Kernel modules with their dependencies, in load order.
  local mdir="lib/modules/$kver" loadlist=() ko rel
  mkdir -p "$stage/$mdir"
  for m in "${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do
    if ! line=$(modprobe -d "$kroot" -S "$kver" --show-depends "$m" 2>/dev/null); then
      if [[ " ${REQUIRED_MODULES[*]} " == *" $m "* ]]; then die "module $m not in kernel $kver"; fi
      log "note: optional module $m not available in $kver, skipped"
      continue
    fi
    # "builtin ipv6" lines need nothing; "insmod /path/x.ko" lines need the file.
    while read -r ko; do
      rel=${ko#"$kroot"/}
      mkdir -p "$stage/$(dirname "$rel")"
      cp -n "$ko" "$stage/$rel"
    done < <(awk '$1 == "insmod" {print $2}' <<<"$line")
    grep -q '^insmod' <<<"$line" && loadlist+=("$m")
  done
  for f in modules.order modules.builtin modules.builtin.modinfo; do
    [[ -f "$kroot/$mdir/$f" ]] && cp "$kroot/$mdir/$f" "$stage/$mdir/"
  done
  depmod -b "$stage" "$kver"
  printf '%s\n' "${loadlist[@]}" >"$stage/etc/lvs-modules"
  echo "$kver" >"$stage/etc/lvs-kernel"
  # No stray dummy0: tests/agent create their own dummy devices when needed.
  mkdir -p "$stage/etc/modprobe.d"
  echo "options dummy numdummies=0" >"$stage/etc/modprobe.d/lvs-vm.conf"

  cp "$HERE/init" "$stage/init"
  chmod 755 "$stage/init"
  cp "$HERE/lib.sh" "$stage/lvs/lib.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
  printf 'root:x:0:\n' >"$stage/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"

  # The kernel opens /dev/console for PID 1 before /init can mount devtmpfs;
  # without this node early output is lost. Needs root; init copes without.
  mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || log "note: cannot mknod /dev/console (not root?)"
  mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

  pack "$stage" "$out"
  log "built $out ($(du -h "$out" | cut -f1), kernel $kver, ${#loadlist[@]} modules to load)"
}

build_overlay() {
  local out=$1 stage spec
  shift
  stage=$(mktemp -d)
  STAGE=$stage
  while (($#)); do
    case $1 in
      --add)
        spec=$2
        shift 2
        [[ "$spec" == *:* ]] || die "--add wants HOSTPATH:GUESTPATH, got $spec"
        add_path "$stage" "${spec%%:*}" "${spec#*:}"
        ;;
      *) die "unknown overlay argument $1" ;;
    esac
  done
  pack "$stage" "$out"
}

STAGE=
trap '[[ -z "$STAGE" ]] || rm -rf "$STAGE"' EXIT

mode=${1:-}
out=${2:-}
[[ -n "$mode" && -n "$out" ]] || die "usage: $0 base|overlay OUT.cpio.gz [--add HOST:GUEST]..."
shift 2
case $mode in
  base) build_base "$out" ;;
  overlay) build_overlay "$out" "$@" ;;
  *) die "unknown mode $mode" ;;
esac
