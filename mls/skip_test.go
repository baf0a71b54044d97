package mls

import (
	"errors"
	"testing"
)

// TestSkipSendTo: a sender that skips its application ratchet (a restart
// past generations it may have used unrecorded, client/reserve.go) sends
// its next message at the generation it skipped to; the receiver, which
// read the one before, reads it, and refuses a replay of the earlier one.
// A skip never goes back, and one beyond MaxForwardDistance is refused
// (receivers would refuse the message).
func TestSkipSendTo(t *testing.T) {
	tg := newTestGroup(t, SuiteX25519AES128GCMSHA256Ed25519, nil)
	tg.add(tg.members[0], 1)
	a, b := tg.members[0].g, tg.members[1].g

	first, err := a.Encrypt([]byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Decrypt(first); err != nil {
		t.Fatal(err)
	}
	if next, err := a.NextSendGeneration(); err != nil || next != 1 {
		t.Fatalf("next generation %d (%v), want 1", next, err)
	}
	if err := a.SkipSendTo(5); err != nil {
		t.Fatal(err)
	}
	if err := a.SkipSendTo(2); err != nil { // never back
		t.Fatal(err)
	}
	if next, err := a.NextSendGeneration(); err != nil || next != 5 {
		t.Fatalf("next generation %d (%v) after the skip, want 5", next, err)
	}
	after, err := a.Encrypt([]byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, _, err := b.Decrypt(after); err != nil || string(pt) != "after" {
		t.Fatalf("receiver read %q (%v)", pt, err)
	}
	if _, _, err := b.Decrypt(first); !errors.Is(err, ErrKeyConsumed) {
		t.Fatalf("a replay of the first message: %v, want ErrKeyConsumed", err)
	}
	if err := a.SkipSendTo(6 + DefaultSecretTreeOptions.MaxForwardDistance + 1); !errors.Is(err, ErrGenerationTooFar) {
		t.Fatalf("a skip beyond the forward distance: %v, want ErrGenerationTooFar", err)
	}
}
