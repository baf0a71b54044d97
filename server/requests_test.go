package server

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/wire"
)

// cancelStream is the one method of a Stream the request budget calls:
// CancelRead on a stream it pushes out.
type cancelStream struct {
	Stream
	cancelled atomic.Bool
}

func (s *cancelStream) CancelRead(quic.StreamErrorCode) { s.cancelled.Store(true) }

// TestRequestBudgetPushesOutOldest: when the server's request budget is
// full, a record takes room from the records that began arriving before
// it, oldest first, and from nothing younger; a record already read is
// never pushed out; a record pushed out stays charged until its stream
// lets go, and the record that pushed it out waits for that; a
// connection's share is its own limit; everything taken is given back.
func TestRequestBudgetPushesOutOldest(t *testing.T) {
	b := newRequestBudget(Options{RequestBytes: 300, RequestConnBytes: 250})
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
	// c3 needs 150 with 200 of 300 held: the oldest, c1, goes, and c3
	// has its bytes once c1's stream has let go of its own.
	c3, st3 := charge(cs2)
	c3.begin()
	took := make(chan error)
	go func() { took <- c3.Take(150) }()
	for !st1.cancelled.Load() {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-took:
		t.Fatalf("c3 took its bytes before c1 let go of its own: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	b.mu.Lock()
	held := b.held
	b.mu.Unlock()
	if held != 200 || st2.cancelled.Load() {
		t.Fatalf("while c1 lets go: held %d (want 200, c1's still counted), c2 pushed out %v", held, st2.cancelled.Load())
	}
	if err := c1.Take(10); !busy(err) {
		t.Fatalf("a pushed-out stream took more: %v", err)
	}
	if !c1.end() {
		t.Fatal("c1's read did not learn it was pushed out")
	}
	c1.release()
	if err := <-took; err != nil {
		t.Fatal(err)
	}
	if b.held != 250 || cs1.requestHeld != 0 {
		t.Fatalf("held %d, c1's connection %d", b.held, cs1.requestHeld)
	}
	// c2 is now the oldest: nothing older can make room for it.
	if err := c2.Take(100); !busy(err) || st3.cancelled.Load() {
		t.Fatalf("an old record growing pushed out a younger one: %v, c3 cancelled %v", err, st3.cancelled.Load())
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
	go func() { took <- c4.Take(200) }()
	for !st3.cancelled.Load() {
		time.Sleep(time.Millisecond)
	}
	c3.end()
	c3.release()
	if err := <-took; err != nil {
		t.Fatal(err)
	}
	if st2.cancelled.Load() || b.held != 300 {
		t.Fatalf("c2 pushed out %v; held %d", st2.cancelled.Load(), b.held)
	}
	// With c4 read too, nothing is arriving: a new record finds nothing
	// to push out and is refused at once.
	if c4.end() {
		t.Fatal("c4 pushed out")
	}
	c6, _ := charge(cs2)
	c6.begin()
	start := time.Now()
	// At once: short of requestRoomWait, which a record that waited for
	// room would have waited out (half of it was within reach of a
	// loaded machine's scheduling).
	if err := c6.Take(100); !busy(err) || time.Since(start) >= requestRoomWait {
		t.Fatalf("with nothing to push out: %v after %v", err, time.Since(start))
	}
	c6.end()
	for _, c := range []*bodyCharge{c1, c2, c3, c4, c5, c6} {
		c.end()
		c.release()
		c.release() // a second release gives nothing back twice
	}
	if b.held != 0 || cs1.requestHeld != 0 || cs2.requestHeld != 0 || b.arriving.Len() != 0 {
		t.Fatalf("after release: held %d, connections %d and %d, %d arriving", b.held, cs1.requestHeld, cs2.requestHeld, b.arriving.Len())
	}
}
