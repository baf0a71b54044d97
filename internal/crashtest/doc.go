// Package crashtest proves the delivery server's durability promise by
// force: it runs the real qpc-server binary, drives senders and a receiver
// through the real client, kills the server with SIGKILL at random moments
// and restarts it, and checks at the end that every acknowledged send was
// delivered exactly once, that nothing was delivered that was never sent,
// that the bbolt file passes bbolt's own consistency check, and that the
// store opens after the last kill with every stored message's key in its
// key-slot file.
//
// Run it with `go test ./internal/crashtest -run TestCrashLoop -v`;
// QPC_CRASH_CYCLES sets the number of kill cycles (default 20).
package crashtest
