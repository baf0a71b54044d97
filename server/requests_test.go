package server

import (
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/wire"
)

// cancelStream is the one method of a Stream the request budget calls:
// CancelRead on a stream it pushes out.
type cancelStream struct {
	Stream
	cancelled bool
}

func (s *cancelStream) CancelRead(quic.StreamErrorCode) { s.cancelled = true }

// TestRequestBudgetPushesOutOldest: when the server's request budget is
// full, a record takes room from the records that began arriving before
// it, oldest first, and from nothing younger; a record already read is
// never pushed out; a connection's share is its own limit; everything
// taken is given back.
func TestRequestBudgetPushesOutOldest(t *testing.T) {
	b := &requestBudget{limit: 300, connMax: 250}
	cs1, cs2 := &connState{}, &connState{}
	charge := func(cs *connState) (*bodyCharge, *cancelStream) {
		st := &cancelStream{}
		return &bodyCharge{b: b, cs: cs, st: st}, st
	}
	busy := func(err error) bool { code, _ := wire.CodeOf(err); return code == wire.CodeUnavailable }

	c1, st1 := charge(cs1)
	c2, st2 := charge(cs2)
	c1.begin()
	c2.begin()
	if err := c1.Take(100); err != nil {
		t.Fatal(err)
	}
	if err := c2.Take(100); err != nil {
		t.Fatal(err)
	}
	// c3 needs 150 with 200 of 300 held: the oldest, c1, goes.
	c3, st3 := charge(cs2)
	c3.begin()
	if err := c3.Take(150); err != nil {
		t.Fatal(err)
	}
	if !st1.cancelled || st2.cancelled || b.held != 250 || cs1.requestHeld != 0 {
		t.Fatalf("c1 pushed out %v, c2 %v; held %d, c1's connection %d", st1.cancelled, st2.cancelled, b.held, cs1.requestHeld)
	}
	if err := c1.Take(10); !busy(err) {
		t.Fatalf("a pushed-out stream took more: %v", err)
	}
	if !c1.end() {
		t.Fatal("c1's read did not learn it was pushed out")
	}
	// c2 is now the oldest: nothing older can make room for it.
	if err := c2.Take(100); !busy(err) || st3.cancelled {
		t.Fatalf("an old record growing pushed out a younger one: %v, c3 cancelled %v", err, st3.cancelled)
	}
	// Over its connection's share, a record is refused, whatever is free.
	c5, _ := charge(cs2)
	c5.begin()
	if err := c5.Take(10); !busy(err) {
		t.Fatalf("over the connection's share: %v", err)
	}
	c5.end()
	// c2 is read: a new record pushes out c3, arriving, not c2.
	if c2.end() {
		t.Fatal("c2 pushed out")
	}
	c4, _ := charge(cs1)
	c4.begin()
	if err := c4.Take(200); err != nil {
		t.Fatal(err)
	}
	if !st3.cancelled || st2.cancelled || b.held != 300 {
		t.Fatalf("c3 pushed out %v, c2 %v; held %d", st3.cancelled, st2.cancelled, b.held)
	}
	for _, c := range []*bodyCharge{c1, c2, c3, c4, c5} {
		c.end()
		c.release()
		c.release() // a second release gives nothing back twice
	}
	if b.held != 0 || cs1.requestHeld != 0 || cs2.requestHeld != 0 || b.arriving.Len() != 0 {
		t.Fatalf("after release: held %d, connections %d and %d, %d arriving", b.held, cs1.requestHeld, cs2.requestHeld, b.arriving.Len())
	}
}
