//go:build race

package hostile_test

// raceDetector: the race detector slows every goroutine several times
// over, so timing statistics measured under it say nothing about the
// configured schedules; the tests still run (for races), and the default
// `go test ./...` run judges them.
const raceDetector = true
