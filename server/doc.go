// Package server is the quicprochat delivery service (DS): it accepts
// bucket-padded records over QUIC, stores envelopes durably in mailboxes,
// and hands them to each mailbox's owner by fetch or push.
//
// The server learns, per message, only the receiving mailbox, the padding
// bucket and a coarse arrival time. Sends carry no account or session
// credential; requests that read or change a mailbox are signed by the
// mailbox's own owner key over the TLS session's exporter value, so they
// name no account either. Logs at the default level carry no identifier.
//
// Entry points: LoadIdentity or CreateIdentity for the TLS key and the
// pinned address, New for a Server, Serve for each listener, and Shutdown
// for a graceful drain. Config reads the TOML file, QPC_* environment and
// flags for cmd/qpc-server.
//
// Imports: padding, wire, account (shared account messages), its own rooms
// (server/store, server/accounts, server/metrics), tokens, kt, tor,
// internal/ratelimit, quic-go, BurntSushi/toml (config) and the standard
// library; never client or mls.
package server
