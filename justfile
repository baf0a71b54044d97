# Developer shortcuts for quicprochat. Nothing needs just: every recipe is
# a plain go command (see README.md), and CI runs .ci/run.

# Time per fuzz target for `just fuzz`.
FUZZTIME := env_var_or_default("FUZZTIME", "30s")

# List the recipes.
default:
    @just --list

# Every test (the MLS tests need ../shared/testdata/mls or QPC_MLS_VECTORS).
test:
    go test ./...

# The tests under the race detector.
race:
    go test -race ./...

# go vet.
vet:
    go vet ./...

# Formatting, vet and staticcheck (go install honnef.co/go/tools/cmd/staticcheck@latest).
lint:
    #!/usr/bin/env bash
    set -euo pipefail
    unformatted=$(gofmt -l .)
    if [[ -n $unformatted ]]; then printf 'gofmt needed:\n%s\n' "$unformatted"; exit 1; fi
    go vet ./...
    staticcheck ./...

# Run every fuzz target in the module for FUZZTIME each (just FUZZTIME=2m fuzz).
fuzz:
    #!/usr/bin/env bash
    set -euo pipefail
    for pkg in $(go list ./...); do
        for target in $(go test -list '^Fuzz' -run '^$' "$pkg" | grep '^Fuzz' || true); do
            echo "fuzz $pkg $target ({{FUZZTIME}})"
            go test -run '^$' -fuzz "^${target}\$" -fuzztime "{{FUZZTIME}}" "$pkg"
        done
    done

# The delivery benchmark (one JSON line), then the MLS and store micro-benchmarks.
bench:
    go run ./cmd/qpc-bench
    go test -bench . -run '^$' ./mls/ ./server/store/

# The full-size load test: 1,000 clients sending with tokens for 60 s and
# 10,000 idle connections against a built qpc-server (internal/loadtest).
load:
    QPC_LOAD=1 go test -count=1 -v -timeout 30m -run 'TestLoad|TestIdle' ./internal/loadtest/

# Run the server on ./qpc-data, listening on 127.0.0.1:4433.
run *ARGS:
    go run ./cmd/qpc-server {{ARGS}}

# Static qpc-server binaries for routers (linux/arm64, arm, mipsle, mips)
# and desktops, into dist/ (just cross, or just cross linux/mipsle).
cross *TARGETS:
    bash deploy/cross.sh dist {{TARGETS}}
