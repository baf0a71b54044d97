// Sealed envelopes: a guide. (The package comment lives in doc.go; this is
// the longer version for readers of the code.)
//
// A sender who knows a mailbox's send ID and its MailboxPublicKey calls
//
//	env, err := sealed.Seal(policy, mailboxKey, sendID, sealed.SenderIdentity{Key: idKey, Handle: "alice"},
//		sealed.ContentMLS, mlsMessage, time.Now())
//
// and hands env to wire.Send. The recipient, holding the MailboxPrivateKey,
// calls
//
//	msg, err := sealed.Open(mailboxPriv, sendID, env, time.Now(), 0, myIdentityKey)
//
// and must then check msg.Sender.IdentityKey against key transparency before
// trusting msg.Sender.Handle: the envelope proves that the holder of that
// Ed25519 key wrote the content for this recipient, not that the key belongs
// to that handle.
//
// What it is: RFC 9180 HPKE in base mode (§5.1.1) with X-Wing, HKDF-SHA256
// and ChaCha20-Poly1305, single-shot (§6.1). Base mode hides the sender from
// the server and from anyone but the recipient; the sender is authenticated
// inside the ciphertext by an Ed25519 signature from its identity key (the
// "sealed sender" construction), which binds the recipient's mailbox key,
// the mailbox ID, the handle, the time, the content type and a hash of the
// content, so that a recipient cannot re-seal a signed block to someone else
// and pass it off as addressed to them.
//
// Keys: MailboxPrivateKey/MailboxPublicKey (X-Wing, 1216-byte public key)
// are per mailbox and separate from the mailbox owner key (Ed25519) that the
// server knows. The sender's identity key is the Ed25519 key published in its
// key-transparency record; it never reaches the server.
//
// Sizes: the plaintext is padded with padding.Pad to a bucket of the policy
// passed to Seal, so an envelope is exactly Overhead (1143) bytes longer than
// that bucket: 7 header + 1120 X-Wing encapsulation + 16 AEAD tag. The
// plaintext inside the bucket costs 4 (padding length) + 107 + handle bytes
// (sender block and content type) on top of the content. With
// padding.V1 the envelopes are 1655, 3191, 17527 and 132215 bytes; a
// bucket is usable only if the server's MaxEnvelope is at least bucket +
// Overhead. EnvelopeSize gives the size for a content length; MaxContentFor
// gives the largest content (the chunk size for padding.Split) under a
// MaxEnvelope.
//
// What not to do: do not pass a nil self key to Open unless the mailbox has
// no owner identity (reflection goes unchecked); do not reuse a mailbox key
// for anything but sealing; do not treat Opened.Timestamp as a delivery time
// (the sender chose it, within the window).
//
// The byte format is docs/protocol.md §7; each function below names the
// part it implements.

package sealed

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"math"
	"time"
	"unicode/utf8"

	"github.com/cloudflare/circl/hpke"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/crypto/cryptobyte"
)

// Version is the envelope format version, the first byte of every envelope.
const Version = 1

// The v1 suite (RFC 9180 §7): X-Wing, HKDF-SHA256, ChaCha20-Poly1305.
const (
	suiteKEM  = hpke.KEM_XWING
	suiteKDF  = hpke.KDF_HKDF_SHA256
	suiteAEAD = hpke.AEAD_ChaCha20Poly1305
)

// Sizes of the v1 format.
const (
	HeaderSize = 1 + 2 + 2 + 2 // version u8 | kem_id u16 | kdf_id u16 | aead_id u16
	EncSize    = 1120          // X-Wing ciphertext: ML-KEM-768 (1088) || X25519 ephemeral (32)
	TagSize    = 16            // Poly1305
	// Overhead is what an envelope adds to its padded plaintext bucket.
	Overhead = HeaderSize + EncSize + TagSize

	MaxHandle = 64 // bytes of UTF-8

	// senderBlockMax is the largest sender block: identity key, handle
	// with its length byte, timestamp, signature; plus the content type.
	senderBlockMax = ed25519.PublicKeySize + 1 + MaxHandle + 8 + ed25519.SignatureSize + 2
	// MaxContent is the most content any policy can carry in one
	// envelope, whatever the handle; the policy passed to Seal and the
	// server's MaxEnvelope usually allow less (MaxContentFor). Larger
	// payloads are chunked with padding.Split.
	MaxContent = padding.MaxBucket - padding.Overhead - senderBlockMax
)

// Labels. infoLabel starts the HPKE info (RFC 9180 §5.1, "info"); sigLabel
// separates the sender signature from every other use of identity keys.
const (
	infoLabel = "qpc/1 sealed envelope v1"
	sigLabel  = "qpc/1 sealed envelope v1 sender signature"
)

// DefaultWindow is how far a sender's timestamp may be from the recipient's
// clock, either way, when Open is given a zero window.
const DefaultWindow = 24 * time.Hour

// ContentType says what the content is. 0 is reserved and refused.
type ContentType uint16

// Registered content types (docs/protocol.md §7.4). Open accepts any nonzero
// value; dispatching on it is the caller's job.
const (
	ContentMLS        ContentType = 0x0001 // an MLSMessage (RFC 9420 §6)
	ContentMLSWelcome ContentType = 0x0002 // a client/content.Intro: a Welcome and its conversation (docs/protocol.md §11.2)
	ContentCheckpoint ContentType = 0x0003 // a gossiped key-transparency checkpoint
	ContentChunk      ContentType = 0x0004 // one padding.Split chunk of a larger payload
	// ContentRejoinRequest asks a member of a conversation for a fresh
	// GroupInfo; the content is the group ID (docs/protocol.md §11.8).
	ContentRejoinRequest ContentType = 0x0005
	// ContentRejoinInfo answers it: a client/content.Intro whose Welcome
	// field holds a GroupInfo MLSMessage (docs/protocol.md §11.8).
	ContentRejoinInfo ContentType = 0x0006
	// ContentCommitEcho carries a commit a member followed, an MLSMessage
	// of its committer's, to a member on another branch of the group's
	// commits (docs/protocol.md §11.6).
	ContentCommitEcho ContentType = 0x0007
)

// SenderIdentity is who seals: the Ed25519 identity private key published
// (as its public half) in key transparency, and the handle it claims.
type SenderIdentity struct {
	Key    ed25519.PrivateKey
	Handle string
}

// SenderID is the sender as Open reports it, verified by signature only:
// check IdentityKey against key transparency before trusting Handle.
type SenderID struct {
	IdentityKey ed25519.PublicKey
	Handle      string
}

// Opened is a verified envelope.
type Opened struct {
	Sender      SenderID
	Timestamp   time.Time // second precision, chosen by the sender
	ContentType ContentType
	Content     []byte
}

// EnvelopeSize returns the envelope length Seal produces for content of n
// bytes under policy p.
func EnvelopeSize(p padding.Policy, n int, handle string) (int, error) {
	b, err := p.Bucket(padding.Overhead + plaintextSize(len(handle), n))
	if err != nil {
		return 0, errorf(CodeTooLarge, "%d bytes of content: %v", n, err)
	}
	return b + Overhead, nil
}

// MaxContentFor returns the most content one envelope can carry under
// policy p when the server accepts envelopes of at most maxEnvelope bytes
// (wire.Limits.MaxEnvelope), with a handle of handleLen bytes: the content
// of the largest bucket b with b+Overhead <= maxEnvelope, or 0 if none fits.
// Use it as the chunk size for padding.Split.
func MaxContentFor(p padding.Policy, maxEnvelope, handleLen int) int {
	best := 0
	for _, b := range p.Buckets() {
		if b+Overhead <= maxEnvelope {
			best = max(best, b-padding.Overhead-plaintextSize(handleLen, 0))
		}
	}
	return best
}

// PlaintextPolicy returns the padding policy to pass to Seal so that each
// sealed envelope, sent in a Send record whose auth field is authLen bytes
// (a delivery token is 101), fills exactly one bucket of the server's
// record policy: bucket B of records becomes B minus the Send record's
// header and fixed fields (docs/protocol.md §2, §4.3) minus Overhead.
// Sealing with the record policy itself would pad twice: every envelope
// would spill into the next record bucket, and the largest would not fit
// at all. Record buckets too small to hold a padded plaintext of
// padding.MinBucket are left out.
func PlaintextPolicy(records padding.Policy, authLen int) (padding.Policy, error) {
	around := wire.SendOverhead(authLen) + Overhead
	var sizes []int
	for _, b := range records.Buckets() {
		if b-around >= padding.MinBucket {
			sizes = append(sizes, b-around)
		}
	}
	p, err := padding.NewPolicy(sizes...)
	if err != nil {
		return padding.Policy{}, errorf(CodeTooLarge, "no record bucket of %s holds a sealed envelope: %v", records, err)
	}
	return p, nil
}

func plaintextSize(handleLen, contentLen int) int {
	return ed25519.PublicKeySize + 1 + handleLen + 8 + ed25519.SignatureSize + 2 + contentLen
}

// Seal encrypts content to the mailbox whose send ID is mailbox and whose
// sealing key is to, signed by from, padded to a bucket of p. now is the
// timestamp the recipient checks against its window.
func Seal(p padding.Policy, to *MailboxPublicKey, mailbox wire.ID, from SenderIdentity,
	ct ContentType, content []byte, now time.Time) ([]byte, error) {
	return seal(rand.Reader, p, to, mailbox, from, ct, content, now)
}

func seal(rnd io.Reader, p padding.Policy, to *MailboxPublicKey, mailbox wire.ID, from SenderIdentity,
	ct ContentType, content []byte, now time.Time) ([]byte, error) {
	if to == nil {
		return nil, errorf(CodeMalformed, "seal: no recipient key")
	}
	if len(from.Key) != ed25519.PrivateKeySize {
		return nil, errorf(CodeMalformed, "seal: identity key is %d bytes", len(from.Key))
	}
	if err := checkHandle(from.Handle); err != nil {
		return nil, err
	}
	if ct == 0 {
		return nil, errorf(CodeMalformed, "seal: content type 0 is reserved")
	}
	if len(content) > MaxContent {
		return nil, errorf(CodeTooLarge, "seal: %d bytes of content exceeds %d", len(content), MaxContent)
	}
	if now.Unix() < 0 {
		return nil, errorf(CodeMalformed, "seal: timestamp before 1970")
	}
	ts := uint64(now.Unix())
	idPub := from.Key.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(from.Key, signedMessage(to, mailbox, from.Handle, ts, ct, content))

	// The plaintext (docs/protocol.md §7.4).
	var b cryptobyte.Builder
	b.AddBytes(idPub)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(from.Handle)) })
	b.AddUint64(ts)
	b.AddBytes(sig)
	b.AddUint16(uint16(ct))
	b.AddBytes(content)
	pt := b.BytesOrPanic()

	padded, err := padding.Pad(p, pt)
	if err != nil {
		return nil, errorf(CodeTooLarge, "seal: %v", err)
	}
	return encrypt(rnd, to, mailbox, padded)
}

// encrypt is the HPKE layer: header || enc || Seal(padded plaintext).
func encrypt(rnd io.Reader, to *MailboxPublicKey, mailbox wire.ID, padded []byte) ([]byte, error) {
	hdr := header(to.kemID)
	sender, err := hpke.NewSuite(to.kemID, suiteKDF, suiteAEAD).NewSender(to.pk, info(mailbox))
	if err != nil {
		return nil, errorf(CodeSuite, "seal: %v", err)
	}
	// RFC 9180 §5.1.1 SetupBaseS; §6.1 single-shot Seal with the header as aad.
	enc, sealer, err := sender.Setup(rnd)
	if err != nil {
		return nil, errorf(CodeMalformed, "seal: hpke setup: %v", err)
	}
	ciphertext, err := sealer.Seal(padded, hdr)
	if err != nil {
		return nil, errorf(CodeMalformed, "seal: %v", err)
	}
	out := make([]byte, 0, len(hdr)+len(enc)+len(ciphertext))
	out = append(out, hdr...)
	out = append(out, enc...)
	return append(out, ciphertext...), nil
}

// Open decrypts and verifies an envelope sealed to the mailbox whose send ID
// is mailbox. window bounds |now - timestamp| (0 means DefaultWindow). self
// is the recipient's own identity key: an envelope signed by it is a
// reflection of the recipient's own message and is refused (nil skips the
// check). Failures are *Error values; see the Err* sentinels.
func Open(recipient *MailboxPrivateKey, mailbox wire.ID, envelope []byte, now time.Time,
	window time.Duration, self ed25519.PublicKey) (*Opened, error) {
	if recipient == nil {
		return nil, errorf(CodeMalformed, "open: no recipient key")
	}
	if window <= 0 {
		window = DefaultWindow
	}
	// Header (docs/protocol.md §7.2): version first, so that a
	// future version is told apart from garbage.
	if len(envelope) < 1 {
		return nil, errorf(CodeMalformed, "open: empty envelope")
	}
	if envelope[0] != Version {
		return nil, errorf(CodeVersion, "open: version %d, want %d", envelope[0], Version)
	}
	s := cryptobyte.String(envelope[1:])
	var kemID, kdfID, aeadID uint16
	if !s.ReadUint16(&kemID) || !s.ReadUint16(&kdfID) || !s.ReadUint16(&aeadID) {
		return nil, errorf(CodeMalformed, "open: truncated header")
	}
	if hpke.KEM(kemID) != recipient.kemID || hpke.KDF(kdfID) != suiteKDF || hpke.AEAD(aeadID) != suiteAEAD {
		return nil, errorf(CodeSuite, "open: suite %#04x/%#04x/%#04x", kemID, kdfID, aeadID)
	}
	encSize := recipient.kemID.Scheme().CiphertextSize()
	minLen := HeaderSize + encSize + padding.MinBucket + TagSize
	maxLen := HeaderSize + encSize + padding.MaxBucket + TagSize
	if len(envelope) < minLen || len(envelope) > maxLen {
		return nil, errorf(CodeMalformed, "open: %d bytes is outside %d..%d", len(envelope), minLen, maxLen)
	}
	enc := envelope[HeaderSize : HeaderSize+encSize]
	ciphertext := envelope[HeaderSize+encSize:]

	receiver, err := hpke.NewSuite(recipient.kemID, suiteKDF, suiteAEAD).NewReceiver(recipient.sk, info(mailbox))
	if err != nil {
		return nil, errorf(CodeSuite, "open: %v", err)
	}
	// RFC 9180 §5.1.1 SetupBaseR, §6.1 single-shot Open. A wrong mailbox ID
	// changes info and hence the key schedule (§5.1), so it fails here.
	opener, err := receiver.Setup(enc)
	if err != nil {
		return nil, errorf(CodeDecrypt, "open: decapsulation failed")
	}
	padded, err := opener.Open(ciphertext, envelope[:HeaderSize])
	if err != nil {
		return nil, errorf(CodeDecrypt, "open: authentication failed")
	}

	// The padded plaintext is one bucket; Open does not know the sender's
	// policy (it may have changed since), so it checks the padding against
	// the one bucket the plaintext claims to be. The AEAD already
	// authenticated it; this only refuses non-canonical padding.
	one, err := padding.NewPolicy(len(padded))
	if err != nil {
		return nil, errorf(CodeMalformed, "open: plaintext size: %v", err)
	}
	pt, err := padding.Unpad(one, padded)
	if err != nil {
		return nil, errorf(CodeMalformed, "open: %v", err)
	}

	ps := cryptobyte.String(pt)
	var (
		idPub   = make([]byte, ed25519.PublicKeySize)
		handle  cryptobyte.String
		ts      uint64
		sig     = make([]byte, ed25519.SignatureSize)
		ct      uint16
		content []byte
	)
	if !ps.CopyBytes(idPub) || !ps.ReadUint8LengthPrefixed(&handle) || !ps.ReadUint64(&ts) ||
		!ps.CopyBytes(sig) || !ps.ReadUint16(&ct) {
		return nil, errorf(CodeMalformed, "open: truncated plaintext")
	}
	content = ps // the rest; its end is fixed by the padding length prefix
	if err := checkHandle(string(handle)); err != nil {
		return nil, err
	}
	if ct == 0 {
		return nil, errorf(CodeMalformed, "open: content type 0 is reserved")
	}
	if len(content) > MaxContent {
		return nil, errorf(CodeMalformed, "open: content exceeds %d bytes", MaxContent)
	}
	if ts > math.MaxInt64 {
		return nil, errorf(CodeMalformed, "open: timestamp out of range")
	}

	msg := signedMessage(recipient.pub, mailbox, string(handle), ts, ContentType(ct), content)
	if !ed25519.Verify(idPub, msg, sig) {
		return nil, errorf(CodeSignature, "open: sender signature does not verify")
	}
	if self != nil && subtle.ConstantTimeCompare(idPub, self) == 1 {
		return nil, errorf(CodeReflected, "open: envelope signed by the recipient's own identity")
	}
	when := time.Unix(int64(ts), 0)
	if when.Before(now.Add(-window)) || when.After(now.Add(window)) {
		return nil, errorf(CodeStale, "open: timestamp is %v from now, window %v", now.Sub(when).Round(time.Second), window)
	}
	return &Opened{
		Sender:      SenderID{IdentityKey: ed25519.PublicKey(idPub), Handle: string(handle)},
		Timestamp:   when,
		ContentType: ContentType(ct),
		Content:     content,
	}, nil
}

// header is version u8 | kem_id u16 | kdf_id u16 | aead_id u16.
func header(kemID hpke.KEM) []byte {
	return []byte{Version, byte(kemID >> 8), byte(kemID), byte(suiteKDF >> 8), byte(suiteKDF), byte(suiteAEAD >> 8), byte(suiteAEAD)}
}

// info is the HPKE info (RFC 9180 §5.1): label || version || mailbox ID.
func info(mailbox wire.ID) []byte {
	out := make([]byte, 0, len(infoLabel)+1+wire.IDSize)
	out = append(out, infoLabel...)
	out = append(out, Version)
	return append(out, mailbox[:]...)
}

// signedMessage is what the sender's identity key signs
// (docs/protocol.md §7.5):
//
//	label || kem_id u16 || recipient mailbox public key || SHA-256(content) ||
//	timestamp u64 || content_type u16 || mailbox ID [32] || handle<0..64>
//
// Every field but the last has a fixed size under a given kem_id, so the
// encoding is unambiguous.
// The identity key is not repeated: Ed25519 hashes it into every signature
// (RFC 8032 §5.1.6).
func signedMessage(to *MailboxPublicKey, mailbox wire.ID, handle string, ts uint64, ct ContentType, content []byte) []byte {
	h := sha256.Sum256(content)
	var b cryptobyte.Builder
	b.AddBytes([]byte(sigLabel))
	b.AddUint16(uint16(to.kemID))
	b.AddBytes(to.raw)
	b.AddBytes(h[:])
	b.AddUint64(ts)
	b.AddUint16(uint16(ct))
	b.AddBytes(mailbox[:])
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(handle)) })
	return b.BytesOrPanic()
}

func checkHandle(h string) error {
	if len(h) == 0 || len(h) > MaxHandle {
		return errorf(CodeMalformed, "handle is %d bytes, want 1..%d", len(h), MaxHandle)
	}
	if !utf8.ValidString(h) {
		return errorf(CodeMalformed, "handle is not UTF-8")
	}
	return nil
}
