package mls

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
	"golang.org/x/crypto/chacha20poly1305"
)

// Cipher suite code points (RFC 9420 §17.1). Suite 0x004D is not in the
// IANA registry of RFC 9420; it is the code point OpenMLS uses for the
// post-quantum hybrid X-Wing KEM with otherwise suite-3 primitives.
const (
	SuiteX25519AES128GCMSHA256Ed25519        CipherSuiteID = 0x0001
	SuiteP256AES128GCMSHA256P256             CipherSuiteID = 0x0002
	SuiteX25519ChaCha20Poly1305SHA256Ed25519 CipherSuiteID = 0x0003
	SuiteXWingChaCha20Poly1305SHA256Ed25519  CipherSuiteID = 0x004D
)

// ErrUnsupportedCipherSuite is matched (errors.Is) by every
// UnsupportedCipherSuiteError, so callers need not know the suite.
var ErrUnsupportedCipherSuite = errors.New("mls: unsupported cipher suite")

// UnsupportedCipherSuiteError reports a cipher suite this implementation
// does not provide; MLS requires rejecting such groups and KeyPackages
// (RFC 9420 §5.1) rather than guessing at primitives.
type UnsupportedCipherSuiteError struct{ ID CipherSuiteID }

func (e *UnsupportedCipherSuiteError) Error() string {
	return fmt.Sprintf("mls: unsupported cipher suite 0x%04x", uint16(e.ID))
}

// Is makes errors.Is(err, ErrUnsupportedCipherSuite) true.
func (e *UnsupportedCipherSuiteError) Is(target error) bool {
	return target == ErrUnsupportedCipherSuite
}

// Sentinel errors for the primitive layer. Each is wrapped once by the
// operation that failed, so errors.Is works on every returned error.
var (
	ErrInvalidKey       = errors.New("mls: invalid key")
	ErrVerifyFailed     = errors.New("mls: signature verification failed")
	ErrDecryptFailed    = errors.New("mls: decryption failed")
	ErrInvalidKDFLength = errors.New("mls: invalid KDF output length")
)

type signatureScheme uint8

const (
	sigEd25519 signatureScheme = iota + 1
	sigECDSAP256SHA256
)

type aeadKind uint8

const (
	aeadAES128GCM aeadKind = iota + 1
	aeadChaCha20Poly1305
)

// CipherSuite bundles the primitives that RFC 9420 §5.1 attaches to a
// cipher suite code point: an HPKE suite (KEM, KDF, AEAD), the hash used
// for KDF, MAC and references, and the signature scheme.
type CipherSuite struct {
	ID   CipherSuiteID
	hpke hpke.Suite
	kem  hpke.KEM
	aead aeadKind
	sig  signatureScheme
	// nh, nk, nn are KDF.Nh, AEAD.Nk and AEAD.Nn (RFC 9420 §5.1, RFC 9180).
	nh, nk, nn int
}

var suites = map[CipherSuiteID]*CipherSuite{
	SuiteX25519AES128GCMSHA256Ed25519: {
		ID: SuiteX25519AES128GCMSHA256Ed25519, kem: hpke.KEM_X25519_HKDF_SHA256,
		aead: aeadAES128GCM, sig: sigEd25519, nh: 32, nk: 16, nn: 12,
		hpke: hpke.NewSuite(hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM),
	},
	SuiteP256AES128GCMSHA256P256: {
		ID: SuiteP256AES128GCMSHA256P256, kem: hpke.KEM_P256_HKDF_SHA256,
		aead: aeadAES128GCM, sig: sigECDSAP256SHA256, nh: 32, nk: 16, nn: 12,
		hpke: hpke.NewSuite(hpke.KEM_P256_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_AES128GCM),
	},
	SuiteX25519ChaCha20Poly1305SHA256Ed25519: {
		ID: SuiteX25519ChaCha20Poly1305SHA256Ed25519, kem: hpke.KEM_X25519_HKDF_SHA256,
		aead: aeadChaCha20Poly1305, sig: sigEd25519, nh: 32, nk: 32, nn: 12,
		hpke: hpke.NewSuite(hpke.KEM_X25519_HKDF_SHA256, hpke.KDF_HKDF_SHA256, hpke.AEAD_ChaCha20Poly1305),
	},
	SuiteXWingChaCha20Poly1305SHA256Ed25519: {
		ID: SuiteXWingChaCha20Poly1305SHA256Ed25519, kem: hpke.KEM_XWING,
		aead: aeadChaCha20Poly1305, sig: sigEd25519, nh: 32, nk: 32, nn: 12,
		hpke: hpke.NewSuite(hpke.KEM_XWING, hpke.KDF_HKDF_SHA256, hpke.AEAD_ChaCha20Poly1305),
	},
}

// LookupCipherSuite returns the implementation of a cipher suite, or an
// *UnsupportedCipherSuiteError for any other code point (including the
// RFC 9420 suites 4–7, which this package does not implement).
func LookupCipherSuite(id CipherSuiteID) (*CipherSuite, error) {
	if s, ok := suites[id]; ok {
		return s, nil
	}
	return nil, &UnsupportedCipherSuiteError{ID: id}
}

// Nh is the output size of the suite's KDF and hash (RFC 9420 §5.1).
func (s *CipherSuite) Nh() int { return s.nh }

// Nk is the AEAD key size.
func (s *CipherSuite) Nk() int { return s.nk }

// Nn is the AEAD nonce size.
func (s *CipherSuite) Nn() int { return s.nn }

// newHash returns the suite hash. All implemented suites use SHA-256;
// returning hash.Hash keeps the generic HKDF functions instantiated once.
func (s *CipherSuite) newHash() hash.Hash { return sha256.New() }

// Hash is the suite's hash function (RFC 9420 §5.1).
func (s *CipherSuite) Hash(data []byte) []byte {
	h := s.newHash()
	h.Write(data)
	return h.Sum(nil)
}

// Extract is KDF.Extract(salt, ikm) (RFC 9420 §5.1, RFC 5869).
func (s *CipherSuite) Extract(salt, ikm []byte) []byte {
	// HKDF-Extract cannot fail for the hashes used here; the error return
	// exists only for FIPS-mode parameter checks in the standard library.
	prk, err := hkdf.Extract(s.newHash, ikm, salt)
	if err != nil {
		panic("mls: hkdf extract: " + err.Error())
	}
	return prk
}

// Expand is KDF.Expand(prk, info, length). HKDF limits the output to
// 255*Nh bytes; longer requests are rejected.
func (s *CipherSuite) Expand(prk, info []byte, length int) ([]byte, error) {
	if length < 0 || length > 255*s.nh {
		return nil, fmt.Errorf("kdf expand %d bytes: %w", length, ErrInvalidKDFLength)
	}
	out, err := hkdf.Expand(s.newHash, prk, string(info), length)
	if err != nil {
		return nil, fmt.Errorf("kdf expand: %w", err)
	}
	return out, nil
}

// MAC is HMAC with the suite hash, used for membership and confirmation
// tags (RFC 9420 §5.1 "MAC").
func (s *CipherSuite) MAC(key, data []byte) []byte {
	m := hmac.New(s.newHash, key)
	m.Write(data)
	return m.Sum(nil)
}

// VerifyMAC checks a MAC in constant time.
func (s *CipherSuite) VerifyMAC(key, data, tag []byte) bool {
	return hmac.Equal(s.MAC(key, data), tag)
}

// newAEAD instantiates the suite AEAD for one key.
func (s *CipherSuite) newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != s.nk {
		return nil, fmt.Errorf("aead key of %d bytes: %w", len(key), ErrInvalidKey)
	}
	switch s.aead {
	case aeadAES128GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("aes: %w", err)
		}
		return cipher.NewGCM(b)
	default:
		return chacha20poly1305.New(key)
	}
}

// Seal encrypts plaintext with the suite AEAD (RFC 9420 §5.1 "AEAD").
func (s *CipherSuite) Seal(key, nonce, aad, plaintext []byte) ([]byte, error) {
	a, err := s.newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("aead seal: %w", err)
	}
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("aead seal: nonce of %d bytes: %w", len(nonce), ErrInvalidKey)
	}
	return a.Seal(nil, nonce, plaintext, aad), nil
}

// Open decrypts and authenticates ciphertext with the suite AEAD.
func (s *CipherSuite) Open(key, nonce, aad, ciphertext []byte) ([]byte, error) {
	a, err := s.newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("aead open: %w", err)
	}
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("aead open: nonce of %d bytes: %w", len(nonce), ErrInvalidKey)
	}
	pt, err := a.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("aead open: %w", ErrDecryptFailed)
	}
	return pt, nil
}

// kemScheme is the suite's HPKE KEM.
func (s *CipherSuite) kemScheme() kem.Scheme { return s.kem.Scheme() }

// GenerateHPKEKeyPair returns a fresh HPKE key pair, both halves in their
// RFC 9180 SerializePublicKey / SerializePrivateKey encodings.
func (s *CipherSuite) GenerateHPKEKeyPair() (pub, priv []byte, err error) {
	seed := make([]byte, s.kemScheme().SeedSize())
	if _, err := io.ReadFull(rand.Reader, seed); err != nil {
		return nil, nil, fmt.Errorf("hpke key generation: %w", err)
	}
	return s.deriveKeyPair(seed)
}

// DeriveKeyPair derives an HPKE key pair from a secret (RFC 9420 §5.1,
// used for path secrets §7.4 and the external key pair §8). The secret is
// the HPKE DeriveKeyPair ikm; it must have the KEM's seed size, which is
// Nh for every implemented suite.
func (s *CipherSuite) DeriveKeyPair(secret []byte) (pub, priv []byte, err error) {
	if len(secret) != s.kemScheme().SeedSize() {
		return nil, nil, fmt.Errorf("derive key pair from %d-byte secret: %w", len(secret), ErrInvalidKey)
	}
	return s.deriveKeyPair(secret)
}

func (s *CipherSuite) deriveKeyPair(seed []byte) (pub, priv []byte, err error) {
	pk, sk := s.kemScheme().DeriveKeyPair(seed)
	if pub, err = pk.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("derive key pair: %w", err)
	}
	if priv, err = sk.MarshalBinary(); err != nil {
		return nil, nil, fmt.Errorf("derive key pair: %w", err)
	}
	return pub, priv, nil
}

// HPKEPublicKey returns the public half of a serialized HPKE private key.
func (s *CipherSuite) HPKEPublicKey(priv []byte) ([]byte, error) {
	sk, err := s.kemScheme().UnmarshalBinaryPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("hpke private key: %w", ErrInvalidKey)
	}
	pub, err := sk.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("hpke public key: %w", err)
	}
	return pub, nil
}

// sealBase is HPKE SealBase(pkR, info, aad, pt) from RFC 9180 §6.1.
func (s *CipherSuite) sealBase(pub, info, aad, pt []byte) (enc, ct []byte, err error) {
	pk, err := s.kemScheme().UnmarshalBinaryPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("hpke public key: %w", ErrInvalidKey)
	}
	snd, err := s.hpke.NewSender(pk, info)
	if err != nil {
		return nil, nil, err
	}
	enc, sealer, err := snd.Setup(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ct, err = sealer.Seal(pt, aad)
	if err != nil {
		return nil, nil, err
	}
	return enc, ct, nil
}

// openBase is HPKE OpenBase(enc, skR, info, aad, ct) from RFC 9180 §6.1.
// Every failure after key parsing is reported as ErrDecryptFailed so that
// a caller cannot distinguish KEM from AEAD failures.
func (s *CipherSuite) openBase(enc, priv, info, aad, ct []byte) ([]byte, error) {
	sk, err := s.kemScheme().UnmarshalBinaryPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("hpke private key: %w", ErrInvalidKey)
	}
	rcv, err := s.hpke.NewReceiver(sk, info)
	if err != nil {
		return nil, ErrDecryptFailed
	}
	opener, err := rcv.Setup(enc)
	if err != nil {
		return nil, ErrDecryptFailed
	}
	pt, err := opener.Open(ct, aad)
	if err != nil {
		return nil, ErrDecryptFailed
	}
	return pt, nil
}

// GenerateSignatureKeyPair returns a fresh signature key pair. Private
// keys use the encodings of the MLS test vectors: the 32-byte seed for
// Ed25519, the big-endian scalar for ECDSA; public keys are the raw
// Ed25519 key or the uncompressed SEC1 point (RFC 9420 §5.1.1).
func (s *CipherSuite) GenerateSignatureKeyPair() (pub, priv []byte, err error) {
	switch s.sig {
	case sigEd25519:
		pk, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("signature key generation: %w", err)
		}
		return pk, sk.Seed(), nil
	default:
		sk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("signature key generation: %w", err)
		}
		if priv, err = sk.Bytes(); err != nil {
			return nil, nil, fmt.Errorf("signature key generation: %w", err)
		}
		if pub, err = sk.PublicKey.Bytes(); err != nil {
			return nil, nil, fmt.Errorf("signature key generation: %w", err)
		}
		return pub, priv, nil
	}
}

// SignaturePublicKey returns the public key for a serialized signature
// private key.
func (s *CipherSuite) SignaturePublicKey(priv []byte) ([]byte, error) {
	switch s.sig {
	case sigEd25519:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("ed25519 private key: %w", ErrInvalidKey)
		}
		return ed25519.NewKeyFromSeed(priv).Public().(ed25519.PublicKey), nil
	default:
		sk, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), priv)
		if err != nil {
			return nil, fmt.Errorf("ecdsa private key: %w", ErrInvalidKey)
		}
		pub, err := sk.PublicKey.Bytes()
		if err != nil {
			return nil, fmt.Errorf("ecdsa public key: %w", err)
		}
		return pub, nil
	}
}

// sign produces a signature over msg. ECDSA signs SHA-256(msg) and emits
// the DER form that RFC 9420 §5.1.1 requires; Ed25519 signs msg directly.
func (s *CipherSuite) sign(priv, msg []byte) ([]byte, error) {
	switch s.sig {
	case sigEd25519:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("ed25519 private key: %w", ErrInvalidKey)
		}
		return ed25519.Sign(ed25519.NewKeyFromSeed(priv), msg), nil
	default:
		sk, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), priv)
		if err != nil {
			return nil, fmt.Errorf("ecdsa private key: %w", ErrInvalidKey)
		}
		digest := sha256.Sum256(msg)
		sig, err := sk.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("ecdsa sign: %w", err)
		}
		return sig, nil
	}
}

// verify checks a signature produced by sign.
func (s *CipherSuite) verify(pub, msg, sig []byte) error {
	switch s.sig {
	case sigEd25519:
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("ed25519 public key: %w", ErrInvalidKey)
		}
		if !ed25519.Verify(pub, msg, sig) {
			return ErrVerifyFailed
		}
		return nil
	default:
		pk, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pub)
		if err != nil {
			return fmt.Errorf("ecdsa public key: %w", ErrInvalidKey)
		}
		digest := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pk, digest[:], sig) {
			return ErrVerifyFailed
		}
		return nil
	}
}
