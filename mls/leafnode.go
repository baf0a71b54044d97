package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Capabilities lists what a client supports (RFC 9420 §7.2). Every list is
// kept verbatim, unknown code points included: advertising values this
// implementation does not know (GREASE, §13.5, or later extensions) is
// legitimate and they must survive a round trip.
type Capabilities struct {
	Versions     []ProtocolVersion
	CipherSuites []CipherSuiteID
	Extensions   []ExtensionType
	Proposals    []ProposalType
	Credentials  []CredentialType
}

// Marshal encodes the capabilities.
func (c *Capabilities) Marshal() ([]byte, error) { return encode("Capabilities", c.marshal) }

// Unmarshal decodes capabilities; trailing bytes are an error.
func (c *Capabilities) Unmarshal(data []byte) error {
	return decodeAll("Capabilities", data, c.unmarshal)
}

func (c *Capabilities) marshal(b *cryptobyte.Builder) {
	addUint16List(b, c.Versions)
	addUint16List(b, c.CipherSuites)
	addUint16List(b, c.Extensions)
	addUint16List(b, c.Proposals)
	addUint16List(b, c.Credentials)
}

func (c *Capabilities) unmarshal(s *cryptobyte.String) bool {
	return readUint16List(s, &c.Versions) && readUint16List(s, &c.CipherSuites) &&
		readUint16List(s, &c.Extensions) && readUint16List(s, &c.Proposals) &&
		readUint16List(s, &c.Credentials)
}

// Lifetime bounds a key package's validity in seconds since the Unix epoch
// (RFC 9420 §7.2).
type Lifetime struct {
	NotBefore uint64
	NotAfter  uint64
}

// Marshal encodes the lifetime.
func (l *Lifetime) Marshal() ([]byte, error) { return encode("Lifetime", l.marshal) }

// Unmarshal decodes a lifetime; trailing bytes are an error.
func (l *Lifetime) Unmarshal(data []byte) error { return decodeAll("Lifetime", data, l.unmarshal) }

func (l *Lifetime) marshal(b *cryptobyte.Builder) {
	b.AddUint64(l.NotBefore)
	b.AddUint64(l.NotAfter)
}

func (l *Lifetime) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint64(&l.NotBefore) && s.ReadUint64(&l.NotAfter)
}

// LeafNodeSource says how a leaf node was created (RFC 9420 §7.2). A closed
// enumeration whose arms differ in shape: only 1..3 are valid.
type LeafNodeSource uint8

// Leaf node sources of RFC 9420 §7.2.
const (
	LeafNodeSourceKeyPackage LeafNodeSource = 1
	LeafNodeSourceUpdate     LeafNodeSource = 2
	LeafNodeSourceCommit     LeafNodeSource = 3
)

func (l LeafNodeSource) String() string {
	switch l {
	case LeafNodeSourceKeyPackage:
		return "key_package"
	case LeafNodeSourceUpdate:
		return "update"
	case LeafNodeSourceCommit:
		return "commit"
	}
	return fmt.Sprintf("LeafNodeSource(%d)", uint8(l))
}

// LeafNode is a member's leaf in the ratchet tree (RFC 9420 §7.2). Lifetime
// is present only for source key_package and ParentHash only for source
// commit; they must be nil/empty otherwise.
type LeafNode struct {
	EncryptionKey []byte // HPKEPublicKey
	SignatureKey  []byte // SignaturePublicKey
	Credential    Credential
	Capabilities  Capabilities
	Source        LeafNodeSource
	Lifetime      *Lifetime // source == key_package
	ParentHash    []byte    // source == commit
	Extensions    []Extension
	Signature     []byte
}

// Marshal encodes the leaf node.
func (l *LeafNode) Marshal() ([]byte, error) { return encode("LeafNode", l.marshal) }

// Unmarshal decodes a leaf node; trailing bytes are an error.
func (l *LeafNode) Unmarshal(data []byte) error { return decodeAll("LeafNode", data, l.unmarshal) }

// marshalContent encodes the fields LeafNode and LeafNodeTBS share:
// everything up to and including extensions.
func (l *LeafNode) marshalContent(b *cryptobyte.Builder) {
	addOpaque(b, l.EncryptionKey)
	addOpaque(b, l.SignatureKey)
	l.Credential.marshal(b)
	l.Capabilities.marshal(b)
	switch l.Source {
	case LeafNodeSourceKeyPackage:
		if l.Lifetime == nil || len(l.ParentHash) != 0 {
			invalidf(b, "key_package leaf needs exactly a lifetime")
			return
		}
		b.AddUint8(uint8(l.Source))
		l.Lifetime.marshal(b)
	case LeafNodeSourceUpdate:
		if l.Lifetime != nil || len(l.ParentHash) != 0 {
			invalidf(b, "update leaf has neither lifetime nor parent hash")
			return
		}
		b.AddUint8(uint8(l.Source))
	case LeafNodeSourceCommit:
		if l.Lifetime != nil {
			invalidf(b, "commit leaf has no lifetime")
			return
		}
		b.AddUint8(uint8(l.Source))
		addOpaque(b, l.ParentHash)
	default:
		invalidf(b, "%v", l.Source)
		return
	}
	marshalExtensions(b, l.Extensions)
}

func (l *LeafNode) marshal(b *cryptobyte.Builder) {
	l.marshalContent(b)
	addOpaque(b, l.Signature)
}

func (l *LeafNode) unmarshal(s *cryptobyte.String) bool {
	*l = LeafNode{}
	var src uint8
	if !readOpaque(s, &l.EncryptionKey) || !readOpaque(s, &l.SignatureKey) ||
		!l.Credential.unmarshal(s) || !l.Capabilities.unmarshal(s) || !s.ReadUint8(&src) {
		return false
	}
	l.Source = LeafNodeSource(src)
	switch l.Source {
	case LeafNodeSourceKeyPackage:
		l.Lifetime = new(Lifetime)
		if !l.Lifetime.unmarshal(s) {
			return false
		}
	case LeafNodeSourceUpdate:
	case LeafNodeSourceCommit:
		if !readOpaque(s, &l.ParentHash) {
			return false
		}
	default:
		return false
	}
	return unmarshalExtensions(s, &l.Extensions) && readOpaque(s, &l.Signature)
}

// MarshalTBS encodes LeafNodeTBS (RFC 9420 §7.2), the input to
// SignWithLabel(., "LeafNodeTBS", .). Leaves from updates and commits are
// bound to their group and position, so groupID and leafIndex are appended
// for those sources; for key_package leaves they are ignored.
func (l *LeafNode) MarshalTBS(groupID []byte, leafIndex uint32) ([]byte, error) {
	return encode("LeafNodeTBS", func(b *cryptobyte.Builder) {
		l.marshalContent(b)
		if l.Source == LeafNodeSourceUpdate || l.Source == LeafNodeSourceCommit {
			addOpaque(b, groupID)
			b.AddUint32(leafIndex)
		}
	})
}
