package scenario

import (
	"math"
	"testing"
)

// TestLabStrays checks the stray-receipt draws that lab/population and
// trace.FromSchedule share: the same schedule gives the same draws, the
// fraction drawn is the scenario's, and a stray goes from a user to a
// peer of one of its direct chats, in that chat.
func TestLabStrays(t *testing.T) {
	sc, err := Parse([]byte("name = \"t\"\nusers = 40\nduration = \"2h\"\n[graph]\ncontacts = 2\n[receipts]\nenabled = true\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sc.Generate(5)
	if err != nil {
		t.Fatal(err)
	}
	const n, frac = 30_000, 1.0 / 3
	a, b := NewStrays(s, frac), NewStrays(s, frac)
	strays := 0
	for range n {
		ok, from, to, conv := a.Next()
		ok2, from2, to2, conv2 := b.Next()
		if ok != ok2 || from != from2 || to != to2 || conv != conv2 {
			t.Fatal("two draws from the same schedule differ")
		}
		if !ok {
			continue
		}
		strays++
		c := s.Convs[conv]
		if c.Group || !(c.Members[0] == from && c.Members[1] == to || c.Members[1] == from && c.Members[0] == to) {
			t.Fatalf("a stray from %d to %d in conversation %s (%v)", from, to, c.ID, c.Members)
		}
	}
	if got := float64(strays) / n; math.Abs(got-frac) > 0.01 {
		t.Errorf("%.3f of receipts stray, want %.3f ± 0.01", got, frac)
	}
	if ok, _, _, _ := NewStrays(s, 0).Next(); ok {
		t.Error("a stray drawn with traffic.stray_receipts 0")
	}
}
