// Package backup seals a client's state into a passphrase-encrypted
// OpenPGP message (RFC 9580) and opens it again.
//
// The payload is opaque bytes to this package; the client serializes its
// state into it. Export writes exactly this packet sequence:
//
//	SKESK v6  (RFC 9580 §5.3)     AES-256, OCB, Argon2 S2K (§3.7.1.4): the
//	                               session key, AEAD-sealed under the
//	                               passphrase-derived key
//	SEIPD v2  (RFC 9580 §5.13.2)  AES-256, OCB, 256 KiB chunks, holding one
//	                               Literal Data packet (binary, no file name,
//	                               no date) with the payload
//
// optionally ASCII-armored ("PGP MESSAGE", no CRC as §6.1 advises for v6).
// Any RFC 9580 implementation with Argon2 and OCB can open it; GnuPG,
// which follows LibrePGP rather than RFC 9580, cannot.
//
// Import accepts that shape only (armored or not, detected): one v6 SKESK
// with Argon2, then one v2 SEIPD; anything else is ErrCorrupt. Before any
// key derivation it checks the Argon2 parameters the file asks for against
// Options.MaxArgon2MemoryExp and Options.MaxArgon2Passes, so that a hostile
// file cannot make the importer allocate terabytes. The plaintext is
// returned only after the final AEAD tag verified; on every error Import
// returns nil bytes, never a prefix.
//
// Errors are told apart as far as the format allows:
//
//   - ErrPassphrase: the session key would not open, i.e. the AEAD tag of
//     the SKESK failed. That is what a wrong passphrase does; damage inside
//     the SKESK's salt, IV or sealed key looks the same and is reported the
//     same, since that packet's integrity is keyed by the passphrase.
//   - ErrCorrupt: everything else the bytes can be blamed for: bad or
//     truncated packets, a failing chunk or final tag in the SEIPD, trailing
//     garbage, a shape this package does not write.
//   - ErrTooLarge: the payload is over Options.MaxSize, or the Argon2
//     parameters are over the limits.
//
// A read error of the underlying reader is returned as such (wrapped), not
// as ErrCorrupt.
//
// ImportWithPrompt is the loop a CLI wants: it asks for the passphrase up to
// maxTries times (5 by default), rereading the file each time, and gives up
// with ErrTooManyTries.
//
// Imports: github.com/ProtonMail/go-crypto (openpgp/v2, packet, s2k, armor)
// and the standard library.
package backup
