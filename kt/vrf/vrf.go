package vrf

import (
	"crypto/ed25519"
	"crypto/sha512"
	"crypto/subtle"
	"errors"

	"filippo.io/edwards25519"
)

// Sizes in bytes (RFC 9381 §5.5: ptLen = 32, cLen = 16, qLen = 32).
const (
	PublicKeySize = 32
	SeedSize      = 32
	ProofSize     = 80 // Gamma (32) || c (16) || s (32)
	OutputSize    = 64 // SHA-512
)

// suite is the suite_string of ECVRF-EDWARDS25519-SHA512-TAI (§5.5).
const suite = 0x03

// Domain separators of RFC 9381 (§5.4.1.1, §5.4.3, §5.2).
const (
	encodeToCurveFront = 0x01
	challengeFront     = 0x02
	proofToHashFront   = 0x03
	back               = 0x00
)

// Errors returned by Verify and the key constructors.
var (
	ErrInvalidProof = errors.New("vrf: invalid proof")
	ErrInvalidKey   = errors.New("vrf: invalid public key")
)

// PrivateKey is a VRF secret key: x = clamp(SHA-512(seed)[:32]) and the
// nonce key SHA-512(seed)[32:], as in RFC 8032 §5.1.5.
type PrivateKey struct {
	seed     [SeedSize]byte
	x        *edwards25519.Scalar
	nonceKey [32]byte
	pk       [PublicKeySize]byte
}

// NewPrivateKey expands a 32-byte seed.
func NewPrivateKey(seed []byte) (*PrivateKey, error) {
	if len(seed) != SeedSize {
		return nil, errors.New("vrf: seed must be 32 bytes")
	}
	h := sha512.Sum512(seed)
	x, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		return nil, err
	}
	k := &PrivateKey{x: x}
	copy(k.seed[:], seed)
	copy(k.nonceKey[:], h[32:])
	copy(k.pk[:], new(edwards25519.Point).ScalarBaseMult(x).Bytes())
	return k, nil
}

// Seed returns the 32-byte seed the key was made from.
func (k *PrivateKey) Seed() []byte { return append([]byte(nil), k.seed[:]...) }

// PublicKey returns the 32-byte public key Y = x*B.
func (k *PrivateKey) PublicKey() []byte { return append([]byte(nil), k.pk[:]...) }

// Prove returns beta = VRF_hash(alpha) and its proof pi (RFC 9381 §5.1).
func (k *PrivateKey) Prove(alpha []byte) (beta [OutputSize]byte, pi [ProofSize]byte) {
	// 1-3. H = ECVRF_encode_to_curve(Y, alpha); h_string.
	H := encodeToCurve(k.pk[:], alpha)
	hString := H.Bytes()
	// 4. Gamma = x*H.
	gamma := new(edwards25519.Point).ScalarMult(k.x, H)
	// 5. k = ECVRF_nonce_generation(SK, h_string), §5.4.2.2.
	nh := sha512.New()
	nh.Write(k.nonceKey[:])
	nh.Write(hString)
	nonce, _ := edwards25519.NewScalar().SetUniformBytes(nh.Sum(nil))
	// 6. c = ECVRF_challenge_generation(Y, H, Gamma, k*B, k*H).
	U := new(edwards25519.Point).ScalarBaseMult(nonce)
	V := new(edwards25519.Point).ScalarMult(nonce, H)
	c := challenge(k.pk[:], hString, gamma.Bytes(), U.Bytes(), V.Bytes())
	// 7. s = (k + c*x) mod q.
	cs := challengeScalar(c)
	s := edwards25519.NewScalar().MultiplyAdd(cs, k.x, nonce)
	// 8. pi = point_to_string(Gamma) || int_to_string(c, 16) || int_to_string(s, 32).
	copy(pi[:32], gamma.Bytes())
	copy(pi[32:48], c[:])
	copy(pi[48:], s.Bytes())
	return gammaToHash(gamma), pi
}

// Verify checks pi for alpha under the public key pk and returns beta
// (RFC 9381 §5.3, with the key validation of §5.4.5).
func Verify(pk, alpha, pi []byte) ([OutputSize]byte, error) {
	var beta [OutputSize]byte
	Y, err := decodePoint(pk)
	if err != nil {
		return beta, ErrInvalidKey
	}
	// §5.4.5: reject public keys of small order (cofactor*Y == identity).
	if new(edwards25519.Point).MultByCofactor(Y).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return beta, ErrInvalidKey
	}
	if len(pi) != ProofSize {
		return beta, ErrInvalidProof
	}
	// §5.4.4 ECVRF_decode_proof.
	gamma, err := decodePoint(pi[:32])
	if err != nil {
		return beta, ErrInvalidProof
	}
	var c [16]byte
	copy(c[:], pi[32:48])
	s, err := edwards25519.NewScalar().SetCanonicalBytes(pi[48:80])
	if err != nil { // s >= q
		return beta, ErrInvalidProof
	}
	H := encodeToCurve(pk, alpha)
	negC := edwards25519.NewScalar().Negate(challengeScalar(c))
	// U = s*B - c*Y, V = s*H - c*Gamma.
	U := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(negC, Y, s)
	V := new(edwards25519.Point).VarTimeMultiScalarMult(
		[]*edwards25519.Scalar{s, negC}, []*edwards25519.Point{H, gamma})
	c2 := challenge(pk, H.Bytes(), pi[:32], U.Bytes(), V.Bytes())
	if subtle.ConstantTimeCompare(c[:], c2[:]) != 1 {
		return beta, ErrInvalidProof
	}
	return gammaToHash(gamma), nil
}

// ProofToHash returns beta for a proof without verifying it (§5.2). Use it
// only on proofs that were verified, or that this process made.
func ProofToHash(pi []byte) ([OutputSize]byte, error) {
	if len(pi) != ProofSize {
		return [OutputSize]byte{}, ErrInvalidProof
	}
	gamma, err := decodePoint(pi[:32])
	if err != nil {
		return [OutputSize]byte{}, ErrInvalidProof
	}
	return gammaToHash(gamma), nil
}

// PublicKeyFromEd25519 returns the VRF public key of an Ed25519 seed's
// key pair; the two are the same point.
func PublicKeyFromEd25519(priv ed25519.PrivateKey) []byte {
	return append([]byte(nil), priv.Public().(ed25519.PublicKey)...)
}

// gammaToHash is §5.2 step 4: Hash(suite || 0x03 || point_to_string(cofactor*Gamma) || 0x00).
func gammaToHash(gamma *edwards25519.Point) [OutputSize]byte {
	h := sha512.New()
	h.Write([]byte{suite, proofToHashFront})
	h.Write(new(edwards25519.Point).MultByCofactor(gamma).Bytes())
	h.Write([]byte{back})
	var out [OutputSize]byte
	h.Sum(out[:0])
	return out
}

// encodeToCurve is ECVRF_encode_to_curve_try_and_increment (§5.4.1.1)
// with encode_to_curve_salt = PK_string (§5.5). A candidate that fails to
// decode moves on to the next counter; the chance of 256 failures is 2^-256,
// so the loop ends.
func encodeToCurve(salt, alpha []byte) *edwards25519.Point {
	for ctr := 0; ; ctr++ {
		h := sha512.New()
		h.Write([]byte{suite, encodeToCurveFront})
		h.Write(salt)
		h.Write(alpha)
		h.Write([]byte{byte(ctr), back})
		sum := h.Sum(nil)
		// interpret_hash_value_as_a_point: string_to_point(first 32 bytes).
		if p, err := decodePoint(sum[:32]); err == nil {
			return p.MultByCofactor(p)
		}
		if ctr == 255 {
			panic("vrf: encode_to_curve found no point in 256 tries")
		}
	}
}

// challenge is ECVRF_challenge_generation (§5.4.3): the first cLen = 16
// bytes of Hash(suite || 0x02 || Y || H || Gamma || U || V || 0x00).
func challenge(points ...[]byte) [16]byte {
	h := sha512.New()
	h.Write([]byte{suite, challengeFront})
	for _, p := range points {
		h.Write(p)
	}
	h.Write([]byte{back})
	var c [16]byte
	copy(c[:], h.Sum(nil))
	return c
}

// challengeScalar is string_to_int(c) (little-endian, §5.5); c < 2^128 < q.
func challengeScalar(c [16]byte) *edwards25519.Scalar {
	var b [32]byte
	copy(b[:], c[:])
	s, err := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	if err != nil {
		panic("vrf: 128-bit challenge is not canonical")
	}
	return s
}

// decodePoint is string_to_point of RFC 8032 §5.1.3: unlike SetBytes
// alone, it rejects non-canonical encodings: y >= p, and x = 0 with the
// sign bit set (x = 0 only for y = 1 and y = p-1). The inputs are public
// (keys, proofs, hash outputs), so the checks need not be constant-time.
func decodePoint(b []byte) (*edwards25519.Point, error) {
	if len(b) != 32 {
		return nil, errors.New("vrf: point must be 32 bytes")
	}
	if !canonicalY(b) {
		return nil, errors.New("vrf: non-canonical point encoding")
	}
	if b[31]&0x80 != 0 && (isY(b, yOne) || isY(b, yMinusOne)) {
		return nil, errors.New("vrf: non-canonical point encoding")
	}
	return new(edwards25519.Point).SetBytes(b)
}

var (
	yOne      = [32]byte{1}
	yMinusOne = [32]byte{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}
)

// canonicalY reports whether the little-endian y (sign bit ignored) is
// below p = 2^255 - 19.
func canonicalY(b []byte) bool {
	if b[31]&0x7f != 0x7f {
		return true
	}
	for i := 30; i >= 1; i-- {
		if b[i] != 0xff {
			return true
		}
	}
	return b[0] < 0xed
}

// isY compares y (sign bit ignored) with want.
func isY(b []byte, want [32]byte) bool {
	for i := range 31 {
		if b[i] != want[i] {
			return false
		}
	}
	return b[31]&0x7f == want[31]
}
