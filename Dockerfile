# syntax=docker/dockerfile:1
#
# One image for both roles: `lvs-operator controller` (Deployment) and `lvs-operator agent`
# (DaemonSet). Build: docker build -t lvs-operator:0.1.0 .   (or: buildah bud -t lvs-operator:0.1.0 .)
#
# Build arguments, for builds that cannot pull the two public bases (the tests build this very
# file with locally made bases; see tests/pods/image.sh):
#   BUILDER_IMAGE  a Debian bookworm image with cargo and rustc >= 1.89 on PATH and a C compiler
#                  (default rust:1-bookworm)
#   RUNTIME_IMAGE  a Debian bookworm image with apt (default debian:bookworm-slim)
#
# No USER here: the agent must be root in the host's network namespace (IPVS, addresses, ARP
# sysctls, modprobe), so the image keeps Debian's root default. The controller needs nothing of
# the kind; its Deployment (charts/lvs-operator) sets runAsNonRoot with runAsUser 65532 itself.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# Outside the source tree so the cache mount below cannot mask sources and the binary can be copied
# out of it in the same step.
ENV CARGO_TARGET_DIR=/cargo-target
COPY . .
# --locked: build exactly Cargo.lock. The cache mounts keep the registry and compiled dependencies
# between builds (BuildKit); they are not part of any layer, hence the copy to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/cargo-target \
    cargo build --release --locked --bin lvs-operator \
 && install -D -m 0755 /cargo-target/release/lvs-operator /out/lvs-operator

FROM ${RUNTIME_IMAGE}
# ipvsadm and iproute2 are for debugging on a node (`kubectl exec ... ipvsadm -Ln`, `ip addr`);
# the agent itself talks netlink directly. kmod provides the `modprobe ip_vs` the agent runs when
# the module is not loaded (with the host's /lib/modules mounted read-only).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ipvsadm iproute2 kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /out/lvs-operator /usr/local/bin/lvs-operator
LABEL org.opencontainers.image.title="lvs-operator" \
      org.opencontainers.image.description="Kubernetes operator for LVS Direct Routing load balancing" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["lvs-operator"]
CMD ["--help"]
