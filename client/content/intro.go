package content

import (
	"fmt"
	"unicode/utf8"

	"github.com/quicprochat/qpc/account"
	"golang.org/x/crypto/cryptobyte"
)

// Limits of an Intro (docs/protocol.md §11.2).
const (
	MaxName    = 255       // bytes of UTF-8 in a group name
	MaxWelcome = 1<<24 - 1 // welcome<1..2^24-1>
	MaxRoster  = 1000      // members in a roster
)

// ConvKind says what kind of conversation an Intro introduces.
type ConvKind uint8

// Conversation kinds. Their numbers are part of the format.
const (
	ConvDirect ConvKind = 1 // two people; no name
	ConvGroup  ConvKind = 2 // a group; its name may be empty
)

func (k ConvKind) String() string {
	switch k {
	case ConvDirect:
		return "direct"
	case ConvGroup:
		return "group"
	}
	return fmt.Sprintf("conv_kind(%d)", uint8(k))
}

// Intro is the content of a sealed envelope of type
// sealed.ContentMLSWelcome (docs/protocol.md §11.2): the MLS Welcome that
// adds the recipient to a conversation, sent to the recipient's intro
// mailbox on first contact or to a new group member's mailbox.
type Intro struct {
	ConvKind ConvKind
	// Name is the group name (UTF-8, at most MaxName bytes); empty for
	// ConvDirect.
	Name string
	// Welcome is the MLSMessage carrying the Welcome (RFC 9420 §12.4.3.1),
	// 1..MaxWelcome bytes; not parsed here.
	Welcome []byte
	// Roster holds the per-conversation mailboxes of the members known to
	// the sender, at most MaxRoster, each handle once; nil if none.
	Roster []Member
	// Checkpoint is the signed key-transparency checkpoint note the sender
	// last verified, or nil.
	Checkpoint []byte
	// Admins is the group's admin list (docs/protocol.md §11.6) as the
	// sender knows it, at most MaxRoster handles; nil (and then not
	// encoded) for the creator alone.
	Admins []string
}

// Member is one roster entry of an Intro: a member's handle and the
// per-conversation mailbox to send it the conversation's messages.
type Member struct {
	Handle     string // a username, see ValidHandle
	SendID     [SendIDSize]byte
	SealingKey []byte // 1..MaxSealingKey bytes
}

// ValidHandle reports why h is not a valid roster handle, or nil; the
// error wraps ErrMalformed and, like every error here, does not contain
// the handle, so that it can be logged. A handle
// is a username in its one canonical spelling: the rule of
// account.NormalizeUsername (3 to 32 bytes of a-z, 0-9, '.', '_', '-'),
// with no upper case to fold.
func ValidHandle(h string) error {
	n, err := account.NormalizeUsername(h)
	if err != nil || n != h {
		return malformed("handle is not %d..%d bytes of [a-z0-9._-]", account.MinUsernameLen, account.MaxUsernameLen)
	}
	return nil
}

// Marshal encodes in as docs/protocol.md §11.2 lays it out. It fails with
// ErrMalformed for an Intro ParseIntro would refuse.
func (in *Intro) Marshal() ([]byte, error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(Version)
	b.AddUint8(uint8(in.ConvKind))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(in.Name)) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(in.Welcome) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, m := range in.Roster {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.Handle)) })
			b.AddBytes(m.SendID[:])
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.SealingKey) })
		}
	})
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(in.Checkpoint) })
	if len(in.Admins) > 0 {
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, h := range in.Admins {
				b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h)) })
			}
		})
	}
	out, err := b.Bytes()
	if err != nil {
		return nil, malformed("intro: %v", err)
	}
	return out, nil
}

// ParseIntro decodes an Intro (docs/protocol.md §11.2). It fails with
// ErrVersion for another version and ErrMalformed for anything else
// wrong, including trailing bytes.
func ParseIntro(b []byte) (*Intro, error) {
	s := cryptobyte.String(b)
	var version, kind uint8
	if !s.ReadUint8(&version) {
		return nil, malformed("intro: empty")
	}
	if version != Version {
		return nil, fmt.Errorf("%w: intro version %d, want %d", ErrVersion, version, Version)
	}
	var name, welcome, roster, checkpoint cryptobyte.String
	if !s.ReadUint8(&kind) || !s.ReadUint8LengthPrefixed(&name) || !s.ReadUint24LengthPrefixed(&welcome) ||
		!s.ReadUint24LengthPrefixed(&roster) || !s.ReadUint16LengthPrefixed(&checkpoint) {
		return nil, malformed("intro: truncated")
	}
	var adminList []string
	if !s.Empty() {
		// The optional admin list (§11.6), then nothing.
		var list cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&list) || !s.Empty() || list.Empty() {
			return nil, malformed("intro: %d trailing bytes", len(s))
		}
		for !list.Empty() {
			var h cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&h) || len(adminList) == MaxRoster {
				return nil, malformed("intro: admin list truncated or too long")
			}
			adminList = append(adminList, string(h))
		}
	}
	in := &Intro{
		Admins:     adminList,
		ConvKind:   ConvKind(kind),
		Name:       string(name),
		Welcome:    clone(welcome),
		Checkpoint: clone(checkpoint),
	}
	for !roster.Empty() {
		if len(in.Roster) == MaxRoster {
			return nil, malformed("intro: roster has more than %d members", MaxRoster)
		}
		var m Member
		var handle, key cryptobyte.String
		if !roster.ReadUint8LengthPrefixed(&handle) || !roster.CopyBytes(m.SendID[:]) ||
			!roster.ReadUint16LengthPrefixed(&key) {
			return nil, malformed("intro: roster member %d truncated", len(in.Roster))
		}
		m.Handle = string(handle)
		m.SealingKey = clone(key)
		in.Roster = append(in.Roster, m)
	}
	if err := in.check(); err != nil {
		return nil, err
	}
	return in, nil
}

// check applies the rules of §11.2 that Marshal and ParseIntro share.
func (in *Intro) check() error {
	if in == nil {
		return malformed("intro: nil")
	}
	switch in.ConvKind {
	case ConvDirect:
		if in.Name != "" {
			return malformed("intro: direct conversation with a name")
		}
	case ConvGroup:
	default:
		return malformed("intro: unknown conv_kind %d", uint8(in.ConvKind))
	}
	if len(in.Name) > MaxName || !utf8.ValidString(in.Name) {
		return malformed("intro: name is not 0..%d bytes of UTF-8", MaxName)
	}
	if len(in.Welcome) == 0 || len(in.Welcome) > MaxWelcome {
		return malformed("intro: welcome of %d bytes, want 1..%d", len(in.Welcome), MaxWelcome)
	}
	if len(in.Roster) > MaxRoster {
		return malformed("intro: roster of %d members exceeds %d", len(in.Roster), MaxRoster)
	}
	seen := make(map[string]bool, len(in.Roster))
	for i, m := range in.Roster {
		if err := ValidHandle(m.Handle); err != nil {
			return fmt.Errorf("intro: roster member %d: %w", i, err)
		}
		if seen[m.Handle] {
			return malformed("intro: roster member %d repeats a handle", i)
		}
		seen[m.Handle] = true
		if len(m.SealingKey) == 0 || len(m.SealingKey) > MaxSealingKey {
			return malformed("intro: roster member %d: sealing key of %d bytes, want 1..%d", i, len(m.SealingKey), MaxSealingKey)
		}
	}
	if len(in.Checkpoint) > MaxCheckpoint {
		return malformed("intro: checkpoint of %d bytes exceeds %d", len(in.Checkpoint), MaxCheckpoint)
	}
	if len(in.Admins) > MaxRoster || (in.ConvKind == ConvDirect && len(in.Admins) > 0) {
		return malformed("intro: an admin list of %d handles", len(in.Admins))
	}
	admins := make(map[string]bool, len(in.Admins))
	for i, h := range in.Admins {
		if err := ValidHandle(h); err != nil {
			return fmt.Errorf("intro: admin %d: %w", i, err)
		}
		if admins[h] {
			return malformed("intro: admin %d repeats a handle", i)
		}
		admins[h] = true
	}
	return nil
}
