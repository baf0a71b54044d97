package wire

import (
	"fmt"

	"github.com/quicprochat/qpc/padding"
	"golang.org/x/crypto/cryptobyte"
)

// Encode returns the body of m's record.
func Encode(m Message) ([]byte, error) {
	var b cryptobyte.Builder
	m.marshal(&b)
	body, err := b.Bytes()
	if err != nil {
		return nil, Errorf(CodeTooLarge, "encode %T: %v", m, err)
	}
	return body, nil
}

// Decode parses a record body of the given kind. Unknown kinds are
// CodeUnknownKind; bodies that do not parse exactly, with no trailing
// bytes, are CodeProtocol, and so is a length beyond a hard limit inside a
// body (auth, versions, Ack IDs), since such a body cannot be parsed; a
// Fetch limit outside 1..MaxFetchLimit is CodeTooLarge.
func Decode(kind Kind, body []byte) (Message, error) {
	m := newMessage(kind)
	if m == nil {
		return nil, Errorf(CodeUnknownKind, "record kind 0x%02x", uint8(kind))
	}
	s := cryptobyte.String(body)
	if !m.unmarshal(&s) || !s.Empty() {
		return nil, Errorf(CodeProtocol, "malformed %s body", kindName(kind))
	}
	if err := validate(m); err != nil {
		return nil, err
	}
	return m, nil
}

func newMessage(kind Kind) Message {
	switch kind {
	case KindClientHello:
		return new(ClientHello)
	case KindServerHello:
		return new(ServerHello)
	case KindCreateMailbox:
		return new(CreateMailbox)
	case KindMailbox:
		return new(MailboxCreated)
	case KindSend:
		return new(Send)
	case KindSent:
		return new(Sent)
	case KindFetch:
		return new(Fetch)
	case KindSubscribe:
		return new(Subscribe)
	case KindDelivery:
		return new(Delivery)
	case KindFetchEnd:
		return new(FetchEnd)
	case KindAck:
		return new(Ack)
	case KindAcked:
		return new(Acked)
	case KindDeleteMailbox:
		return new(DeleteMailbox)
	case KindDone:
		return new(Done)
	case KindHealth:
		return new(Health)
	case KindHealthStatus:
		return new(HealthStatus)
	case KindError:
		return new(ErrorMessage)
	case KindAccountRequest:
		return new(AccountRequest)
	case KindAccountReply:
		return new(AccountReply)
	case KindTokenKeys:
		return new(TokenKeys)
	case KindTokenKeyList:
		return new(TokenKeyList)
	case KindIssueTokens:
		return new(IssueTokens)
	case KindTokensIssued:
		return new(TokensIssued)
	case KindTokenQuota:
		return new(TokenQuota)
	case KindTokenQuotaStatus:
		return new(TokenQuotaStatus)
	}
	if m := newKTMessage(kind); m != nil {
		return m
	}
	return newKeyPackageMessage(kind)
}

// IsRequest reports whether kind travels client to server.
func IsRequest(kind Kind) bool {
	switch kind {
	case KindClientHello, KindCreateMailbox, KindSend, KindFetch, KindSubscribe,
		KindAck, KindDeleteMailbox, KindHealth, KindAccountRequest, KindTokenKeys, KindIssueTokens, KindTokenQuota:
		return true
	}
	return isKTRequest(kind) || isKeyPackageRequest(kind)
}

// KindName is the name of kind's message type as docs/protocol.md spells
// it ("Send", "KTPublish"), or "kind 0x.." for a kind this version does
// not know.
func KindName(k Kind) string { return kindName(k) }

func kindName(k Kind) string {
	if m := newMessage(k); m != nil {
		return fmt.Sprintf("%T", m)[len("*wire."):]
	}
	return fmt.Sprintf("kind 0x%02x", uint8(k))
}

// validate applies limits that the grammar alone does not express.
func validate(m Message) error {
	switch m := m.(type) {
	case *ClientHello:
		if len(m.Versions) == 0 {
			return Errorf(CodeProtocol, "ClientHello offers no version")
		}
	case *Fetch:
		if m.Limit == 0 || m.Limit > MaxFetchLimit {
			return Errorf(CodeTooLarge, "fetch limit %d outside 1..%d", m.Limit, MaxFetchLimit)
		}
	case *Ack:
		if len(m.MessageIDs) == 0 {
			return Errorf(CodeProtocol, "Ack names no message")
		}
	}
	return nil
}

// §4.1
func (m *ClientHello) marshal(b *cryptobyte.Builder) {
	// Encoders enforce the decoders' limits, so nothing we send is a
	// record the peer must refuse.
	if len(m.Versions) == 0 || len(m.Versions) > MaxVersions {
		b.SetError(fmt.Errorf("ClientHello offers %d versions, want 1..%d", len(m.Versions), MaxVersions))
		return
	}
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, v := range m.Versions {
			b.AddUint16(v)
		}
	})
}

func (m *ClientHello) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || len(v)%2 != 0 || len(v)/2 > MaxVersions {
		return false
	}
	m.Versions = make([]uint16, 0, len(v)/2)
	for !v.Empty() {
		var x uint16
		v.ReadUint16(&x)
		m.Versions = append(m.Versions, x)
	}
	return true
}

// §4.1
func (m *ServerHello) marshal(b *cryptobyte.Builder) {
	b.AddUint16(m.Version)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, size := range m.Policy.Buckets() {
			b.AddUint32(uint32(size))
		}
	})
	b.AddUint32(m.Limits.MaxEnvelope)
	b.AddUint16(m.Limits.MaxFetch)
	b.AddUint16(m.Limits.MaxAckIDs)
	b.AddUint32(m.Limits.QuotaMessages)
	b.AddUint64(m.Limits.QuotaBytes)
	b.AddUint32(m.Limits.TTLSeconds)
}

func (m *ServerHello) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint16(&m.Version) || !s.ReadUint8LengthPrefixed(&v) || len(v)%4 != 0 {
		return false
	}
	var sizes []int
	for !v.Empty() {
		var x uint32
		v.ReadUint32(&x)
		sizes = append(sizes, int(x))
	}
	p, err := padding.NewPolicy(sizes...)
	if err != nil {
		return false
	}
	m.Policy = p
	l := &m.Limits
	return s.ReadUint32(&l.MaxEnvelope) && s.ReadUint16(&l.MaxFetch) && s.ReadUint16(&l.MaxAckIDs) &&
		s.ReadUint32(&l.QuotaMessages) && s.ReadUint64(&l.QuotaBytes) && s.ReadUint32(&l.TTLSeconds)
}

// §4.2
func (m *CreateMailbox) marshal(b *cryptobyte.Builder) {
	m.marshalUnsigned(b)
	b.AddBytes(m.Signature[:])
}

func (m *CreateMailbox) marshalUnsigned(b *cryptobyte.Builder) {
	b.AddBytes(m.OwnerKey[:])
	addAuth(b, m.Auth)
}

func (m *CreateMailbox) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.OwnerKey[:]) && readAuth(s, &m.Auth) && s.CopyBytes(m.Signature[:])
}

func (m *MailboxCreated) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.ReceiveID[:])
	b.AddBytes(m.SendID[:])
}

func (m *MailboxCreated) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.ReceiveID[:]) && s.CopyBytes(m.SendID[:])
}

// §4.3
func (m *Send) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.SendID[:])
	b.AddBytes(m.MessageID[:])
	addAuth(b, m.Auth)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Envelope) })
}

func (m *Send) unmarshal(s *cryptobyte.String) bool {
	var env cryptobyte.String
	if !s.CopyBytes(m.SendID[:]) || !s.CopyBytes(m.MessageID[:]) || !readAuth(s, &m.Auth) ||
		!s.ReadUint24LengthPrefixed(&env) {
		return false
	}
	m.Envelope = append([]byte(nil), env...)
	return true
}

func (m *Sent) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.MessageID[:])
	addBool(b, m.Duplicate)
}

func (m *Sent) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.MessageID[:]) && readBool(s, &m.Duplicate)
}

// §4.4
func (m *Fetch) marshal(b *cryptobyte.Builder) {
	m.marshalUnsigned(b)
	b.AddBytes(m.Signature[:])
}

func (m *Fetch) marshalUnsigned(b *cryptobyte.Builder) {
	b.AddBytes(m.ReceiveID[:])
	b.AddUint64(m.After)
	b.AddUint16(m.Limit)
}

func (m *Fetch) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.ReceiveID[:]) && s.ReadUint64(&m.After) && s.ReadUint16(&m.Limit) &&
		s.CopyBytes(m.Signature[:])
}

func (m *Delivery) marshal(b *cryptobyte.Builder) {
	b.AddUint64(m.Seq)
	b.AddBytes(m.MessageID[:])
	b.AddUint64(m.ReceivedAt)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Envelope) })
}

func (m *Delivery) unmarshal(s *cryptobyte.String) bool {
	var env cryptobyte.String
	if !s.ReadUint64(&m.Seq) || !s.CopyBytes(m.MessageID[:]) || !s.ReadUint64(&m.ReceivedAt) ||
		!s.ReadUint24LengthPrefixed(&env) {
		return false
	}
	m.Envelope = append([]byte(nil), env...)
	return true
}

func (m *FetchEnd) marshal(b *cryptobyte.Builder)       { addBool(b, m.More) }
func (m *FetchEnd) unmarshal(s *cryptobyte.String) bool { return readBool(s, &m.More) }

// §4.5
func (m *Subscribe) marshal(b *cryptobyte.Builder) {
	m.marshalUnsigned(b)
	b.AddBytes(m.Signature[:])
}

func (m *Subscribe) marshalUnsigned(b *cryptobyte.Builder) {
	b.AddBytes(m.ReceiveID[:])
	b.AddUint64(m.After)
}

func (m *Subscribe) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.ReceiveID[:]) && s.ReadUint64(&m.After) && s.CopyBytes(m.Signature[:])
}

// §4.6
func (m *Ack) marshal(b *cryptobyte.Builder) {
	m.marshalUnsigned(b)
	b.AddBytes(m.Signature[:])
}

func (m *Ack) marshalUnsigned(b *cryptobyte.Builder) {
	if len(m.MessageIDs) == 0 || len(m.MessageIDs) > MaxAckIDs {
		b.SetError(fmt.Errorf("Ack names %d messages, want 1..%d", len(m.MessageIDs), MaxAckIDs))
		return
	}
	b.AddBytes(m.ReceiveID[:])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, id := range m.MessageIDs {
			b.AddBytes(id[:])
		}
	})
}

func (m *Ack) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.CopyBytes(m.ReceiveID[:]) || !s.ReadUint16LengthPrefixed(&v) ||
		len(v)%MessageIDSize != 0 || len(v)/MessageIDSize > MaxAckIDs {
		return false
	}
	m.MessageIDs = make([]MessageID, len(v)/MessageIDSize)
	for i := range m.MessageIDs {
		v.CopyBytes(m.MessageIDs[i][:])
	}
	return s.CopyBytes(m.Signature[:])
}

func (m *Acked) marshal(b *cryptobyte.Builder)       { b.AddUint16(m.Deleted) }
func (m *Acked) unmarshal(s *cryptobyte.String) bool { return s.ReadUint16(&m.Deleted) }

// §4.7
func (m *DeleteMailbox) marshal(b *cryptobyte.Builder) {
	m.marshalUnsigned(b)
	b.AddBytes(m.Signature[:])
}

func (m *DeleteMailbox) marshalUnsigned(b *cryptobyte.Builder) { b.AddBytes(m.ReceiveID[:]) }

func (m *DeleteMailbox) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.ReceiveID[:]) && s.CopyBytes(m.Signature[:])
}

func (*Done) marshal(*cryptobyte.Builder)         {}
func (*Done) unmarshal(*cryptobyte.String) bool   { return true }
func (*Health) marshal(*cryptobyte.Builder)       {}
func (*Health) unmarshal(*cryptobyte.String) bool { return true }

// §4.8
func (m *HealthStatus) marshal(b *cryptobyte.Builder) { b.AddUint8(m.Status) }
func (m *HealthStatus) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint8(&m.Status) && m.Status <= StatusDraining
}

// §6
func (m *ErrorMessage) marshal(b *cryptobyte.Builder) {
	detail := m.Detail
	if len(detail) > MaxDetailSize {
		detail = detail[:MaxDetailSize]
	}
	b.AddUint16(uint16(m.Code))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(detail)) })
}

func (m *ErrorMessage) unmarshal(s *cryptobyte.String) bool {
	var code uint16
	var d cryptobyte.String
	if !s.ReadUint16(&code) || !s.ReadUint8LengthPrefixed(&d) {
		return false
	}
	m.Code, m.Detail = Code(code), string(d)
	return true
}

func addAuth(b *cryptobyte.Builder, auth []byte) {
	if len(auth) > MaxAuthSize {
		b.SetError(fmt.Errorf("auth of %d bytes exceeds %d", len(auth), MaxAuthSize))
		return
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(auth) })
}

func readAuth(s *cryptobyte.String, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) || len(v) > MaxAuthSize {
		return false
	}
	*out = append([]byte(nil), v...)
	return true
}

func addBool(b *cryptobyte.Builder, v bool) {
	if v {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
}

func readBool(s *cryptobyte.String, v *bool) bool {
	var x uint8
	if !s.ReadUint8(&x) || x > 1 {
		return false
	}
	*v = x == 1
	return true
}
