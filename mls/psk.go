package mls

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// ErrTooManyPSKs is returned when more PSKs are given than PSKLabel's
// uint16 index and count can describe (RFC 9420 §8.4).
var ErrTooManyPSKs = errors.New("mls: too many PSKs")

// PSKInput is one pre-shared key injected into an epoch: its identifier,
// as carried in a PreSharedKey proposal or GroupSecrets, and its value.
type PSKInput struct {
	ID  PreSharedKeyID
	PSK []byte
}

// ExternalPSKID returns the PreSharedKeyID of an external PSK
// (RFC 9420 §8.4, psktype = external).
func ExternalPSKID(pskID, nonce []byte) PreSharedKeyID {
	return PreSharedKeyID{PSKType: PSKTypeExternal, PSKID: pskID, PSKNonce: nonce}
}

// ResumptionPSKID returns the PreSharedKeyID of a resumption PSK, the
// resumption_psk of epoch `epoch` of group `groupID` (RFC 9420 §8.4, §8.6).
func ResumptionPSKID(usage ResumptionPSKUsage, groupID []byte, epoch uint64, nonce []byte) PreSharedKeyID {
	return PreSharedKeyID{
		PSKType: PSKTypeResumption, Usage: usage,
		PSKGroupID: groupID, PSKEpoch: epoch, PSKNonce: nonce,
	}
}

// PSKSecret combines the PSKs of an epoch into psk_secret (RFC 9420 §8.4):
//
//	psk_extracted_[i] = KDF.Extract(0, psk_[i])
//	psk_input_[i]     = ExpandWithLabel(psk_extracted_[i], "derived psk", PSKLabel_[i], Nh)
//	psk_secret_[i]    = KDF.Extract(psk_input_[i], psk_secret_[i-1])
//
// with psk_secret_[0] the all-zero Nh-byte vector. PSKLabel = {
// PreSharedKeyID id; uint16 index; uint16 count } binds each PSK to its
// position, so the same PSKs in another order or subset give another
// secret. With no PSKs the result is the zero vector.
func (s *CipherSuite) PSKSecret(psks []PSKInput) ([]byte, error) {
	if len(psks) > 0xffff {
		return nil, fmt.Errorf("psk secret of %d PSKs: %w", len(psks), ErrTooManyPSKs)
	}
	secret := make([]byte, s.nh)
	zeroSalt := make([]byte, s.nh)
	for i, p := range psks {
		id, err := p.ID.Marshal()
		if err != nil {
			return nil, fmt.Errorf("psk secret: %w", err)
		}
		var b cryptobyte.Builder
		b.AddBytes(id)
		b.AddUint16(uint16(i))
		b.AddUint16(uint16(len(psks)))
		label, err := b.Bytes()
		if err != nil {
			return nil, fmt.Errorf("psk secret: %w", err)
		}
		extracted := s.Extract(zeroSalt, p.PSK)
		input := s.mustExpandWithLabel(extracted, "derived psk", label, s.nh)
		secret = s.Extract(input, secret)
	}
	return secret, nil
}
