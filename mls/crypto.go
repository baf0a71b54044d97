package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// labelPrefix is prepended to every label in the labelled operations so
// that MLS keys and signatures can never be confused with those of another
// protocol that uses the same primitives (RFC 9420 §5.1.2, §5.1.3, §5.2).
const labelPrefix = "MLS 1.0 "

// mlsLabel returns "MLS 1.0 " + label.
func mlsLabel(label string) []byte {
	return append([]byte(labelPrefix), label...)
}

// ExpandWithLabel is RFC 9420 §5.1.2: KDF.Expand(secret, KDFLabel, length)
// where KDFLabel = { uint16 length; opaque label<V>; opaque context<V> }.
func (s *CipherSuite) ExpandWithLabel(secret []byte, label string, context []byte, length int) ([]byte, error) {
	if length < 0 || length > 0xffff {
		return nil, fmt.Errorf("expand with label %q: %w", label, ErrInvalidKDFLength)
	}
	var b cryptobyte.Builder
	b.AddUint16(uint16(length))
	addOpaque(&b, mlsLabel(label))
	addOpaque(&b, context)
	info, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("expand with label %q: %w", label, err)
	}
	out, err := s.Expand(secret, info, length)
	if err != nil {
		return nil, fmt.Errorf("expand with label %q: %w", label, err)
	}
	return out, nil
}

// mustExpandWithLabel is ExpandWithLabel for call sites whose length is a
// suite constant (Nh, Nk, Nn), which can never exceed the HKDF limit.
func (s *CipherSuite) mustExpandWithLabel(secret []byte, label string, context []byte, length int) []byte {
	out, err := s.ExpandWithLabel(secret, label, context, length)
	if err != nil {
		panic(err)
	}
	return out
}

// DeriveSecret is RFC 9420 §5.1.2: ExpandWithLabel(secret, label, "", Nh).
func (s *CipherSuite) DeriveSecret(secret []byte, label string) []byte {
	return s.mustExpandWithLabel(secret, label, nil, s.nh)
}

// DeriveTreeSecret is RFC 9420 §9.1: ExpandWithLabel(secret, label,
// uint32 generation, length), the step of the per-sender hash ratchets.
func (s *CipherSuite) DeriveTreeSecret(secret []byte, label string, generation uint32, length int) ([]byte, error) {
	ctx := []byte{byte(generation >> 24), byte(generation >> 16), byte(generation >> 8), byte(generation)}
	return s.ExpandWithLabel(secret, label, ctx, length)
}

// RefHash is RFC 9420 §5.2: Hash(RefHashInput) with RefHashInput =
// { opaque label<V>; opaque value<V> }. Unlike the other labelled
// operations the label is used verbatim; the callers below pass the full
// "MLS 1.0 ..." strings the RFC defines.
func (s *CipherSuite) RefHash(label string, value []byte) []byte {
	var b cryptobyte.Builder
	addOpaque(&b, []byte(label))
	addOpaque(&b, value)
	return s.Hash(b.BytesOrPanic())
}

// MakeKeyPackageRef is RFC 9420 §5.2: the reference of an encoded KeyPackage.
func (s *CipherSuite) MakeKeyPackageRef(keyPackage []byte) []byte {
	return s.RefHash("MLS 1.0 KeyPackage Reference", keyPackage)
}

// MakeProposalRef is RFC 9420 §5.2: the reference of an encoded
// AuthenticatedContent carrying a proposal.
func (s *CipherSuite) MakeProposalRef(authenticatedContent []byte) []byte {
	return s.RefHash("MLS 1.0 Proposal Reference", authenticatedContent)
}

// signContent encodes SignContent = { opaque label<V>; opaque content<V> }
// (RFC 9420 §5.1.2).
func signContent(label string, content []byte) ([]byte, error) {
	var b cryptobyte.Builder
	addOpaque(&b, mlsLabel(label))
	addOpaque(&b, content)
	return b.Bytes()
}

// SignWithLabel is RFC 9420 §5.1.2: Signature.Sign(priv, SignContent).
func (s *CipherSuite) SignWithLabel(priv []byte, label string, content []byte) ([]byte, error) {
	msg, err := signContent(label, content)
	if err != nil {
		return nil, fmt.Errorf("sign with label %q: %w", label, err)
	}
	sig, err := s.sign(priv, msg)
	if err != nil {
		return nil, fmt.Errorf("sign with label %q: %w", label, err)
	}
	return sig, nil
}

// VerifyWithLabel is RFC 9420 §5.1.2. It returns nil only for a valid
// signature; an invalid one yields an error wrapping ErrVerifyFailed.
func (s *CipherSuite) VerifyWithLabel(pub []byte, label string, content, signature []byte) error {
	msg, err := signContent(label, content)
	if err != nil {
		return fmt.Errorf("verify with label %q: %w", label, err)
	}
	if err := s.verify(pub, msg, signature); err != nil {
		return fmt.Errorf("verify with label %q: %w", label, err)
	}
	return nil
}

// encryptContext encodes EncryptContext = { opaque label<V>; opaque
// context<V> } (RFC 9420 §5.1.3), used as the HPKE info.
func encryptContext(label string, context []byte) ([]byte, error) {
	var b cryptobyte.Builder
	addOpaque(&b, mlsLabel(label))
	addOpaque(&b, context)
	return b.Bytes()
}

// EncryptWithLabel is RFC 9420 §5.1.3: HPKE SealBase with the
// EncryptContext as info and an empty aad.
func (s *CipherSuite) EncryptWithLabel(pub []byte, label string, context, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	info, err := encryptContext(label, context)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt with label %q: %w", label, err)
	}
	kemOutput, ciphertext, err = s.sealBase(pub, info, nil, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("encrypt with label %q: %w", label, err)
	}
	return kemOutput, ciphertext, nil
}

// DecryptWithLabel is RFC 9420 §5.1.3: HPKE OpenBase with the
// EncryptContext as info and an empty aad.
func (s *CipherSuite) DecryptWithLabel(priv []byte, label string, context, kemOutput, ciphertext []byte) ([]byte, error) {
	info, err := encryptContext(label, context)
	if err != nil {
		return nil, fmt.Errorf("decrypt with label %q: %w", label, err)
	}
	pt, err := s.openBase(kemOutput, priv, info, nil, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("decrypt with label %q: %w", label, err)
	}
	return pt, nil
}
