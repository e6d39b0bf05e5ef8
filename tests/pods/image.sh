#!/usr/bin/env bash
# make image: builds the image from the repository's Dockerfile with buildah (daemonless, from
# Debian's packages), checks it, and saves it as a docker archive for the nodes' runtimes.
#
#   image.sh [TAG]        (default: the chart's appVersion)
#   image.sh pause        the pods' sandbox image registry.k8s.io/pause:3.10, made here from
#                         Kubernetes' own pause.c (k8s.io/kubernetes module, as tools.sh pins it)
#
# This machine cannot pull rust:1-bookworm or debian:bookworm-slim, so the Dockerfile's two
# bases are made here and passed as its documented build arguments (the same file users build):
#   RUNTIME_IMAGE  localhost/lvs-base/debian:bookworm-slim-<recipe>: mmdebstrap --variant=minbase
#                  bookworm without docs, apt set to keep no packages (as Debian's images are),
#                  imported as a single layer.
#   BUILDER_IMAGE  localhost/lvs-base/rust:<rustc version>-bookworm-<recipe>: the same plus
#                  gcc and libc6-dev from Debian, and this machine's Rust toolchain (the one every
#                  other stage builds with; Debian's bookworm rustc is 1.63, the crate needs 1.89),
#                  laid out as rust:1-bookworm does (CARGO_HOME=/usr/local/cargo, cargo on PATH),
#                  trusting the CAs this machine adds in /usr/local/share/ca-certificates.
# Checks: `lvs-operator version` runs in a container of the image, and the image holds no build
# toolchain (cargo, rustc, cc, gcc, ld).
#
# Cached under $LVS_CACHE/image/ (outside the clone, like every other tool cache): buildah's
# storage, the bases, and the Dockerfile's cache mounts (cargo registry and target dir), so a
# second build only recompiles the crate. Prints the archive's path on its last stdout line.
# Env: LVS_CACHE, LVS_IMAGE_REBUILD_BASES=1 (make the bases again, e.g. for Debian updates).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE="${LVS_CACHE:-$HOME/.cache/lvs-operator}/image"
MIRROR=${LVS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
TAG=${1:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$ROOT/charts/lvs-operator/Chart.yaml")}
log() { echo "image.sh: $*" >&2; }

# apt_install PKG...: from Debian; the package lists are fetched first when they are missing or
# too old to name the packages (a fresh machine).
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 && return
  log "apt-get update"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null
}
need() {
  local pkgs=()
  command -v buildah >/dev/null || pkgs+=(buildah)
  command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
  [[ ${#pkgs[@]} == 0 ]] && return
  log "installing ${pkgs[*]} from Debian"
  apt_install "${pkgs[@]}"
}
need

mkdir -p "$CACHE/tmp"
# One build at a time: buildah's storage and the cache mounts are shared by every clone.
exec 8>"$CACHE/.lock"
flock 8
# overlay storage (vfs would copy the 600 MB toolchain per layer); chroot isolation needs no
# runtime, network namespace or user namespace; TMPDIR is where buildah keeps the cache mounts.
export STORAGE_DRIVER=overlay BUILDAH_ISOLATION=chroot TMPDIR="$CACHE/tmp"
b() { buildah --root "$CACHE/storage" --runroot "$CACHE/run" "$@"; }

have() { b inspect --type image "$1" >/dev/null 2>&1; }

# base NAME INCLUDES : a single-layer image of a minimal bookworm with INCLUDES (comma separated).
base() {
  local name=$1 include=$2 ctr tar
  tar="$CACHE/tmp/rootfs.tar"
  log "making $name with mmdebstrap (minbase${include:+ + $include})"
  mmdebstrap --quiet --variant=minbase ${include:+--include="$include"} \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$tar" "$MIRROR"
  ctr=$(b from scratch)
  b add "$ctr" "$tar" / >/dev/null
  rm -f "$tar"
  # As Debian's own images do: apt keeps no downloaded packages, so `apt-get install` in a layer
  # leaves no copy of them behind.
  b run "$ctr" -- sh -c 'cat >/etc/apt/apt.conf.d/docker-clean' <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  b config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$ctr"
  echo "$ctr"
}

# The bases are remade whenever this script changes (their recipe is in it).
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-8)

# The sandbox image every pod starts with: Kubernetes' pause.c, static, alone in the image.
if [[ "${1:-}" == pause ]]; then
  archive="$CACHE/pause-3.10.tar"
  if [[ ! -s "$archive" ]]; then
    src=$(cd "$ROOT/tests/e2e/tools/kubernetes-node" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
      go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
    command -v gcc >/dev/null || apt_install gcc libc6-dev
    gcc -Os -static -DVERSION=v3.10 -o "$CACHE/tmp/pause" "$src"
    ctr=$(b from scratch)
    b copy --chmod 0755 "$ctr" "$CACHE/tmp/pause" /pause >/dev/null
    b config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    b commit -q --rm "$ctr" localhost/lvs-base/pause:3.10 >/dev/null
    b push -q localhost/lvs-base/pause:3.10 "docker-archive:$archive.tmp:registry.k8s.io/pause:3.10" >/dev/null
    mv "$archive.tmp" "$archive"
  fi
  echo "$archive"
  exit 0
fi

runtime=localhost/lvs-base/debian:bookworm-slim-$recipe
if [[ "${LVS_IMAGE_REBUILD_BASES:-0}" == 1 ]] || ! have "$runtime"; then
  ctr=$(base "$runtime" "")
  b commit -q --rm "$ctr" "$runtime" >/dev/null
fi

rustc_version=$(rustc --version | awk '{print $2}')
sysroot=$(rustc --print sysroot)
builder=localhost/lvs-base/rust:$rustc_version-bookworm-$recipe
if [[ "${LVS_IMAGE_REBUILD_BASES:-0}" == 1 ]] || ! have "$builder"; then
  ctr=$(base "$builder" gcc,libc6-dev,ca-certificates)
  log "adding rustc/cargo $rustc_version from $sysroot"
  b copy "$ctr" "$sysroot/bin" /usr/local/rust/bin >/dev/null
  b copy "$ctr" "$sysroot/lib" /usr/local/rust/lib >/dev/null
  b run "$ctr" -- sh -c 'mkdir -p /usr/local/cargo/bin && ln -s /usr/local/rust/bin/* /usr/local/cargo/bin/'
  # This machine reaches crates.io through a TLS-intercepting proxy whose CA it trusts locally;
  # the builder (only the builder, not the image) trusts what this machine trusts.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    b copy "$ctr" /usr/local/share/ca-certificates/ /usr/local/share/ca-certificates/ >/dev/null
    b run "$ctr" -- update-ca-certificates >/dev/null 2>&1
  fi
  b config --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  b commit -q --rm "$ctr" "$builder" >/dev/null
fi

image=localhost/lvs-operator:$TAG
log "buildah bud -t $image (BUILDER_IMAGE=$builder RUNTIME_IMAGE=$runtime)"
start=$SECONDS
b bud --layers --pull=never -t "$image" \
  --build-arg BUILDER_IMAGE="$builder" --build-arg RUNTIME_IMAGE="$runtime" \
  -f "$ROOT/Dockerfile" "$ROOT" >"$CACHE/build.log" 2>&1 || {
  tail -40 "$CACHE/build.log" >&2
  log "buildah bud failed (log: $CACHE/build.log)"
  exit 1
}
# Bases and layers no tag names any more (an earlier recipe, an earlier build).
b rmi --prune >/dev/null 2>&1 || true
log "built $image in $((SECONDS - start)) s, $(b images --format '{{.Size}}' "$image" | head -1) (log: $CACHE/build.log)"

# The checks run in a container of the image, as a runtime would start it.
ctr=$(b from --pull=never "$image")
trap 'b rm "$ctr" >/dev/null 2>&1 || true' EXIT
version=$(b run "$ctr" -- lvs-operator version)
echo "image: lvs-operator version in a container of $image: $version"
crate=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
[[ "$version" == "lvs-operator $crate" ]] || { log "the image says '$version', expected lvs-operator $crate"; exit 1; }
# shellcheck disable=SC2016 # expanded in the container
found=$(b run "$ctr" -- sh -c 'for t in cargo rustc rustup cc gcc ld; do command -v $t; done; ls -d /usr/local/cargo /usr/local/rust 2>/dev/null; true')
if [[ -n "$found" ]]; then
  log "the image holds a build toolchain: $found"
  exit 1
fi
echo "image: no build toolchain in $image (cargo, rustc, rustup, cc, gcc, ld: none on PATH)"
for t in ipvsadm ip modprobe; do
  b run "$ctr" -- sh -c "command -v $t" >/dev/null || { log "the image lacks $t"; exit 1; }
done
echo "image: ipvsadm, ip and modprobe present for kubectl exec"

# A docker archive named as a runtime resolves the chart's `image: lvs-operator:TAG`.
archive="$CACHE/lvs-operator-$TAG.tar"
rm -f "$archive"
b push -q "$image" "docker-archive:$archive:docker.io/library/lvs-operator:$TAG" >/dev/null
echo "$archive"
