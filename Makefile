# The two commands the README gives: `make demo` and `make test`.
GO ?= go
FUZZTIME ?= 5s
# staticcheck, pinned; SA1019 (deprecations) is off because jhump/protoreflect,
# a dependency the project chose, is deprecated in favour of its successors.
STATICCHECK ?= v0.8.2

.PHONY: demo test lint consul unit fuzz bench protos

## demo: example services + Portico on loopback, with curl lines to try.
demo:
	$(GO) run ./cmd/examples/demo

## test: everything CI runs — formatting, vet, house rules, race-enabled
## tests (unit, golden, end-to-end), then each fuzz target briefly.
test: lint consul unit fuzz

## consul: build the pinned Consul agent once into the user cache (tests and
## the demo run it; the first build takes a few minutes).
consul:
	$(GO) run ./integration/consulagent/cmd/consulbin

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go') | grep -v '\.pb\.go$$' || true); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	bash .ci/vet.sh
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) -checks 'inherit,-SA1019' ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

fuzz:
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzParseTemplate$$' -fuzztime $(FUZZTIME)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzRouterMatch$$' -fuzztime $(FUZZTIME)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzQueryBinding$$' -fuzztime $(FUZZTIME)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzJSONBody$$' -fuzztime $(FUZZTIME)
	$(GO) test ./transcode -run '^$$' -fuzz '^FuzzBodyScan$$' -fuzztime $(FUZZTIME)
	$(GO) test ./edge -run '^$$' -fuzz '^FuzzHTTP1Request$$' -fuzztime $(FUZZTIME)
	$(GO) test ./edge -run '^$$' -fuzz '^FuzzGuardScan$$' -fuzztime $(FUZZTIME)

## bench: Portico vs grpc-gateway on loopback (requests/s, p50/p99, CPU/request).
bench:
	$(GO) run ./integration/bench

## protos: regenerate the checked-in Go code (needs protoc).
protos:
	bash protos/gen.sh
