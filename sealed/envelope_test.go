package sealed

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/hpke"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/crypto/cryptobyte"
)

var (
	testNow     = time.Unix(1_760_000_000, 0)
	testMailbox = wire.ID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
)

// detRand is a deterministic byte stream for reproducible envelopes:
// SHA-256 in counter mode over a label.
type detRand struct {
	label string
	n     uint64
	buf   []byte
}

func (r *detRand) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) {
		var b cryptobyte.Builder
		b.AddBytes([]byte(r.label))
		b.AddUint64(r.n)
		r.n++
		h := sha256.Sum256(b.BytesOrPanic())
		r.buf = append(r.buf, h[:]...)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func seed(label string) []byte {
	h := sha256.Sum256([]byte(label))
	return h[:]
}

func testRecipient(t testing.TB) *MailboxPrivateKey {
	t.Helper()
	k, err := NewMailboxKey(seed("recipient"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testSender(label, handle string) SenderIdentity {
	return SenderIdentity{Key: ed25519.NewKeyFromSeed(seed(label)), Handle: handle}
}

func TestRoundTrip(t *testing.T) {
	rk, err := GenerateMailboxKey()
	if err != nil {
		t.Fatal(err)
	}
	alice := testSender("alice", "alice@example")
	content := []byte("hello, sealed world")
	env, err := Seal(padding.V1, rk.Public(), testMailbox, alice, ContentMLS, content, testNow)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(rk, testMailbox, env, testNow.Add(time.Minute), 0, ed25519.NewKeyFromSeed(seed("bob")).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Content, content) || got.ContentType != ContentMLS || got.Sender.Handle != alice.Handle ||
		!got.Sender.IdentityKey.Equal(alice.Key.Public()) || !got.Timestamp.Equal(testNow) {
		t.Fatalf("Open = %+v", got)
	}
	// Empty content is allowed.
	env, err = Seal(padding.V1, rk.Public(), testMailbox, alice, ContentCheckpoint, nil, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(rk, testMailbox, env, testNow, 0, nil); err != nil || len(got.Content) != 0 {
		t.Fatalf("empty content: %v, %v", got, err)
	}
}

func TestKeyEncoding(t *testing.T) {
	rk := testRecipient(t)
	priv, err := rk.MarshalBinary()
	if err != nil || len(priv) != MailboxPrivateKeySize {
		t.Fatalf("MarshalBinary = %d bytes, %v", len(priv), err)
	}
	rk2, err := ParseMailboxPrivateKey(priv)
	if err != nil || !rk2.Public().Equal(rk.Public()) {
		t.Fatalf("private key round trip: %v", err)
	}
	pub := rk.Public().Bytes()
	if len(pub) != MailboxPublicKeySize {
		t.Fatalf("public key is %d bytes", len(pub))
	}
	pk, err := ParseMailboxPublicKey(pub)
	if err != nil || !pk.Equal(rk.Public()) {
		t.Fatalf("public key round trip: %v", err)
	}
	other, _ := GenerateMailboxKey()
	if other.Public().Equal(rk.Public()) {
		t.Fatal("two generated keys are equal")
	}
	// An envelope sealed to the parsed public key opens with the parsed private key.
	env, err := Seal(padding.V1, pk, testMailbox, testSender("a", "a"), ContentMLS, []byte("x"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(rk2, testMailbox, env, testNow, 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{nil, pub[:MailboxPublicKeySize-1], append(pub, 0)} {
		if _, err := ParseMailboxPublicKey(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMailboxPublicKey(%d bytes) = %v", len(b), err)
		}
	}
	for _, b := range [][]byte{nil, priv[:31], append(priv, 0)} {
		if _, err := ParseMailboxPrivateKey(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMailboxPrivateKey(%d bytes) = %v", len(b), err)
		}
	}
	if _, err := NewMailboxKey(make([]byte, 31)); !errors.Is(err, ErrMalformed) {
		t.Errorf("NewMailboxKey(31 bytes) = %v", err)
	}
}

// The envelope size depends only on the bucket.
func TestEnvelopeSizeByBucket(t *testing.T) {
	rk := testRecipient(t)
	s := testSender("alice", "alice")
	small := plaintextSize(len(s.Handle), 0) + padding.Overhead
	cases := []struct {
		a, b   int // content lengths
		bucket int
	}{
		{0, 512 - small, 512},
		{512 - small + 1, 2048 - small, 2048},
		{2048 - small + 1, 16384 - small, 16384},
		{16384 - small + 1, 131072 - small, 131072},
	}
	for _, c := range cases {
		ea, err := Seal(padding.V1, rk.Public(), testMailbox, s, ContentMLS, bytes.Repeat([]byte{'a'}, c.a), testNow)
		if err != nil {
			t.Fatal(err)
		}
		eb, err := Seal(padding.V1, rk.Public(), testMailbox, s, ContentMLS, bytes.Repeat([]byte{'b'}, c.b), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if len(ea) != len(eb) || len(ea) != c.bucket+Overhead {
			t.Errorf("contents %d and %d: envelopes of %d and %d bytes, want %d", c.a, c.b, len(ea), len(eb), c.bucket+Overhead)
		}
		if n, err := EnvelopeSize(padding.V1, c.a, s.Handle); err != nil || n != len(ea) {
			t.Errorf("EnvelopeSize(%d) = %d, %v; want %d", c.a, n, err, len(ea))
		}
	}
	if Overhead != 1143 || HeaderSize+EncSize != 1127 {
		t.Errorf("Overhead = %d, want 1143", Overhead)
	}
	if EncSize != hpke.KEM_XWING.Scheme().CiphertextSize() || MailboxPublicKeySize != hpke.KEM_XWING.Scheme().PublicKeySize() {
		t.Error("size constants disagree with circl's X-Wing")
	}
	max := MaxContentFor(padding.V1, 1<<30, len(s.Handle))
	if _, err := Seal(padding.V1, rk.Public(), testMailbox, s, ContentMLS, make([]byte, max), testNow); err != nil {
		t.Errorf("MaxContentFor = %d does not fit: %v", max, err)
	}
	if _, err := Seal(padding.V1, rk.Public(), testMailbox, s, ContentMLS, make([]byte, max+1), testNow); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MaxContentFor+1: %v, want ErrTooLarge", err)
	}
	if _, err := EnvelopeSize(padding.V1, max+1, s.Handle); !errors.Is(err, ErrTooLarge) {
		t.Errorf("EnvelopeSize(max+1) = %v, want ErrTooLarge", err)
	}
	// A server MaxEnvelope of 130000 rules out the 128 KiB bucket (its
	// envelopes are 132215 bytes): the largest content then is the 16 KiB one.
	if got, want := MaxContentFor(padding.V1, 130000, len(s.Handle)), 16384-small; got != want {
		t.Errorf("MaxContentFor(MaxEnvelope 130000) = %d, want %d", got, want)
	}
	if got := MaxContentFor(padding.V1, 512+Overhead-1, len(s.Handle)); got != 0 {
		t.Errorf("MaxContentFor(below the smallest envelope) = %d, want 0", got)
	}
}

func TestSealRejects(t *testing.T) {
	rk := testRecipient(t)
	good := testSender("alice", "alice")
	cases := []struct {
		name    string
		from    SenderIdentity
		ct      ContentType
		content []byte
		now     time.Time
		want    error
	}{
		{"handle_empty", testSender("a", ""), ContentMLS, nil, testNow, ErrMalformed},
		{"handle_65", testSender("a", strings.Repeat("h", 65)), ContentMLS, nil, testNow, ErrMalformed},
		{"handle_not_utf8", testSender("a", "\xff\xfe"), ContentMLS, nil, testNow, ErrMalformed},
		{"short_key", SenderIdentity{Key: make([]byte, 32), Handle: "a"}, ContentMLS, nil, testNow, ErrMalformed},
		{"content_type_0", good, 0, nil, testNow, ErrMalformed},
		{"before_1970", good, ContentMLS, nil, time.Unix(-1, 0), ErrMalformed},
		{"content_over_max", good, ContentMLS, make([]byte, MaxContent+1), testNow, ErrTooLarge},
		{"content_over_policy", good, ContentMLS, make([]byte, 131072), testNow, ErrTooLarge},
	}
	for _, c := range cases {
		if _, err := Seal(padding.V1, rk.Public(), testMailbox, c.from, c.ct, c.content, c.now); !errors.Is(err, c.want) {
			t.Errorf("%s: Seal = %v, want %v", c.name, err, c.want)
		}
	}
	// MaxContent holds whatever the policy: a 1 MiB bucket with a short
	// handle would have room for more.
	huge, err := padding.NewPolicy(padding.MaxBucket)
	if err != nil {
		t.Fatal(err)
	}
	short := testSender("a", "a")
	if _, err := Seal(huge, rk.Public(), testMailbox, short, ContentMLS, make([]byte, MaxContent+1), testNow); !errors.Is(err, ErrTooLarge) {
		t.Errorf("content of MaxContent+1 under a 1 MiB bucket: %v, want ErrTooLarge", err)
	}
	if _, err := Seal(huge, rk.Public(), testMailbox, short, ContentMLS, make([]byte, MaxContent), testNow); err != nil {
		t.Errorf("content of MaxContent: %v", err)
	}
	// Open refuses the same from a sender that skips the check.
	p := plaintext{key: short.Key, handle: short.Handle, ts: uint64(testNow.Unix()), ct: ContentMLS, content: make([]byte, MaxContent+1)}
	padded, err := padding.Pad(huge, p.encode(rk.Public(), testMailbox))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(rk, testMailbox, mustEncrypt(t, rk.Public(), testMailbox, padded), testNow, 0, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Open of MaxContent+1: %v, want ErrMalformed", err)
	}
	if _, err := Seal(padding.V1, nil, testMailbox, good, ContentMLS, nil, testNow); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil recipient: %v", err)
	}
	// A 64-byte multi-byte UTF-8 handle is fine.
	h := strings.Repeat("é", 32)
	env, err := Seal(padding.V1, rk.Public(), testMailbox, testSender("a", h), ContentMLS, nil, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if o, err := Open(rk, testMailbox, env, testNow, 0, nil); err != nil || o.Sender.Handle != h {
		t.Fatalf("64-byte handle: %v", err)
	}
}

// plaintext builds a sender block by hand, for envelopes Seal refuses to make.
type plaintext struct {
	key     ed25519.PrivateKey
	handle  string
	ts      uint64
	ct      ContentType
	content []byte
	sigFor  []byte // content the signature covers, if not content
	sigTo   *MailboxPublicKey
	sigMbox *wire.ID
	badSig  bool
}

func (p plaintext) encode(to *MailboxPublicKey, mailbox wire.ID) []byte {
	sigTo, sigMbox, sigFor := to, mailbox, p.content
	if p.sigTo != nil {
		sigTo = p.sigTo
	}
	if p.sigMbox != nil {
		sigMbox = *p.sigMbox
	}
	if p.sigFor != nil {
		sigFor = p.sigFor
	}
	sig := ed25519.Sign(p.key, signedMessage(sigTo, sigMbox, p.handle, p.ts, p.ct, sigFor))
	if p.badSig {
		sig[0] ^= 1
	}
	var b cryptobyte.Builder
	b.AddBytes(p.key.Public().(ed25519.PublicKey))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p.handle)) })
	b.AddUint64(p.ts)
	b.AddBytes(sig)
	b.AddUint16(uint16(p.ct))
	b.AddBytes(p.content)
	return b.BytesOrPanic()
}

func mustEncrypt(t testing.TB, to *MailboxPublicKey, mailbox wire.ID, padded []byte) []byte {
	t.Helper()
	env, err := encrypt(&detRand{label: "enc"}, to, mailbox, padded)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func mustPad(t testing.TB, pt []byte) []byte {
	t.Helper()
	padded, err := padding.Pad(padding.V1, pt)
	if err != nil {
		t.Fatal(err)
	}
	return padded
}

// failCases returns every way Open must refuse an envelope, with the error.
// The vector files in testdata are generated from the same list.
func failCases(t testing.TB) []struct {
	name     string
	envelope []byte
	now      time.Time
	self     ed25519.PublicKey
	want     *Error
} {
	rk := testRecipient(t)
	to := rk.Public()
	alice := testSender("alice", "alice")
	good, err := seal(&detRand{label: "good"}, padding.V1, to, testMailbox, alice, ContentMLS, []byte("hello"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	base := plaintext{key: alice.Key, handle: "alice", ts: uint64(testNow.Unix()), ct: ContentMLS, content: []byte("hello")}
	with := func(f func(p *plaintext)) []byte {
		p := base
		f(&p)
		return mustEncrypt(t, to, testMailbox, mustPad(t, p.encode(to, testMailbox)))
	}
	otherMbox := testMailbox
	otherMbox[0] ^= 0xff
	otherKey, _ := NewMailboxKey(seed("other recipient"))
	x25519, _ := deriveKey(hpke.KEM_X25519_HKDF_SHA256, seed("x25519 recipient"))
	nonzeroPad := mustPad(t, base.encode(to, testMailbox))
	nonzeroPad[len(nonzeroPad)-1] = 1

	type fc = struct {
		name     string
		envelope []byte
		now      time.Time
		self     ed25519.PublicKey
		want     *Error
	}
	return []fc{
		{"empty", nil, testNow, nil, ErrMalformed},
		{"version_0", mut(func(b []byte) []byte { b[0] = 0; return b }), testNow, nil, ErrVersion},
		{"version_2", mut(func(b []byte) []byte { b[0] = 2; return b }), testNow, nil, ErrVersion},
		{"header_truncated", good[:5], testNow, nil, ErrMalformed},
		{"kem_x25519", mut(func(b []byte) []byte { b[1], b[2] = 0x00, 0x20; return b }), testNow, nil, ErrSuite},
		{"kdf_sha384", mut(func(b []byte) []byte { b[4] = 0x02; return b }), testNow, nil, ErrSuite},
		{"aead_aes128gcm", mut(func(b []byte) []byte { b[6] = 0x01; return b }), testNow, nil, ErrSuite},
		{"sealed_with_x25519", func() []byte {
			e, err := seal(&detRand{label: "x"}, padding.V1, x25519.Public(), testMailbox, alice, ContentMLS, []byte("hello"), testNow)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}(), testNow, nil, ErrSuite},
		{"truncated_enc", good[:HeaderSize+100], testNow, nil, ErrMalformed},
		{"truncated_below_min_bucket", good[:len(good)-1], testNow, nil, ErrMalformed},
		{"truncated_ciphertext", func() []byte {
			e, err := seal(&detRand{label: "big"}, padding.V1, to, testMailbox, alice, ContentMLS, make([]byte, 1000), testNow)
			if err != nil {
				t.Fatal(err)
			}
			return e[:len(e)-1]
		}(), testNow, nil, ErrDecrypt},
		{"under_min_bucket", good[:HeaderSize+EncSize+padding.MinBucket+TagSize-1], testNow, nil, ErrMalformed},
		{"over_max_bucket", append(append([]byte(nil), good...), make([]byte, padding.MaxBucket)...), testNow, nil, ErrMalformed},
		{"trailing_byte", append(append([]byte(nil), good...), 0), testNow, nil, ErrDecrypt},
		{"flipped_enc", mut(func(b []byte) []byte { b[HeaderSize+10] ^= 1; return b }), testNow, nil, ErrDecrypt},
		{"flipped_x25519_share", mut(func(b []byte) []byte { b[HeaderSize+EncSize-1] ^= 1; return b }), testNow, nil, ErrDecrypt},
		{"flipped_ciphertext", mut(func(b []byte) []byte { b[HeaderSize+EncSize+3] ^= 1; return b }), testNow, nil, ErrDecrypt},
		{"flipped_tag", mut(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), testNow, nil, ErrDecrypt},
		{"other_mailbox_id", seal2(t, to, otherMbox, alice), testNow, nil, ErrDecrypt},
		{"other_mailbox_key", seal2(t, otherKey.Public(), testMailbox, alice), testNow, nil, ErrDecrypt},
		{"bad_signature", with(func(p *plaintext) { p.badSig = true }), testNow, nil, ErrSignature},
		{"signature_over_other_content", with(func(p *plaintext) { p.sigFor = []byte("hellO") }), testNow, nil, ErrSignature},
		{"signature_for_other_mailbox_key", with(func(p *plaintext) { p.sigTo = otherKey.Public() }), testNow, nil, ErrSignature},
		{"signature_for_other_mailbox_id", with(func(p *plaintext) { p.sigMbox = &otherMbox }), testNow, nil, ErrSignature},
		{"reflected", good, testNow, alice.Key.Public().(ed25519.PublicKey), ErrReflected},
		{"stale_past", good, testNow.Add(DefaultWindow + time.Second), nil, ErrStale},
		{"stale_future", good, testNow.Add(-DefaultWindow - time.Second), nil, ErrStale},
		{"nonzero_padding", mustEncrypt(t, to, testMailbox, nonzeroPad), testNow, nil, ErrMalformed},
		{"padding_length_past_end", mustEncrypt(t, to, testMailbox, func() []byte {
			b := make([]byte, 2048)
			b[0] = 0xff
			return b
		}()), testNow, nil, ErrMalformed},
		{"plaintext_truncated", mustEncrypt(t, to, testMailbox, mustPad(t, base.encode(to, testMailbox)[:100])), testNow, nil, ErrMalformed},
		{"handle_empty", with(func(p *plaintext) { p.handle = "" }), testNow, nil, ErrMalformed},
		{"handle_65", with(func(p *plaintext) { p.handle = strings.Repeat("x", 65) }), testNow, nil, ErrMalformed},
		{"handle_not_utf8", with(func(p *plaintext) { p.handle = "\xc3\x28" }), testNow, nil, ErrMalformed},
		{"content_type_0", with(func(p *plaintext) { p.ct = 0 }), testNow, nil, ErrMalformed},
		{"timestamp_over_int64", with(func(p *plaintext) { p.ts = 1 << 63 }), testNow, nil, ErrMalformed},
	}
}

func seal2(t testing.TB, to *MailboxPublicKey, mailbox wire.ID, from SenderIdentity) []byte {
	t.Helper()
	e, err := seal(&detRand{label: "seal2"}, padding.V1, to, mailbox, from, ContentMLS, []byte("hello"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestOpenRejects(t *testing.T) {
	rk := testRecipient(t)
	for _, c := range failCases(t) {
		o, err := Open(rk, testMailbox, c.envelope, c.now, 0, c.self)
		if !errors.Is(err, c.want) || o != nil {
			t.Errorf("%s: Open = %v, %v; want %v", c.name, o, err, c.want)
			continue
		}
		for _, other := range []*Error{ErrVersion, ErrSuite, ErrMalformed, ErrDecrypt, ErrSignature, ErrReflected, ErrStale, ErrTooLarge} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%s: %v also matches %v", c.name, err, other)
			}
		}
		if CodeOf(err) != c.want.Code {
			t.Errorf("%s: CodeOf = %v, want %v", c.name, CodeOf(err), c.want.Code)
		}
	}
	if _, err := Open(nil, testMailbox, nil, testNow, 0, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("nil key: %v", err)
	}
}

func TestWindow(t *testing.T) {
	rk := testRecipient(t)
	env := seal2(t, rk.Public(), testMailbox, testSender("alice", "alice"))
	cases := []struct {
		now    time.Time
		window time.Duration
		ok     bool
	}{
		{testNow.Add(DefaultWindow), 0, true},
		{testNow.Add(-DefaultWindow), 0, true},
		{testNow.Add(DefaultWindow + time.Second), 0, false},
		{testNow.Add(time.Hour), time.Hour, true},
		{testNow.Add(time.Hour + time.Second), time.Hour, false},
		{testNow.Add(-time.Hour - time.Second), time.Hour, false},
		{testNow.Add(47 * time.Hour), 48 * time.Hour, true},
	}
	for _, c := range cases {
		_, err := Open(rk, testMailbox, env, c.now, c.window, nil)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrStale)) {
			t.Errorf("now %+v window %v: %v, want ok=%v", c.now.Sub(testNow), c.window, err, c.ok)
		}
	}
}

func TestCodes(t *testing.T) {
	seen := map[Code]bool{}
	for _, e := range []*Error{ErrVersion, ErrSuite, ErrMalformed, ErrDecrypt, ErrSignature, ErrReflected, ErrStale, ErrTooLarge} {
		if seen[e.Code] || e.Code == 0 || strings.HasPrefix(e.Code.String(), "CODE_") {
			t.Errorf("code %d duplicated, zero or unnamed", e.Code)
		}
		seen[e.Code] = true
	}
	want := map[Code]uint8{CodeVersion: 1, CodeSuite: 2, CodeMalformed: 3, CodeDecrypt: 4, CodeSignature: 5, CodeReflected: 6, CodeStale: 7, CodeTooLarge: 8}
	for c, n := range want {
		if uint8(c) != n {
			t.Errorf("%v renumbered to %d", c, uint8(c))
		}
	}
	if CodeOf(errors.New("x")) != 0 || CodeOf(errorf(CodeStale, "x")) != CodeStale {
		t.Error("CodeOf")
	}
}

// TestPlaintextPolicyFillsRecords: under PlaintextPolicy, the largest
// content of each plaintext bucket seals into an envelope whose Send record
// (with a token-sized auth) is exactly one record bucket; the smallest
// content of the bucket lands in the same record bucket.
func TestPlaintextPolicyFillsRecords(t *testing.T) {
	const authLen = 101
	inner, err := PlaintextPolicy(padding.V1, authLen)
	if err != nil {
		t.Fatal(err)
	}
	if len(inner.Buckets()) != 3 {
		t.Fatalf("plaintext buckets %v: want one per record bucket above 512", inner.Buckets())
	}
	priv, err := GenerateMailboxKey()
	if err != nil {
		t.Fatal(err)
	}
	_, idKey, _ := ed25519.GenerateKey(nil)
	from := SenderIdentity{Key: idKey, Handle: "alice"}
	prev := 0
	for _, b := range inner.Buckets() {
		for _, n := range []int{prev + 1, b - padding.Overhead - plaintextSize(len(from.Handle), 0)} {
			env, err := Seal(inner, priv.Public(), wire.ID{1}, from, ContentMLS, make([]byte, n), time.Now())
			if err != nil {
				t.Fatalf("seal %d bytes: %v", n, err)
			}
			rec, err := wire.AppendMessage(nil, padding.V1, &wire.Send{Auth: make([]byte, authLen), Envelope: env})
			if err != nil {
				t.Fatal(err)
			}
			want := b + Overhead + wire.HeaderSize + 32 + 16 + 2 + authLen + 3
			if len(rec) != want || !padding.V1.IsBucket(len(rec)) {
				t.Fatalf("content %d in plaintext bucket %d: record %d bytes, want exactly the record bucket %d", n, b, len(rec), want)
			}
		}
		prev = b - padding.Overhead - plaintextSize(len(from.Handle), 0)
	}
	if _, err := PlaintextPolicy(padding.Control, authLen); err == nil {
		t.Fatal("a 512-byte record policy cannot hold a sealed envelope")
	}
}
