// Package config is qpc-server's configuration: one table of keys, each
// readable from a flag (--message-ttl), a QPC_* environment variable
// (QPC_MESSAGE_TTL) and <data dir>/qpc-server.toml, in that precedence,
// over the defaults in defaults.go, which are written only there
// (server.Options takes the same constants for the fields a caller leaves
// zero).
//
// Call Load with the parsed Flags (Flags.Register adds one flag per key to
// a flag.FlagSet) and a lookupEnv; it validates every value and remembers
// where it came from (Source), so that errors and `qpc-server config`
// (Render) can say. server.Run takes the result. Default is the built-in
// configuration, DefaultFile the commented file `qpc-server init` writes,
// Reference and EnvExample the generated table of docs/operations.md and
// deploy/docker/.env.example.
//
// Imports: padding, wire, tokens, kt, tor, server/store and
// server/accounts (for their defaults and file names), BurntSushi/toml and
// the standard library; never package server, which imports it.
package config
