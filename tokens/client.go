package tokens

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/oprf"
	"github.com/cloudflare/circl/zk/dleq"
	"golang.org/x/crypto/cryptobyte"
)

// PublicKey is an epoch's issuer key as published in key transparency:
//
//	struct {
//	    uint8  version = 1;
//	    uint32 epoch;
//	    opaque pkS[32];  // RFC 9497 §2.1 SerializeElement
//	} TokenPublicKey;    // 37 bytes
type PublicKey struct {
	Epoch uint32
	key   *oprf.PublicKey
	raw   Element
}

func newPublicKey(epoch uint32, k *oprf.PublicKey) (*PublicKey, error) {
	b, err := k.MarshalBinary()
	if err != nil || len(b) != ElementSize {
		return nil, fmt.Errorf("%w: public key encoding", ErrMalformed)
	}
	pk := &PublicKey{Epoch: epoch, key: k}
	copy(pk.raw[:], b)
	return pk, nil
}

// MarshalBinary encodes k.
func (k *PublicKey) MarshalBinary() ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint32(k.Epoch)
	b.AddBytes(k.raw[:])
	return b.Bytes()
}

// ParsePublicKey decodes a PublicKey; the key must be a valid non-identity
// element.
func ParsePublicKey(data []byte) (*PublicKey, error) {
	s := cryptobyte.String(data)
	var v uint8
	var epoch uint32
	var raw Element
	if !s.ReadUint8(&v) || !s.ReadUint32(&epoch) || !s.CopyBytes(raw[:]) || !s.Empty() {
		return nil, fmt.Errorf("%w: public key of %d bytes, want %d", ErrMalformed, len(data), PublicKeySize)
	}
	if v != Version {
		return nil, fmt.Errorf("%w: public key version %d", ErrMalformed, v)
	}
	k := new(oprf.PublicKey)
	if err := k.UnmarshalBinary(suite, raw[:]); err != nil {
		return nil, fmt.Errorf("%w: public key: %v", ErrMalformed, err)
	}
	return &PublicKey{Epoch: epoch, key: k, raw: raw}, nil
}

// Blinding is the client's state between a TokenRequest and its response.
// It lives in memory only: if the client loses it, the tokens of that
// request are lost (the server has counted them against the quota).
type Blinding struct {
	pk     *PublicKey
	inputs [][InputSize]byte
	fin    *oprf.FinalizeData
}

// Blind draws n random token inputs and blinds them for pk's epoch
// (RFC 9497 §3.3.1 Blind, verifiable mode). pk must be the key the client
// fetched from, and checked against, key transparency.
func Blind(pk *PublicKey, n int) (*Blinding, *TokenRequest, error) {
	if pk == nil || pk.key == nil {
		return nil, nil, fmt.Errorf("%w: no public key", ErrMalformed)
	}
	if n < 1 || n > MaxBatch {
		return nil, nil, fmt.Errorf("%w: %d tokens, want 1..%d", ErrBatch, n, MaxBatch)
	}
	inputs := make([][InputSize]byte, n)
	in := make([][]byte, n)
	for j := range inputs {
		if _, err := rand.Read(inputs[j][:]); err != nil {
			return nil, nil, fmt.Errorf("tokens: random input: %w", err)
		}
		in[j] = inputs[j][:]
	}
	fin, req, err := oprf.NewVerifiableClient(suite, pk.key).Blind(in)
	if err != nil {
		return nil, nil, fmt.Errorf("tokens: blind: %w", err)
	}
	tr := &TokenRequest{Epoch: pk.Epoch, Blinded: make([]Element, n)}
	for j, e := range req.Elements {
		if tr.Blinded[j], err = encodeElement(e); err != nil {
			return nil, nil, err
		}
	}
	return &Blinding{pk: pk, inputs: inputs, fin: fin}, tr, nil
}

// Finalize checks the response's DLEQ proof against the epoch's public key
// (RFC 9497 §2.2.2 VerifyProof) and unblinds the evaluations into tokens
// (§3.3.2 Finalize). A proof that does not verify is ErrProof: the server
// either cheated (for example with a per-user key) or the response was
// corrupted; the caller must not use any token of it.
func (b *Blinding) Finalize(resp *TokenResponse) ([]Token, error) {
	if resp.Epoch != b.pk.Epoch {
		return nil, fmt.Errorf("%w: response for epoch %d, request was %d", ErrEpoch, resp.Epoch, b.pk.Epoch)
	}
	if len(resp.Evaluated) != len(b.inputs) {
		return nil, fmt.Errorf("%w: %d evaluations for %d requests", ErrBatch, len(resp.Evaluated), len(b.inputs))
	}
	evaluated, err := decodeElements(resp.Evaluated)
	if err != nil {
		return nil, err
	}
	proof, err := decodeProof(resp.Proof)
	if err != nil {
		return nil, err
	}
	outs, err := oprf.NewVerifiableClient(suite, b.pk.key).Finalize(b.fin, &oprf.Evaluation{Elements: evaluated, Proof: proof})
	if errors.Is(err, oprf.ErrInvalidProof) {
		return nil, ErrProof
	}
	if err != nil {
		return nil, fmt.Errorf("tokens: finalize: %w", err)
	}
	toks := make([]Token, len(outs))
	for j := range outs {
		if len(outs[j]) != OutputSize {
			return nil, fmt.Errorf("tokens: output of %d bytes", len(outs[j]))
		}
		toks[j] = Token{Epoch: b.pk.Epoch, Input: b.inputs[j]}
		copy(toks[j].Output[:], outs[j])
	}
	return toks, nil
}

func decodeProof(p [ProofSize]byte) (*dleq.Proof, error) {
	proof := new(dleq.Proof)
	if err := proof.UnmarshalBinary(suite.Group(), p[:]); err != nil {
		return nil, fmt.Errorf("%w: proof scalars: %v", ErrMalformed, err)
	}
	return proof, nil
}
