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
		seq     uint64
		skipped bool // the message says the number before it may never have been sent
		dup     bool
		missed  []uint64
	}{
		{1, false, false, nil},
		{2, false, false, nil},
		{2, false, true, nil},             // delivered twice
		{5, false, false, []uint64{3, 4}}, // a gap
		{4, false, false, nil},            // a late arrival fills it
		{4, false, true, nil},             // and only once
		{3, false, false, nil},
		{6, false, false, nil},
		{1, false, true, nil},
		{8, true, false, []uint64{}},     // 7 excused: skipped by a restart
		{7, false, false, nil},           // but shown if it was sent after all
		{9, true, false, nil},            // a skip flag with no gap excuses nothing
		{12, true, false, []uint64{10}},  // it excuses 11 only
		{14, false, false, []uint64{13}}, // an unflagged gap is reported
		{16, true, false, []uint64{}},    // 15 excused
		{16, true, true, nil},            // a duplicate stays one
	}
	for i, s := range steps {
		dup, missed := trackSeq(m, s.seq, s.skipped)
		if dup != s.dup || !slices.Equal(missed, s.missed) {
			t.Fatalf("step %d (seq %d): dup %v missed %v, want %v %v", i, s.seq, dup, missed, s.dup, s.missed)
		}
	}
	if want := []uint64{10, 13}; !slices.Equal(m.Missing, want) {
		t.Fatalf("awaited gaps %v, want %v", m.Missing, want)
	}
	if want := []uint64{11, 15}; !slices.Equal(m.Excused, want) {
		t.Fatalf("awaited excused numbers %v, want %v", m.Excused, want)
	}
	// A member first seen at a later number (we joined after its earlier
	// messages) sets the baseline without a gap.
	late := &memberRecord{}
	if dup, missed := trackSeq(late, 40, false); dup || missed != nil {
		t.Fatalf("first sight at 40: %v %v", dup, missed)
	}
	if _, missed := trackSeq(late, 42, false); !slices.Equal(missed, []uint64{41}) {
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
