# vault-plugin-secrets-apikeys
#
#   make dev    Vault dev server with the plugin mounted and bootstrapped
#   make test   unit tests and integration tests against a real Vault
#   make test-ha  failover test: a 3-node Raft cluster, active node killed under load
#   make build  the plugin binary and apikeys-portal in bin/
#   make lint   gofmt check, go vet, staticcheck, shellcheck
#   make fmt    gofmt -w
#   make bench  in-process benchmarks and a load test against a real Vault
#   make fuzz   a bounded run of every fuzz target (FUZZTIME each)
#   make dev-smoke  make dev started, queried and stopped, unattended (CI)
#   make lease-cost what a Vault lease per key costs (LEASE_KEYS of each kind)
#   make screenshots  the pictures of docs/portal.md, from the browser tests
#   make release VERSION=vX.Y.Z  reproducible release binaries in dist/ with SHA256SUMS
#   make caddy  Caddy with the apikeys module (printed path; cached per machine)

MODULE      := github.com/vault-apikeys/vault-plugin-secrets-apikeys
PLUGIN      := vault-plugin-secrets-apikeys
# The version default has one definition, backend.Version's in
# backend/backend.go; make VERSION=v1.2.3 builds another.
VERSION     ?= $(shell sed -n 's/^[[:space:]]*Version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' backend/backend.go)
$(if $(VERSION),,$(error cannot read the Version default from backend/backend.go))
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X $(MODULE)/backend.Version=$(VERSION) -X $(MODULE)/backend.Commit=$(COMMIT)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TEST_TIMEOUT ?= 25m
FUZZTIME    ?= 30s
BENCHTIME   ?= 1s
LEASE_KEYS  ?= 20000

.PHONY: build devidp dev test test-ha lint fmt vault caddy tools bench fuzz dev-smoke lease-cost release screenshots

build:
	go build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)
	go build -trimpath -o bin/apikeys-portal ./cmd/apikeys-portal

# The stand-in OpenID Connect provider make dev signs people in through
# (scripts/devidp).
devidp:
	go build -trimpath -o bin/apikeys-devidp ./scripts/devidp

# The pinned Vault server, built once per machine (see scripts/vault.sh).
vault: tools
	@bash scripts/vault.sh >/dev/null

# Caddy with the apikeys handler (scripts/caddy: a nested module), built
# once per machine and source change (see scripts/caddy.sh).
caddy:
	@bash scripts/caddy.sh

# curl, openssl, jq, … for bootstrap/ and the tests, Chromium for the
# browser tests, shellcheck for lint (installed when missing).
tools:
	@bash scripts/ensure-tools.sh

dev: build devidp vault
	@PLUGIN_VERSION=$(VERSION) bash scripts/dev.sh

# -v: the integration tests log the figures they measure (agent render lag,
# rotations under load, notifications queued and delivered across a Vault
# restart, edge revocation latency, ...), and those belong in the output.
# The Caddy module's tests run the module's Caddy: built first, like Vault.
# tools installs the Chromium of the browser tests (scripts/browser), and
# APIKEYS_REQUIRE_BROWSER=1 makes a missing one fail them, not skip them.
test: tools vault caddy
	APIKEYS_REQUIRE_BROWSER=1 go test -count=1 -v -timeout $(TEST_TIMEOUT) ./...
	cd scripts/caddy && go test -count=1 ./...

# The pictures of docs/portal.md, taken by the portal's browser tests from
# fixed demo data (make test takes them too, into a temporary folder).
screenshots: tools vault
	PORTAL_SCREENSHOTS=docs APIKEYS_REQUIRE_BROWSER=1 go test -count=1 -run 'TestBrowserScreenshots|TestPortalDocScreenshots' ./backend/portal

# Three Vault servers for about a minute, so `make test` skips it (the test
# runs only with APIKEYS_HA=1); CI runs it after make test.
test-ha: vault
	APIKEYS_HA=1 go test -count=1 -timeout 10m ./backend/hatest/

# gofmt -l lists and changes nothing; a file it cannot parse fails too.
# tools: shellcheck.
lint: tools
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')) || exit 1; \
	  if [ -n "$$out" ]; then echo "gofmt would change (make fmt):"; echo "$$out"; exit 1; fi
	go vet ./...
	cd scripts/caddy && go vet ./...
	go run $(STATICCHECK) ./...
	@bash scripts/shellcheck.sh

fmt:
	gofmt -w $$(git ls-files -co --exclude-standard '*.go')

# In-process Go benchmarks (no tests), then the load test of verify against
# a real Vault (scripts/bench). BENCH_FLAGS passes flags to the load test,
# e.g. make bench BENCH_FLAGS='-duration 30s -rounds 3 -json bench.json'.
bench: vault caddy
	go test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./backend/...
	go run ./scripts/bench $(BENCH_FLAGS)

# Fuzzing runs one target at a time: go test -fuzz takes a single package.
fuzz:
	go test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./backend/keyformat/
	go test -run '^$$' -fuzz '^FuzzVerifyRequest$$' -fuzztime $(FUZZTIME) ./backend/

dev-smoke: build devidp vault
	@PLUGIN_VERSION=$(VERSION) bash scripts/dev-smoke.sh

lease-cost: vault
	go run ./scripts/leasecost -keys $(LEASE_KEYS)

# The plugin and apikeys-edge for linux/amd64, linux/arm64 and darwin/arm64,
# with SHA256SUMS and INSTALL.txt, in dist/ (scripts/release.sh says what
# keeps two builds of one commit identical). It refuses a tree with
# uncommitted changes; ALLOW_DIRTY=1 builds one anyway, stamped -dirty.
# DIST=... and RELEASE_PLATFORMS="linux/amd64 ..." are passed through.
release:
	@VERSION='$(VERSION)' bash scripts/release.sh
