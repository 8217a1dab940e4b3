# The two commands that matter: `make run` (the whole system, in the foreground)
# and `make test` (lint, type-check, every test). Everything else is a step of those.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
UV_VERSION := 0.9.0
BUF_VERSION := v1.75.0
GRPCURL_VERSION := v1.9.4
GHZ_VERSION := v0.93.0
HEY_VERSION := v0.1.4
KUBE_SCORE_VERSION := v1.20.0
# The control plane of `make k8s-cluster-check` (versions in deploy/k8s/cluster-check/*/go.mod).
KUBERNETES_VERSION := v1.34.2
KWOK_VERSION := v0.8.0
TOOLS := $(CURDIR)/.stack/tools
UV := $(TOOLS)/bin/uv
BUF := $(TOOLS)/bin/buf
GRPCURL := $(TOOLS)/bin/grpcurl
GHZ := $(TOOLS)/bin/ghz
HEY := $(TOOLS)/bin/hey
KUBE_SCORE := $(TOOLS)/bin/kube-score
KUBE_APISERVER := $(TOOLS)/bin/kube-apiserver
ETCD_36 := $(TOOLS)/bin/etcd-3.6
KWOK := $(TOOLS)/bin/kwok
KUBE_ROUTER := $(TOOLS)/bin/kube-router
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help
# Every target says what it does after `## `, so it is listed (tests/unit/test_make_targets.py).
help: ## List the targets
	@grep -hE '^[a-z0-9][a-z0-9_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

# --- installation: a venv pinned by uv.lock, generated stubs, the infrastructure ---------

$(UV):
	$(PYTHON_BOOT) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet
	@# The repo root and the generated stubs are importable from every entry point.
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/shop.pth"
	@touch $@

gen/.stamp: $(VENV)/.synced $(PROTOS)
	rm -rf gen && mkdir -p gen
	PATH="$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=gen --grpc_python_out=gen --mypy_out=quiet:gen --mypy_grpc_out=quiet:gen $(PROTOS)
	@touch $@

.PHONY: deps
deps: $(VENV)/.synced gen/.stamp ## Python venv (from uv.lock) and generated gRPC stubs

.PHONY: install
install: deps ## deps, plus PostgreSQL, etcd and Kafka if missing
	$(PY) -m devstack install

$(BUF):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

# The real gRPC clients docs/contracts.md's commands use; the tests drive them through reflection.
$(GRPCURL):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(GHZ):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

# ghz's counterpart for HTTP: `make bench-edge` drives the gateway's REST routes with it.
$(HEY):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/rakyll/hey@$(HEY_VERSION)

# The manifests' linter (kustomize itself comes with kubectl).
$(KUBE_SCORE):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install github.com/zegl/kube-score/cmd/kube-score@$(KUBE_SCORE_VERSION)

.PHONY: grpc-tools
grpc-tools: $(GRPCURL) $(GHZ) ## grpcurl and ghz into .stack/tools/bin (from the Go module proxy)
	@# docs/contracts.md's grpcurl lines pipe into jq.
	@command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; }

# The container images: podman (runc) and mmdebstrap from Debian, if no engine is here.
.PHONY: image-tools
image-tools: ## podman (runc) and mmdebstrap from Debian, if no container engine is here
	@if ! command -v podman >/dev/null && ! docker info >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends podman runc uidmap fuse-overlayfs slirp4netns mmdebstrap >/dev/null; \
	elif command -v podman >/dev/null && ! command -v mmdebstrap >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends mmdebstrap >/dev/null; \
	fi

.PHONY: image
image: deps image-tools ## The OCI images: the services' localhost/shop:dev, shop-ops:dev (Jobs), shop-loadgen:dev (BASE_IMAGE=...)
	$(PY) -m deploy.tooling.image build

# --- the main job -------------------------------------------------------------------------

# Instances of each service `make run` starts (replica i on the service's port + 100 * i).
REPLICAS ?= 1
# The gateway (the storefront on http://localhost:8080/) too; GATEWAY=0 leaves it out.
GATEWAY ?= 1

.PHONY: run
run: install ## Everything up: infrastructure, migrations, demo data, five services, the storefront; Ctrl-C stops
	$(PY) -m devstack.run --replicas $(REPLICAS) $(if $(filter 0,$(GATEWAY)),--no-gateway)

.PHONY: down
down: deps ## Stop a dev stack left running (e.g. after a crash)
	$(PY) -m devstack down --profile dev

.PHONY: demo-order
demo-order: deps ## Place an order as the demo customer against `make run`
	$(PY) -m ops.shopctl place-order --sku DEMO-TSHIRT --quantity 1

.PHONY: audit
audit: deps ## Check every invariant against the `make run` stack's data (exit 1 on a violation)
	$(PY) -m devstack.audit --profile dev

.PHONY: bench
bench: install $(GHZ) ## On its own stack: the performance goals P1-P7 at 1 and 2 instances per service (reports/bench-*.json)
	$(PY) -m perf.bench $(BENCH_ARGS)

.PHONY: bench-observability
bench-observability: install $(GHZ) ## What tracing and metrics cost: observed vs bare, GetProduct (ghz) and the saga
	$(PY) -m perf.bench.observability $(BENCH_ARGS)

.PHONY: bench-trust
bench-trust: install ## What TLS and auth on etcd/Kafka/PostgreSQL cost: saga P50/P95, relay lag, consumer drain, off vs on
	$(PY) -m perf.bench.trust_cost $(BENCH_TRUST_ARGS)

.PHONY: bench-edge
bench-edge: install $(GHZ) $(HEY) ## What the REST edge costs: gRPC vs REST through the gateway (ghz vs hey, and the loadgen's pairs)
	$(PY) -m perf.bench.edge $(BENCH_EDGE_ARGS)

.PHONY: bench-tls
bench-tls: deps $(GHZ) ## What mTLS costs: health Check throughput over mTLS vs plaintext (ghz)
	$(PY) -m perf.bench.tls $(BENCH_TLS_ARGS)

.PHONY: demo-trace
demo-trace: deps ## One order through all five services: its Zipkin URL and a text waterfall of its trace
	$(PY) -m demos.trace

.PHONY: demo-config
demo-config: deps ## The config center: a knob changed live on every instance, invalid refused, rollback
	$(PY) -m demos.config

.PHONY: demo-oversell
demo-oversell: deps ## The seed's oversell case study, before and after the fix, against `make run`
	$(PY) -m demos.oversell

.PHONY: demo-retry
demo-retry: deps ## Retries against a flaky product (30 % injected UNAVAILABLE): success rate without/with
	$(PY) -m demos.retry

.PHONY: demo-breaker
demo-breaker: deps ## Product stopped (SIGSTOP): order's breaker opens, fails fast, degrades, closes again
	$(PY) -m demos.breaker

.PHONY: demo-ratelimit
demo-ratelimit: deps ## A per-user rate limit set live: one buyer refused (RESOURCE_EXHAUSTED), the other served
	$(PY) -m demos.ratelimit

PROFILE ?= smoke
LOAD_ARGS ?=
.PHONY: load
load: install ## Load test `make run` (started if down): PROFILE=smoke|flash-sale|mixed|steady-saga|browse-peak|edge|full
	$(PY) -m loadgen --profile $(PROFILE) $(LOAD_ARGS)

# PROFILE is `make load`'s too (default smoke); chaos defaults to full unless one is given.
CHAOS_PROFILE = $(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),full)
.PHONY: chaos
chaos: install ## Faults under load against `make run` (REPLICAS=2 started if down): PROFILE=full|short, RATE=orders/s; exit 1 on a missed goal
	$(PY) -m perf.chaos --profile $(CHAOS_PROFILE) $(if $(RATE),--rate $(RATE))

FUZZ_MINUTES ?= 10
FUZZ_EXAMPLES ?= 25
FUZZ_PROFILE ?= fuzz
FUZZ_SEED ?=
# grpc (the five services' RPCs), edge (the gateway's REST routes and the OAuth2 endpoints), all.
FUZZ_SURFACE ?= all
.PHONY: fuzz
fuzz: install ## Fuzz every RPC, REST route and OAuth2 endpoint on its own stack for FUZZ_MINUTES (10); exit 1 if a property broke
	$(PY) -m tests.fuzz --minutes $(FUZZ_MINUTES) --examples $(FUZZ_EXAMPLES) --profile $(FUZZ_PROFILE) --surface $(FUZZ_SURFACE) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

# --- the cluster path (kind or minikube: K8S=kind|minikube picks one) ----------------------

K8S ?=
.PHONY: up
up: deps ## kind/minikube: cluster, image, Secrets, overlay, rollout, smoke Job (safe to repeat)
	$(PY) -m deploy.tooling.k8s up $(if $(K8S),--cluster $(K8S))

.PHONY: load-k8s
load-k8s: deps ## The load harness as a Job in the cluster, PROFILE=...; reports copied to reports/
	$(PY) -m deploy.tooling.k8s load --profile $(PROFILE) $(if $(K8S),--cluster $(K8S)) --args "$(LOAD_ARGS)"

.PHONY: down-k8s
down-k8s: deps ## Remove what `make up` created (the cluster too, if `make up` made it)
	$(PY) -m deploy.tooling.k8s down $(if $(K8S),--cluster $(K8S))

# kube-apiserver, kube-controller-manager and kube-scheduler from k8s.io/kubernetes (a
# replace per staging module, in go.mod), etcd 3.6 (Debian's 3.4 is too old for them),
# kwok's fake nodes: all from the Go module proxy, built once into .stack/tools/bin.
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBERNETES_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBERNETES_VERSION))) \
  -X k8s.io/component-base/version.gitTreeState=clean
# One build for the control plane and the node (kubelet, kube-proxy): they share most code.
$(KUBE_APISERVER): deploy/k8s/cluster-check/kube/go.mod deploy/k8s/cluster-check/kube/tools.go
	cd deploy/k8s/cluster-check/kube && GOFLAGS=-mod=mod go build -ldflags "$(KUBE_LDFLAGS)" -o $(TOOLS)/bin/ \
	  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
	  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
	@touch $@

# NetworkPolicy on the real node: kube-router's firewall (iptables and ipset) as a host process.
$(KUBE_ROUTER): deploy/k8s/real-check/go/kube-router/go.mod
	cd deploy/k8s/real-check/go/kube-router && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o $@ \
	  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router

# The node's runtime and kernel tools, from Debian: containerd with runc, the CNI plugins,
# what kube-proxy and kube-router call (conntrack, iptables, ipset), and what the stand-in
# images are built with (setcap for CoreDNS, Maven for Kafka's jars).
.PHONY: node-tools
node-tools: image-tools ## containerd, the CNI plugins, iptables and the rest of a real node, from Debian
	@missing=""; for c in containerd ctr runc conntrack iptables ipset setcap mvn; do command -v $$c >/dev/null || missing=1; done; \
	[ -x /usr/lib/cni/bridge ] || missing=1; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends containerd runc containernetworking-plugins conntrack iptables ipset \
	  libcap2-bin maven >/dev/null; fi

$(ETCD_36): deploy/k8s/cluster-check/etcd/go.mod deploy/k8s/cluster-check/etcd/main.go
	cd deploy/k8s/cluster-check/etcd && GOFLAGS=-mod=mod go build -o $@ .

$(KWOK):
	GOBIN=$(TOOLS)/bin GOFLAGS=-mod=mod go install sigs.k8s.io/kwok/cmd/kwok@$(KWOK_VERSION)

.PHONY: k8s-cluster-check
k8s-cluster-check: deps $(KUBE_APISERVER) $(ETCD_36) $(KWOK) ## The overlay on a real kube-apiserver with kwok's fake nodes: admitted, rolled out, Available
	$(PY) -m deploy.tooling.cluster_check \
	  --kwok-stages "$$(go env GOMODCACHE)/sigs.k8s.io/kwok@$(KWOK_VERSION)/kustomize/stage/fast"

.PHONY: k8s-real-check
k8s-real-check: deps image-tools node-tools $(KUBE_APISERVER) $(ETCD_36) $(KUBE_ROUTER) ## The overlay's containers in real pods on a real node here (containerd, kubelet, kube-proxy, CoreDNS, NetworkPolicy)
	$(PY) -m deploy.tooling.real_check --profile $(or $(PROFILE),smoke) $(if $(KEEP),--keep)

.PHONY: k8s-check
k8s-check: deps image $(KUBE_SCORE) ## Manifests rendered, schema-checked, linted, cross-checked; the images' test
	$(PY) -m deploy.tooling.k8s_check --kube-score $(KUBE_SCORE)
	$(VENV)/bin/pytest tests/k8s -q

# --- checks -------------------------------------------------------------------------------

.PHONY: lint
lint: deps $(BUF) lint-imports ## ruff, the import contracts, and buf lint on the protos
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	cd protos && $(BUF) lint

# The gateway's REST contract, generated from its routes; tests/unit/gateway/test_openapi.py
# fails while the committed document differs from what the routes make.
.PHONY: openapi
openapi: deps ## Write docs/openapi.json, the gateway's OpenAPI document, from its routes
	$(PY) -m gateway openapi > docs/openapi.json

# The architecture's rules ([tool.importlinter] in pyproject.toml): the kit knows no
# service, has no cycles; services are independent; nothing imports the tests.
.PHONY: lint-imports
lint-imports: deps ## import-linter: the import contracts of pyproject.toml
	$(VENV)/bin/lint-imports --no-cache

.PHONY: typecheck
typecheck: deps ## mypy over the whole project
	$(VENV)/bin/mypy .

.PHONY: test-unit
test-unit: deps ## The unit tests only (no stack)
	$(VENV)/bin/pytest tests/unit -q

.PHONY: test-integration
test-integration: install grpc-tools ## The integration and e2e tests (real PostgreSQL, etcd, Kafka)
	$(VENV)/bin/pytest tests/integration tests/e2e -q

# The browser the storefront's tests drive: Debian's chromium (Playwright's own download
# needs a host this machine cannot reach; tests/browser/chromium.py finds it on PATH).
.PHONY: browser-tools
browser-tools: ## Debian's chromium for the browser tests, if missing
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

.PHONY: test-browser
test-browser: install browser-tools ## The storefront in a real browser: sign in, buy, watch it confirm (reports/storefront-*.png)
	$(VENV)/bin/pytest tests/browser -q

.PHONY: test
test: install grpc-tools browser-tools lint typecheck k8s-check k8s-cluster-check k8s-real-check ## Lint, type-check, the k8s checks (a real node too), unit, integration, e2e and browser tests (real PG/etcd/Kafka)
	$(VENV)/bin/pytest -q --ignore=tests/k8s

.PHONY: clean
clean: ## Remove generated code and the venv (keeps .stack data)
	rm -rf gen .venv .mypy_cache .ruff_cache .pytest_cache
