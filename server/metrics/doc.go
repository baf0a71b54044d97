// Package metrics holds the delivery server's Prometheus collectors.
//
// Every series is aggregate: labels name a request kind, an error code, a
// limit, a transport or an outcome, never a mailbox, account, token, key
// or address (docs/operations.md lists them all; a test in
// internal/e2e enumerates every series after an integration run and
// refuses any other label). Names start with qpc_.
//
// New builds one Metrics with its own registry, so that several servers in
// one process (tests) do not collide; Handler serves it. Subsystems that
// are built elsewhere feed their gauges through small methods:
//
//	m.SetKTEpochLag(epochs)       key transparency: epochs the published checkpoint trails the map
//	m.SetKTPublish(p)             key transparency: checkpoint publication and witnesses
//	m.SetTorStatus(enabled, up)   the onion service: configured, and published
//
// These series exist (at zero) from the start, so dashboards and alert
// rules that name them keep working before those subsystems report.
//
// The package imports only the Prometheus client and package wire (for
// kind and code names); the server package does the instrumenting.
package metrics
