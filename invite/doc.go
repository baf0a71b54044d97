// Package invite is the one string that carries everything a client must
// pin to trust a qpc server: the server's key (SPKI pin) and endpoints, its
// key-transparency log key, VRF key and configuration hash, its padding
// buckets and, when it has one, its witness policy.
//
// The operator prints it with `qpc-server invite`; a friend runs
// `qpc init <invite>`. Call Parse on what a user typed, pasted or scanned,
// and Invite.String to print one:
//
//	inv, err := invite.Parse(s)    // checksum, version, every field checked
//	addr := inv.Address(wantTor)   // the qpc:// address to dial
//
// The text is "qpc1:" then RFC 4648 base32 (lower case, no padding) of a
// body of fields and a CRC-32C of the whole; docs/protocol.md §1.1.1 has it
// byte by byte. Parsing ignores case and white space (a QR code carries
// the upper-case form, which fits its denser alphanumeric mode; chat apps
// wrap long lines) and accepts only the canonical spelling otherwise.
//
// The checksum catches typos, not forgers: whoever can change an invite in
// transit can recompute it. An invite must travel over a channel the
// receiver trusts (in person, a QR code on the operator's screen, a chat
// already verified), as the address and pin it replaces had to.
//
// This package imports wire, padding and kt (to check the keys it
// carries); server and client both use it.
package invite
