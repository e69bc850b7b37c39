# The two commands the README gives: `make demo` and `make test`.
GO ?= go
# go build with a progress line every 10 s (packages compiled of those that
# need it, elapsed time): a first build on a fresh machine takes minutes.
GOBUILD = $(GO) run ./cmd/examples/consulagent/cmd/gobuild
# Each fuzz target runs a fixed number of inputs (about 2 to 4 s of work on
# a 2-core machine), not a duration: a duration races Go 1.26's fuzz
# coordinator, which can report "context deadline exceeded" with no failing
# input when its workers are starved at the deadline (go.dev/issue/75804).
# FUZZTIME=30s (or 100000x) runs every target that long instead.
FUZZTIME ?=
fuzzbudget = $(if $(FUZZTIME),$(FUZZTIME),$(1)x)
# staticcheck is pinned by the tool directive in go.mod (to move it:
# go get -tool honnef.co/go/tools/cmd/staticcheck@VERSION), every check on.
STATICCHECK = $(GO) tool staticcheck

.PHONY: demo portico test lint consul unit fuzz bench protos images compose-test environment

## demo: example services + Portico on loopback, with curl lines to try.
## Builds bin/portico (the curl lines use it) and bin/portico-demo, then runs
## the demo, which on a machine's first run also builds Consul (see consul).
## make runs the binary directly, with no shell in between; on Ctrl-C it
## stops everything and exits 0, so make prints no error (make, which gets
## the Ctrl-C too, then ends by that signal, as Ctrl-C'd programs do).
demo: portico
	@echo "make demo: building bin/portico-demo"
	@$(GOBUILD) -label bin/portico-demo -o bin/portico-demo ./cmd/examples/demo
	bin/portico-demo

## portico: build the portico command into bin/portico.
portico:
	@echo "make portico: building bin/portico (the first build on a machine compiles about 560 packages: 2 to 4 minutes)"
	@$(GOBUILD) -label bin/portico -o bin/portico ./cmd/portico

## test: everything CI runs — formatting, vet, house rules, race-enabled
## tests (unit, golden, end-to-end), each fuzz target briefly, then the
## compose environment on the Docker engine (see environment).
test: lint consul unit fuzz environment

## images: the compose environment's images, built offline from this
## machine's binaries (no registry): portico:dev, portico-offline/consul:1.20
## (the cached Consul build), portico-offline/redis:7 (Debian's redis-server).
images: consul
	bash integration/compose/images/build.sh

## compose-test: docker-compose.yml brought up on the Docker engine with
## those images, its scenarios run, and torn down (about 4 minutes).
compose-test: images
	$(GO) test -tags compose -count=1 -v -timeout 15m -run '^TestEnvironment$$' ./integration/compose

## environment: compose-test when a Docker engine answers; with CI set, a
## missing engine is a failure, not a skip.
environment:
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory compose-test; \
	elif [ -n "$$CI" ]; then echo "make environment: CI is set and the Docker engine does not answer (docker info)" >&2; exit 1; \
	else echo "make environment: no Docker engine answers (docker info): the compose environment is not tested"; fi

## consul: build the pinned Consul agent once into the user cache (tests and
## the demo run it; the first build compiles about 1,900 packages, 5 to 10
## minutes on 2 cores, with a progress line every 10 s).
consul:
	@echo "make consul: compiling the builder, then building Consul into the user cache unless it is there"
	@$(GO) run ./cmd/examples/consulagent/cmd/consulbin

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags compose ./integration/compose
	bash .ci/vet.sh
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags compose ./integration/compose

unit:
	$(GO) test -race -count=1 -timeout 15m ./...
	@# Allocation counts hold only without the race detector, which skips it above.
	$(GO) test -count=1 -run '^TestEncodeAllocs$$' ./transcode/wirejson

fuzz:
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzParseTemplate$$' -fuzztime $(call fuzzbudget,10000)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzRouterMatch$$' -fuzztime $(call fuzzbudget,10000)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzQueryBinding$$' -fuzztime $(call fuzzbudget,8000)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzJSONBody$$' -fuzztime $(call fuzzbudget,8000)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzBodyScan$$' -fuzztime $(call fuzzbudget,12000)
	$(GO) test ./transcode/wirejson -run '^$$' -fuzz '^FuzzEncodeDifferential$$' -fuzztime $(call fuzzbudget,10000)
	$(GO) test ./transcode/wirejson -run '^$$' -fuzz '^FuzzDecodeDifferential$$' -fuzztime $(call fuzzbudget,4000)
	$(GO) test ./edge -run '^$$' -fuzz '^FuzzHTTP1Request$$' -fuzztime $(call fuzzbudget,5000)
	$(GO) test ./edge -run '^$$' -fuzz '^FuzzGuardScan$$' -fuzztime $(call fuzzbudget,15000)

## bench: Portico vs grpc-gateway, a second grpc-gateway (the A/A control)
## and a plain reverse proxy on loopback, in rotated rounds: requests/s,
## p50/p99, CPU/request and its median per-round ratio to grpc-gateway, peak
## RSS. About 4 minutes; flags go in BENCHFLAGS, e.g.
## make bench BENCHFLAGS="-rounds 3 -portico-bin2 old/portico"
BENCHFLAGS ?=
bench:
	$(GO) run ./integration/bench $(BENCHFLAGS)

## protos: regenerate the checked-in Go code (needs protoc).
protos:
	bash protos/gen.sh
