package mls

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Extension types of RFC 9420 §17.3, plus last_resort from the MLS
// extensions document (a key package that may be used more than once).
const (
	ExtensionTypeApplicationID        ExtensionType = 0x0001
	ExtensionTypeRatchetTree          ExtensionType = 0x0002
	ExtensionTypeRequiredCapabilities ExtensionType = 0x0003
	ExtensionTypeExternalPub          ExtensionType = 0x0004
	ExtensionTypeExternalSenders      ExtensionType = 0x0005
	ExtensionTypeLastResort           ExtensionType = 0x000A
)

// defaultExtension reports the extension types every client is assumed to
// support without listing them in its capabilities (RFC 9420 §7.2).
func defaultExtension(t ExtensionType) bool { return t >= 1 && t <= 5 }

// defaultProposal reports the proposal types every client supports
// (RFC 9420 §7.2): those RFC 9420 defines.
func defaultProposal(t ProposalType) bool { return t >= 1 && t <= 7 }

// Errors of key package and leaf validation.
var (
	// ErrInvalidKeyPackage: a KeyPackage fails §10.1 validation.
	ErrInvalidKeyPackage = errors.New("mls: invalid key package")
	// ErrUnsupportedCapability: a member or joiner lacks a capability the
	// group needs (§7.2, §11.1).
	ErrUnsupportedCapability = errors.New("mls: unsupported capability")
	// ErrMemberRejected: the application's MemberVerifier refused a
	// credential or signature key.
	ErrMemberRejected = errors.New("mls: member rejected by verifier")
)

func findExtension(exts []Extension, t ExtensionType) ([]byte, bool) {
	for _, e := range exts {
		if e.Type == t {
			return e.Data, true
		}
	}
	return nil, false
}

// uniqueExtensions rejects an extension list with a repeated type, which
// RFC 9420 §13 forbids in every extension list.
func uniqueExtensions(exts []Extension) error {
	seen := map[ExtensionType]bool{}
	for _, e := range exts {
		if seen[e.Type] {
			return fmt.Errorf("extension %d twice: %w", e.Type, ErrMalformed)
		}
		seen[e.Type] = true
	}
	return nil
}

// RequiredCapabilities is the required_capabilities extension
// (RFC 9420 §11.1): what every member of the group must support.
type RequiredCapabilities struct {
	Extensions  []ExtensionType
	Proposals   []ProposalType
	Credentials []CredentialType
}

// Marshal encodes the extension body.
func (r *RequiredCapabilities) Marshal() ([]byte, error) {
	return encode("RequiredCapabilities", func(b *cryptobyte.Builder) {
		addUint16List(b, r.Extensions)
		addUint16List(b, r.Proposals)
		addUint16List(b, r.Credentials)
	})
}

// Unmarshal decodes the extension body.
func (r *RequiredCapabilities) Unmarshal(data []byte) error {
	return decodeAll("RequiredCapabilities", data, func(s *cryptobyte.String) bool {
		return readUint16List(s, &r.Extensions) && readUint16List(s, &r.Proposals) && readUint16List(s, &r.Credentials)
	})
}

// ExternalSender is one entry of the external_senders extension
// (RFC 9420 §12.1.8.1): a non-member allowed to send proposals.
type ExternalSender struct {
	SignatureKey []byte
	Credential   Credential
}

// MarshalExternalSenders encodes the external_senders extension body.
func MarshalExternalSenders(list []ExternalSender) ([]byte, error) {
	return encode("ExternalSenders", func(b *cryptobyte.Builder) {
		addVector(b, func(b *cryptobyte.Builder) {
			for i := range list {
				addOpaque(b, list[i].SignatureKey)
				list[i].Credential.marshal(b)
			}
		})
	})
}

// UnmarshalExternalSenders decodes the external_senders extension body.
func UnmarshalExternalSenders(data []byte) ([]ExternalSender, error) {
	var out []ExternalSender
	err := decodeAll("ExternalSenders", data, func(s *cryptobyte.String) bool {
		return readList(s, func(v *cryptobyte.String) bool {
			var e ExternalSender
			if !readOpaque(v, &e.SignatureKey) || !e.Credential.unmarshal(v) {
				return false
			}
			out = append(out, e)
			return true
		})
	})
	return out, err
}

// marshalExternalPub encodes ExternalPub {HPKEPublicKey external_pub}
// (RFC 9420 §12.4.3.2).
func marshalExternalPub(pub []byte) []byte {
	var b cryptobyte.Builder
	addOpaque(&b, pub)
	return b.BytesOrPanic()
}

func unmarshalExternalPub(data []byte) ([]byte, error) {
	var pub []byte
	err := decodeAll("ExternalPub", data, func(s *cryptobyte.String) bool { return readOpaque(s, &pub) })
	return pub, err
}

// supportsCapabilities checks that a leaf can live in a group with these
// context extensions (RFC 9420 §7.2, §11.1): every extension, proposal and
// credential type the group requires, and every non-default extension
// present in the group context.
func supportsCapabilities(caps *Capabilities, ctxExts []Extension) error {
	for _, e := range ctxExts {
		if !defaultExtension(e.Type) && !slices.Contains(caps.Extensions, e.Type) {
			return fmt.Errorf("group extension %d: %w", e.Type, ErrUnsupportedCapability)
		}
	}
	data, ok := findExtension(ctxExts, ExtensionTypeRequiredCapabilities)
	if !ok {
		return nil
	}
	var rc RequiredCapabilities
	if err := rc.Unmarshal(data); err != nil {
		return err
	}
	for _, t := range rc.Extensions {
		if !defaultExtension(t) && !slices.Contains(caps.Extensions, t) {
			return fmt.Errorf("required extension %d: %w", t, ErrUnsupportedCapability)
		}
	}
	for _, t := range rc.Proposals {
		if !defaultProposal(t) && !slices.Contains(caps.Proposals, t) {
			return fmt.Errorf("required proposal %d: %w", t, ErrUnsupportedCapability)
		}
	}
	for _, t := range rc.Credentials {
		if !slices.Contains(caps.Credentials, t) {
			return fmt.Errorf("required credential %v: %w", t, ErrUnsupportedCapability)
		}
	}
	return nil
}

// leafCheck is the context a LeafNode is validated in (§7.3).
type leafCheck struct {
	suite   *CipherSuite
	groupID []byte
	leaf    uint32
	source  LeafNodeSource
	ctxExts []Extension
	tree    *ratchetTree // the tree the leaf will be in, for uniqueness
	now     time.Time    // zero: skip the lifetime check
	verify  MemberVerifier
}

// validateLeaf is RFC 9420 §7.3: the source is the one the context
// demands, the signature verifies, the capabilities cover the group, its
// own extensions and every credential type in the group (and the group's
// members support its credential type), the lifetime holds, and its keys
// are not already used by another member (leaf c.leaf itself excepted).
func validateLeaf(ln *LeafNode, c *leafCheck) error {
	if ln.Source != c.source {
		return fmt.Errorf("leaf source %v, want %v: %w", ln.Source, c.source, ErrInvalidLeafNode)
	}
	if err := verifyLeafSignature(c.suite, ln, c.groupID, c.leaf); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidLeafNode, err)
	}
	if err := uniqueExtensions(ln.Extensions); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidLeafNode, err)
	}
	if !slices.Contains(ln.Capabilities.CipherSuites, c.suite.ID) || !slices.Contains(ln.Capabilities.Versions, MLS10) {
		return fmt.Errorf("leaf lacks suite or version: %w", ErrUnsupportedCapability)
	}
	if !slices.Contains(ln.Capabilities.Credentials, ln.Credential.Type) {
		return fmt.Errorf("leaf lacks its own credential type: %w", ErrUnsupportedCapability)
	}
	for _, e := range ln.Extensions {
		if !defaultExtension(e.Type) && !slices.Contains(ln.Capabilities.Extensions, e.Type) {
			return fmt.Errorf("leaf extension %d not in its capabilities: %w", e.Type, ErrUnsupportedCapability)
		}
	}
	if err := supportsCapabilities(&ln.Capabilities, c.ctxExts); err != nil {
		return err
	}
	if ln.Source == LeafNodeSourceKeyPackage && !c.now.IsZero() {
		now := uint64(c.now.Unix())
		if now < ln.Lifetime.NotBefore || now > ln.Lifetime.NotAfter {
			return fmt.Errorf("leaf lifetime: %w", ErrInvalidLeafNode)
		}
	}
	if c.tree != nil {
		for _, i := range c.tree.members() {
			if i == c.leaf && c.source != LeafNodeSourceKeyPackage {
				continue
			}
			other := c.tree.leaf(i)
			if !slices.Contains(other.Capabilities.Credentials, ln.Credential.Type) ||
				!slices.Contains(ln.Capabilities.Credentials, other.Credential.Type) {
				return fmt.Errorf("credential types of leaf %d: %w", i, ErrUnsupportedCapability)
			}
			if bytes.Equal(other.SignatureKey, ln.SignatureKey) {
				return fmt.Errorf("signature key already at leaf %d: %w", i, ErrInvalidLeafNode)
			}
		}
		for x := range c.tree.nodes {
			if (uint32(x) != 2*c.leaf || c.source == LeafNodeSourceKeyPackage) && bytes.Equal(c.tree.encryptionKey(uint32(x)), ln.EncryptionKey) {
				return fmt.Errorf("encryption key already at node %d: %w", x, ErrInvalidLeafNode)
			}
		}
	}
	if c.verify != nil {
		if err := c.verify(ln.Credential, ln.SignatureKey); err != nil {
			return fmt.Errorf("%w: %w", ErrMemberRejected, err)
		}
	}
	return nil
}

// validateKeyPackage is RFC 9420 §10.1 for a KeyPackage offered to a group
// with suite s and context extensions ctxExts.
func validateKeyPackage(kp *KeyPackage, c *leafCheck) error {
	if kp.Version != MLS10 || kp.CipherSuite != c.suite.ID {
		return fmt.Errorf("version %d suite 0x%04x: %w", kp.Version, uint16(kp.CipherSuite), ErrInvalidKeyPackage)
	}
	tbs, err := kp.MarshalTBS()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	if err := c.suite.VerifyWithLabel(kp.LeafNode.SignatureKey, "KeyPackageTBS", tbs, kp.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	// The init key is used once for the Welcome; reusing the leaf key for it
	// would let the Welcome's decryption key outlive the join (§10.1).
	if bytes.Equal(kp.InitKey, kp.LeafNode.EncryptionKey) {
		return fmt.Errorf("init key equals encryption key: %w", ErrInvalidKeyPackage)
	}
	if err := uniqueExtensions(kp.Extensions); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	for _, e := range kp.Extensions {
		if !defaultExtension(e.Type) && e.Type != ExtensionTypeLastResort && !slices.Contains(kp.LeafNode.Capabilities.Extensions, e.Type) {
			return fmt.Errorf("key package extension %d not in capabilities: %w", e.Type, ErrInvalidKeyPackage)
		}
	}
	if err := validateLeaf(&kp.LeafNode, c); err != nil {
		return err
	}
	return nil
}

// IsLastResort reports whether the key package carries the last_resort
// extension: its owner may let it be used for more than one join, so the
// directory need not delete it after handing it out.
func (k *KeyPackage) IsLastResort() bool {
	_, ok := findExtension(k.Extensions, ExtensionTypeLastResort)
	return ok
}
