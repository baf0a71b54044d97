// Wire formats (RFC 9420 §6). Every MLS message travels as an MLSMessage: a
// protocol version (only mls10 exists, and no other is accepted), a two-byte
// wire_format, and one of five bodies selected by it — PublicMessage (signed
// FramedContent in the clear, MAC'd with a membership tag for member
// senders), PrivateMessage (FramedContent whose sender and content are
// encrypted under the secret tree), Welcome, GroupInfo or KeyPackage. Bodies
// carry no length prefix, so every enumeration that selects how the next
// bytes parse — wire_format, content_type, sender_type, proposal_type,
// credential_type, psktype, resumption usage, leaf_node_source, node_type,
// the ProposalOrRef type — is rejected as malformed when its value is
// reserved (0) or unknown: an unknown arm cannot be skipped. Code points that
// only label data (cipher suites, extension types, protocol versions inside
// KeyPackage/ReInit/Capabilities, the Capabilities lists) are kept whatever
// their value, since the registries are extensible and GREASE (§13.5) puts
// unknown values there on purpose. All structures use the TLS presentation
// language with MLS varint vector lengths (§2.1.2, codec.go), and decoding
// is strict — minimal varints, optional bytes 0 or 1, whole elements in
// every vector, no trailing bytes, all-zero padding — so each accepted
// encoding is canonical: decoding and re-encoding reproduces it byte for
// byte, which signatures and hashes over re-encoded structures rely on.

package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// WireFormat selects the body of an MLSMessage (RFC 9420 §6, §17.2).
type WireFormat uint16

// Wire formats defined by RFC 9420 §6. The IANA registry is extensible, but
// an unknown wire format's body has no length prefix and so cannot be
// parsed; decoders reject it.
const (
	WireFormatPublicMessage  WireFormat = 1
	WireFormatPrivateMessage WireFormat = 2
	WireFormatWelcome        WireFormat = 3
	WireFormatGroupInfo      WireFormat = 4
	WireFormatKeyPackage     WireFormat = 5
)

func (w WireFormat) String() string {
	switch w {
	case WireFormatPublicMessage:
		return "mls_public_message"
	case WireFormatPrivateMessage:
		return "mls_private_message"
	case WireFormatWelcome:
		return "mls_welcome"
	case WireFormatGroupInfo:
		return "mls_group_info"
	case WireFormatKeyPackage:
		return "mls_key_package"
	}
	return fmt.Sprintf("WireFormat(%d)", uint16(w))
}

// ContentType says what a FramedContent carries (RFC 9420 §6). It is a
// closed enumeration (no registry): anything but 1..3 is malformed.
type ContentType uint8

// Content types of RFC 9420 §6.
const (
	ContentTypeApplication ContentType = 1
	ContentTypeProposal    ContentType = 2
	ContentTypeCommit      ContentType = 3
)

func (c ContentType) valid() bool {
	return c >= ContentTypeApplication && c <= ContentTypeCommit
}

func (c ContentType) String() string {
	switch c {
	case ContentTypeApplication:
		return "application"
	case ContentTypeProposal:
		return "proposal"
	case ContentTypeCommit:
		return "commit"
	}
	return fmt.Sprintf("ContentType(%d)", uint8(c))
}

// SenderType says who sent a FramedContent (RFC 9420 §6). A closed
// enumeration: anything but 1..4 is malformed.
type SenderType uint8

// Sender types of RFC 9420 §6.
const (
	SenderTypeMember            SenderType = 1
	SenderTypeExternal          SenderType = 2
	SenderTypeNewMemberProposal SenderType = 3
	SenderTypeNewMemberCommit   SenderType = 4
)

func (t SenderType) String() string {
	switch t {
	case SenderTypeMember:
		return "member"
	case SenderTypeExternal:
		return "external"
	case SenderTypeNewMemberProposal:
		return "new_member_proposal"
	case SenderTypeNewMemberCommit:
		return "new_member_commit"
	}
	return fmt.Sprintf("SenderType(%d)", uint8(t))
}

// Sender identifies the author of a FramedContent (RFC 9420 §6). Index is
// the leaf_index for a member and the sender_index into the external_senders
// extension for an external sender; the new-member types carry no index and
// Index must be zero for them.
type Sender struct {
	Type  SenderType
	Index uint32
}

// Marshal encodes the sender.
func (s *Sender) Marshal() ([]byte, error) { return encode("Sender", s.marshal) }

// Unmarshal decodes a sender; trailing bytes are an error.
func (s *Sender) Unmarshal(data []byte) error { return decodeAll("Sender", data, s.unmarshal) }

func (s *Sender) marshal(b *cryptobyte.Builder) {
	switch s.Type {
	case SenderTypeMember, SenderTypeExternal:
		b.AddUint8(uint8(s.Type))
		b.AddUint32(s.Index)
	case SenderTypeNewMemberProposal, SenderTypeNewMemberCommit:
		// The empty struct{} arm: an index here would be lost on decode.
		if s.Index != 0 {
			invalidf(b, "%v sender has no index", s.Type)
			return
		}
		b.AddUint8(uint8(s.Type))
	default:
		invalidf(b, "%v", s.Type)
	}
}

func (s *Sender) unmarshal(str *cryptobyte.String) bool {
	var t uint8
	if !str.ReadUint8(&t) {
		return false
	}
	*s = Sender{Type: SenderType(t)}
	switch s.Type {
	case SenderTypeMember, SenderTypeExternal:
		return str.ReadUint32(&s.Index)
	case SenderTypeNewMemberProposal, SenderTypeNewMemberCommit:
		return true
	}
	return false
}

// ApplicationData is the opaque application_data<V> payload of an
// application message (RFC 9420 §6).
type ApplicationData []byte

// Marshal encodes the payload as opaque<V>.
func (a ApplicationData) Marshal() ([]byte, error) {
	return encode("ApplicationData", func(b *cryptobyte.Builder) { addOpaque(b, a) })
}

// Unmarshal decodes an opaque<V> payload; trailing bytes are an error.
func (a *ApplicationData) Unmarshal(data []byte) error {
	return decodeAll("ApplicationData", data, func(s *cryptobyte.String) bool {
		return readOpaque(s, (*[]byte)(a))
	})
}

// marshalContentBody encodes the select(content_type) arm shared by
// FramedContent and PrivateMessageContent (RFC 9420 §6, §6.3.1). Exactly the
// field matching the content type may be set; anything else would be
// silently dropped, so it is refused.
func marshalContentBody(b *cryptobyte.Builder, ct ContentType, app ApplicationData, p *Proposal, c *Commit) {
	switch ct {
	case ContentTypeApplication:
		if p != nil || c != nil {
			invalidf(b, "application content with proposal or commit set")
			return
		}
		addOpaque(b, app)
	case ContentTypeProposal:
		if p == nil || c != nil || len(app) != 0 {
			invalidf(b, "proposal content needs exactly a proposal")
			return
		}
		p.marshal(b)
	case ContentTypeCommit:
		if c == nil || p != nil || len(app) != 0 {
			invalidf(b, "commit content needs exactly a commit")
			return
		}
		c.marshal(b)
	default:
		invalidf(b, "%v", ct)
	}
}

// unmarshalContentBody decodes the arm for ct into the matching field and
// clears the others.
func unmarshalContentBody(s *cryptobyte.String, ct ContentType, app *ApplicationData, p **Proposal, c **Commit) bool {
	*app, *p, *c = nil, nil, nil
	switch ct {
	case ContentTypeApplication:
		return readOpaque(s, (*[]byte)(app))
	case ContentTypeProposal:
		*p = new(Proposal)
		return (*p).unmarshal(s)
	case ContentTypeCommit:
		*c = new(Commit)
		return (*c).unmarshal(s)
	}
	return false
}

// FramedContent is the signed unit of an MLS handshake or application
// message (RFC 9420 §6).
type FramedContent struct {
	GroupID           []byte
	Epoch             uint64
	Sender            Sender
	AuthenticatedData []byte
	ContentType       ContentType
	ApplicationData   ApplicationData // content_type == application
	Proposal          *Proposal       // content_type == proposal
	Commit            *Commit         // content_type == commit
}

// Marshal encodes the framed content.
func (fc *FramedContent) Marshal() ([]byte, error) { return encode("FramedContent", fc.marshal) }

// Unmarshal decodes framed content; trailing bytes are an error.
func (fc *FramedContent) Unmarshal(data []byte) error {
	return decodeAll("FramedContent", data, fc.unmarshal)
}

func (fc *FramedContent) marshal(b *cryptobyte.Builder) {
	addOpaque(b, fc.GroupID)
	b.AddUint64(fc.Epoch)
	fc.Sender.marshal(b)
	addOpaque(b, fc.AuthenticatedData)
	b.AddUint8(uint8(fc.ContentType))
	marshalContentBody(b, fc.ContentType, fc.ApplicationData, fc.Proposal, fc.Commit)
}

func (fc *FramedContent) unmarshal(s *cryptobyte.String) bool {
	var ct uint8
	if !readOpaque(s, &fc.GroupID) || !s.ReadUint64(&fc.Epoch) || !fc.Sender.unmarshal(s) ||
		!readOpaque(s, &fc.AuthenticatedData) || !s.ReadUint8(&ct) {
		return false
	}
	fc.ContentType = ContentType(ct)
	return unmarshalContentBody(s, fc.ContentType, &fc.ApplicationData, &fc.Proposal, &fc.Commit)
}

// FramedContentAuthData carries the signature over FramedContentTBS and, for
// commits only, the confirmation tag (RFC 9420 §6.1). Whether the tag is on
// the wire depends on the enclosing content's content_type, which the
// encoding does not repeat: ContentType is that context. Containers set it
// themselves; a caller using Unmarshal directly must set it first.
type FramedContentAuthData struct {
	ContentType     ContentType // context, not encoded
	Signature       []byte
	ConfirmationTag []byte // MAC, present iff ContentType == commit
}

// Marshal encodes the auth data for fad.ContentType.
func (fad *FramedContentAuthData) Marshal() ([]byte, error) {
	return encode("FramedContentAuthData", fad.marshal)
}

// Unmarshal decodes auth data for the content type already in
// fad.ContentType; trailing bytes are an error.
func (fad *FramedContentAuthData) Unmarshal(data []byte) error {
	return decodeAll("FramedContentAuthData", data, fad.unmarshal)
}

func (fad *FramedContentAuthData) marshal(b *cryptobyte.Builder) {
	if !fad.ContentType.valid() {
		invalidf(b, "auth data for %v", fad.ContentType)
		return
	}
	addOpaque(b, fad.Signature)
	if fad.ContentType == ContentTypeCommit {
		addOpaque(b, fad.ConfirmationTag)
	} else if len(fad.ConfirmationTag) != 0 {
		invalidf(b, "confirmation tag on %v content", fad.ContentType)
	}
}

// marshalFor encodes the auth data for the enclosing content's type. It
// works on a copy so that encoding never writes to the caller's value:
// marshaling a shared message from several goroutines stays race-free.
func (fad FramedContentAuthData) marshalFor(b *cryptobyte.Builder, ct ContentType) {
	fad.ContentType = ct
	fad.marshal(b)
}

func (fad *FramedContentAuthData) unmarshal(s *cryptobyte.String) bool {
	fad.Signature, fad.ConfirmationTag = nil, nil
	if !fad.ContentType.valid() || !readOpaque(s, &fad.Signature) {
		return false
	}
	if fad.ContentType == ContentTypeCommit {
		return readOpaque(s, &fad.ConfirmationTag)
	}
	return true
}

// AuthenticatedContent binds FramedContent to its wire format and
// authentication data (RFC 9420 §6.1); it is the input to the transcript
// hashes and to message protection, never itself sent.
type AuthenticatedContent struct {
	WireFormat WireFormat
	Content    FramedContent
	Auth       FramedContentAuthData
}

// Marshal encodes the authenticated content. Auth.ContentType is taken from
// Content, so callers need not keep the two in step.
func (ac *AuthenticatedContent) Marshal() ([]byte, error) {
	return encode("AuthenticatedContent", ac.marshal)
}

// Unmarshal decodes authenticated content; trailing bytes are an error.
func (ac *AuthenticatedContent) Unmarshal(data []byte) error {
	return decodeAll("AuthenticatedContent", data, ac.unmarshal)
}

// framedWireFormat reports whether w carries FramedContent: only public and
// private messages do (RFC 9420 §6.1).
func framedWireFormat(w WireFormat) bool {
	return w == WireFormatPublicMessage || w == WireFormatPrivateMessage
}

func (ac *AuthenticatedContent) marshal(b *cryptobyte.Builder) {
	if !framedWireFormat(ac.WireFormat) {
		invalidf(b, "authenticated content with %v", ac.WireFormat)
		return
	}
	b.AddUint16(uint16(ac.WireFormat))
	ac.Content.marshal(b)
	ac.Auth.marshalFor(b, ac.Content.ContentType)
}

func (ac *AuthenticatedContent) unmarshal(s *cryptobyte.String) bool {
	var wf uint16
	if !s.ReadUint16(&wf) || !framedWireFormat(WireFormat(wf)) || !ac.Content.unmarshal(s) {
		return false
	}
	ac.WireFormat = WireFormat(wf)
	ac.Auth.ContentType = ac.Content.ContentType
	return ac.Auth.unmarshal(s)
}

// senderHasContext reports whether FramedContentTBS includes the group
// context for this sender: members and new-member committers sign over it,
// external senders and new-member proposers cannot know it (RFC 9420 §6.1).
func senderHasContext(t SenderType) bool {
	return t == SenderTypeMember || t == SenderTypeNewMemberCommit
}

// MarshalTBS encodes FramedContentTBS (RFC 9420 §6.1), the input to
// SignWithLabel(., "FramedContentTBS", .). ctx is the current group context;
// it is required for member and new_member_commit senders and ignored
// otherwise.
func (ac *AuthenticatedContent) MarshalTBS(ctx *GroupContext) ([]byte, error) {
	return encode("FramedContentTBS", func(b *cryptobyte.Builder) { ac.marshalTBS(b, ctx) })
}

func (ac *AuthenticatedContent) marshalTBS(b *cryptobyte.Builder, ctx *GroupContext) {
	if !framedWireFormat(ac.WireFormat) {
		invalidf(b, "framed content tbs with %v", ac.WireFormat)
		return
	}
	b.AddUint16(uint16(MLS10))
	b.AddUint16(uint16(ac.WireFormat))
	ac.Content.marshal(b)
	if senderHasContext(ac.Content.Sender.Type) {
		if ctx == nil {
			invalidf(b, "%v sender needs the group context", ac.Content.Sender.Type)
			return
		}
		ctx.marshal(b)
	}
}

// MarshalTBM encodes AuthenticatedContentTBM (RFC 9420 §6.2), the input to
// the membership tag MAC: FramedContentTBS followed by the auth data.
func (ac *AuthenticatedContent) MarshalTBM(ctx *GroupContext) ([]byte, error) {
	return encode("AuthenticatedContentTBM", func(b *cryptobyte.Builder) {
		ac.marshalTBS(b, ctx)
		ac.Auth.marshalFor(b, ac.Content.ContentType)
	})
}

// MarshalConfirmedTranscriptHashInput encodes ConfirmedTranscriptHashInput
// (RFC 9420 §8.2): wire_format, content and signature — the confirmation
// tag is excluded because it is computed from this hash.
func (ac *AuthenticatedContent) MarshalConfirmedTranscriptHashInput() ([]byte, error) {
	return encode("ConfirmedTranscriptHashInput", func(b *cryptobyte.Builder) {
		if !framedWireFormat(ac.WireFormat) {
			invalidf(b, "transcript input with %v", ac.WireFormat)
			return
		}
		b.AddUint16(uint16(ac.WireFormat))
		ac.Content.marshal(b)
		addOpaque(b, ac.Auth.Signature)
	})
}

// MarshalInterimTranscriptHashInput encodes InterimTranscriptHashInput
// (RFC 9420 §8.2): the confirmation tag as a MAC (opaque<V>).
func MarshalInterimTranscriptHashInput(confirmationTag []byte) ([]byte, error) {
	return encode("InterimTranscriptHashInput", func(b *cryptobyte.Builder) {
		addOpaque(b, confirmationTag)
	})
}

// PublicMessage is FramedContent sent in the clear (RFC 9420 §6.2). A
// member sender adds a membership tag proving group membership; other
// senders have none, so MembershipTag must be nil for them.
type PublicMessage struct {
	Content       FramedContent
	Auth          FramedContentAuthData
	MembershipTag []byte // MAC, present iff Content.Sender.Type == member
}

// Marshal encodes the public message (without the MLSMessage header).
func (pm *PublicMessage) Marshal() ([]byte, error) { return encode("PublicMessage", pm.marshal) }

// Unmarshal decodes a public message; trailing bytes are an error.
func (pm *PublicMessage) Unmarshal(data []byte) error {
	return decodeAll("PublicMessage", data, pm.unmarshal)
}

func (pm *PublicMessage) marshal(b *cryptobyte.Builder) {
	pm.Content.marshal(b)
	pm.Auth.marshalFor(b, pm.Content.ContentType)
	if pm.Content.Sender.Type == SenderTypeMember {
		addOpaque(b, pm.MembershipTag)
	} else if len(pm.MembershipTag) != 0 {
		invalidf(b, "membership tag for %v sender", pm.Content.Sender.Type)
	}
}

func (pm *PublicMessage) unmarshal(s *cryptobyte.String) bool {
	pm.MembershipTag = nil
	if !pm.Content.unmarshal(s) {
		return false
	}
	pm.Auth.ContentType = pm.Content.ContentType
	if !pm.Auth.unmarshal(s) {
		return false
	}
	if pm.Content.Sender.Type == SenderTypeMember {
		return readOpaque(s, &pm.MembershipTag)
	}
	return true
}

// AuthenticatedContent returns the message as AuthenticatedContent with
// wire format mls_public_message, sharing the underlying slices.
func (pm *PublicMessage) AuthenticatedContent() *AuthenticatedContent {
	return &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
}

// PrivateMessage is FramedContent with its sender and content encrypted
// (RFC 9420 §6.3). Sender is not visible; a PrivateMessage always has a
// member sender. The header fields are also the AAD inputs (§6.3.1, §6.3.2).
type PrivateMessage struct {
	GroupID             []byte
	Epoch               uint64
	ContentType         ContentType
	AuthenticatedData   []byte
	EncryptedSenderData []byte
	Ciphertext          []byte
}

// Marshal encodes the private message (without the MLSMessage header).
func (pm *PrivateMessage) Marshal() ([]byte, error) { return encode("PrivateMessage", pm.marshal) }

// Unmarshal decodes a private message; trailing bytes are an error.
func (pm *PrivateMessage) Unmarshal(data []byte) error {
	return decodeAll("PrivateMessage", data, pm.unmarshal)
}

func (pm *PrivateMessage) marshal(b *cryptobyte.Builder) {
	if !pm.ContentType.valid() {
		invalidf(b, "private message with %v", pm.ContentType)
		return
	}
	addOpaque(b, pm.GroupID)
	b.AddUint64(pm.Epoch)
	b.AddUint8(uint8(pm.ContentType))
	addOpaque(b, pm.AuthenticatedData)
	addOpaque(b, pm.EncryptedSenderData)
	addOpaque(b, pm.Ciphertext)
}

func (pm *PrivateMessage) unmarshal(s *cryptobyte.String) bool {
	var ct uint8
	if !readOpaque(s, &pm.GroupID) || !s.ReadUint64(&pm.Epoch) || !s.ReadUint8(&ct) {
		return false
	}
	pm.ContentType = ContentType(ct)
	return pm.ContentType.valid() &&
		readOpaque(s, &pm.AuthenticatedData) &&
		readOpaque(s, &pm.EncryptedSenderData) &&
		readOpaque(s, &pm.Ciphertext)
}

// MarshalSenderDataAAD encodes SenderDataAAD (RFC 9420 §6.3.2), the AAD for
// encrypting the sender data of this message.
func (pm *PrivateMessage) MarshalSenderDataAAD() ([]byte, error) {
	return encode("SenderDataAAD", func(b *cryptobyte.Builder) {
		addOpaque(b, pm.GroupID)
		b.AddUint64(pm.Epoch)
		b.AddUint8(uint8(pm.ContentType))
	})
}

// MarshalPrivateContentAAD encodes PrivateContentAAD (RFC 9420 §6.3.1), the
// AAD for encrypting the PrivateMessageContent of this message.
func (pm *PrivateMessage) MarshalPrivateContentAAD() ([]byte, error) {
	return encode("PrivateContentAAD", func(b *cryptobyte.Builder) {
		addOpaque(b, pm.GroupID)
		b.AddUint64(pm.Epoch)
		b.AddUint8(uint8(pm.ContentType))
		addOpaque(b, pm.AuthenticatedData)
	})
}

// PrivateMessageContent is the plaintext of PrivateMessage.ciphertext
// (RFC 9420 §6.3.1): the content body, its auth data, and zero padding that
// runs to the end of the plaintext. The content type is not inside — it is
// in the PrivateMessage header — so ContentType is context that must be set
// before Unmarshal. Padding is kept as a length so that decoding and
// re-encoding round-trip; the RFC requires the padding bytes to be zero and
// decoding rejects anything else.
type PrivateMessageContent struct {
	ContentType     ContentType // context, not encoded
	ApplicationData ApplicationData
	Proposal        *Proposal
	Commit          *Commit
	Auth            FramedContentAuthData
	PaddingLen      int
}

// Marshal encodes the plaintext including PaddingLen zero bytes.
func (pc *PrivateMessageContent) Marshal() ([]byte, error) {
	return encode("PrivateMessageContent", pc.marshal)
}

// Unmarshal decodes the plaintext for pc.ContentType. Everything after the
// auth data is padding and must be zero.
func (pc *PrivateMessageContent) Unmarshal(data []byte) error {
	return decodeAll("PrivateMessageContent", data, pc.unmarshal)
}

func (pc *PrivateMessageContent) marshal(b *cryptobyte.Builder) {
	// The plaintext becomes PrivateMessage.ciphertext, an opaque<V>, so
	// padding beyond the vector limit could never be sent (§2.1.2, §6.3.1).
	if pc.PaddingLen < 0 || pc.PaddingLen > maxVectorLen {
		invalidf(b, "padding length %d", pc.PaddingLen)
		return
	}
	marshalContentBody(b, pc.ContentType, pc.ApplicationData, pc.Proposal, pc.Commit)
	pc.Auth.marshalFor(b, pc.ContentType)
	b.AddBytes(make([]byte, pc.PaddingLen))
}

func (pc *PrivateMessageContent) unmarshal(s *cryptobyte.String) bool {
	if !unmarshalContentBody(s, pc.ContentType, &pc.ApplicationData, &pc.Proposal, &pc.Commit) {
		return false
	}
	pc.Auth.ContentType = pc.ContentType
	if !pc.Auth.unmarshal(s) {
		return false
	}
	for _, c := range *s {
		if c != 0 {
			return false
		}
	}
	pc.PaddingLen = len(*s)
	s.Skip(len(*s))
	return true
}

// UnmarshalPrivateMessageContent decodes the decrypted plaintext of a
// PrivateMessage whose header says ct.
func UnmarshalPrivateMessageContent(plaintext []byte, ct ContentType) (*PrivateMessageContent, error) {
	pc := &PrivateMessageContent{ContentType: ct}
	if err := pc.Unmarshal(plaintext); err != nil {
		return nil, err
	}
	return pc, nil
}

// SenderData is the plaintext of PrivateMessage.encrypted_sender_data
// (RFC 9420 §6.3.2): the sender's leaf, the ratchet generation used, and a
// reuse guard XORed into the content nonce.
type SenderData struct {
	LeafIndex  uint32
	Generation uint32
	ReuseGuard [4]byte
}

// Marshal encodes the sender data (always 12 bytes).
func (sd *SenderData) Marshal() ([]byte, error) { return encode("SenderData", sd.marshal) }

// Unmarshal decodes sender data; trailing bytes are an error.
func (sd *SenderData) Unmarshal(data []byte) error {
	return decodeAll("SenderData", data, sd.unmarshal)
}

func (sd *SenderData) marshal(b *cryptobyte.Builder) {
	b.AddUint32(sd.LeafIndex)
	b.AddUint32(sd.Generation)
	b.AddBytes(sd.ReuseGuard[:])
}

func (sd *SenderData) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint32(&sd.LeafIndex) && s.ReadUint32(&sd.Generation) && s.CopyBytes(sd.ReuseGuard[:])
}

// MLSMessage is the outer envelope of everything MLS sends (RFC 9420 §6).
// Exactly the body selected by WireFormat must be set.
type MLSMessage struct {
	Version        ProtocolVersion
	WireFormat     WireFormat
	PublicMessage  *PublicMessage
	PrivateMessage *PrivateMessage
	Welcome        *Welcome
	GroupInfo      *GroupInfo
	KeyPackage     *KeyPackage
}

// Marshal encodes the message.
func (m *MLSMessage) Marshal() ([]byte, error) { return encode("MLSMessage", m.marshal) }

// Unmarshal decodes a message; trailing bytes are an error.
func (m *MLSMessage) Unmarshal(data []byte) error {
	return decodeAll("MLSMessage", data, m.unmarshal)
}

func (m *MLSMessage) bodies() int {
	n := 0
	for _, set := range []bool{m.PublicMessage != nil, m.PrivateMessage != nil,
		m.Welcome != nil, m.GroupInfo != nil, m.KeyPackage != nil} {
		if set {
			n++
		}
	}
	return n
}

func (m *MLSMessage) marshal(b *cryptobyte.Builder) {
	// Only mls10 is defined; a different version may frame differently, so
	// it is not ours to produce (RFC 9420 §6: version = mls10).
	if m.Version != MLS10 {
		invalidf(b, "protocol version %d", m.Version)
		return
	}
	if m.bodies() != 1 {
		invalidf(b, "mls message needs exactly one body")
		return
	}
	b.AddUint16(uint16(m.Version))
	b.AddUint16(uint16(m.WireFormat))
	switch {
	case m.WireFormat == WireFormatPublicMessage && m.PublicMessage != nil:
		m.PublicMessage.marshal(b)
	case m.WireFormat == WireFormatPrivateMessage && m.PrivateMessage != nil:
		m.PrivateMessage.marshal(b)
	case m.WireFormat == WireFormatWelcome && m.Welcome != nil:
		m.Welcome.marshal(b)
	case m.WireFormat == WireFormatGroupInfo && m.GroupInfo != nil:
		m.GroupInfo.marshal(b)
	case m.WireFormat == WireFormatKeyPackage && m.KeyPackage != nil:
		m.KeyPackage.marshal(b)
	default:
		invalidf(b, "body does not match %v", m.WireFormat)
	}
}

func (m *MLSMessage) unmarshal(s *cryptobyte.String) bool {
	var version, wf uint16
	if !s.ReadUint16(&version) || !s.ReadUint16(&wf) {
		return false
	}
	*m = MLSMessage{Version: ProtocolVersion(version), WireFormat: WireFormat(wf)}
	if m.Version != MLS10 {
		return false
	}
	switch m.WireFormat {
	case WireFormatPublicMessage:
		m.PublicMessage = new(PublicMessage)
		return m.PublicMessage.unmarshal(s)
	case WireFormatPrivateMessage:
		m.PrivateMessage = new(PrivateMessage)
		return m.PrivateMessage.unmarshal(s)
	case WireFormatWelcome:
		m.Welcome = new(Welcome)
		return m.Welcome.unmarshal(s)
	case WireFormatGroupInfo:
		m.GroupInfo = new(GroupInfo)
		return m.GroupInfo.unmarshal(s)
	case WireFormatKeyPackage:
		m.KeyPackage = new(KeyPackage)
		return m.KeyPackage.unmarshal(s)
	}
	return false
}
