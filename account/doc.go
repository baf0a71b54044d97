// Package account is the part of qpc's account protocol that client and
// server share: the OPAQUE configuration (RFC 9807), the username rules,
// the request and response bodies of the account exchanges, and a client
// helper that drives the OPAQUE client so that an SDK only moves bytes.
//
// Accounts exist for two purposes only: obtaining a per-epoch quota of
// anonymous tokens and publishing credentials to key transparency. Sends,
// fetches and mailbox operations never carry an account credential.
//
// # Exchanges
//
// Each exchange runs on one request stream; the server keeps nothing
// between the round trips except what the stream's handler holds.
//
//	register         RegisterStart      → RegisterResponse
//	                 RegisterFinish     → SessionIssued
//	login            LoginStart         → LoginResponse
//	                 LoginFinish        → SessionIssued
//	devices          ListDevices        → DeviceList
//	revoke device    RevokeDevice       → (ok)
//	change password  ChangePasswordStart  → RegisterResponse
//	                 ChangePasswordFinish → (ok)
//	delete account   DeleteAccount      → (ok)
//
// Record kinds and the "ok" reply are assigned by package wire; this
// package only defines bodies. Bodies are encoded in the TLS presentation
// language with golang.org/x/crypto/cryptobyte, every length has a hard
// limit, and a decoder accepts only a body that re-encodes to the same
// bytes (no trailing data, no alternative encodings). Every decoder fails
// with ErrMalformed and never panics; each has a fuzz target.
//
// # Usernames
//
// A username is 3 to 32 bytes of a-z, 0-9, '.', '_' and '-'. ASCII
// upper case is folded to lower case (NormalizeUsername) on both sides;
// nothing else is rewritten, so no Unicode normalisation is needed. The
// username is the OPAQUE client_identity (RFC 9807 §10.3), which binds
// it into the envelope and the key exchange transcript: the client must
// log in with exactly the username it registered.
//
// # Key stretching
//
// The client stretches the OPRF output with Argon2id (RFC 9807 §10.8),
// by default with time 3, 64 MiB, 4 lanes (DefaultKSF). The parameters
// never travel: registration and every later login must use the same
// ones, or the envelope cannot be opened. WithKSF exists so that tests and
// benchmarks can run cheaply; production clients must not pass it.
package account
