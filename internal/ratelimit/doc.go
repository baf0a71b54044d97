// Package ratelimit holds the token bucket the server's limits share: the
// per-connection request rate (server) and the global rate of OPAQUE
// exchanges (server/accounts). Standard library only.
package ratelimit
