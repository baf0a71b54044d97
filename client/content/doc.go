// Package content holds the plaintext formats a quicprochat client puts
// inside encryption: the Message that is the MLS application data of
// every conversation message, and the Intro that a sealed envelope of
// type sealed.ContentMLSWelcome carries to a new member. docs/protocol.md
// §11 is their specification, byte by byte; each encoder names the
// section it follows.
//
// Both are encoded with golang.org/x/crypto/cryptobyte in the TLS
// presentation language, like the wire records. Every length has a hard
// limit and every value one encoding: Parse accepts exactly what Marshal
// produces, so Marshal(Parse(b)) == b for every b that parses. Malformed
// input fails with an error wrapping ErrMalformed (or ErrVersion for a
// version other than 1) that says what was wrong; it never panics.
// Marshal applies the same checks, so a client cannot produce content
// its peers would refuse.
//
// Nothing here is cryptographic: the content is authenticated by the MLS
// layer (Message) or by the sealed envelope's sender signature (Intro),
// and the checkpoint notes are carried as opaque bytes for the caller to
// verify against key transparency.
package content
