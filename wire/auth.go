package wire

import (
	"crypto/ed25519"

	"golang.org/x/crypto/cryptobyte"
)

// Session binding (docs/protocol.md §5). Every owner-signed request signs
// the TLS exporter value of its connection, so a request seen once cannot
// be replayed on another connection, by the server or anyone else.
const (
	// ExporterLabel is the RFC 8446 §7.5 exporter label; the exported
	// value is BindingSize bytes with an empty context.
	ExporterLabel = "EXPORTER-qpc/1 mailbox auth"
	BindingSize   = 32
	signContext   = "qpc/1 mailbox request\x00"
)

// signable is a request with an owner signature over its other fields.
type signable interface {
	Message
	marshalUnsigned(b *cryptobyte.Builder)
	signature() *[SignatureSize]byte
}

func (m *CreateMailbox) signature() *[SignatureSize]byte { return &m.Signature }

var (
	_ signable = (*CreateMailbox)(nil)
	_ signable = (*Fetch)(nil)
	_ signable = (*Subscribe)(nil)
	_ signable = (*Ack)(nil)
	_ signable = (*DeleteMailbox)(nil)
)

// signedPayload is context || binding || kind || body without signature.
func signedPayload(binding []byte, m signable) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddBytes([]byte(signContext))
	b.AddBytes(binding)
	b.AddUint8(uint8(m.Kind()))
	m.marshalUnsigned(&b)
	return b.Bytes()
}

// Sign fills in the owner signature of a CreateMailbox, Fetch, Subscribe,
// Ack or DeleteMailbox request for the connection whose exporter value is
// binding.
func Sign(m Message, key ed25519.PrivateKey, binding []byte) error {
	s, ok := m.(signable)
	if !ok {
		return Errorf(CodeProtocol, "%s carries no owner signature", kindName(m.Kind()))
	}
	payload, err := signedPayload(binding, s)
	if err != nil {
		return Errorf(CodeTooLarge, "sign %s: %v", kindName(m.Kind()), err)
	}
	copy(s.signature()[:], ed25519.Sign(key, payload))
	return nil
}

// Verify checks an owner signature against owner and the connection's
// binding. A CreateMailbox is checked against its own OwnerKey.
func Verify(m Message, owner ed25519.PublicKey, binding []byte) bool {
	s, ok := m.(signable)
	if !ok || len(owner) != ed25519.PublicKeySize || len(binding) != BindingSize {
		return false
	}
	payload, err := signedPayload(binding, s)
	return err == nil && ed25519.Verify(owner, payload, s.signature()[:])
}
