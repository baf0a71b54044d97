// Package arch holds the test of the house's import rules: the rooms
// (packages) of docs/architecture.md and what each may import. It has no
// code; run
//
//	go test ./internal/arch
//
// TestImportRules fails when a package imports a room it may not (the
// server importing client or mls, the client importing server, a low room
// such as wire importing anything above it, production code importing a
// test harness). TestArchitectureGraph keeps the import graph in
// docs/architecture.md current: QPC_UPDATE_GENERATED=1 rewrites it. Both
// read the graph with `go list`.
package arch
