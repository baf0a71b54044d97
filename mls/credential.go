package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// CredentialType identifies a credential format (RFC 9420 §5.3, §17.5).
//
// The IANA registry is extensible and unknown values are kept as they are
// inside Capabilities lists. A Credential of an unknown type, though, has an
// undelimited body (its layout belongs to the defining extension), so
// Credential decoding rejects it as malformed: a member cannot validate a
// credential it cannot parse anyway (§5.3.1).
type CredentialType uint16

// Credential types defined by RFC 9420 §5.3.
const (
	CredentialTypeBasic CredentialType = 1
	CredentialTypeX509  CredentialType = 2
)

func (t CredentialType) String() string {
	switch t {
	case CredentialTypeBasic:
		return "basic"
	case CredentialTypeX509:
		return "x509"
	}
	return fmt.Sprintf("CredentialType(%d)", uint16(t))
}

// Credential binds an identity to a signature key (RFC 9420 §5.3). Identity
// is used by basic credentials; Certificates (each cert_data, DER, end
// entity first) by x509 credentials. The other arm must be empty.
type Credential struct {
	Type         CredentialType
	Identity     []byte
	Certificates [][]byte
}

// Marshal encodes the credential.
func (c *Credential) Marshal() ([]byte, error) { return encode("Credential", c.marshal) }

// Unmarshal decodes a credential; trailing bytes are an error.
func (c *Credential) Unmarshal(data []byte) error { return decodeAll("Credential", data, c.unmarshal) }

func (c *Credential) marshal(b *cryptobyte.Builder) {
	switch c.Type {
	case CredentialTypeBasic:
		if len(c.Certificates) != 0 {
			invalidf(b, "basic credential with certificates")
			return
		}
		b.AddUint16(uint16(c.Type))
		addOpaque(b, c.Identity)
	case CredentialTypeX509:
		if len(c.Identity) != 0 {
			invalidf(b, "x509 credential with identity")
			return
		}
		b.AddUint16(uint16(c.Type))
		addVector(b, func(b *cryptobyte.Builder) {
			for _, cert := range c.Certificates {
				addOpaque(b, cert)
			}
		})
	default:
		invalidf(b, "%v", c.Type)
	}
}

func (c *Credential) unmarshal(s *cryptobyte.String) bool {
	var t uint16
	if !s.ReadUint16(&t) {
		return false
	}
	*c = Credential{Type: CredentialType(t)}
	switch c.Type {
	case CredentialTypeBasic:
		return readOpaque(s, &c.Identity)
	case CredentialTypeX509:
		return readList(s, func(v *cryptobyte.String) bool {
			var cert []byte
			if !readOpaque(v, &cert) {
				return false
			}
			c.Certificates = append(c.Certificates, cert)
			return true
		})
	}
	return false
}
