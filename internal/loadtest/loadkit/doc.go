// Package loadkit holds what the load harnesses share: the single-node
// load test (internal/loadtest) and the multi-node one (internal/cluster).
//
// Call Encode for each message a run sends and Open for each one a
// receiver gets: the envelope carries who sent it to whom, the sender's
// sequence number, the send time and the message ID, then a filler whose
// every byte is fixed by the header, so Open finds a misrouted, corrupt
// or re-labelled delivery. Key names a (from, seq) pair in a run's
// ledger, and Tally turns the ledger (what the server acknowledged, how
// often each was delivered) into the exactly-once counts: lost,
// duplicated, delivered but never acknowledged. Each harness keeps its own
// bookkeeping around these (the cluster also counts deliveries that
// crossed nodes).
//
// Sends is one client's send schedule (one message per interval at a
// phase of its own, each to a random other client). ServerBinary builds
// the qpc-server the harnesses run, once per test process;
// ServerCommand and StartServer run it and wait for its address line,
// keeping its stderr in a LockedBuffer (bounded); Proc.Stop ends it.
// Metrics and CPU read a server's /metrics and CPU time; Percentile,
// LoadAvg and RaiseNoFile are the figures' and the run's small helpers.
package loadkit
