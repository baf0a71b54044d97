package wire

import (
	"crypto/ed25519"

	"github.com/quicprochat/qpc/padding"
	"golang.org/x/crypto/cryptobyte"
)

// Record kinds (docs/protocol.md §4). Requests travel client to server,
// responses server to client; a kind in the wrong direction is
// CodeUnknownKind. Never renumber.
const (
	KindClientHello   Kind = 0x01
	KindServerHello   Kind = 0x02
	KindCreateMailbox Kind = 0x10
	KindSend          Kind = 0x11
	KindFetch         Kind = 0x12
	KindSubscribe     Kind = 0x13
	KindAck           Kind = 0x14
	KindDeleteMailbox Kind = 0x15
	KindHealth        Kind = 0x16
	KindMailbox       Kind = 0x20
	KindSent          Kind = 0x21
	KindDelivery      Kind = 0x22
	KindFetchEnd      Kind = 0x23
	KindAcked         Kind = 0x24
	KindDone          Kind = 0x25
	KindHealthStatus  Kind = 0x26
	KindError         Kind = 0x7f
)

// Sizes fixed by version 1 (docs/protocol.md §4).
const (
	IDSize        = 32 // mailbox receive and send IDs
	MessageIDSize = 16 // client-chosen message ID
	OwnerKeySize  = ed25519.PublicKeySize
	SignatureSize = ed25519.SignatureSize
)

// SendsPerToken is how many Sends one delivery token pays for on the
// connection that spent it (docs/protocol.md §4.3, "Send allowance"): the
// Send that carries the token and SendsPerToken-1 further Sends on the same
// connection with an empty auth, within the token's validity.
const SendsPerToken = 8

// Hard limits on variable-length fields, whatever the server announces.
const (
	MaxAuthSize     = 4096 // the authorization blob on create and send
	MaxAckIDs       = 1024 // message IDs in one Ack
	MaxDetailSize   = 255  // error detail text
	MaxVersions     = 16   // versions a client may offer
	MaxFetchLimit   = 1024 // messages in one Fetch
	ProtocolVersion = 1
)

// ID is a mailbox receive or send ID.
type ID [IDSize]byte

// MessageID is the sender-chosen idempotency key of one message.
type MessageID [MessageIDSize]byte

// Message is one decoded record body.
type Message interface {
	Kind() Kind
	marshal(b *cryptobyte.Builder)
	unmarshal(s *cryptobyte.String) bool
}

// Signed is a request authorised by the mailbox owner key. The signature
// covers SignedPayload, which binds the TLS session (docs/protocol.md §5).
type Signed interface {
	Message
	Mailbox() ID
	signature() *[SignatureSize]byte
}

// ClientHello opens a connection (§4.1).
type ClientHello struct {
	Versions []uint16
}

// Limits are the server's announced limits (§4.1).
type Limits struct {
	MaxEnvelope   uint32 // largest envelope accepted by Send
	MaxFetch      uint16 // largest Fetch limit
	MaxAckIDs     uint16 // most message IDs in one Ack
	QuotaMessages uint32 // per-mailbox message quota, 0 = none
	QuotaBytes    uint64 // per-mailbox byte quota, 0 = none
	TTLSeconds    uint32 // how long undelivered messages are kept
}

// ServerHello answers ClientHello with the chosen version, the padding
// policy every record after the handshake uses, and the limits (§4.1).
type ServerHello struct {
	Version uint16
	Policy  padding.Policy
	Limits  Limits
}

// CreateMailbox asks for a new mailbox owned by OwnerKey (§4.2). The
// signature proves possession of the key; Auth is the authorization hook's
// input (empty until tokens exist).
type CreateMailbox struct {
	OwnerKey  [OwnerKeySize]byte
	Auth      []byte
	Signature [SignatureSize]byte
}

// MailboxCreated returns the two IDs of a new mailbox (§4.2).
type MailboxCreated struct {
	ReceiveID ID
	SendID    ID
}

// Send stores Envelope in the mailbox whose send ID is SendID (§4.3). It
// carries no account or session credential.
type Send struct {
	SendID    ID
	MessageID MessageID
	Auth      []byte
	Envelope  []byte
}

// Sent acknowledges a durable Send (§4.3).
type Sent struct {
	MessageID MessageID
	Duplicate bool
}

// Fetch lists stored messages after a cursor (§4.4).
type Fetch struct {
	ReceiveID ID
	After     uint64
	Limit     uint16
	Signature [SignatureSize]byte
}

// Subscribe delivers stored messages after a cursor, then pushes new ones
// on the same stream until either side closes it (§4.5).
type Subscribe struct {
	ReceiveID ID
	After     uint64
	Signature [SignatureSize]byte
}

// Delivery carries one stored message to its mailbox owner (§4.4).
type Delivery struct {
	Seq        uint64
	MessageID  MessageID
	ReceivedAt uint64 // Unix seconds, coarse
	Envelope   []byte
}

// FetchEnd closes a Fetch, or marks the end of a Subscribe backlog (§4.4).
type FetchEnd struct {
	More bool
}

// Ack deletes delivered messages (§4.6).
type Ack struct {
	ReceiveID  ID
	MessageIDs []MessageID
	Signature  [SignatureSize]byte
}

// Acked reports how many of an Ack's messages were deleted now (§4.6).
type Acked struct {
	Deleted uint16
}

// DeleteMailbox removes a mailbox and everything in it (§4.7).
type DeleteMailbox struct {
	ReceiveID ID
	Signature [SignatureSize]byte
}

// Done is the empty success response (§4.7).
type Done struct{}

// Health asks whether the server is serving (§4.8).
type Health struct{}

// HealthStatus answers Health (§4.8).
type HealthStatus struct {
	Status uint8 // 0 serving, 1 draining
}

// Health status values.
const (
	StatusServing  = 0
	StatusDraining = 1
)

// ErrorMessage is the Error record (§6).
type ErrorMessage struct {
	Code   Code
	Detail string
}

func (*ClientHello) Kind() Kind    { return KindClientHello }
func (*ServerHello) Kind() Kind    { return KindServerHello }
func (*CreateMailbox) Kind() Kind  { return KindCreateMailbox }
func (*MailboxCreated) Kind() Kind { return KindMailbox }
func (*Send) Kind() Kind           { return KindSend }
func (*Sent) Kind() Kind           { return KindSent }
func (*Fetch) Kind() Kind          { return KindFetch }
func (*Subscribe) Kind() Kind      { return KindSubscribe }
func (*Delivery) Kind() Kind       { return KindDelivery }
func (*FetchEnd) Kind() Kind       { return KindFetchEnd }
func (*Ack) Kind() Kind            { return KindAck }
func (*Acked) Kind() Kind          { return KindAcked }
func (*DeleteMailbox) Kind() Kind  { return KindDeleteMailbox }
func (*Done) Kind() Kind           { return KindDone }
func (*Health) Kind() Kind         { return KindHealth }
func (*HealthStatus) Kind() Kind   { return KindHealthStatus }
func (*ErrorMessage) Kind() Kind   { return KindError }

// Err converts an Error record into a Go error.
func (m *ErrorMessage) Err() *Error { return &Error{Code: m.Code, Detail: m.Detail} }

func (m *Fetch) Mailbox() ID         { return m.ReceiveID }
func (m *Subscribe) Mailbox() ID     { return m.ReceiveID }
func (m *Ack) Mailbox() ID           { return m.ReceiveID }
func (m *DeleteMailbox) Mailbox() ID { return m.ReceiveID }

func (m *Fetch) signature() *[SignatureSize]byte         { return &m.Signature }
func (m *Subscribe) signature() *[SignatureSize]byte     { return &m.Signature }
func (m *Ack) signature() *[SignatureSize]byte           { return &m.Signature }
func (m *DeleteMailbox) signature() *[SignatureSize]byte { return &m.Signature }
