// Package onion holds the integration tests of quicprochat over Tor: a
// private Tor network on 127.0.0.1 (internal/tornet), a server published
// as an onion service, and clients that reach it through tor, with and
// without v3 client authorization, plus the onion-only server in a
// network namespace of its own. They need tor on PATH (CI installs it) and
// fail, never skip, without it.
package onion
