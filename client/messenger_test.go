package client

import (
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
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
