package mls

import (
	"fmt"
)

// EpochSecrets holds the outputs of one run of the key schedule
// (RFC 9420 §8, Table 4). Each secret is Nh bytes.
type EpochSecrets struct {
	JoinerSecret  []byte
	WelcomeSecret []byte
	EpochSecret   []byte

	SenderDataSecret   []byte
	EncryptionSecret   []byte
	ExporterSecret     []byte
	ExternalSecret     []byte
	ConfirmationKey    []byte
	MembershipKey      []byte
	ResumptionPSK      []byte
	EpochAuthenticator []byte
	// InitSecret is the init_secret of the next epoch.
	InitSecret []byte
}

// JoinerSecret is RFC 9420 §8: the secret a Welcome carries to new
// members, ExpandWithLabel(Extract(init_secret, commit_secret), "joiner",
// GroupContext_[n], Nh). It binds the new group context.
func (s *CipherSuite) JoinerSecret(initSecret, commitSecret []byte, gc *GroupContext) ([]byte, error) {
	ctx, err := gc.Marshal()
	if err != nil {
		return nil, fmt.Errorf("joiner secret: %w", err)
	}
	prk := s.Extract(initSecret, commitSecret)
	return s.mustExpandWithLabel(prk, "joiner", ctx, s.nh), nil
}

// EpochFromJoiner runs the rest of the key schedule from a joiner secret,
// as a new member does after decrypting a Welcome (RFC 9420 §8, §12.4.3.1).
func (s *CipherSuite) EpochFromJoiner(joinerSecret, pskSecret []byte, gc *GroupContext) (*EpochSecrets, error) {
	ctx, err := gc.Marshal()
	if err != nil {
		return nil, fmt.Errorf("key schedule: %w", err)
	}
	return s.epochFromJoiner(joinerSecret, pskSecret, ctx), nil
}

func (s *CipherSuite) epochFromJoiner(joinerSecret, pskSecret, ctx []byte) *EpochSecrets {
	if len(pskSecret) == 0 {
		// No PSKs: psk_secret is the all-zero vector of length Nh (§8.4).
		pskSecret = make([]byte, s.nh)
	}
	member := s.Extract(joinerSecret, pskSecret)
	e := &EpochSecrets{
		JoinerSecret:  joinerSecret,
		WelcomeSecret: s.DeriveSecret(member, "welcome"),
		EpochSecret:   s.mustExpandWithLabel(member, "epoch", ctx, s.nh),
	}
	e.SenderDataSecret = s.DeriveSecret(e.EpochSecret, "sender data")
	e.EncryptionSecret = s.DeriveSecret(e.EpochSecret, "encryption")
	e.ExporterSecret = s.DeriveSecret(e.EpochSecret, "exporter")
	e.ExternalSecret = s.DeriveSecret(e.EpochSecret, "external")
	e.ConfirmationKey = s.DeriveSecret(e.EpochSecret, "confirm")
	e.MembershipKey = s.DeriveSecret(e.EpochSecret, "membership")
	e.ResumptionPSK = s.DeriveSecret(e.EpochSecret, "resumption")
	e.EpochAuthenticator = s.DeriveSecret(e.EpochSecret, "authentication")
	e.InitSecret = s.DeriveSecret(e.EpochSecret, "init")
	return e
}

// DeriveEpoch runs the full key schedule of RFC 9420 §8 for the epoch
// described by gc, from the previous epoch's init_secret, the commit
// secret, and the psk_secret (nil or empty for "no PSKs").
func (s *CipherSuite) DeriveEpoch(initSecret, commitSecret, pskSecret []byte, gc *GroupContext) (*EpochSecrets, error) {
	ctx, err := gc.Marshal()
	if err != nil {
		return nil, fmt.Errorf("key schedule: %w", err)
	}
	if len(commitSecret) == 0 {
		// A commit without a path contributes the zero vector (§8).
		commitSecret = make([]byte, s.nh)
	}
	joiner := s.mustExpandWithLabel(s.Extract(initSecret, commitSecret), "joiner", ctx, s.nh)
	return s.epochFromJoiner(joiner, pskSecret, ctx), nil
}

// ExternalKeyPair is the HPKE key pair that external joiners encrypt to
// (RFC 9420 §8, §12.4.3.2): DeriveKeyPair(external_secret).
func (s *CipherSuite) ExternalKeyPair(externalSecret []byte) (pub, priv []byte, err error) {
	pub, priv, err = s.DeriveKeyPair(externalSecret)
	if err != nil {
		return nil, nil, fmt.Errorf("external key pair: %w", err)
	}
	return pub, priv, nil
}

// Exporter is MLS-Exporter (RFC 9420 §8.5): ExpandWithLabel(
// DeriveSecret(exporter_secret, label), "exported", Hash(context), length).
// Hashing the context lets applications pass arbitrarily long contexts.
func (s *CipherSuite) Exporter(exporterSecret []byte, label string, context []byte, length int) ([]byte, error) {
	out, err := s.ExpandWithLabel(s.DeriveSecret(exporterSecret, label), "exported", s.Hash(context), length)
	if err != nil {
		return nil, fmt.Errorf("mls exporter: %w", err)
	}
	return out, nil
}

// ConfirmationTag is RFC 9420 §6.1: MAC(confirmation_key,
// confirmed_transcript_hash), proving agreement on the new epoch.
func (s *CipherSuite) ConfirmationTag(confirmationKey, confirmedTranscriptHash []byte) []byte {
	return s.MAC(confirmationKey, confirmedTranscriptHash)
}

// VerifyConfirmationTag checks a confirmation tag in constant time.
func (s *CipherSuite) VerifyConfirmationTag(confirmationKey, confirmedTranscriptHash, tag []byte) bool {
	return s.VerifyMAC(confirmationKey, confirmedTranscriptHash, tag)
}
