# vault-plugin-secrets-apikeys
#
#   make dev    Vault dev server with the plugin mounted and bootstrapped
#   make test   unit tests and integration tests against a real Vault
#   make build  the plugin binary in bin/
#   make lint   gofmt check, go vet, staticcheck
#   make fmt    gofmt -w
#   make bench  in-process benchmarks and a load test against a real Vault

MODULE      := github.com/vault-apikeys/vault-plugin-secrets-apikeys
PLUGIN      := vault-plugin-secrets-apikeys
VERSION     ?= v0.1.0-dev
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X $(MODULE)/backend.Version=$(VERSION) -X $(MODULE)/backend.Commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 25m

.PHONY: build dev test lint fmt vault bench

build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)

# The pinned Vault server, built once per machine (see scripts/vault.sh).
vault:
	@bash scripts/vault.sh >/dev/null

dev: build vault
	@PLUGIN_VERSION=$(VERSION) bash scripts/dev.sh

test: vault
	go test -count=1 -timeout $(TEST_TIMEOUT) ./...

lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	go run $(STATICCHECK) ./...

fmt:
	gofmt -w $$(git ls-files -co --exclude-standard '*.go')

# In-process Go benchmarks (no tests), then the load test of verify against
# a real Vault (scripts/bench). BENCH_FLAGS passes flags to the load test,
# e.g. make bench BENCH_FLAGS='-duration 30s -rounds 3 -json bench.json'.
bench: vault
	go test -run '^$$' -bench . -benchmem ./backend/...
	go run ./scripts/bench $(BENCH_FLAGS)
