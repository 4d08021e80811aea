# capssh: the commands people and CI run. Each target says what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

deps: ## Install the Debian packages the tests need (root)
	hack/install-deps.sh

tools: ## Build the pinned upstream tools into hack/tools/bin (cached by version)
	hack/tools/build.sh

build: ## Build capssh (debug)
	cargo build --workspace --locked

crds: ## Regenerate config/crd/bases from the Rust types
	cargo run --quiet --locked -- crds --output-dir config/crd/bases

release-manifests: tools ## Publish a local clusterctl repository under _artifacts/repository
	hack/release-manifests.sh

e2e: deps tools build ## The main job: a cluster's whole lifecycle on real kubeadm nodes with real Cluster API (root)
	cargo test -p capssh-e2e --locked --test lifecycle -- --nocapture

self-hosted: deps tools build ## The installed suite with its self-hosted steps: the management cluster moves into itself, scales and upgrades itself (root)
	CAPSSH_E2E_SELF_HOSTED=1 cargo test -p capssh-e2e --locked --test installed -- --nocapture

CAPI_SPECS ?= quick-start && !ClusterClass
capi-e2e: deps tools build ## The installed suite, then Cluster API's own e2e specs (e2e/capi) on its management cluster (root); CAPI_SPECS='<ginkgo label filter>'
	CAPSSH_E2E_CAPI_SPECS="$(CAPI_SPECS)" cargo test -p capssh-e2e --locked --test installed -- --nocapture

conformance: deps tools build ## The lifecycle with every sig-network and sig-node Pods [Conformance] test that runs here (root)
	CAPSSH_E2E_CONFORMANCE=full cargo test -p capssh-e2e --locked --test lifecycle -- --nocapture

demo: tools build release-manifests ## Publish the provider to a local clusterctl repository and render a cluster
	hack/demo.sh

unit: ## The decision tests: no root, no sshd, no API server (seconds)
	cargo test --locked -p capssh --lib --bins

lint: ## rustfmt, clippy (warnings are errors) and shellcheck over every shell script
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	shellcheck -s sh src/bootstrap/scripts/*.sh
	shellcheck -s bash hack/*.sh hack/tools/*.sh .ci/run
	shellcheck e2e/src/nodes/boot.sh fuzz/run.sh e2e/capi/data/generate.sh

# The sample of Cluster API's e2e specs the installed suite runs in `make test` (CI); empty: none.
TEST_CAPI_SPECS ?= quick-start && !ClusterClass
# The installed suite's self-hosted steps in `make test`: sample (the moves, workers 1 -> 2 -> 1), 1 (all), empty: none.
TEST_SELF_HOSTED ?= sample
test: deps tools build ## Unit tests and the suites against real kube-apiserver, clusterctl and sshd (root); TEST_CAPI_SPECS='' skips the specs' sample
	CAPSSH_E2E_CAPI_SPECS="$(TEST_CAPI_SPECS)" CAPSSH_E2E_SELF_HOSTED="$(TEST_SELF_HOSTED)" cargo test --workspace --locked

BENCH_SIZES ?= 50,100,200
bench: tools ## Benchmark capssh against plain OpenSSH and the peer BYOH on N local hosts (root); BENCH_SIZES=50,100,200
	cargo build --release --locked -p capssh -p capssh-e2e --bin capssh --bin bench
	BENCH_SIZES=$(BENCH_SIZES) $${CARGO_TARGET_DIR:-target}/release/bench --build-peer

# The Go tools `make images` needs, by their tools.txt names.
IMAGE_TOOLS := crane capi-manager capi-kubeadm-bootstrap-manager capi-kubeadm-control-plane-manager \
	cert-manager-controller cert-manager-webhook cert-manager-cainjector
IMAGES_PUSH_TO ?=
images: ## OCI archives of every image clusterctl init installs (capssh, Cluster API, cert-manager) in _artifacts/images; IMAGES_PUSH_TO=host:port pushes them
	hack/tools/build.sh $(IMAGE_TOOLS)
	cargo build --release --locked -p capssh -p capssh-e2e --bin capssh --bin images
	IMAGES_PUSH_TO=$(IMAGES_PUSH_TO) $${CARGO_TARGET_DIR:-target}/release/images

.PHONY: help deps tools build crds release-manifests e2e self-hosted capi-e2e conformance demo unit lint test bench images

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz each parser of untrusted input FUZZ_SECONDS (default 60) per target; installs nightly and cargo-fuzz if missing
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh

.PHONY: fuzz

CHAOS_ROUNDS ?= 12
CHAOS_HOSTS ?= 100
CHAOS_MACHINES ?= 40
CHAOS_STORM ?= 200
CHAOS_MIN_KILLS ?= 100
CHAOS_MIN_DELETES ?= 20
CHAOS_SEED ?=
chaos: tools ## Faults against the controllers round after round, invariants checked (root); CHAOS_ROUNDS=12 CHAOS_SEED=N replays
	cargo build --release --locked -p capssh -p capssh-e2e --bin capssh --bin chaos
	CHAOS_ROUNDS=$(CHAOS_ROUNDS) CHAOS_HOSTS=$(CHAOS_HOSTS) CHAOS_MACHINES=$(CHAOS_MACHINES) CHAOS_STORM=$(CHAOS_STORM) \
	CHAOS_MIN_KILLS=$(CHAOS_MIN_KILLS) CHAOS_MIN_DELETES=$(CHAOS_MIN_DELETES) CHAOS_SEED=$(CHAOS_SEED) \
	$${CARGO_TARGET_DIR:-target}/release/chaos

REBOOT_NODES ?= 4
REBOOT_MIN_PER_PHASE ?= 10
# A debug build: four nodes do not need a fast manager, and the suites share the build.
chaos-reboots: tools ## Real node reboots during preparation, bootstrap and reset, invariants checked (root); REBOOT_MIN_PER_PHASE=10 CHAOS_SEED=N
	cargo build --locked -p capssh -p capssh-e2e --bin capssh --bin chaos
	CHAOS_SEED=$(CHAOS_SEED) REBOOT_NODES=$(REBOOT_NODES) REBOOT_MIN_PER_PHASE=$(REBOOT_MIN_PER_PHASE) \
	$${CARGO_TARGET_DIR:-target}/debug/chaos --reboots

.PHONY: chaos chaos-reboots
