// Package e2e holds the integration tests that need both a real server and
// the real client: it starts qpc servers on 127.0.0.1 with bbolt stores in
// temporary directories and drives them through the client SDK. It has no
// non-test code besides this comment.
//
// Two ways to start a server:
//
//   - startRun (run_test.go) starts one exactly as `qpc-server run` does:
//     the command-line flags through config.Load, then server.Run,
//     the composition root (key, store, accounts, token issuer, key
//     transparency, admin listener). Use it for whatever the binary wires.
//   - startServer and startSecureServer (harness_test.go) call server.New
//     with server.Options a test may change (a clock, limits, a tap), for
//     tests about the delivery service itself.
package e2e
