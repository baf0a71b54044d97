# Developer shortcuts for quicprochat. Nothing needs just: every recipe is
# a plain go command (see README.md), and CI runs .ci/run.

# Time per fuzz target for `just fuzz`, and the packages it fuzzes.
FUZZTIME := env_var_or_default("FUZZTIME", "30s")
FUZZPKGS := env_var_or_default("FUZZPKGS", "./...")

# List the recipes.
default:
    @just --list

# Every test (the MLS vectors are in mls/testdata/vectors; QPC_MLS_VECTORS overrides).
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

# Run every fuzz target in FUZZPKGS for FUZZTIME each (just FUZZTIME=5m fuzz,
# just FUZZPKGS="./kt ./mls" fuzz); docs/fuzzing.md has the campaign. A run
# that fails with "context deadline exceeded" and writes no failing input is
# golang/go#75804 (a duration -fuzztime on Go 1.26), not a finding: it is
# reported and the loop goes on. Any other failure stops the loop.
fuzz:
    #!/usr/bin/env bash
    set -euo pipefail
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    for pkg in $(go list {{FUZZPKGS}}); do
        dir=$(go list -f '{{{{.Dir}}' "$pkg")
        for target in $(go test -list '^Fuzz' -run '^$' "$pkg" | grep '^Fuzz' || true); do
            echo "fuzz $pkg $target ({{FUZZTIME}})"
            before=$(ls "$dir/testdata/fuzz/$target" 2>/dev/null || true)
            if go test -run '^$' -fuzz "^${target}\$" -fuzztime "{{FUZZTIME}}" "$pkg" 2>&1 | tee "$log"; then
                continue
            fi
            after=$(ls "$dir/testdata/fuzz/$target" 2>/dev/null || true)
            if [[ $before == "$after" ]] && grep -q 'context deadline exceeded' "$log"; then
                echo "note: $target: spurious context deadline exceeded (golang/go#75804), no failing input"
                continue
            fi
            echo "FAIL: $pkg $target (failing input under $dir/testdata/fuzz/$target)"
            exit 1
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

# The server's RSS and a client's p99 under the issue-18 attacks, one fresh
# qpc-server process per attack (internal/loadtest, about 45 s).
rss:
    go test -count=1 -v -timeout 15m -run TestAttackServerRSS ./internal/loadtest/

# The benchmark report: every figure against a same-run baseline, written to
# docs/benchmarks.md and docs/bench/*.png (about 10 minutes on 2 cores).
bench-report *ARGS:
    go run ./cmd/qpc-bench report {{ARGS}}

# Run the server on ./qpc-data, listening on 127.0.0.1:4433.
run *ARGS:
    go run ./cmd/qpc-server {{ARGS}}

# Build the container image (deploy/docker: the static binary on scratch,
# with podman, nothing pulled), run it, and check /healthz, /readyz and a
# client journey against it (.ci/image; needs podman and runc).
image:
    bash .ci/image

# Static qpc-server binaries for routers (linux/arm64, arm, mipsle, mips)
# and desktops, into dist/ (just cross, or just cross linux/mipsle).
cross *TARGETS:
    bash deploy/cross.sh dist {{TARGETS}}
