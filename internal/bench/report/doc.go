// Package report runs quicprochat's benchmark set and writes it up:
// docs/benchmarks.md with a table per figure and PNG plots under
// docs/bench/ (gonum.org/v1/plot). It is what `qpc-bench report` runs.
//
// Every figure is measured against a baseline in the same run and
// reported as a ratio, because on a small shared machine the absolute
// times move with whatever else runs while the ratios hold:
//
//   - DS throughput and send→deliver latency: internal/bench's qpc phase
//     (in-process server, bbolt store) against its in-memory relay over the
//     same QUIC transport; plot: latency CDF of both phases.
//   - Sealed envelope Seal and Open against bare HPKE with the same X-Wing
//     suite (circl).
//   - Token issue (per token of a batch), client finalize and redeem
//     against one ristretto255 scalar multiplication (circl).
//   - OPAQUE login, server side, against one Ed25519 signature.
//   - KT lookup proof generation and verification at a directory of
//     Config.KTLabels labels (1,000,000 for the recorded report) against
//     one Ed25519 verification.
//   - MLS update commit (create and process) by group size against one
//     HPKE X-Wing seal; plot: cost against group size.
//
// The micro-benchmarks run under testing.Benchmark (ns/op, allocs/op,
// B/op) with testing's benchtime set from Config.BenchTime, so they are
// the same loops `go test -bench` would run. A figure and its baseline run
// in turn for Config.Rounds rounds and each keeps its fastest round: the
// load of a shared machine changes within seconds, and two measurements
// taken minutes apart would carry that change into their ratio.
//
// Imports: internal/bench, server (identity, KT keys), server/accounts,
// account, sealed, tokens, kt, mls, padding, wire, circl, gonum plot and
// the standard library (testing for testing.Benchmark).
package report
