GO ?= go

.PHONY: build test test-deps test-short demo bench fuzz lint clean

# -buildvcs=auto: the VCS revision goes into the binary (daneroll version)
# even where GOFLAGS turns it off. CGO_ENABLED=0: a static binary with Go's
# own resolver starts a millisecond sooner (no dynamic loader, no libc),
# which is a tenth of a run that has nothing to do.
build:
	CGO_ENABLED=0 $(GO) build -buildvcs=auto -o bin/daneroll ./cmd/daneroll

# Everything, real servers included (BIND 9, unbound, postfix, certbot…).
# scripts/test-deps installs what is missing (as root; otherwise it names the
# Debian packages), and tests that need a missing program fail here instead
# of skipping.
test: test-deps
	DANEROLL_REQUIRE_RIG=1 $(GO) test -count=1 -timeout 60m ./...

test-deps:
	./scripts/test-deps

# The fast loop: no Pebble, no BIND, no postfix.
test-short:
	$(GO) test -short ./...

# The whole flow on this machine with nothing but Go: a test CA, a signed
# DNS zone, a TLS service; issuance, renewal with the same key, a key
# rollover, and an independent DANE check at the end.
demo: build
	$(GO) run ./internal/demo -daneroll bin/daneroll

# The Go benchmarks, then daneroll side by side with Debian's certbot on
# the same Pebble (internal/sidebyside: several minutes, most of it certbot
# issuing; SIDEBYSIDE=-quick for a smoke run). The README shows its table.
SIDEBYSIDE ?=
bench: test-deps
	$(GO) test -run '^$$' -bench . -benchtime 5x ./...
	$(GO) run ./internal/sidebyside $(SIDEBYSIDE)

# Every fuzz target for FUZZTIME each (make test runs their seed corpora,
# under testdata/fuzz, as ordinary tests). A failure stops at the first
# target that finds something and leaves the input in its corpus.
FUZZTIME ?= 10m
FUZZ = ./config:FuzzParse ./rollover:FuzzJournal ./dane:FuzzParseTLSA ./dane:FuzzReadPEM \
	./dane:FuzzConfirmerAnswers ./services:FuzzProbeDialogue ./certbot:FuzzRenewalConf \
	./fleetkey:FuzzOpen ./etcdstore:FuzzRecords
fuzz:
	@for t in $(FUZZ); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

lint:
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	staticcheck ./...

clean:
	rm -rf bin
