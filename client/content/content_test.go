package content

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

var update = flag.Bool("update", false, "rewrite testdata/*.hex from the samples and mutations in content_test.go")

var (
	sampleID  = [IDSize]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	sampleKey = bytes.Repeat([]byte{0x5e}, 40) // a real X-Wing key is 1216 bytes; the format does not care
	sampleCkp = []byte("kt.example/qpc\n42\nAAAA\n\n— kt.example/qpc sig\n")
)

func sendID(b byte) (id [SendIDSize]byte) { id[0], id[31] = b, b; return }

// skippedID is sampleID with the SkippedBefore mark in its second half.
func skippedID() [IDSize]byte {
	id := sampleID
	mark := skipMark(&id)
	copy(id[IDSize/2:], mark[:])
	return id
}

// samples holds the good vectors: testdata/good_<name>.hex is the encoding
// of samples()[name], a *Message for message_*, an *Intro for intro_*.
func samples() map[string]any {
	return map[string]any{
		"message_text": &Message{Kind: KindText, ID: sampleID, Seq: 1, SentAt: 1700000000,
			Checkpoint: sampleCkp, Text: "hello, wörld ✓"},
		"message_text_no_checkpoint": &Message{Kind: KindText, ID: sampleID, Seq: 7, SentAt: 1700000007, Text: "x"},
		"message_text_skipped_before": &Message{Kind: KindText, ID: skippedID(), Seq: 9, SentAt: 1700000009,
			SkippedBefore: true, Text: "after a restart"},
		"message_mailbox": &Message{Kind: KindMailbox, ID: sampleID, Seq: 2, SentAt: 1700000001,
			Mailbox: &MailboxAnnounce{SendID: sendID(0xa1), SealingKey: sampleKey}},
		"message_leave": &Message{Kind: KindLeave, ID: sampleID, Seq: 3, SentAt: 1700000002},
		"message_cover": &Message{Kind: KindCover, ID: sampleID, Seq: 5, SentAt: 1700000004,
			Checkpoint: sampleCkp, Filler: make([]byte, 24)},
		"message_cover_empty": &Message{Kind: KindCover, ID: sampleID, Seq: 6, SentAt: 1700000005},
		"message_receipt": &Message{Kind: KindReceipt, ID: sampleID, Seq: 4, SentAt: 1700000003,
			Receipt: &Receipt{Type: ReceiptRead, IDs: [][IDSize]byte{{1}, {2}, {0xff, 15: 0xff}}}},
		"intro_direct": &Intro{ConvKind: ConvDirect, Welcome: []byte("mls welcome"),
			Roster:     []Member{{Handle: "alice", SendID: sendID(0xa1), SealingKey: sampleKey}},
			Checkpoint: sampleCkp},
		"intro_group": &Intro{ConvKind: ConvGroup, Name: "Wandergruppe 🏔", Welcome: bytes.Repeat([]byte{0x77}, 100),
			Roster: []Member{
				{Handle: "alice", SendID: sendID(0xa1), SealingKey: sampleKey},
				{Handle: "bob.b_2-x", SendID: sendID(0xb0), SealingKey: []byte{1}},
			}},
		"intro_group_no_roster": &Intro{ConvKind: ConvGroup, Welcome: []byte{0}},
		"intro_group_admins":    &Intro{ConvKind: ConvGroup, Name: "g", Welcome: []byte{0}, Admins: []string{"alice", "bob.b_2-x"}},
	}
}

// rawMessage encodes the §11.1 layout without any check, to build bad
// vectors.
func rawMessage(version, kind uint8, seq uint64, checkpoint []byte, body func(*cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddUint8(version)
	b.AddUint8(kind)
	b.AddBytes(sampleID[:])
	b.AddUint64(seq)
	b.AddUint64(1700000000)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(checkpoint) })
	b.AddUint24LengthPrefixed(body)
	return b.BytesOrPanic()
}

func bytesBody(p []byte) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) { b.AddBytes(p) }
}

func receiptBody(t uint8, ids []byte) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		b.AddUint8(t)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(ids) })
	}
}

type rawMember struct {
	handle string
	key    []byte
}

// rawIntro encodes the §11.2 layout without any check.
func rawIntro(version, kind uint8, name string, welcome []byte, roster []rawMember) []byte {
	var b cryptobyte.Builder
	b.AddUint8(version)
	b.AddUint8(kind)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(welcome) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		for i, m := range roster {
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.handle)) })
			id := sendID(byte(i))
			b.AddBytes(id[:])
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.key) })
		}
	})
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {})
	return b.BytesOrPanic()
}

func mustMarshal(v any) []byte {
	var out []byte
	var err error
	switch v := v.(type) {
	case *Message:
		out, err = v.Marshal()
	case *Intro:
		out, err = v.Marshal()
	}
	if err != nil {
		panic(err)
	}
	return out
}

// failures holds the bad vectors: testdata/fail_<name>.hex, where name is
// <ERROR>_<message|intro>_<what> and ERROR is MALFORMED or VERSION.
func failures() map[string][]byte {
	s := samples()
	text := mustMarshal(s["message_text"])
	intro := mustMarshal(s["intro_group"])
	key := []byte{1}
	ok := []rawMember{{"alice", key}}
	withVersion := func(b []byte, v byte) []byte { b = slices.Clone(b); b[0] = v; return b }
	return map[string][]byte{
		"VERSION_message_version_0":                        withVersion(text, 0),
		"VERSION_message_version_2":                        withVersion(text, 2),
		"MALFORMED_message_empty":                          {},
		"MALFORMED_message_truncated":                      text[:len(text)-1],
		"MALFORMED_message_truncated_header":               text[:20],
		"MALFORMED_message_trailing":                       append(slices.Clone(text), 0),
		"MALFORMED_message_seq_zero":                       rawMessage(1, 1, 0, nil, bytesBody([]byte("hi"))),
		"MALFORMED_message_unknown_kind_0":                 rawMessage(1, 0, 1, nil, bytesBody(nil)),
		"MALFORMED_message_unknown_kind_6":                 rawMessage(1, 6, 1, nil, bytesBody([]byte("hi"))),
		"MALFORMED_message_text_empty":                     rawMessage(1, 1, 1, nil, bytesBody(nil)),
		"MALFORMED_message_text_bad_utf8":                  rawMessage(1, 1, 1, nil, bytesBody([]byte("caf\xc3("))),
		"MALFORMED_message_checkpoint_past_end":            rawMessage(1, 1, 1, nil, bytesBody([]byte("hi")))[:34+2],
		"MALFORMED_message_leave_with_body":                rawMessage(1, 3, 1, nil, bytesBody([]byte{0})),
		"MALFORMED_message_mailbox_short_send_id":          rawMessage(1, 2, 1, nil, bytesBody(make([]byte, 31))),
		"MALFORMED_message_mailbox_empty_key":              rawMessage(1, 2, 1, nil, bytesBody(make([]byte, 32+2))),
		"MALFORMED_message_mailbox_trailing":               rawMessage(1, 2, 1, nil, bytesBody(append(make([]byte, 32), 0, 1, 9, 9))),
		"MALFORMED_message_receipt_ids_not_multiple_of_16": rawMessage(1, 4, 1, nil, receiptBody(1, make([]byte, 17))),
		"MALFORMED_message_receipt_no_ids":                 rawMessage(1, 4, 1, nil, receiptBody(1, nil)),
		"MALFORMED_message_receipt_type_0":                 rawMessage(1, 4, 1, nil, receiptBody(0, make([]byte, 16))),
		"MALFORMED_message_receipt_type_3":                 rawMessage(1, 4, 1, nil, receiptBody(3, make([]byte, 16))),
		"MALFORMED_message_receipt_trailing":               rawMessage(1, 4, 1, nil, func(b *cryptobyte.Builder) { receiptBody(1, make([]byte, 16))(b); b.AddUint8(0) }),
		"VERSION_intro_version_2":                          withVersion(intro, 2),
		"MALFORMED_intro_empty":                            {},
		"MALFORMED_intro_truncated":                        intro[:len(intro)-1],
		"MALFORMED_intro_trailing":                         append(slices.Clone(intro), 0),
		"MALFORMED_intro_admins_empty_list":                append(slices.Clone(intro), 0, 0),
		"MALFORMED_intro_admins_bad_handle":                append(slices.Clone(intro), 0, 4, 3, 'B', 'o', 'b'),
		"MALFORMED_intro_admins_duplicate":                 append(slices.Clone(intro), 0, 12, 5, 'a', 'l', 'i', 'c', 'e', 5, 'a', 'l', 'i', 'c', 'e'),
		"MALFORMED_intro_admins_trailing":                  append(slices.Clone(intro), 0, 6, 5, 'a', 'l', 'i', 'c', 'e', 0),
		"MALFORMED_intro_direct_with_admins":               append(rawIntro(1, 1, "", []byte{1}, nil), 0, 6, 5, 'a', 'l', 'i', 'c', 'e'),
		"MALFORMED_intro_conv_kind_0":                      rawIntro(1, 0, "", []byte{1}, nil),
		"MALFORMED_intro_conv_kind_3":                      rawIntro(1, 3, "", []byte{1}, nil),
		"MALFORMED_intro_direct_with_name":                 rawIntro(1, 1, "us", []byte{1}, nil),
		"MALFORMED_intro_name_bad_utf8":                    rawIntro(1, 2, "\xff", []byte{1}, nil),
		"MALFORMED_intro_empty_welcome":                    rawIntro(1, 2, "g", nil, ok),
		"MALFORMED_intro_roster_bad_handle":                rawIntro(1, 2, "g", []byte{1}, []rawMember{{"Alice", key}}),
		"MALFORMED_intro_roster_handle_too_short":          rawIntro(1, 2, "g", []byte{1}, []rawMember{{"al", key}}),
		"MALFORMED_intro_roster_handle_33_bytes":           rawIntro(1, 2, "g", []byte{1}, []rawMember{{strings.Repeat("a", 33), key}}),
		"MALFORMED_intro_roster_handle_not_ascii":          rawIntro(1, 2, "g", []byte{1}, []rawMember{{"jörg", key}}),
		"MALFORMED_intro_roster_duplicate_handle":          rawIntro(1, 2, "g", []byte{1}, []rawMember{{"alice", key}, {"alice", key}}),
		"MALFORMED_intro_roster_empty_key":                 rawIntro(1, 2, "g", []byte{1}, []rawMember{{"alice", nil}}),
		"MALFORMED_intro_roster_truncated_member":          truncatedRoster(),
		"MALFORMED_intro_roster_length_past_end":           rawIntro(1, 2, "g", []byte{1}, ok)[:1+1+2+4+3+10],
	}
}

// truncatedRoster is an Intro whose roster vector ends inside a member's
// send ID.
func truncatedRoster() []byte {
	var b cryptobyte.Builder
	b.AddUint8(1)
	b.AddUint8(2)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {})
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(1) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte("alice")) })
		b.AddBytes(make([]byte, 20))
	})
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {})
	return b.BytesOrPanic()
}

// vectors returns every testdata file name with its contents.
func vectors() map[string][]byte {
	out := make(map[string][]byte)
	for name, v := range samples() {
		out["good_"+name+".hex"] = mustMarshal(v)
	}
	for name, b := range failures() {
		out["fail_"+name+".hex"] = b
	}
	return out
}

// TestGenerateVectors checks that testdata holds exactly the vectors this
// file generates; with -update it rewrites them.
func TestGenerateVectors(t *testing.T) {
	want := vectors()
	if *update {
		old, _ := filepath.Glob("testdata/*.hex")
		for _, p := range old {
			if _, ok := want[filepath.Base(p)]; !ok {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
		}
		for name, b := range want {
			if err := os.WriteFile(filepath.Join("testdata", name), []byte(hex.EncodeToString(b)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	have := readVectors(t)
	for name, b := range want {
		if got, ok := have[name]; !ok {
			t.Errorf("testdata/%s is missing (go test -run TestGenerateVectors -update)", name)
		} else if !bytes.Equal(got, b) {
			t.Errorf("testdata/%s differs from the generated vector (go test -run TestGenerateVectors -update)", name)
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			t.Errorf("testdata/%s is not generated by this test", name)
		}
	}
}

func readVectors(t testing.TB) map[string][]byte {
	paths, err := filepath.Glob("testdata/*.hex")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte)
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hex.DecodeString(strings.TrimSpace(string(raw)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// vectorKind returns a name that parse reads as v's type.
func vectorKind(v any) string {
	if _, ok := v.(*Intro); ok {
		return "intro_"
	}
	return "message_"
}

// parse parses b as what the vector name says it is and re-marshals it.
func parse(name string, b []byte) (any, []byte, error) {
	if strings.Contains(name, "intro_") {
		in, err := ParseIntro(b)
		if err != nil {
			return nil, nil, err
		}
		out, err := in.Marshal()
		return in, out, err
	}
	m, err := ParseMessage(b)
	if err != nil {
		return nil, nil, err
	}
	out, err := m.Marshal()
	return m, out, err
}

// TestVectors reads the files in testdata as they are: each good_ vector
// parses to its sample and re-marshals byte for byte; each fail_ vector
// fails with the error its name says.
func TestVectors(t *testing.T) {
	s := samples()
	vs := readVectors(t)
	if len(vs) == 0 {
		t.Fatal("no vectors in testdata")
	}
	for name, b := range vs {
		t.Run(name, func(t *testing.T) {
			base := strings.TrimSuffix(name, ".hex")
			switch {
			case strings.HasPrefix(base, "good_"):
				v, again, err := parse(base, b)
				if err != nil {
					t.Fatalf("parse: %v", err)
				}
				if !bytes.Equal(again, b) {
					t.Errorf("re-marshalled differs:\n got %x\nwant %x", again, b)
				}
				if want, ok := s[strings.TrimPrefix(base, "good_")]; ok && !reflect.DeepEqual(v, want) {
					t.Errorf("parsed %+v, want %+v", v, want)
				}
			case strings.HasPrefix(base, "fail_"):
				code, _, _ := strings.Cut(strings.TrimPrefix(base, "fail_"), "_")
				_, _, err := parse(base, b)
				switch code {
				case "MALFORMED":
					if !errors.Is(err, ErrMalformed) {
						t.Errorf("got %v, want ErrMalformed", err)
					}
				case "VERSION":
					if !errors.Is(err, ErrVersion) || errors.Is(err, ErrMalformed) {
						t.Errorf("got %v, want ErrVersion", err)
					}
				default:
					t.Fatalf("unknown error %q in the file name", code)
				}
			default:
				t.Fatal("a vector is named good_* or fail_*")
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for name, v := range samples() {
		b := mustMarshal(v)
		got, again, err := parse(name, b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, v) || !bytes.Equal(again, b) {
			t.Errorf("%s: round trip differs", name)
		}
	}
}

func TestMessageLayout(t *testing.T) {
	b := mustMarshal(&Message{Kind: KindLeave, ID: sampleID, Seq: 0x0102, SentAt: 0x0304})
	want := "01" + "03" + hex.EncodeToString(sampleID[:]) + "0000000000000102" + "0000000000000304" + "0000" + "000000"
	if got := hex.EncodeToString(b); got != want {
		t.Errorf("leave message is %s, want %s", got, want)
	}
}

func TestLimits(t *testing.T) {
	text := func(n int) *Message {
		return &Message{Kind: KindText, ID: sampleID, Seq: 1, Text: strings.Repeat("a", n)}
	}
	ids := func(n int) *Message {
		return &Message{Kind: KindReceipt, Seq: 1, Receipt: &Receipt{Type: ReceiptDelivered, IDs: make([][IDSize]byte, n)}}
	}
	roster := func(n int) *Intro {
		in := &Intro{ConvKind: ConvGroup, Welcome: []byte{1}}
		for i := range n {
			in.Roster = append(in.Roster, Member{Handle: fmt.Sprintf("u%04d", i), SealingKey: []byte{1}})
		}
		return in
	}
	name := func(n int) *Intro {
		return &Intro{ConvKind: ConvGroup, Name: strings.Repeat("n", n), Welcome: []byte{1}}
	}
	ckp := func(n int) *Message { return &Message{Kind: KindLeave, Seq: 1, Checkpoint: make([]byte, n)} }
	for _, tc := range []struct {
		name string
		v    any
		ok   bool
	}{
		{"text at limit", text(MaxText), true},
		{"text over limit", text(MaxText + 1), false},
		{"receipt at limit", ids(MaxReceiptIDs), true},
		{"receipt over limit", ids(MaxReceiptIDs + 1), false},
		{"roster at limit", roster(MaxRoster), true},
		{"roster over limit", roster(MaxRoster + 1), false},
		{"name at limit", name(MaxName), true},
		{"name over limit", name(MaxName + 1), false},
		{"checkpoint at limit", ckp(MaxCheckpoint), true},
		{"checkpoint over limit", ckp(MaxCheckpoint + 1), false},
	} {
		var err error
		switch v := tc.v.(type) {
		case *Message:
			_, err = v.Marshal()
		case *Intro:
			_, err = v.Marshal()
		}
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Marshal: %v", tc.name, err)
		}
		if tc.ok {
			if _, again, err := parse(vectorKind(tc.v), mustMarshal(tc.v)); err != nil || again == nil {
				t.Errorf("%s: parse: %v", tc.name, err)
			}
		}
	}

	// Parse refuses over-limit input that Marshal would not produce.
	if _, err := ParseMessage(rawMessage(1, 1, 1, nil, bytesBody(bytes.Repeat([]byte("a"), MaxText+1)))); !errors.Is(err, ErrMalformed) {
		t.Errorf("parse text over limit: %v", err)
	}
	members := make([]rawMember, MaxRoster+1)
	for i := range members {
		members[i] = rawMember{fmt.Sprintf("u%04d", i), []byte{1}}
	}
	if _, err := ParseIntro(rawIntro(1, 2, "", []byte{1}, members)); !errors.Is(err, ErrMalformed) {
		t.Errorf("parse roster over limit: %v", err)
	}
	if _, err := ParseIntro(rawIntro(1, 2, "", []byte{1}, members[:MaxRoster])); err != nil {
		t.Errorf("parse roster at limit: %v", err)
	}
}

func TestMarshalRefuses(t *testing.T) {
	mb := &MailboxAnnounce{SealingKey: []byte{1}}
	rc := &Receipt{Type: ReceiptRead, IDs: [][IDSize]byte{{1}}}
	for name, v := range map[string]any{
		"nil message":                  (*Message)(nil),
		"nil intro":                    (*Intro)(nil),
		"seq 0":                        &Message{Kind: KindText, Text: "hi"},
		"skipped without the mark":     &Message{Kind: KindText, ID: sampleID, Seq: 2, Text: "hi", SkippedBefore: true},
		"the mark without skipped":     &Message{Kind: KindText, ID: skippedID(), Seq: 2, Text: "hi"},
		"unknown kind":                 &Message{Kind: 9, Seq: 1},
		"empty text":                   &Message{Kind: KindText, Seq: 1},
		"bad utf8":                     &Message{Kind: KindText, Seq: 1, Text: "\xff"},
		"text with mailbox":            &Message{Kind: KindText, Seq: 1, Text: "hi", Mailbox: mb},
		"mailbox nil":                  &Message{Kind: KindMailbox, Seq: 1},
		"mailbox with receipt":         &Message{Kind: KindMailbox, Seq: 1, Mailbox: mb, Receipt: rc},
		"mailbox empty key":            &Message{Kind: KindMailbox, Seq: 1, Mailbox: &MailboxAnnounce{}},
		"leave with text":              &Message{Kind: KindLeave, Seq: 1, Text: "bye"},
		"text with filler":             &Message{Kind: KindText, Seq: 1, Text: "hi", Filler: []byte{0}},
		"cover with text":              &Message{Kind: KindCover, Seq: 1, Text: "hi"},
		"receipt nil":                  &Message{Kind: KindReceipt, Seq: 1},
		"receipt unknown type":         &Message{Kind: KindReceipt, Seq: 1, Receipt: &Receipt{Type: 3, IDs: rc.IDs}},
		"receipt no ids":               &Message{Kind: KindReceipt, Seq: 1, Receipt: &Receipt{Type: ReceiptRead}},
		"intro unknown kind":           &Intro{ConvKind: 7, Welcome: []byte{1}},
		"direct with name":             &Intro{ConvKind: ConvDirect, Name: "x", Welcome: []byte{1}},
		"intro no welcome":             &Intro{ConvKind: ConvGroup},
		"intro bad handle":             &Intro{ConvKind: ConvGroup, Welcome: []byte{1}, Roster: []Member{{Handle: "Bob", SealingKey: []byte{1}}}},
		"intro duplicate handle":       &Intro{ConvKind: ConvGroup, Welcome: []byte{1}, Roster: []Member{{Handle: "bob", SealingKey: []byte{1}}, {Handle: "bob", SealingKey: []byte{2}}}},
		"intro member no key":          &Intro{ConvKind: ConvGroup, Welcome: []byte{1}, Roster: []Member{{Handle: "bob"}}},
		"intro roster over 2^24 bytes": bigRoster(),
	} {
		var err error
		switch v := v.(type) {
		case *Message:
			_, err = v.Marshal()
		case *Intro:
			_, err = v.Marshal()
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Marshal returned %v, want ErrMalformed", name, err)
		}
	}
}

// bigRoster is an Intro whose roster, under MaxRoster members, does not
// fit roster<0..2^24-1>.
func bigRoster() *Intro {
	in := &Intro{ConvKind: ConvGroup, Welcome: []byte{1}}
	key := make([]byte, MaxSealingKey)
	for i := range (1<<24)/MaxSealingKey + 1 {
		in.Roster = append(in.Roster, Member{Handle: fmt.Sprintf("u%04d", i), SealingKey: key})
	}
	return in
}

// TestNewID: an ID drawn for a message that skipped the number before it
// carries the mark and parses as such; one drawn for any other does not.
func TestNewID(t *testing.T) {
	for _, skipped := range []bool{false, true} {
		id, err := NewID(skipped)
		if err != nil {
			t.Fatal(err)
		}
		if marked(&id) != skipped {
			t.Errorf("NewID(%t) marked %t", skipped, !skipped)
		}
		b := mustMarshal(&Message{Kind: KindText, ID: id, Seq: 2, Text: "hi", SkippedBefore: skipped})
		m, err := ParseMessage(b)
		if err != nil || m.SkippedBefore != skipped || m.ID != id {
			t.Errorf("NewID(%t): parsed %+v, %v", skipped, m, err)
		}
	}
	// The mark depends on the first half: a message's ID with another
	// first half and the same second half does not carry it.
	id := skippedID()
	id[0] ^= 1
	if marked(&id) {
		t.Error("the mark does not depend on the first half")
	}
}

func TestValidHandle(t *testing.T) {
	for h, ok := range map[string]bool{
		"abc": true, "a.b_c-9": true, strings.Repeat("z", 32): true,
		"": false, "ab": false, strings.Repeat("z", 33): false, "Abc": false, "a b": false, "jörg": false, "a@b": false,
	} {
		if err := ValidHandle(h); (err == nil) != ok || err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("ValidHandle(%q) = %v", h, err)
		}
	}
	if err := ValidHandle("Secret.Name"); err != nil && strings.Contains(err.Error(), "Secret") {
		t.Error("the error names the handle")
	}
}

func seedFuzz(f *testing.F, kind string) {
	for name, b := range readVectors(f) {
		if strings.Contains(name, "intro_") == (kind == "intro") {
			f.Add(b)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	seedFuzz(f, "message")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		again, err := m.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted message does not round-trip: %v", err)
		}
	})
}

func FuzzParseIntro(f *testing.F) {
	seedFuzz(f, "intro")
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := ParseIntro(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		again, err := in.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted intro does not round-trip: %v", err)
		}
	})
}
