package wire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/padding"
)

var update = flag.Bool("update", false, "rewrite testdata/good_* from the samples")

// samples holds one message of every kind; the good_ vectors are their
// encodings.
func samples() map[string]Message {
	id := func(b byte) (x ID) { x[0], x[31] = b, b; return }
	mid := MessageID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	return map[string]Message{
		"client_hello":        &ClientHello{Versions: []uint16{1, 2}},
		"server_hello":        &ServerHello{Version: 1, Policy: padding.Default, Limits: Limits{MaxEnvelope: 130000, MaxFetch: 256, MaxAckIDs: 1024, QuotaMessages: 10000, QuotaBytes: 1 << 30, TTLSeconds: 21 * 86400}},
		"create_mailbox":      &CreateMailbox{OwnerKey: [32]byte{7}, Auth: []byte("token"), Signature: [64]byte{9}},
		"mailbox":             &MailboxCreated{ReceiveID: id(1), SendID: id(2)},
		"send":                &Send{SendID: id(2), MessageID: mid, Auth: nil, Envelope: bytes.Repeat([]byte{0xee}, 1500)},
		"sent":                &Sent{MessageID: mid, Duplicate: true},
		"fetch":               &Fetch{ReceiveID: id(1), After: 41, Limit: 100, Signature: [64]byte{3}},
		"subscribe":           &Subscribe{ReceiveID: id(1), After: 7, Signature: [64]byte{4}},
		"delivery":            &Delivery{Seq: 42, MessageID: mid, ReceivedAt: 1700000040, Envelope: []byte("sealed")},
		"fetch_end":           &FetchEnd{More: true},
		"ack":                 &Ack{ReceiveID: id(1), MessageIDs: []MessageID{mid, {0xff}}, Signature: [64]byte{5}},
		"acked":               &Acked{Deleted: 2},
		"delete_mailbox":      &DeleteMailbox{ReceiveID: id(1), Signature: [64]byte{6}},
		"done":                &Done{},
		"health":              &Health{},
		"health_status":       &HealthStatus{Status: StatusDraining},
		"error":               &ErrorMessage{Code: CodeQuota, Detail: "mailbox full"},
		"account_request":     &AccountRequest{Op: AccountLoginStart, Body: []byte("ke1 bytes")},
		"account_reply":       &AccountReply{Op: AccountSessionIssued, Body: bytes.Repeat([]byte{0x5a}, 40)},
		"token_keys":          &TokenKeys{},
		"token_key_list":      &TokenKeyList{Current: 20500, EpochSeconds: 86400, Keys: []EpochKey{{Epoch: 20499, Key: []byte{1, 2, 3}}, {Epoch: 20500, Key: []byte{4, 5}}}},
		"issue_tokens":        &IssueTokens{Session: [32]byte{0xaa}, Request: []byte("blinded")},
		"tokens_issued":       &TokensIssued{Response: []byte("evaluated")},
		"token_quota":         &TokenQuota{Session: [32]byte{0xaa}},
		"token_quota_status":  &TokenQuotaStatus{Epoch: 20500, EpochSeconds: 86400, Quota: 1000, Issued: 37},
		"upload_key_packages": &UploadKeyPackages{Session: [32]byte{0xbb}, KeyPackages: [][]byte{[]byte("kp one"), bytes.Repeat([]byte{0x4b}, 300)}},
		"key_packages_stored": &KeyPackagesStored{Count: 12, Limit: 100},
		"fetch_key_package":   &FetchKeyPackage{Handle: "bob", Auth: []byte("token")},
		"key_package_reply":   &KeyPackageReply{KeyPackage: []byte("kp one")},
	}
}

func policyFor(m Message) padding.Policy {
	if m.Kind() == KindClientHello || m.Kind() == KindServerHello {
		return padding.Control
	}
	return padding.Default
}

func TestRoundTripEveryKind(t *testing.T) {
	for name, m := range samples() {
		p := policyFor(m)
		rec, err := AppendMessage(nil, p, m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !p.IsBucket(len(rec)) {
			t.Errorf("%s: record of %d bytes is not a bucket size", name, len(rec))
		}
		kind, body, rest, err := ParseRecord(p, rec)
		if err != nil || len(rest) != 0 {
			t.Fatalf("%s: ParseRecord: %v (rest %d)", name, err, len(rest))
		}
		got, err := Decode(kind, body)
		if err != nil {
			t.Fatalf("%s: Decode: %v", name, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: decoded message differs from the original", name)
		}
	}
}

func TestReaderStream(t *testing.T) {
	var stream bytes.Buffer
	var want []Message
	for _, m := range samples() {
		if m.Kind() == KindClientHello || m.Kind() == KindServerHello {
			continue
		}
		if err := WriteMessage(&stream, padding.Default, m); err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	r := NewReader(&stream, padding.Default)
	for _, w := range want {
		got, err := r.ReadMessage()
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Fatalf("ReadMessage = %T, %v; want %T", got, err, w)
		}
	}
	if _, err := r.ReadMessage(); err != io.EOF {
		t.Fatalf("after last record: %v, want io.EOF", err)
	}
}

func TestRecordTooLarge(t *testing.T) {
	_, err := AppendRecord(nil, padding.Default, KindSend, make([]byte, padding.Default.Max()))
	if c, _ := CodeOf(err); c != CodeTooLarge {
		t.Fatalf("oversized record: %v, want TOO_LARGE", err)
	}
}

func TestSignBinding(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	binding := bytes.Repeat([]byte{1}, BindingSize)
	other := bytes.Repeat([]byte{2}, BindingSize)
	for _, m := range []Message{
		&CreateMailbox{Auth: []byte("x")}, &Fetch{Limit: 1}, &Subscribe{}, &Ack{MessageIDs: []MessageID{{1}}}, &DeleteMailbox{},
	} {
		if c, ok := m.(*CreateMailbox); ok {
			copy(c.OwnerKey[:], pub)
		}
		if err := Sign(m, priv, binding); err != nil {
			t.Fatal(err)
		}
		if !Verify(m, pub, binding) {
			t.Errorf("%T: valid signature rejected", m)
		}
		if Verify(m, pub, other) {
			t.Errorf("%T: signature accepted on another connection's binding", m)
		}
		// Re-encode and decode: the signature must survive the wire.
		body, _ := Encode(m)
		back, err := Decode(m.Kind(), body)
		if err != nil || !Verify(back, pub, binding) {
			t.Errorf("%T: decoded request fails verification: %v", m, err)
		}
	}
	f := &Fetch{Limit: 1}
	_ = Sign(f, priv, binding)
	f.After++
	if Verify(f, pub, binding) {
		t.Error("signature accepted after the request changed")
	}
	if err := Sign(&Send{}, priv, binding); err == nil {
		t.Error("Sign accepted an unsigned kind")
	}
}

// TestVectors checks testdata/good_*.hex (decode, re-encode byte-exactly)
// and testdata/fail_<CODE>_*.hex (decode fails with that code). Each file
// holds one whole record in hex; good_ files are made by -update.
func TestVectors(t *testing.T) {
	if *update {
		for name, m := range samples() {
			rec, err := AppendMessage(nil, policyFor(m), m)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "good_"+name+".hex")
			if err := os.WriteFile(path, []byte(hex.EncodeToString(rec)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.hex"))
	var good, fail int
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		rec, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		base := filepath.Base(f)
		p := padding.Default
		if strings.Contains(base, "hello") {
			p = padding.Control
		}
		kind, body, rest, err := ParseRecord(p, rec)
		var m Message
		if err == nil {
			if len(rest) != 0 {
				err = Errorf(CodeProtocol, "trailing bytes")
			} else {
				m, err = Decode(kind, body)
			}
		}
		switch {
		case strings.HasPrefix(base, "good_"):
			good++
			if err != nil {
				t.Errorf("%s: %v", base, err)
				continue
			}
			again, _ := AppendMessage(nil, p, m)
			if !bytes.Equal(again, rec) {
				t.Errorf("%s: re-encoding differs", base)
			}
		case strings.HasPrefix(base, "fail_"):
			fail++
			want := strings.SplitN(strings.TrimPrefix(base, "fail_"), "_", 2)[0]
			code, ok := CodeOf(err)
			if !ok || code.String() != strings.ReplaceAll(want, "-", "_") {
				t.Errorf("%s: got %v, want code %s", base, err, want)
			}
		}
	}
	if good < len(samples()) || fail < 8 {
		t.Fatalf("testdata has %d good and %d fail vectors; want every kind and the fail set", good, fail)
	}
}

func TestEncodersEnforceLimits(t *testing.T) {
	for _, m := range []Message{
		&ClientHello{}, &ClientHello{Versions: make([]uint16, MaxVersions+1)},
		&Ack{}, &Ack{MessageIDs: make([]MessageID, MaxAckIDs+1)},
	} {
		if _, err := Encode(m); err == nil {
			t.Errorf("%T beyond its limit encoded", m)
		}
	}
}

func TestErrorIs(t *testing.T) {
	err := error(Errorf(CodeQuota, "full"))
	wrapped := errors.Join(errors.New("send"), err)
	if !errors.Is(wrapped, &Error{Code: CodeQuota}) || errors.Is(wrapped, &Error{Code: CodeNotFound}) {
		t.Fatal("errors.Is does not match by code")
	}
	if !CodeUnavailable.Retryable() || CodeQuota.Retryable() {
		t.Fatal("Retryable")
	}
}

// fuzzRecord is the property every decoder must hold: no panic, and an
// accepted record re-encodes to exactly the input.
func fuzzRecord(t *testing.T, p padding.Policy, in []byte) {
	kind, body, rest, err := ParseRecord(p, in)
	if err != nil {
		if _, ok := CodeOf(err); !ok {
			t.Fatalf("ParseRecord error without code: %v", err)
		}
		return
	}
	m, err := Decode(kind, body)
	if err != nil {
		if _, ok := CodeOf(err); !ok {
			t.Fatalf("Decode error without code: %v", err)
		}
		return
	}
	again, err := AppendMessage(nil, p, m)
	if err != nil || !bytes.Equal(again, in[:len(in)-len(rest)]) {
		t.Fatalf("accepted %s does not round-trip: %v", kindName(kind), err)
	}
}

func seedFuzz(f *testing.F) {
	for _, m := range samples() {
		rec, _ := AppendMessage(nil, policyFor(m), m)
		f.Add(rec)
	}
	f.Add([]byte{})
	f.Add([]byte{0x11, 0xff, 0xff, 0xff})
}

func FuzzRecord(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, in []byte) { fuzzRecord(t, padding.Default, in) })
}

func FuzzReader(f *testing.F) {
	seedFuzz(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), padding.Default)
		for range 8 {
			if _, err := r.ReadMessage(); err != nil {
				if _, ok := CodeOf(err); !ok && err != io.EOF {
					t.Fatalf("reader error without code: %v", err)
				}
				return
			}
		}
	})
}

// One target per request kind, so the fuzzer spends its time inside that
// decoder: the body after a fixed kind byte.
func fuzzBody(f *testing.F, kind Kind) {
	for _, m := range samples() {
		if m.Kind() == kind {
			body, _ := Encode(m)
			f.Add(body)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := Decode(kind, body)
		if err != nil {
			if _, ok := CodeOf(err); !ok {
				t.Fatalf("error without code: %v", err)
			}
			return
		}
		again, err := Encode(m)
		if err != nil || !bytes.Equal(again, body) {
			t.Fatalf("accepted body does not round-trip: %v", err)
		}
	})
}

func FuzzClientHello(f *testing.F)       { fuzzBody(f, KindClientHello) }
func FuzzServerHello(f *testing.F)       { fuzzBody(f, KindServerHello) }
func FuzzCreateMailbox(f *testing.F)     { fuzzBody(f, KindCreateMailbox) }
func FuzzSend(f *testing.F)              { fuzzBody(f, KindSend) }
func FuzzFetch(f *testing.F)             { fuzzBody(f, KindFetch) }
func FuzzSubscribe(f *testing.F)         { fuzzBody(f, KindSubscribe) }
func FuzzAck(f *testing.F)               { fuzzBody(f, KindAck) }
func FuzzDeleteMailbox(f *testing.F)     { fuzzBody(f, KindDeleteMailbox) }
func FuzzHealth(f *testing.F)            { fuzzBody(f, KindHealth) }
func FuzzDelivery(f *testing.F)          { fuzzBody(f, KindDelivery) }
func FuzzErrorMessage(f *testing.F)      { fuzzBody(f, KindError) }
func FuzzAccountRequest(f *testing.F)    { fuzzBody(f, KindAccountRequest) }
func FuzzIssueTokens(f *testing.F)       { fuzzBody(f, KindIssueTokens) }
func FuzzTokenKeyList(f *testing.F)      { fuzzBody(f, KindTokenKeyList) }
func FuzzTokenQuota(f *testing.F)        { fuzzBody(f, KindTokenQuota) }
func FuzzTokenQuotaStatus(f *testing.F)  { fuzzBody(f, KindTokenQuotaStatus) }
func FuzzUploadKeyPackages(f *testing.F) { fuzzBody(f, KindUploadKeyPackages) }
func FuzzKeyPackagesStored(f *testing.F) { fuzzBody(f, KindKeyPackagesStored) }
func FuzzFetchKeyPackage(f *testing.F)   { fuzzBody(f, KindFetchKeyPackage) }
func FuzzKeyPackageReply(f *testing.F)   { fuzzBody(f, KindKeyPackageReply) }

func TestAddress(t *testing.T) {
	a := Address{Pin: PinSPKI([]byte("spki")), Host: "127.0.0.1:4433"}
	got, err := ParseAddress(a.String())
	if err != nil || got.Pin != a.Pin || got.Host != a.Host || got.More != nil {
		t.Fatalf("ParseAddress(%q) = %v, %v", a.String(), got, err)
	}
	// The same pin with its last character's unused bits set, and with an
	// embedded newline: alternative spellings are refused.
	enc := a.String()[6:49]
	last := enc[len(enc)-1]
	alt := enc[:len(enc)-1] + string(rune(last+1))
	for _, bad := range []string{"qpc://" + alt + "@h:1", "qpc://" + enc[:10] + "\n" + enc[10:] + "@h:1"} {
		if _, err := ParseAddress(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) accepted an alternative pin spelling", bad)
		}
	}
	for _, bad := range []string{"", "https://x@h:1", "qpc://h:1", "qpc://AAAA@h:1", "qpc://" + a.String()[6:49] + "@nohost", "qpc://" + a.String()[6:49] + "@:1"} {
		if _, err := ParseAddress(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("ParseAddress(%q) = %v, want ErrBadAddress", bad, err)
		}
	}
}
