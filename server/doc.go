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
// Entry points: Run is the composition root — given a config.Config
// (package server/config reads the TOML file, QPC_* environment and
// flags), it opens the key, store, accounts, token issuer and key
// transparency, serves every configured listener and drains when its
// context ends; cmd/qpc-server is flags and signals around it. To hold
// the parts yourself: LoadIdentity or CreateIdentity for the TLS key and
// the pinned address, New for a Server (Options; zero values take the
// config.Default* values), Serve for each listener, and Shutdown for a
// graceful drain.
//
// Imports: padding, wire, account (shared account messages), its own rooms
// (server/config, server/store, server/accounts, server/metrics), tokens,
// kt, tor, internal/ratelimit, internal/secretfile, quic-go and the
// standard library; never client or mls.
package server
