// Package sealed turns a message for a mailbox into an envelope that only
// the mailbox's owner can open, and that tells the delivery server nothing
// about who sent it.
//
// An envelope is RFC 9180 HPKE in base mode with the X-Wing KEM
// (X25519 + ML-KEM-768): base mode because the sender must stay anonymous to
// the server. The sender is named, and authenticated, only inside the
// ciphertext: a sender block with its identity key, handle, time and an
// Ed25519 signature that binds the recipient's key and mailbox, so that a
// recipient cannot re-address a signed block to someone else. Plaintexts
// are padded to a bucket of the server's policy (package padding) before
// sealing, so envelopes come in as few sizes as the policy has buckets;
// payloads larger than one envelope are chunked with padding.Split.
//
// Keys: a MailboxPrivateKey (X-Wing) belongs to one mailbox and does
// nothing but open envelopes. It is separate from the mailbox's Ed25519
// owner key, which signs requests to the server (package wire), and from the
// sender's identity key, which is checked against key transparency after
// Open and never reaches the server.
//
// Entry points: GenerateMailboxKey for a mailbox's key pair, Seal on the
// sender's side, Open on the recipient's. After Open, check the sender's
// identity key before trusting its handle: the envelope proves who wrote
// it, not that the key belongs to that name. Anonymous delivery tokens,
// which the architecture brief first placed here, live in package tokens:
// authorization and confidentiality are separate rooms.
//
// The envelope's byte format belongs in docs/protocol.md beside the
// records that carry it.
//
// Imports: circl (hpke), golang.org/x/crypto/cryptobyte, padding, wire and
// the standard library; never server, client or mls.
package sealed
