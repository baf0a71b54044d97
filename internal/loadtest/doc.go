// Package loadtest drives the real qpc-server binary with many concurrent
// clients over 127.0.0.1 and checks that nothing is lost or duplicated
// while measuring throughput, send-to-delivery latency and the server's
// memory and CPU. It holds only tests.
//
// Three tests, each printing summary lines:
//
//   - TestLoad: N clients, each with its own QUIC connection, its own
//     mailbox and a push subscription on it, send to one another's mailboxes
//     at a fixed rate for a bounded window, with tokens required
//     (require_tokens=true) exactly as in production:
//
//     loadtest: clients=… sent=… delivered=… lost=0 duplicated=0 msgs_per_s=…
//     p50_ms=… p99_ms=… p999_ms=… server_rss_mib=… server_cpu_pct=…
//
//   - TestIdle: N connections that completed the QUIC handshake and the
//     version hello and then stay idle (kept alive by the client's QUIC
//     keep-alives); the server's memory per connection is
//     (RSS with N open - RSS before) / N:
//
//     idletest: conns=… rss_base_mib=… rss_mib=… per_conn_kib=…
//
//   - TestAttackServerRSS: issue 18's memory promise, one attack at a
//     time against a fresh server with its default budgets (Fetch and
//     Subscribe streams never read, stalled record headers, a KT-publish
//     flood, stalled record bodies), while a pair on the client SDK sends
//     and receives: the server's VmRSS grows by at most 256 MiB and the
//     pair's p99 stays within 2× of its unloaded p99. One line per
//     attack:
//
//     rsstest: phase=… rss_base_mib=… rss_peak_mib=… growth_mib=… p99_ratio=…
//
//     Attackers dial from loopback addresses of their own (127.0.0.2 and
//     up), so the per-address caps stay at their defaults.
//     QPC_RSS_PHASES, QPC_RSS_ADDRS and QPC_RSS_SERVER_FLAGS select
//     attacks, the attacking addresses and extra server flags
//     (docs/operations.md "Memory under attack").
//
// The server runs as its own process (go build ./cmd/qpc-server into a
// temporary directory), so its RSS (VmRSS of /proc/<pid>/status) and CPU
// (utime+stime of /proc/<pid>/stat) are its own and not the test's. Its
// limits are raised for the run and say so on its command line:
// max_conns and max_conns_per_addr (every client comes from 127.0.0.1),
// request_rate for the one token-minting connection, and token_quota.
//
// Tokens: every create spends an anonymous delivery token, and every send
// is paid through protocol.Conn.SendPaid, one token per wire.SendsPerToken
// sends on the client's connection (docs/adr/0017);
// QPC_LOAD_TOKEN_PER_SEND=1 pays every send with a token of its own, the
// baseline of that change. Receivers ack once a second at a phase of
// their own, from a goroutine of their own; QPC_LOAD_ACKS=inline is the
// old harness, every receiver acking in the same instant and reading no
// delivery until its Ack is answered. A loadtest-send line gives the Send round
// trip's own percentiles, so that the delivery latency splits into the
// send path and the push. One
// account registers with OPAQUE and mints all the tokens over its own
// connection before the send window, then hands each simulated client its
// share. This is faithful to the protocol: tokens carry nothing of the
// account that fetched them (the server cannot link issuance to
// redemption), so who minted them does not change what the send path
// does; it only spares the run 1,000 OPAQUE registrations, whose cost is
// measured on its own by qpc-bench report.
//
// The summary line also carries the offered load (clients / interval),
// the test process's own CPU (the clients' side, on the same two cores)
// and the machine's 1-minute load average at the start and end of the
// window, because on a shared machine a latency figure means little
// without them. When the offered load is above what the server sustains,
// msgs_per_s falls below offered_msgs_per_s and the latency percentiles
// measure the queue; QPC_LOAD_INTERVAL (a duration, default 1s) lowers the
// offered load to measure latency below saturation.
//
// A second line, loadtest-server, gives the server's side of the same
// window from its /metrics: the mean Send and Ack request time (both wait
// for the group commit) and the store writer's commits, mean commit time
// and mean batch. When commits × mean_commit_ms approaches the window, the
// one serial, fsynced writer is the bottleneck and the latency is its
// queue.
//
// Sizes: by default a small run (50 clients for 10 s, 500 idle
// connections) that asserts the same invariants as the full one and keeps
// go test ./... fast. QPC_LOAD=1 selects the full size: 1,000 clients
// sending for 60 s and 10,000 idle connections (just load). The test
// raises RLIMIT_NOFILE for the 10,000 client sockets.
//
// Imports: client, tokens, wire, account, kt, padding, quic-go (the
// attackers' raw connections) and the standard library; the
// server only as a built binary.
package loadtest
