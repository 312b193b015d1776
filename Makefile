GO ?= go

.PHONY: build test test-short demo bench lint clean

build:
	$(GO) build -o bin/daneroll ./cmd/daneroll

# Everything, real servers included (BIND 9, unbound, postfix: see .ci/run).
# Tests that need a missing daemon fail here instead of skipping.
test:
	DANEROLL_REQUIRE_RIG=1 $(GO) test -count=1 -timeout 60m ./...

# The fast loop: no Pebble, no BIND, no postfix.
test-short:
	$(GO) test -short ./...

# The whole flow on this machine with nothing but Go: a test CA, a signed
# DNS zone, a TLS service; issuance, renewal with the same key, a key
# rollover, and an independent DANE check at the end.
demo: build
	$(GO) run ./internal/demo -daneroll bin/daneroll

bench:
	$(GO) test -run '^$$' -bench . -benchtime 5x ./...

lint:
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf bin
