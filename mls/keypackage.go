package mls

import "golang.org/x/crypto/cryptobyte"

// KeyPackageTBS is the signed part of a KeyPackage (RFC 9420 §10): what
// SignWithLabel(., "KeyPackageTBS", .) covers. Version is kept as sent;
// §10.1 makes a mismatch with the group a validation failure, not a parse
// failure.
type KeyPackageTBS struct {
	Version     ProtocolVersion
	CipherSuite CipherSuiteID
	InitKey     []byte // HPKEPublicKey
	LeafNode    LeafNode
	Extensions  []Extension
}

// Marshal encodes the to-be-signed key package.
func (k *KeyPackageTBS) Marshal() ([]byte, error) { return encode("KeyPackageTBS", k.marshal) }

// Unmarshal decodes a to-be-signed key package; trailing bytes are an error.
func (k *KeyPackageTBS) Unmarshal(data []byte) error {
	return decodeAll("KeyPackageTBS", data, k.unmarshal)
}

func (k *KeyPackageTBS) marshal(b *cryptobyte.Builder) {
	b.AddUint16(uint16(k.Version))
	b.AddUint16(uint16(k.CipherSuite))
	addOpaque(b, k.InitKey)
	k.LeafNode.marshal(b)
	marshalExtensions(b, k.Extensions)
}

func (k *KeyPackageTBS) unmarshal(s *cryptobyte.String) bool {
	var v, cs uint16
	if !s.ReadUint16(&v) || !s.ReadUint16(&cs) || !readOpaque(s, &k.InitKey) ||
		!k.LeafNode.unmarshal(s) || !unmarshalExtensions(s, &k.Extensions) {
		return false
	}
	k.Version, k.CipherSuite = ProtocolVersion(v), CipherSuiteID(cs)
	return true
}

// KeyPackage is a client's signed offer to be added to a group
// (RFC 9420 §10): KeyPackageTBS followed by its signature.
type KeyPackage struct {
	KeyPackageTBS
	Signature []byte
}

// Marshal encodes the key package.
func (k *KeyPackage) Marshal() ([]byte, error) { return encode("KeyPackage", k.marshal) }

// Unmarshal decodes a key package; trailing bytes are an error.
func (k *KeyPackage) Unmarshal(data []byte) error { return decodeAll("KeyPackage", data, k.unmarshal) }

func (k *KeyPackage) marshal(b *cryptobyte.Builder) {
	k.KeyPackageTBS.marshal(b)
	addOpaque(b, k.Signature)
}

func (k *KeyPackage) unmarshal(s *cryptobyte.String) bool {
	return k.KeyPackageTBS.unmarshal(s) && readOpaque(s, &k.Signature)
}

// MarshalTBS encodes the signed part of the key package.
func (k *KeyPackage) MarshalTBS() ([]byte, error) { return k.KeyPackageTBS.Marshal() }
