package tokens

import (
	"errors"
	"fmt"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/oprf"
	"golang.org/x/crypto/cryptobyte"
)

// Version is the first byte of every encoding in this package.
const Version = 1

// Sizes for ristretto255-SHA512 (RFC 9497 §4.1: Ne = 32, Ns = 32, Nh = 64).
const (
	ElementSize   = 32
	ScalarSize    = 32
	ProofSize     = 2 * ScalarSize // c || s (RFC 9497 §2.2.1)
	InputSize     = 32
	OutputSize    = 64
	MaxBatch      = 100
	TokenSize     = 1 + 4 + InputSize + OutputSize // 101
	PublicKeySize = 1 + 4 + ElementSize            // 37
)

var suite = oprf.SuiteRistretto255

// Errors returned by this package; test with errors.Is.
var (
	ErrMalformed = errors.New("tokens: malformed encoding")
	ErrBatch     = errors.New("tokens: batch size out of range")
	ErrEpoch     = errors.New("tokens: wrong or expired epoch")
	ErrInvalid   = errors.New("tokens: token does not verify")
	ErrProof     = errors.New("tokens: issuance proof does not verify")
)

// Element is one encoded group element (RFC 9497 §2.1 SerializeElement).
type Element [ElementSize]byte

// Token is one redeemable token:
//
//	struct {
//	    uint8  version = 1;
//	    uint32 epoch;
//	    opaque input[32];   // random, chosen by the client
//	    opaque output[64];  // RFC 9497 Finalize(input)
//	} Token;                // 101 bytes
type Token struct {
	Epoch  uint32
	Input  [InputSize]byte
	Output [OutputSize]byte
}

// TokenRequest asks for len(Blinded) tokens of one epoch:
//
//	struct {
//	    uint8   version = 1;
//	    uint32  epoch;
//	    Element blinded<32..3200>;  // u16 length, 1..MaxBatch elements
//	} TokenRequest;
type TokenRequest struct {
	Epoch   uint32
	Blinded []Element
}

// TokenResponse carries the evaluations and one batched DLEQ proof:
//
//	struct {
//	    uint8   version = 1;
//	    uint32  epoch;
//	    Element evaluated<32..3200>;
//	    opaque  proof[64];           // c || s, RFC 9497 §2.2.1
//	} TokenResponse;
type TokenResponse struct {
	Epoch     uint32
	Evaluated []Element
	Proof     [ProofSize]byte
}

// MarshalBinary encodes t.
func (t *Token) MarshalBinary() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint32(t.Epoch)
	b.AddBytes(t.Input[:])
	b.AddBytes(t.Output[:])
	return b.Bytes()
}

// ParseToken decodes exactly one Token.
func ParseToken(data []byte) (*Token, error) {
	s := cryptobyte.String(data)
	var v uint8
	t := new(Token)
	if !s.ReadUint8(&v) || !s.ReadUint32(&t.Epoch) || !s.CopyBytes(t.Input[:]) ||
		!s.CopyBytes(t.Output[:]) || !s.Empty() {
		return nil, fmt.Errorf("%w: token of %d bytes, want %d", ErrMalformed, len(data), TokenSize)
	}
	if v != Version {
		return nil, fmt.Errorf("%w: token version %d", ErrMalformed, v)
	}
	return t, nil
}

// MarshalBinary encodes r; a batch outside 1..MaxBatch is ErrBatch.
func (r *TokenRequest) MarshalBinary() ([]byte, error) {
	if len(r.Blinded) == 0 || len(r.Blinded) > MaxBatch {
		return nil, fmt.Errorf("%w: %d elements", ErrBatch, len(r.Blinded))
	}
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint32(r.Epoch)
	addElements(&b, r.Blinded)
	return b.Bytes()
}

// ParseTokenRequest decodes a TokenRequest. Every element must be a valid,
// canonical, non-identity ristretto255 encoding (RFC 9497 §2.1
// DeserializeElement).
func ParseTokenRequest(data []byte) (*TokenRequest, error) {
	s := cryptobyte.String(data)
	var v uint8
	r := new(TokenRequest)
	if !s.ReadUint8(&v) || !s.ReadUint32(&r.Epoch) {
		return nil, fmt.Errorf("%w: truncated token request", ErrMalformed)
	}
	if v != Version {
		return nil, fmt.Errorf("%w: token request version %d", ErrMalformed, v)
	}
	var err error
	if r.Blinded, err = readElements(&s); err != nil {
		return nil, err
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: trailing bytes after token request", ErrMalformed)
	}
	return r, nil
}

// MarshalBinary encodes r.
func (r *TokenResponse) MarshalBinary() ([]byte, error) {
	if len(r.Evaluated) == 0 || len(r.Evaluated) > MaxBatch {
		return nil, fmt.Errorf("%w: %d elements", ErrBatch, len(r.Evaluated))
	}
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint32(r.Epoch)
	addElements(&b, r.Evaluated)
	b.AddBytes(r.Proof[:])
	return b.Bytes()
}

// ParseTokenResponse decodes a TokenResponse; elements are validated as in
// ParseTokenRequest and both proof scalars must be canonical.
func ParseTokenResponse(data []byte) (*TokenResponse, error) {
	s := cryptobyte.String(data)
	var v uint8
	r := new(TokenResponse)
	if !s.ReadUint8(&v) || !s.ReadUint32(&r.Epoch) {
		return nil, fmt.Errorf("%w: truncated token response", ErrMalformed)
	}
	if v != Version {
		return nil, fmt.Errorf("%w: token response version %d", ErrMalformed, v)
	}
	var err error
	if r.Evaluated, err = readElements(&s); err != nil {
		return nil, err
	}
	if !s.CopyBytes(r.Proof[:]) || !s.Empty() {
		return nil, fmt.Errorf("%w: token response proof is not %d bytes", ErrMalformed, ProofSize)
	}
	if _, err := decodeProof(r.Proof); err != nil {
		return nil, err
	}
	return r, nil
}

func addElements(b *cryptobyte.Builder, es []Element) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for i := range es {
			b.AddBytes(es[i][:])
		}
	})
}

func readElements(s *cryptobyte.String) ([]Element, error) {
	var list cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&list) {
		return nil, fmt.Errorf("%w: truncated element list", ErrMalformed)
	}
	if len(list)%ElementSize != 0 {
		return nil, fmt.Errorf("%w: element list of %d bytes", ErrMalformed, len(list))
	}
	n := len(list) / ElementSize
	if n == 0 || n > MaxBatch {
		return nil, fmt.Errorf("%w: %d elements, want 1..%d", ErrBatch, n, MaxBatch)
	}
	out := make([]Element, n)
	for i := range out {
		list.CopyBytes(out[i][:])
		if _, err := decodeElement(out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeElement is RFC 9497 §2.1 DeserializeElement for ristretto255:
// canonical encoding, and never the identity.
func decodeElement(e Element) (group.Element, error) {
	g := suite.Group().NewElement()
	if err := g.UnmarshalBinary(e[:]); err != nil || g.IsIdentity() {
		return nil, fmt.Errorf("%w: not a valid ristretto255 element", ErrMalformed)
	}
	return g, nil
}

func decodeElements(es []Element) ([]group.Element, error) {
	out := make([]group.Element, len(es))
	for i := range es {
		g, err := decodeElement(es[i])
		if err != nil {
			return nil, err
		}
		out[i] = g
	}
	return out, nil
}

func encodeElement(g group.Element) (Element, error) {
	var e Element
	b, err := g.MarshalBinaryCompress()
	if err != nil || len(b) != ElementSize {
		return e, fmt.Errorf("%w: element encoding", ErrMalformed)
	}
	copy(e[:], b)
	return e, nil
}
