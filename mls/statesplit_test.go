package mls

import (
	"bytes"
	"errors"
	"testing"
)

// TestStateSplit: a state cut by SplitState joins back to the same bytes;
// a text changes only the ratchets; ratchets of another state (a later
// epoch, or the same epoch before a commit was undone) are refused.
func TestStateSplit(t *testing.T) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(t, suite, nil)
	tg.add(tg.members[0], 2)
	a, b := tg.members[0].g, tg.members[1].g

	st0 := stateOf(t, b)
	base0, rat0, err := SplitState(st0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := JoinState(base0, rat0); err != nil || !bytes.Equal(got, st0) {
		t.Fatalf("join: %v, equal %v", err, bytes.Equal(got, st0))
	}
	if len(rat0) >= len(st0)/2 {
		t.Errorf("ratchets %d bytes of a %d-byte state", len(rat0), len(st0))
	}

	msg, err := a.Encrypt([]byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ProcessMessage(msg); err != nil {
		t.Fatal(err)
	}
	st1 := stateOf(t, b)
	base1, rat1, err := SplitState(st1)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(base0, base1) {
		t.Fatal("a text changed the base")
	}
	if bytes.Equal(rat0, rat1) {
		t.Fatal("a text left the ratchets as they were")
	}
	if got, err := JoinState(base1, rat1); err != nil || !bytes.Equal(got, st1) {
		t.Fatalf("join after a text: %v", err)
	}
	// Old ratchets with the same base join: the hash binds the base, and
	// which generation is stored is the application's transaction's job.
	if _, err := JoinState(base1, rat0); err != nil {
		t.Fatal(err)
	}

	res, err := a.Commit(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ProcessMessage(res.Commit); err != nil {
		t.Fatal(err)
	}
	base2, rat2, err := SplitState(stateOf(t, b))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][2][]byte{
		"new base, old ratchets": {base2, rat1},
		"old base, new ratchets": {base1, rat2},
	} {
		if _, err := JoinState(c[0], c[1]); !errors.Is(err, ErrInvalidState) {
			t.Errorf("%s: %v, want ErrInvalidState", name, err)
		}
	}
	if !SameBase(rat0, rat1) || SameBase(rat1, rat2) || SameBase(rat2, base2) || SameBase(nil, nil) {
		t.Error("SameBase does not tell the ratchets' bases apart")
	}
	if _, _, err := SplitState(base2); !errors.Is(err, ErrInvalidState) {
		t.Errorf("a base split as a state: %v", err)
	}
	if _, err := UnmarshalGroup(base2, nil); err == nil {
		t.Error("a base read as a full state")
	}
}

// FuzzJoinState: JoinState and SplitState never panic, and what joins
// splits back into the same parts.
func FuzzJoinState(f *testing.F) {
	fx := newGroupFuzzFixture(f)
	base, rat, err := SplitState(fx.state)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(base, rat)
	f.Add(fx.state, rat)
	f.Fuzz(func(t *testing.T, base, rat []byte) {
		_, _, _ = SplitState(base)
		st, err := JoinState(base, rat)
		if err != nil {
			return
		}
		b2, r2, err := SplitState(st)
		if err != nil {
			t.Fatalf("a joined state does not split: %v", err)
		}
		if !bytes.Equal(b2, base) || !bytes.Equal(r2, rat) {
			t.Fatal("join then split changed the parts")
		}
	})
}
