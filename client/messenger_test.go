package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"golang.org/x/mod/sumdb/note"
)

func TestTrackSeq(t *testing.T) {
	m := &memberRecord{}
	steps := []struct {
		seq    uint64
		dup    bool
		missed []uint64
	}{
		{1, false, nil},
		{2, false, nil},
		{2, true, nil},             // delivered twice
		{5, false, []uint64{3, 4}}, // a gap
		{4, false, nil},            // a late arrival fills it
		{4, true, nil},             // and only once
		{3, false, nil},
		{6, false, nil},
		{1, true, nil},
	}
	for i, s := range steps {
		dup, missed := trackSeq(m, s.seq)
		if dup != s.dup || !slices.Equal(missed, s.missed) {
			t.Fatalf("step %d (seq %d): dup %v missed %v, want %v %v", i, s.seq, dup, missed, s.dup, s.missed)
		}
	}
	if len(m.Missing) != 0 {
		t.Fatalf("gaps left: %v", m.Missing)
	}
	// A member first seen at a later number (we joined after its earlier
	// messages) sets the baseline without a gap.
	late := &memberRecord{}
	if dup, missed := trackSeq(late, 40); dup || missed != nil {
		t.Fatalf("first sight at 40: %v %v", dup, missed)
	}
	if _, missed := trackSeq(late, 42); !slices.Equal(missed, []uint64{41}) {
		t.Fatalf("then 42: missed %v", missed)
	}
}

func TestSafetyNumber(t *testing.T) {
	pa, _, _ := ed25519.GenerateKey(rand.Reader)
	pb, _, _ := ed25519.GenerateKey(rand.Reader)
	pc, _, _ := ed25519.GenerateKey(rand.Reader)
	ab := SafetyNumber("alice", pa, "bob", pb)
	if ba := SafetyNumber("bob", pb, "alice", pa); ab != ba {
		t.Fatalf("not symmetric: %s / %s", ab, ba)
	}
	if len(ab) != 60 || strings.Trim(ab, "0123456789") != "" {
		t.Fatalf("not 60 digits: %q", ab)
	}
	if SafetyNumber("alice", pa, "bob", pc) == ab || SafetyNumber("alice", pc, "bob", pb) == ab {
		t.Fatal("a different key on either side must change the number")
	}
	if got := FormatSafetyNumber(ab); len(strings.Fields(got)) != 12 {
		t.Fatalf("format: %q", got)
	}
	// A fixed vector, so the derivation cannot drift.
	var k1, k2 [32]byte
	for i := range k1 {
		k1[i], k2[i] = byte(i), byte(255-i)
	}
	if got := SafetyNumber("alice", k1[:], "bob", k2[:]); got != safetyVector {
		t.Fatalf("vector: %s", got)
	}
}

const safetyVector = "828398287585015492401175609504114404701417538564343785423034"

const pinText = `qpc-kt-0123456789abcdef+01234567+AXjf1OP8oTq7vnf1M6Vd9XIcqzE7w0sj4YyzrfuOS1Ms
vrf-key 8d8b5e1bf3ef3a9e4b3f0c6a02d54c7c8c4bde2a6d4b5f2e1a3c5b7d9e0f1a2b
config 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
`

func TestParseKTPin(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-test")
	if err != nil {
		t.Fatal(err)
	}
	vrfKey, _, _ := ed25519.GenerateKey(rand.Reader)
	want := protocol.KTPin{VKey: vkey, VRFKey: vrfKey, ConfigHash: [32]byte{1, 2, 3}}
	for _, text := range []string{want.String(), strings.ReplaceAll(want.String(), "\n", " ")} {
		got, err := protocol.ParseKTPin(text)
		if err != nil || got.VKey != want.VKey || string(got.VRFKey) != string(want.VRFKey) || got.ConfigHash != want.ConfigHash {
			t.Fatalf("parse %q: %+v %v", text, got, err)
		}
	}
	for name, text := range map[string]string{
		"empty":        "",
		"no vrf":       "qpc-kt-0123456789abcdef+01234567+AXjf1OP8oTq7vnf1M6Vd9XIcqzE7w0sj4YyzrfuOS1Ms\nconfig 00",
		"bad hex":      strings.Replace(pinText, "vrf-key 8d", "vrf-key zz", 1),
		"short config": strings.Replace(pinText, "config 0f1e", "config 0f", 1),
		"junk":         pinText + "extra",
	} {
		if _, err := protocol.ParseKTPin(text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseKTPin(f *testing.F) {
	f.Add(pinText)
	f.Add(strings.ReplaceAll(pinText, "\n", " "))
	f.Add("vrf-key")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := protocol.ParseKTPin(s)
		if err != nil {
			return
		}
		// What parses round-trips through String.
		q, err := protocol.ParseKTPin(p.String())
		if err != nil || q.VKey != p.VKey || string(q.VRFKey) != string(p.VRFKey) || q.ConfigHash != p.ConfigHash {
			t.Fatalf("round trip: %v", err)
		}
	})
}
