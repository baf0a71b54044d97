// Package wire is the quicprochat protocol on the wire: records, messages,
// the version handshake and error codes. docs/protocol.md is its
// specification, byte by byte; each encoder names the section it follows.
//
// A record is kind (u8) | length (u24) | body | zero padding, and its total
// size is always exactly one bucket of the server's padding policy, in both
// directions. Read and Write move whole records; Decode turns a record into
// a typed Message. Every length has a hard limit; malformed input becomes an
// *Error with a numeric Code, never a panic.
//
// Bodies are encoded with golang.org/x/crypto/cryptobyte in the TLS
// presentation language, the same style MLS uses. This package imports
// padding and the standard library only.
package wire
