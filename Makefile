# lvs-operator: every command a developer or CI runs. `make help` lists them.
#
# Build output and tool caches live outside the clone (LVS_CACHE), so a fresh clone on the same
# machine (CI) reuses them: the cargo target dir, the Go-built control plane, the VM's packages.

LVS_CACHE ?= $(HOME)/.cache/lvs-operator
export LVS_CACHE
export CARGO_TARGET_DIR ?= $(LVS_CACHE)/target
BIN := $(CARGO_TARGET_DIR)/debug/lvs-operator
RELEASE_BIN := $(CARGO_TARGET_DIR)/release/lvs-operator

# That target dir is shared by every checkout on the machine (CI's fresh clones too), and cargo
# judges our crate fresh by the mtimes of the files its last build read: another checkout's. So
# when the last build came from elsewhere, mark this checkout's sources newer; only our crate is
# rebuilt, the dependencies stay cached.
CHECKOUT_STAMP := $(CARGO_TARGET_DIR)/.checkout
ifneq ($(shell cat $(CHECKOUT_STAMP) 2>/dev/null),$(CURDIR))
$(shell find $(CURDIR)/src $(CURDIR)/tests $(CURDIR)/examples -name '*.rs' -exec touch {} + 2>/dev/null; touch $(CURDIR)/Cargo.toml; mkdir -p $(CARGO_TARGET_DIR) && echo '$(CURDIR)' >$(CHECKOUT_STAMP))
endif

.PHONY: help test unit unit-root fuzz lint fmt crds check-crds helm-lint build release e2e-dataplane e2e-sync e2e e2e-pods image tools demo bench bench-health bench-cluster

help: ## This list.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

test: ## Everything CI runs, each stage timed (tests/stages.sh).
	@bash tests/stages.sh lint check-crds helm-lint unit unit-root e2e-dataplane e2e-sync e2e e2e-pods

unit: ## cargo test: the core, validation, netlink codecs, controller logic.
	cargo test --all-targets

unit-root: ## The tests that need root and network namespaces (ignored by plain cargo test).
	@[ "$$(id -u)" = 0 ] || { echo "unit-root: these tests need root (CI runs them as root)"; exit 1; }
	@# ipvs::kernel_tests also need ip_vs, which this host's kernel lacks: e2e-sync runs them in the VM.
	cargo test --all-targets -- --ignored --skip ipvs::kernel_tests

fuzz: ## The parser and codec properties for much longer than make test runs them (FUZZ_CASES).
	PROPTEST_CASES=$${FUZZ_CASES:-200000} cargo test --release --lib roundtrip_tests
	PROPTEST_CASES=$${FUZZ_CASES:-200000} cargo test --release --test fuzz_parsers

lint: ## rustfmt and clippy, warnings are errors.
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

fmt: ## Format the code.
	cargo fmt

build: ## Debug binary.
	cargo build

release: ## Release binary (what the VM and the benchmark run).
	cargo build --release

crds: build ## Regenerate crds/ from the Rust types, and the chart's copy and deploy/ from them.
	$(BIN) crd lvsservice > crds/lvsservice.yaml
	$(BIN) crd lvsaddresspool > crds/lvsaddresspool.yaml
	$(BIN) crd lvsnodereport > crds/lvsnodereport.yaml
	bash tests/e2e/chart.sh render

check-crds: build ## Fail when crds/ or deploy/ differ from what the code and the chart generate.
	@$(BIN) crd lvsservice | diff -u crds/lvsservice.yaml - && \
		$(BIN) crd lvsaddresspool | diff -u crds/lvsaddresspool.yaml - && \
		$(BIN) crd lvsnodereport | diff -u crds/lvsnodereport.yaml - && echo "crds/ matches the code"
	bash tests/e2e/chart.sh check

helm-lint: ## helm lint the chart.
	bash tests/e2e/chart.sh lint

e2e-dataplane: release ## The standalone agent against Debian's kernel in a VM.
	bash tests/vm/dataplane.sh

e2e-sync: ## IPVS connection sync started by our netlink client: a standby director keeps connections, in the VM.
	cargo build --release --example ipvs_sync
	bash tests/vm/sync.sh

e2e: release ## Controller and agents against a real kube-apiserver (and the VM).
	bash tests/e2e/e2e.sh

image: ## The image from the Dockerfile with buildah (local Debian bases), checked, saved for the nodes' runtimes.
	bash tests/pods/image.sh

e2e-pods: ## The chart as real pods: a kubelet and containerd per node in the VM, the seed scenario, a rolling update, uninstall.
	bash tests/pods/e2e-pods.sh

tools: ## Build and cache kube-apiserver, etcd, kubectl and helm from their Go modules.
	bash tests/e2e/tools.sh

demo: release ## The seed scenario end to end, narrated.
	bash tests/e2e/demo.sh

bench: release ## IPVS programming speed and memory against ipvsadm, in the VM; then the health checks at scale.
	bash tests/vm/bench.sh
	cargo run --release --example health_bench

bench-cluster: release ## 50 agents (in-memory data plane) and the controller, 1,000 LvsServices, a real kube-apiserver: time to Ready, writes, sizes, RSS.
	bash tests/e2e/bench-cluster.sh

bench-health: ## Health checks at scale over loopback: 1,000 real servers, 100,000 destinations.
	cargo run --release --example health_bench
