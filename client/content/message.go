package content

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// Version is the version byte of a Message and of an Intro
// (docs/protocol.md §11).
const Version = 1

// Sizes and limits of docs/protocol.md §11.
const (
	IDSize        = 16             // a content ID
	SendIDSize    = 32             // a mailbox send ID (wire.ID)
	MaxCheckpoint = 1<<16 - 1      // checkpoint<0..2^16-1>
	MaxBody       = 1<<24 - 1      // body<0..2^24-1>
	MaxText       = 1<<16 - 1      // bytes of UTF-8 in a text body
	MaxSealingKey = 1<<16 - 1      // sealing_key<1..2^16-1>
	MaxReceiptIDs = MaxIDsLen / 16 // 4095 content IDs in one receipt
	MaxIDsLen     = 1<<16 - 1      // ids<16..2^16-1>
)

// Kind says what a Message's body is (§11.1).
type Kind uint8

// Message kinds. Their numbers are part of the format: never renumber.
const (
	KindText    Kind = 1 // UTF-8 text
	KindMailbox Kind = 2 // the sender's per-conversation receive mailbox
	KindLeave   Kind = 3 // the sender asks to be removed; empty body
	KindReceipt Kind = 4 // delivery or read receipts
	KindCover   Kind = 5 // cover traffic: filler the recipient drops unread
)

func (k Kind) String() string {
	switch k {
	case KindText:
		return "text"
	case KindMailbox:
		return "mailbox"
	case KindLeave:
		return "leave"
	case KindReceipt:
		return "receipt"
	case KindCover:
		return "cover"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ReceiptType says what a Receipt acknowledges (§11.1).
type ReceiptType uint8

// Receipt types.
const (
	ReceiptDelivered ReceiptType = 1
	ReceiptRead      ReceiptType = 2
)

func (t ReceiptType) String() string {
	switch t {
	case ReceiptDelivered:
		return "delivered"
	case ReceiptRead:
		return "read"
	}
	return fmt.Sprintf("receipt(%d)", uint8(t))
}

// Message is the MLS application data of every conversation message
// (docs/protocol.md §11.1). Exactly the body field of its Kind is set:
// Text for KindText, Mailbox for KindMailbox, Receipt for KindReceipt,
// Filler (possibly empty) for KindCover, none for KindLeave.
type Message struct {
	Kind Kind
	// ID is a random content ID, for deduplication and receipts (NewID).
	// Its second half is the mark of SkippedBefore when that is set.
	ID [IDSize]byte
	// Seq counts the sender's messages in the conversation from 1.
	Seq uint64
	// SkippedBefore says that the number Seq-1 may never have been sent:
	// the sender skipped it after a restart (docs/adr/0045-restart-numbers.md).
	// It is carried in ID (§11.1), not in a byte of its own, so that a
	// client that does not know it still reads the message; Marshal
	// refuses a message whose ID disagrees with it.
	SkippedBefore bool
	// SentAt is the sender's clock, in Unix seconds.
	SentAt uint64
	// Checkpoint is the signed key-transparency checkpoint note (C2SP
	// signed note) the sender last verified, or nil. Parse does not
	// verify it.
	Checkpoint []byte

	Text    string
	Mailbox *MailboxAnnounce
	Receipt *Receipt
	// Filler is the body of a KindCover message: bytes that only give
	// the message the size of the real one it stands for. The sender
	// fills them with zeros; the recipient ignores them.
	Filler []byte
}

// MailboxAnnounce is the body of a KindMailbox message: the sender's
// per-conversation receive mailbox, as the others address it.
type MailboxAnnounce struct {
	SendID     [SendIDSize]byte
	SealingKey []byte // the mailbox's sealing public key, 1..MaxSealingKey bytes
}

// Receipt is the body of a KindReceipt message.
type Receipt struct {
	Type ReceiptType
	IDs  [][IDSize]byte // 1..MaxReceiptIDs content IDs
}

// skipLabel separates the hash of the SkippedBefore mark from any other.
const skipLabel = "qpc content id: the number before may be skipped\x00"

// skipMark is the second half of an ID whose message has SkippedBefore
// set: the first 8 bytes of SHA-256(skipLabel || the first half) (§11.1).
// A random ID carries it with probability 2^-64.
func skipMark(id *[IDSize]byte) [IDSize / 2]byte {
	h := sha256.Sum256(append([]byte(skipLabel), id[:IDSize/2]...))
	var out [IDSize / 2]byte
	copy(out[:], h[:])
	return out
}

// marked reports whether id carries the SkippedBefore mark.
func marked(id *[IDSize]byte) bool {
	mark := skipMark(id)
	return subtle.ConstantTimeCompare(mark[:], id[IDSize/2:]) == 1
}

// NewID draws a random content ID for a message whose SkippedBefore is
// skipped: with the mark, or, without it, one that does not carry it by
// chance.
func NewID(skipped bool) ([IDSize]byte, error) {
	var id [IDSize]byte
	for {
		if _, err := rand.Read(id[:]); err != nil {
			return id, fmt.Errorf("content: drawing an ID: %w", err)
		}
		if skipped {
			mark := skipMark(&id)
			copy(id[IDSize/2:], mark[:])
			return id, nil
		}
		if !marked(&id) {
			return id, nil
		}
	}
}

// Marshal encodes m as docs/protocol.md §11.1 lays it out. It fails with
// ErrMalformed for a message ParseMessage would refuse.
func (m *Message) Marshal() ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint8(uint8(m.Kind))
	b.AddBytes(m.ID[:])
	b.AddUint64(m.Seq)
	b.AddUint64(m.SentAt)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Checkpoint) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		switch m.Kind {
		case KindText:
			b.AddBytes([]byte(m.Text))
		case KindMailbox:
			m.Mailbox.marshal(b)
		case KindReceipt:
			b.AddUint8(uint8(m.Receipt.Type))
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
				for _, id := range m.Receipt.IDs {
					b.AddBytes(id[:])
				}
			})
		case KindCover:
			b.AddBytes(m.Filler)
		}
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, malformed("message: %v", err)
	}
	return out, nil
}

// ParseMessage decodes a Message (docs/protocol.md §11.1). It fails with
// ErrVersion for another version and ErrMalformed for anything else
// wrong, including trailing bytes.
func ParseMessage(b []byte) (*Message, error) {
	s := cryptobyte.String(b)
	var version, kind uint8
	if !s.ReadUint8(&version) {
		return nil, malformed("message: empty")
	}
	if version != Version {
		return nil, fmt.Errorf("%w: message version %d, want %d", ErrVersion, version, Version)
	}
	m := new(Message)
	var checkpoint, body cryptobyte.String
	if !s.ReadUint8(&kind) || !s.CopyBytes(m.ID[:]) || !s.ReadUint64(&m.Seq) || !s.ReadUint64(&m.SentAt) ||
		!s.ReadUint16LengthPrefixed(&checkpoint) || !s.ReadUint24LengthPrefixed(&body) {
		return nil, malformed("message: truncated")
	}
	if !s.Empty() {
		return nil, malformed("message: %d trailing bytes", len(s))
	}
	m.Kind = Kind(kind)
	m.SkippedBefore = marked(&m.ID)
	m.Checkpoint = clone(checkpoint)
	switch m.Kind {
	case KindText:
		m.Text = string(body)
	case KindMailbox:
		m.Mailbox = new(MailboxAnnounce)
		if !m.Mailbox.unmarshal(&body) {
			return nil, malformed("mailbox body: truncated")
		}
	case KindLeave:
	case KindReceipt:
		var t uint8
		var ids cryptobyte.String
		if !body.ReadUint8(&t) || !body.ReadUint16LengthPrefixed(&ids) {
			return nil, malformed("receipt body: truncated")
		}
		if len(ids)%IDSize != 0 {
			return nil, malformed("receipt: ids are %d bytes, not a multiple of %d", len(ids), IDSize)
		}
		m.Receipt = &Receipt{Type: ReceiptType(t)}
		for !ids.Empty() {
			var id [IDSize]byte
			ids.CopyBytes(id[:])
			m.Receipt.IDs = append(m.Receipt.IDs, id)
		}
	case KindCover:
		m.Filler = clone(body)
		body = nil
	default:
		return nil, malformed("message: unknown kind %d", kind)
	}
	if m.Kind != KindText && !body.Empty() {
		return nil, malformed("%s body: %d trailing bytes", m.Kind, len(body))
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return m, nil
}

// check applies the rules of §11.1 that Marshal and ParseMessage share.
func (m *Message) check() error {
	if m == nil {
		return malformed("message: nil")
	}
	if m.Seq == 0 {
		return malformed("message: seq 0 (sequence numbers start at 1)")
	}
	if m.SkippedBefore != marked(&m.ID) {
		return malformed("message: skipped-before %t, but the ID says %t", m.SkippedBefore, !m.SkippedBefore)
	}
	if len(m.Checkpoint) > MaxCheckpoint {
		return malformed("message: checkpoint of %d bytes exceeds %d", len(m.Checkpoint), MaxCheckpoint)
	}
	var hasText, hasMailbox, hasReceipt = m.Text != "", m.Mailbox != nil, m.Receipt != nil
	if m.Kind != KindCover && len(m.Filler) > 0 {
		return malformed("%s message: filler set", m.Kind)
	}
	var want bool // whether the body field of m.Kind is set
	switch m.Kind {
	case KindText:
		want = hasText && !hasMailbox && !hasReceipt
		if len(m.Text) > MaxText {
			return malformed("text: %d bytes exceeds %d", len(m.Text), MaxText)
		}
		if !utf8.ValidString(m.Text) {
			return malformed("text: not valid UTF-8")
		}
	case KindMailbox:
		want = !hasText && hasMailbox && !hasReceipt
		if want {
			if err := m.Mailbox.check(); err != nil {
				return err
			}
		}
	case KindLeave:
		want = !hasText && !hasMailbox && !hasReceipt
	case KindReceipt:
		want = !hasText && !hasMailbox && hasReceipt
		if want {
			if err := m.Receipt.check(); err != nil {
				return err
			}
		}
	case KindCover:
		want = !hasText && !hasMailbox && !hasReceipt
		if len(m.Filler) > MaxBody {
			return malformed("cover: %d bytes of filler exceeds %d", len(m.Filler), MaxBody)
		}
	default:
		return malformed("message: unknown kind %d", uint8(m.Kind))
	}
	if !want {
		if m.Kind == KindText && !hasText {
			return malformed("text: empty")
		}
		return malformed("%s message: wrong body fields set (text %t, mailbox %t, receipt %t)",
			m.Kind, hasText, hasMailbox, hasReceipt)
	}
	return nil
}

func (a *MailboxAnnounce) marshal(b *cryptobyte.Builder) {
	b.AddBytes(a.SendID[:])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(a.SealingKey) })
}

func (a *MailboxAnnounce) unmarshal(s *cryptobyte.String) bool {
	var key cryptobyte.String
	if !s.CopyBytes(a.SendID[:]) || !s.ReadUint16LengthPrefixed(&key) {
		return false
	}
	a.SealingKey = clone(key)
	return true
}

func (a *MailboxAnnounce) check() error {
	if len(a.SealingKey) == 0 || len(a.SealingKey) > MaxSealingKey {
		return malformed("mailbox: sealing key of %d bytes, want 1..%d", len(a.SealingKey), MaxSealingKey)
	}
	return nil
}

func (r *Receipt) check() error {
	if r.Type != ReceiptDelivered && r.Type != ReceiptRead {
		return malformed("receipt: unknown type %d", uint8(r.Type))
	}
	if len(r.IDs) == 0 || len(r.IDs) > MaxReceiptIDs {
		return malformed("receipt: %d ids, want 1..%d", len(r.IDs), MaxReceiptIDs)
	}
	return nil
}

// clone copies b, keeping nil for empty so that a parsed value compares
// equal to the one that was marshalled.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
