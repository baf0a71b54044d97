package sealed

import (
	"crypto/subtle"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
)

// Key sizes of the v1 suite (X-Wing, draft-connolly-cfrg-xwing-kem).
const (
	MailboxPublicKeySize  = 1216 // X-Wing encapsulation key: ML-KEM-768 ek (1184) || X25519 (32)
	MailboxPrivateKeySize = 32   // X-Wing decapsulation key is its 32-byte seed
	MailboxSeedSize       = 32
)

// MailboxPublicKey is the key senders seal to. It is published with the
// mailbox (for example in an intro record), next to, but separate from,
// the mailbox's Ed25519 owner key: the owner key signs requests to the
// server, this key only ever decapsulates.
type MailboxPublicKey struct {
	kemID hpke.KEM
	pk    kem.PublicKey
	raw   []byte
}

// MailboxPrivateKey opens envelopes sealed to its public key.
type MailboxPrivateKey struct {
	kemID hpke.KEM
	sk    kem.PrivateKey
	pub   *MailboxPublicKey
}

// GenerateMailboxKey returns a fresh X-Wing key pair from crypto/rand.
func GenerateMailboxKey() (*MailboxPrivateKey, error) {
	pk, sk, err := suiteKEM.Scheme().GenerateKeyPair()
	if err != nil {
		return nil, errorf(CodeMalformed, "generate mailbox key: %v", err)
	}
	return newPrivateKey(suiteKEM, pk, sk)
}

// NewMailboxKey derives a key pair from a 32-byte seed (RFC 9180 §7.1.3
// DeriveKeyPair, which for X-Wing is the seed itself). Use it to restore a
// key from backup or for test vectors; fresh keys come from GenerateMailboxKey.
func NewMailboxKey(seed []byte) (*MailboxPrivateKey, error) {
	return deriveKey(suiteKEM, seed)
}

func deriveKey(id hpke.KEM, seed []byte) (*MailboxPrivateKey, error) {
	s := id.Scheme()
	if len(seed) != s.SeedSize() {
		return nil, errorf(CodeMalformed, "mailbox seed is %d bytes, want %d", len(seed), s.SeedSize())
	}
	pk, sk := s.DeriveKeyPair(seed)
	return newPrivateKey(id, pk, sk)
}

func newPrivateKey(id hpke.KEM, pk kem.PublicKey, sk kem.PrivateKey) (*MailboxPrivateKey, error) {
	raw, err := pk.MarshalBinary()
	if err != nil {
		return nil, errorf(CodeMalformed, "mailbox public key: %v", err)
	}
	return &MailboxPrivateKey{kemID: id, sk: sk, pub: &MailboxPublicKey{kemID: id, pk: pk, raw: raw}}, nil
}

// ParseMailboxPrivateKey decodes the 32 bytes MarshalBinary returned.
func ParseMailboxPrivateKey(b []byte) (*MailboxPrivateKey, error) {
	if len(b) != MailboxPrivateKeySize {
		return nil, errorf(CodeMalformed, "mailbox private key is %d bytes, want %d", len(b), MailboxPrivateKeySize)
	}
	sk, err := suiteKEM.Scheme().UnmarshalBinaryPrivateKey(b)
	if err != nil {
		return nil, errorf(CodeMalformed, "mailbox private key: %v", err)
	}
	return newPrivateKey(suiteKEM, sk.Public(), sk)
}

// ParseMailboxPublicKey decodes a 1216-byte X-Wing public key.
func ParseMailboxPublicKey(b []byte) (*MailboxPublicKey, error) {
	if len(b) != MailboxPublicKeySize {
		return nil, errorf(CodeMalformed, "mailbox public key is %d bytes, want %d", len(b), MailboxPublicKeySize)
	}
	pk, err := suiteKEM.Scheme().UnmarshalBinaryPublicKey(b)
	if err != nil {
		return nil, errorf(CodeMalformed, "mailbox public key: %v", err)
	}
	return &MailboxPublicKey{kemID: suiteKEM, pk: pk, raw: append([]byte(nil), b...)}, nil
}

// Public returns the public half.
func (k *MailboxPrivateKey) Public() *MailboxPublicKey { return k.pub }

// MarshalBinary returns the private key (the X-Wing seed). Store it
// encrypted; whoever holds it reads the mailbox.
func (k *MailboxPrivateKey) MarshalBinary() ([]byte, error) { return k.sk.MarshalBinary() }

// Bytes returns a copy of the encoded public key.
func (k *MailboxPublicKey) Bytes() []byte { return append([]byte(nil), k.raw...) }

// Equal reports whether two public keys are the same.
func (k *MailboxPublicKey) Equal(o *MailboxPublicKey) bool {
	return k.kemID == o.kemID && subtle.ConstantTimeCompare(k.raw, o.raw) == 1
}
