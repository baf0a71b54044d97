package mls

import (
	"bytes"

	"golang.org/x/crypto/cryptobyte"
)

// PathSecret is the path secret a new member needs for the lowest common
// ancestor with the committer (RFC 9420 §12.4.3.1).
type PathSecret struct {
	PathSecret []byte
}

// Marshal encodes the path secret.
func (p *PathSecret) Marshal() ([]byte, error) { return encode("PathSecret", p.marshal) }

// Unmarshal decodes a path secret; trailing bytes are an error.
func (p *PathSecret) Unmarshal(data []byte) error { return decodeAll("PathSecret", data, p.unmarshal) }

func (p *PathSecret) marshal(b *cryptobyte.Builder)       { addOpaque(b, p.PathSecret) }
func (p *PathSecret) unmarshal(s *cryptobyte.String) bool { return readOpaque(s, &p.PathSecret) }

// GroupSecrets is the plaintext HPKE-encrypted to each new member in a
// Welcome (RFC 9420 §12.4.3.1). PathSecret is optional<PathSecret>.
type GroupSecrets struct {
	JoinerSecret []byte
	PathSecret   *PathSecret
	PSKs         []PreSharedKeyID
}

// Marshal encodes the group secrets.
func (g *GroupSecrets) Marshal() ([]byte, error) { return encode("GroupSecrets", g.marshal) }

// Unmarshal decodes group secrets; trailing bytes are an error.
func (g *GroupSecrets) Unmarshal(data []byte) error {
	return decodeAll("GroupSecrets", data, g.unmarshal)
}

func (g *GroupSecrets) marshal(b *cryptobyte.Builder) {
	addOpaque(b, g.JoinerSecret)
	addOptional(b, g.PathSecret != nil)
	if g.PathSecret != nil {
		g.PathSecret.marshal(b)
	}
	addVector(b, func(b *cryptobyte.Builder) {
		for i := range g.PSKs {
			g.PSKs[i].marshal(b)
		}
	})
}

func (g *GroupSecrets) unmarshal(s *cryptobyte.String) bool {
	*g = GroupSecrets{}
	var present bool
	if !readOpaque(s, &g.JoinerSecret) || !readOptional(s, &present) {
		return false
	}
	if present {
		g.PathSecret = new(PathSecret)
		if !g.PathSecret.unmarshal(s) {
			return false
		}
	}
	return readList(s, func(v *cryptobyte.String) bool {
		var p PreSharedKeyID
		if !p.unmarshal(v) {
			return false
		}
		g.PSKs = append(g.PSKs, p)
		return true
	})
}

// EncryptedGroupSecrets addresses GroupSecrets to one new member, named by
// the KeyPackageRef of the key package it was added with
// (RFC 9420 §12.4.3.1).
type EncryptedGroupSecrets struct {
	NewMember             []byte // KeyPackageRef (HashReference, §5.2)
	EncryptedGroupSecrets HPKECiphertext
}

// Marshal encodes the entry.
func (e *EncryptedGroupSecrets) Marshal() ([]byte, error) {
	return encode("EncryptedGroupSecrets", e.marshal)
}

// Unmarshal decodes an entry; trailing bytes are an error.
func (e *EncryptedGroupSecrets) Unmarshal(data []byte) error {
	return decodeAll("EncryptedGroupSecrets", data, e.unmarshal)
}

func (e *EncryptedGroupSecrets) marshal(b *cryptobyte.Builder) {
	addOpaque(b, e.NewMember)
	e.EncryptedGroupSecrets.marshal(b)
}

func (e *EncryptedGroupSecrets) unmarshal(s *cryptobyte.String) bool {
	return readOpaque(s, &e.NewMember) && e.EncryptedGroupSecrets.unmarshal(s)
}

// Welcome brings new members into a group (RFC 9420 §12.4.3.1): per-member
// encrypted secrets and the GroupInfo encrypted under the welcome key.
type Welcome struct {
	CipherSuite        CipherSuiteID
	Secrets            []EncryptedGroupSecrets
	EncryptedGroupInfo []byte
}

// Marshal encodes the welcome (without the MLSMessage header).
func (w *Welcome) Marshal() ([]byte, error) { return encode("Welcome", w.marshal) }

// Unmarshal decodes a welcome; trailing bytes are an error.
func (w *Welcome) Unmarshal(data []byte) error { return decodeAll("Welcome", data, w.unmarshal) }

func (w *Welcome) marshal(b *cryptobyte.Builder) {
	b.AddUint16(uint16(w.CipherSuite))
	addVector(b, func(b *cryptobyte.Builder) {
		for i := range w.Secrets {
			w.Secrets[i].marshal(b)
		}
	})
	addOpaque(b, w.EncryptedGroupInfo)
}

func (w *Welcome) unmarshal(s *cryptobyte.String) bool {
	*w = Welcome{}
	var cs uint16
	if !s.ReadUint16(&cs) {
		return false
	}
	w.CipherSuite = CipherSuiteID(cs)
	return readList(s, func(v *cryptobyte.String) bool {
		var e EncryptedGroupSecrets
		if !e.unmarshal(v) {
			return false
		}
		w.Secrets = append(w.Secrets, e)
		return true
	}) && readOpaque(s, &w.EncryptedGroupInfo)
}

// GroupInfoTBS is the signed part of a GroupInfo (RFC 9420 §12.4.3): what
// SignWithLabel(., "GroupInfoTBS", .) covers.
type GroupInfoTBS struct {
	GroupContext    GroupContext
	Extensions      []Extension
	ConfirmationTag []byte // MAC
	Signer          uint32 // leaf index of the signer
}

// Marshal encodes the to-be-signed group info.
func (g *GroupInfoTBS) Marshal() ([]byte, error) { return encode("GroupInfoTBS", g.marshal) }

// Unmarshal decodes a to-be-signed group info; trailing bytes are an error.
func (g *GroupInfoTBS) Unmarshal(data []byte) error {
	return decodeAll("GroupInfoTBS", data, g.unmarshal)
}

func (g *GroupInfoTBS) marshal(b *cryptobyte.Builder) {
	g.GroupContext.marshal(b)
	marshalExtensions(b, g.Extensions)
	addOpaque(b, g.ConfirmationTag)
	b.AddUint32(g.Signer)
}

func (g *GroupInfoTBS) unmarshal(s *cryptobyte.String) bool {
	return g.GroupContext.unmarshal(s) && unmarshalExtensions(s, &g.Extensions) &&
		readOpaque(s, &g.ConfirmationTag) && s.ReadUint32(&g.Signer)
}

// GroupInfo describes an epoch to joiners (RFC 9420 §12.4.3): the group
// context, extensions (e.g. ratchet_tree, external_pub), the confirmation
// tag, and the signer's signature over GroupInfoTBS.
type GroupInfo struct {
	GroupInfoTBS
	Signature []byte
}

// Marshal encodes the group info (without the MLSMessage header).
func (g *GroupInfo) Marshal() ([]byte, error) { return encode("GroupInfo", g.marshal) }

// Unmarshal decodes a group info; trailing bytes are an error.
func (g *GroupInfo) Unmarshal(data []byte) error { return decodeAll("GroupInfo", data, g.unmarshal) }

func (g *GroupInfo) marshal(b *cryptobyte.Builder) {
	g.GroupInfoTBS.marshal(b)
	addOpaque(b, g.Signature)
}

func (g *GroupInfo) unmarshal(s *cryptobyte.String) bool {
	return g.GroupInfoTBS.unmarshal(s) && readOpaque(s, &g.Signature)
}

// MarshalTBS encodes the signed part of the group info.
func (g *GroupInfo) MarshalTBS() ([]byte, error) { return g.GroupInfoTBS.Marshal() }

// WelcomeFor returns the Welcome MLSMessage welcome cut down to what the
// member added with key package ref needs: its own EncryptedGroupSecrets
// and the encrypted GroupInfo. A joiner opens only the entry addressed to
// its KeyPackageRef (RFC 9420 §12.4.3.1); the others are of no use to it,
// and with X-Wing each is about 1.2 KB, so a Welcome to 127 members sent
// whole to each of them would carry 127 such entries 127 times. Nothing
// signed or hashed covers the list (the GroupInfo is signed; the Welcome
// is not part of the transcript). A ref with no entry is ErrWelcomeNotForUs.
func WelcomeFor(welcome, ref []byte) ([]byte, error) {
	var m MLSMessage
	if err := m.Unmarshal(welcome); err != nil {
		return nil, err
	}
	if m.WireFormat != WireFormatWelcome {
		return nil, ErrUnexpectedMessage
	}
	w := *m.Welcome
	w.Secrets = nil
	for _, e := range m.Welcome.Secrets {
		if bytes.Equal(e.NewMember, ref) {
			w.Secrets = append(w.Secrets, e)
			break
		}
	}
	if len(w.Secrets) == 0 {
		return nil, ErrWelcomeNotForUs
	}
	m.Welcome = &w
	return m.Marshal()
}
