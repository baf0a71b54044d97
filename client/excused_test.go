package client

import (
	"encoding/json"
	"testing"
)

// TestAttackRestartsEvictAwaited plays a server that withholds one of
// alice's texts (bob is told of the gap and keeps its number awaited,
// memberRecord.Missing) and delivers it late, after alice's client has
// restarted many times: a phone app restarts every time it is opened.
// Each restart's first message skips a number and says so (ADR 0045); bob
// excuses that number but still awaits it. Kept in Missing, which holds
// the newest 1000 numbers, those excused numbers pushed the real gap's
// number out after 1000 restarts, and the withheld text, when the server
// delivered it, was taken for a duplicate and dropped without a trace;
// and bob's record of alice grew by one number per restart of hers, all
// of it rewritten with every message she sends. The excused numbers are
// kept apart, only the newest few: the late text is shown, and the record
// stays small.
func TestAttackRestartsEvictAwaited(t *testing.T) {
	m := &memberRecord{}
	for seq := uint64(1); seq <= 10; seq++ {
		if dup, missed := trackSeq(m, seq, false); dup || len(missed) > 0 {
			t.Fatalf("seq %d: dup %v missed %v", seq, dup, missed)
		}
	}
	// The server withholds 11; 12 shows the gap.
	if _, missed := trackSeq(m, 12, false); len(missed) != 1 || missed[0] != 11 {
		t.Fatalf("12: missed %v, want [11]", missed)
	}
	// 1500 restarts of alice's, each with one message after it that
	// skips the number before it.
	seq := uint64(12)
	for range 1500 {
		seq += 2
		if dup, missed := trackSeq(m, seq, true); dup || len(missed) > 0 {
			t.Fatalf("seq %d after a restart: dup %v missed %v", seq, dup, missed)
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 1024 {
		t.Errorf("bob's record of alice is %d bytes after her 1500 restarts", len(b))
	}
	// The server delivers 11 now: it is shown, once.
	if dup, _ := trackSeq(m, 11, false); dup {
		t.Fatal("the withheld text, delivered late, was dropped as a duplicate")
	}
	if dup, _ := trackSeq(m, 11, false); !dup {
		t.Fatal("the late text was taken twice")
	}
	// A text sent early before the last restart and delivered after the
	// message that excused its number is still shown.
	if dup, _ := trackSeq(m, seq-1, false); dup {
		t.Fatal("the last restart's excused number, delivered late, was dropped")
	}
}
