// Package accounts is the server side of qpc accounts: OPAQUE
// registration and login (RFC 9807, github.com/bytemare/opaque v0.18.0),
// sessions, devices, password change, account deletion, and the per-epoch
// token quota of each account.
//
// The request handlers call it with the fields of the bodies defined in
// package account (byte slices in, byte slices out) and map its sentinel
// errors to wire error codes. Registration and login are two round trips
// on one stream; between them the handler holds the only state (the
// username and record for registration, a *LoginState for login).
//
// # Keys
//
// LoadOrCreateKeys keeps the OPAQUE server key material (RFC 9807 §3.1:
// AKE key pair, oprf_seed, server_identity) in <dataDir>/opaque.key, mode
// 0600, created once and never overwritten: every registration record
// depends on it.
//
// # Storage
//
// Everything the Service persists goes through the Store interface
// (store.go): one method per domain operation, each one transaction (a
// registration with its first session, a login with its device and
// session, a quota take, a KeyPackage pop). Open uses the embedded
// default, Bolt (OpenBolt): a bbolt file of its own, <dataDir>/accounts.db
// (0600), separate from the mailbox store so that the two cannot be
// joined. Each write is one fsynced bbolt transaction (logins are rare;
// no group commit needed). New puts a Service over any other Store (the
// PostgreSQL one is server/accounts/pgaccounts); it must pass the
// conformance suite in server/accounts/accountstest.
// Usernames are stored only as credential identifiers,
// SHA-256("qpc/1 account\0" || username); session tokens only as their
// SHA-256; stored times are rounded to the hour. See db.go for the layout.
//
// # Client enumeration
//
// LoginStart takes the same path for registered and unregistered
// usernames (RFC 9807 §6.3.2.2, §10.9): a fake record is computed on
// every login and the stored one, if any, replaces it by a constant-time
// copy; KE2 has the same size; LoginFinish fails with ErrAuth for both.
// The tests measure LoginStart's time for both kinds of username and
// check the distributions with a two-sample Kolmogorov–Smirnov test.
// Registration cannot hide that a username is taken (ErrTaken); it is
// rate limited instead.
//
// # Rate limits
//
// In memory (a restart forgets them), keyed by credential identifier and
// by Source (the handler's name for where an exchange comes from: an
// address prefix, or a connection), applied to unregistered usernames
// exactly as to registered ones (limits.go):
//
//   - MaxFailures unproven logins of a username per source per
//     FailureWindow (default 10 per 15 minutes; a login is unproven until
//     its LoginFinish proves the password) refuse that username from that
//     source only; UserFailures of them from all sources (default 100) cut
//     every source's allowance for the username to 2;
//   - a bucket per source for LoginStarts (2/s, burst 20) and one for
//     RegisterStarts (one per 10 s, burst 5);
//   - a global bucket for LoginStarts and ChangePasswordStarts (50/s,
//     burst 200) and a separate one for RegisterStarts (5/s, burst 20).
//
// # Sessions and devices
//
// A session is 32 random bytes, good for Options.SessionTTL (default 30
// days), bound to one account and one device; a device has at most one
// session (logging in again replaces it). RevokeDevice deletes a device
// and its session. ChangePasswordFinish keeps the session that made the
// change and revokes all others. DeleteAccount removes everything of the
// account.
//
// # KeyPackage pools
//
// Each account keeps a first-in, first-out pool of opaque one-time MLS
// KeyPackages (keypackages.go, docs/protocol.md §4.12). UploadKeyPackages
// adds to it for an authenticated account, up to a limit the server
// chooses (all or nothing, ErrPoolFull); TakeKeyPackage, for an anonymous
// fetch by handle, removes the oldest in one write transaction, and
// answers nil for an empty pool and for an unknown username alike. The
// pool is stored under the AccountRef, never the username, and goes with
// the account.
package accounts
