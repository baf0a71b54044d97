// Package tokens is anonymous delivery tokens: the server hands them out to
// a logged-in account (in a batch, its daily quota) and later accepts them on
// sends and mailbox creation without learning which account, or which
// issuance, a token came from.
//
// The construction is an RFC 9497 VOPRF (ristretto255-SHA512, verifiable
// mode, §3.3.2) from github.com/cloudflare/circl/oprf. A token is a random
// 32-byte input and the PRF output the client unblinded; the server checks it
// by evaluating the PRF itself (§3.3.1 FullEvaluate / VerifyFinalize).
// Issuance sees only blinded elements, so a redeemed token cannot be linked
// to the request that minted it; the DLEQ proof (§2.2) lets the client check
// that every issuance used the one public key of the epoch, committed in the
// key-transparency log, so the server cannot tag users with per-user keys.
//
// Server: NewIssuer(master) → Issuer.PublicKey(epoch) to publish,
// Issuer.Issue(request) on the authenticated path, Issuer.Redeem(token) on
// the anonymous path, then record SpendKey(token) in a durable spent set
// (per epoch; entries older than the previous epoch can be dropped, since
// Redeem refuses those tokens anyway). Redeem does not detect double
// spending: the store does.
//
// Client: Blind(publicKey, n) → send the TokenRequest, then
// Blinding.Finalize(response) verifies the proof and returns the tokens.
// Spend each token once; Token.MarshalBinary is what goes into the request's
// Auth field.
//
// Wire encodings (TokenRequest, TokenResponse, Token, PublicKey) are
// cryptobyte, versioned, with fixed limits (MaxBatch); their byte layout is
// documented on each type.
//
// Why not in package sealed: tokens are authorization, sealing is
// confidentiality. The server's Authorizer needs tokens but must never need
// HPKE or X-Wing; a client spends a token on every send whether or not the
// payload is a sealed envelope (mailbox creation carries no envelope). One
// concept, one room.
//
// This package imports circl (oprf, group, dleq), golang.org/x/crypto/cryptobyte
// and the standard library.
package tokens
