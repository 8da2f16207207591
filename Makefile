# netbridge — build, generate, verify, test.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Two cores here: at most two test binaries at a time.
GOTEST_FLAGS ?= -count=1 -p 2 -timeout 45m

.PHONY: all build generate verify testenv test race unit bench e2e lab lab-down image clean deps helm manifests

all: build

## build: the three binaries into bin/ (static, as the image ships them)
## (--version of each prints VERSION and COMMIT, stamped here)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/netbridge-io/netbridge/internal/cli.version=$(VERSION) -X github.com/netbridge-io/netbridge/internal/cli.commit=$(COMMIT)
build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## generate: deepcopy and CRD YAML from api/ (controller-gen, pinned in go.mod)
generate:
	$(GO) tool controller-gen object paths=./api/...
	$(GO) tool controller-gen crd paths=./api/... output:crd:dir=deploy/crds
	cp deploy/crds/*.yaml deploy/helm/netbridge/crds/

## verify: gofmt, go vet, generated files fresh
verify:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	cp api/v1alpha1/zz_generated.deepcopy.go "$$tmp/deepcopy.go"; cp -r deploy/crds "$$tmp/crds"; \
	$(MAKE) --no-print-directory generate >/dev/null; \
	if ! cmp -s api/v1alpha1/zz_generated.deepcopy.go "$$tmp/deepcopy.go" || ! diff -r deploy/crds "$$tmp/crds" >/dev/null; then \
	  echo "generated files were stale (now regenerated): run 'make generate' and commit"; exit 1; fi
	@echo "verify: ok"

## testenv: build (once) the real kube-apiserver + etcd the tests run
testenv:
	@bash hack/testenv.sh

## deps: everything the tests need on a fresh machine (Debian packages, API server)
deps:
	bash hack/deps.sh
	bash hack/testenv.sh
	bash hack/helm.sh
	bash hack/cni.sh >/dev/null
	bash hack/kernel.sh >/dev/null

## helm: build (once) the helm binary the deploy tests use
helm:
	@bash hack/helm.sh

## image: the container image (needs a Docker/BuildKit engine, which these
## machines lack; CI builds the same static binaries with `make build`)
IMAGE ?= ghcr.io/netbridge-io/netbridge:v0.1.0
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t $(IMAGE) .

## test: every test, against real kernels, FRR and API server (README's test command)
## (the end-to-end scenarios run last, alone: their outage figures are
## timings, and they should not share two cores with the other packages)
## (the gateway and the controller, where the goroutines are, run under the
## race detector, the gateway's integration tests with a race-built agent)
RACE_PKGS := ./gateway/... ./controller/...
## (the BFD soak runs twice: 30 s beside the other packages, then the
## issue's 10 minutes at 100 ms x 3 alone, last, on a quiet machine: its
## figure is "no reset", and a loaded CPU starves BFD, not the code)
BFD_SOAK ?= 10m
test: deps
	NETBRIDGE_BFD_SOAK=30s KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v -E '/(e2e|gateway|controller)(/|$$)')
	KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test $(GOTEST_FLAGS) -race $(RACE_PKGS)
	KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test -count=1 -p 1 -v -timeout 40m ./e2e/...
	NETBRIDGE_BFD_SOAK=$(BFD_SOAK) $(GO) test -count=1 -v -timeout 20m -run '^TestBFDSoak$$' ./bgp/

## race: only the race-detector part of `make test`
race: deps
	KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test $(GOTEST_FLAGS) -race $(RACE_PKGS)

## bench: the benchmarks the issues name; figures are printed
## (-v: without it `go test` keeps only 10 log lines per benchmark, and the
## summary table at the end is read from the figure lines)
bench: deps
	set -o pipefail; KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test -v -count=1 -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./... | $(GO) run ./hack/benchsummary

## e2e: the end-to-end scenarios only
e2e: deps
	KUBEBUILDER_ASSETS="$$(bash hack/testenv.sh)" $(GO) test -count=1 -p 1 -v -timeout 40m ./e2e/...

## lab: README's main command: the whole lab in namespaces (FRR, API server,
## controller, two gateways, two nodes, two VMs); waits for Ctrl-C
lab: deps build
	$(GO) run ./e2e/lab -bin $(BIN) -state /tmp/netbridge-lab

## lab-down: remove what a lab killed hard left behind
lab-down:
	$(GO) run ./e2e/lab -down -state /tmp/netbridge-lab

clean:
	rm -rf $(BIN)
