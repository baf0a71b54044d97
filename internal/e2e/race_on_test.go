//go:build race

package e2e

// raceDetector: the race detector slows every goroutine several times
// over, so timing statistics measured under it say nothing about the
// configured distributions; the tests still run (for races) but do not
// judge timing. The default `go test ./...` run judges it.
const raceDetector = true
