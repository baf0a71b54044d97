// Package bench measures the delivery server's sustained send throughput
// and end-to-end latency against a baseline that does the same network
// work without durability, so that the cost of the store is visible as
// one ratio.
//
// A run has two phases over the same client code (package client), the
// same padding policy, the same record size, concurrency and duration:
//
//   - qpc: the real server (package server with a bbolt store in a
//     temporary directory, started in-process on 127.0.0.1), or an
//     existing server given by its qpc:// address;
//   - baseline: relay, an in-memory server over the same quic-go transport
//     and TLS configuration that speaks the subset of the protocol the
//     load uses (hello, CreateMailbox, Send, Subscribe, Ack) with the same
//     records, one stream per request and one long-lived stream for the
//     subscription, and keeps messages in a map instead of a database.
//
// Because both phases drive the same protocol.Conn calls, every message
// costs the same QUIC streams and bytes in both; what differs is only the
// server's handling of a Send (group-committed bbolt transaction and fsync
// versus a map insert) and of its delivery (read transaction versus map
// lookup).
//
// Each envelope carries a run ID, a sequence number, the monotonic time of
// the Send call's start and a CRC, so the receiver measures latency from
// Send start to delivery on the subscription and checks that every
// acknowledged message arrives exactly once and intact.
//
// Reading a result: msgs_per_s counts acknowledged sends over the send
// window, which ends when the last sender returns, so a stalled request
// stretches duration_s instead of being hidden; max_send_ms near the
// client's 30 s request timeout is such a stall. mean_batch,
// mean_commit_ms and commit_busy_pct describe the store's group-commit
// writer during the window: a busy share near 100 % means the sends queue
// behind one serial, fsynced transaction at a time. mean_send_ms splits
// into store_queued_ms (waiting for the writer), store_txn_ms (its own
// transaction, fsync included), store_wake_ms (scheduling delay after the
// commit) and the rest, the request's way through QUIC and the handler.
// cpu_us_per_msg and baseline_cpu_us_per_msg are the process's CPU time
// per acknowledged Send in each window and cpu_ratio the baseline's over
// qpc's: on a saturated machine the ceiling of ratio, and much steadier
// than it. fsync_ms is the disk's sync latency around the qpc window; a
// commit waits for three syncs, so a busy disk lowers ratio on its own.
//
// Imports: server, server/store, client, wire, padding, quic-go. It is
// neither the server nor the client room, which is why it may use both.
package bench
