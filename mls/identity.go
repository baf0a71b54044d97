package mls

import (
	"fmt"
	"time"
)

// MemberVerifier is the application's hook to vet a member before the
// group accepts it: it is called with the credential and signature key of
// every leaf this client learns about — group members when joining, added
// members, and leaves replaced by updates and commits. qpc clients check
// the pair against key transparency here; returning an error rejects the
// whole message or Welcome (RFC 9420 §5.3.1: the application authenticates
// credentials, MLS only carries them).
type MemberVerifier func(cred Credential, signatureKey []byte) error

// Identity is a member's long-term signing identity in one cipher suite: a
// basic credential carrying the user's handle and the signature key pair
// bound to it (RFC 9420 §5.3).
type Identity struct {
	Suite         CipherSuiteID
	Credential    Credential
	SignaturePub  []byte
	SignaturePriv []byte
}

// NewBasicIdentity creates a fresh signature key pair and a basic
// credential whose identity is handle.
func NewBasicIdentity(suite CipherSuiteID, handle []byte) (*Identity, error) {
	s, err := LookupCipherSuite(suite)
	if err != nil {
		return nil, err
	}
	pub, priv, err := s.GenerateSignatureKeyPair()
	if err != nil {
		return nil, err
	}
	return &Identity{
		Suite:        suite,
		Credential:   Credential{Type: CredentialTypeBasic, Identity: append([]byte(nil), handle...)},
		SignaturePub: pub, SignaturePriv: priv,
	}, nil
}

// KeyPackageOptions tunes NewKeyPackage; the zero value is fine.
type KeyPackageOptions struct {
	// Lifetime is how long the key package is valid; default 90 days.
	Lifetime time.Duration
	// LastResort marks the key package as reusable (last_resort extension).
	LastResort bool
	// Now is the creation time; default time.Now.
	Now func() time.Time
}

// KeyPackagePrivate is a KeyPackage with the private keys its owner needs
// to join with it: the init key (opens the Welcome) and the leaf
// encryption key. Keep it secret; publish only KeyPackage.
type KeyPackagePrivate struct {
	KeyPackage     KeyPackage
	InitPriv       []byte
	EncryptionPriv []byte
	Identity       *Identity
}

// defaultCapabilities advertises what this package implements.
func defaultCapabilities(suite CipherSuiteID) Capabilities {
	return Capabilities{
		Versions:     []ProtocolVersion{MLS10},
		CipherSuites: []CipherSuiteID{suite},
		Extensions:   []ExtensionType{ExtensionTypeLastResort},
		Credentials:  []CredentialType{CredentialTypeBasic},
	}
}

// NewKeyPackage creates and signs a KeyPackage (RFC 9420 §10) for id with
// fresh init and leaf key pairs.
func NewKeyPackage(id *Identity, opts *KeyPackageOptions) (*KeyPackagePrivate, error) {
	s, err := LookupCipherSuite(id.Suite)
	if err != nil {
		return nil, err
	}
	var o KeyPackageOptions
	if opts != nil {
		o = *opts
	}
	if o.Lifetime == 0 {
		o.Lifetime = 90 * 24 * time.Hour
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	initPub, initPriv, err := s.GenerateHPKEKeyPair()
	if err != nil {
		return nil, err
	}
	encPub, encPriv, err := s.GenerateHPKEKeyPair()
	if err != nil {
		return nil, err
	}
	// A small allowance for clock skew between the creator and the group.
	nb := now.Add(-time.Hour)
	ln := LeafNode{
		EncryptionKey: encPub, SignatureKey: id.SignaturePub, Credential: id.Credential,
		Capabilities: defaultCapabilities(id.Suite), Source: LeafNodeSourceKeyPackage,
		Lifetime: &Lifetime{NotBefore: uint64(nb.Unix()), NotAfter: uint64(now.Add(o.Lifetime).Unix())},
	}
	if err := signLeaf(s, &ln, id.SignaturePriv, nil, 0); err != nil {
		return nil, fmt.Errorf("key package leaf: %w", err)
	}
	kp := KeyPackage{KeyPackageTBS: KeyPackageTBS{Version: MLS10, CipherSuite: id.Suite, InitKey: initPub, LeafNode: ln}}
	if o.LastResort {
		kp.Extensions = []Extension{{Type: ExtensionTypeLastResort, Data: nil}}
	}
	tbs, err := kp.MarshalTBS()
	if err != nil {
		return nil, err
	}
	if kp.Signature, err = s.SignWithLabel(id.SignaturePriv, "KeyPackageTBS", tbs); err != nil {
		return nil, err
	}
	return &KeyPackagePrivate{KeyPackage: kp, InitPriv: initPriv, EncryptionPriv: encPriv, Identity: id}, nil
}

// ValidateKeyPackage checks a KeyPackage as a group of suite would before
// adding it (RFC 9420 §10.1): version and suite, its signature and its
// leaf's, init key distinct from the leaf key, lifetime at now,
// capabilities.
func ValidateKeyPackage(kp *KeyPackage, suite CipherSuiteID, now time.Time) error {
	s, err := LookupCipherSuite(suite)
	if err != nil {
		return err
	}
	return validateKeyPackage(kp, &leafCheck{suite: s, source: LeafNodeSourceKeyPackage, now: now})
}

// Ref returns the KeyPackageRef (RFC 9420 §5.2) that Welcome messages use
// to address this key package.
func (k *KeyPackage) Ref() ([]byte, error) {
	s, err := LookupCipherSuite(k.CipherSuite)
	if err != nil {
		return nil, err
	}
	data, err := k.Marshal()
	if err != nil {
		return nil, err
	}
	return s.MakeKeyPackageRef(data), nil
}
