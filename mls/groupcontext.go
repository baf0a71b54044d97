package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// ProtocolVersion is the MLS protocol version (RFC 9420 §6); mls10 = 1.
type ProtocolVersion uint16

// MLS10 is the only protocol version RFC 9420 defines.
const MLS10 ProtocolVersion = 1

// ExtensionType identifies an extension (RFC 9420 §13.3, §17.3).
type ExtensionType uint16

// Extension is one entry of an extension list (RFC 9420 §7.2).
type Extension struct {
	Type ExtensionType
	Data []byte
}

func marshalExtensions(b *cryptobyte.Builder, exts []Extension) {
	addVector(b, func(b *cryptobyte.Builder) {
		for _, e := range exts {
			b.AddUint16(uint16(e.Type))
			addOpaque(b, e.Data)
		}
	})
}

func unmarshalExtensions(s *cryptobyte.String, out *[]Extension) bool {
	var v cryptobyte.String
	if !readVector(s, &v) {
		return false
	}
	var exts []Extension
	for !v.Empty() {
		var e Extension
		var t uint16
		if !v.ReadUint16(&t) || !readOpaque(&v, &e.Data) {
			return false
		}
		e.Type = ExtensionType(t)
		exts = append(exts, e)
	}
	*out = exts
	return true
}

// GroupContext is the shared state every member of an epoch agrees on
// (RFC 9420 §8.1).
type GroupContext struct {
	Version                 ProtocolVersion
	CipherSuite             CipherSuiteID
	GroupID                 []byte
	Epoch                   uint64
	TreeHash                []byte
	ConfirmedTranscriptHash []byte
	Extensions              []Extension
}

// CipherSuiteID is the two-byte cipher suite code point (RFC 9420 §17.1).
type CipherSuiteID uint16

// Marshal encodes the group context in its TLS presentation form.
func (gc *GroupContext) Marshal() ([]byte, error) {
	var b cryptobyte.Builder
	gc.marshal(&b)
	return b.Bytes()
}

func (gc *GroupContext) marshal(b *cryptobyte.Builder) {
	b.AddUint16(uint16(gc.Version))
	b.AddUint16(uint16(gc.CipherSuite))
	addOpaque(b, gc.GroupID)
	b.AddUint64(gc.Epoch)
	addOpaque(b, gc.TreeHash)
	addOpaque(b, gc.ConfirmedTranscriptHash)
	marshalExtensions(b, gc.Extensions)
}

// Unmarshal decodes a group context; trailing bytes are an error.
func (gc *GroupContext) Unmarshal(data []byte) error {
	s := cryptobyte.String(data)
	if !gc.unmarshal(&s) || !s.Empty() {
		return fmt.Errorf("group context: %w", ErrMalformed)
	}
	return nil
}

func (gc *GroupContext) unmarshal(s *cryptobyte.String) bool {
	var version, suite uint16
	if !s.ReadUint16(&version) || !s.ReadUint16(&suite) ||
		!readOpaque(s, &gc.GroupID) || !s.ReadUint64(&gc.Epoch) ||
		!readOpaque(s, &gc.TreeHash) || !readOpaque(s, &gc.ConfirmedTranscriptHash) ||
		!unmarshalExtensions(s, &gc.Extensions) {
		return false
	}
	gc.Version, gc.CipherSuite = ProtocolVersion(version), CipherSuiteID(suite)
	return true
}
