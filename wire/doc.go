// Package wire is the quicprochat protocol on the wire: records, messages,
// the version handshake and error codes. docs/protocol.md is its
// specification, byte by byte; each encoder names the section it follows.
//
// A record is kind (u8) | length (u24) | body | zero padding, and its total
// size is always exactly one bucket of the server's padding policy, in both
// directions (§2). To send, WriteMessage encodes a Message and writes it as
// one padded record (AppendMessage and AppendRecord build it in memory).
// To receive, NewReader wraps a stream and Reader.ReadMessage returns the
// next typed Message (Reader.ReadRecord the raw kind and body; ParseRecord
// and Decode do the same over bytes in memory). Requests that touch a
// mailbox are signed with Sign and checked with Verify (§5); addresses
// are ParseAddress'd (§1); versions are agreed with Negotiate (§10).
//
// Every length has a hard limit; malformed input becomes an *Error with a
// numeric Code (CodeOf finds it in a wrapped error), never a panic.
//
// Bodies are encoded with golang.org/x/crypto/cryptobyte in the TLS
// presentation language, the same style MLS uses. The package imports
// padding, cryptobyte and the standard library only.
package wire
