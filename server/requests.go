package server

import (
	"container/list"
	"fmt"
	"sync"
	"time"

	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/wire"
)

// Request memory (docs/operations.md "Limits"). While a request
// record arrives, the stream's record buffer grows with it (wire.Reader,
// in steps of at most the bytes it already holds). Each step is charged,
// before it is taken, to the connection's share (RequestConnBytes) and to
// the server's budget (RequestBytes); the charge is given back when the
// stream ends. What a stranger's half-sent records hold is therefore
// bounded in total, however many connections and streams it opens.
//
// A record that needs room when the server's budget is full takes it from
// the records that have been arriving longest, older than itself: their
// streams are reset and answered UNAVAILABLE, and it waits (at most
// requestRoomWait) until their goroutines have let their buffers go. An
// honest record arrives in milliseconds, so the records that stall are
// the ones that go; a record still arriving cannot push out one that is
// younger, and a record already read (its request being served) is never
// pushed out. When the older records together cannot make room, the
// record that asked is refused the same way: no record waits for room
// that is not already on its way back. A record over its connection's
// or its source's share is refused. The budgets' defaults are
// config.DefaultRequestBytes, DefaultRequestConnBytes and
// DefaultRequestSourceBytes.

// quicConnWindowRecords is a connection's QUIC receive window in records
// of the largest bucket: what QUIC holds of it received but not yet read.
// 512 KiB with the default buckets: 5 MB/s at an RTT of 100 ms, more
// than a messenger's uploads need.
const quicConnWindowRecords = 4

func (o *Options) setRequestDefaults() {
	orDefault(&o.RequestBytes, config.DefaultRequestBytes)
	orDefault(&o.RequestConnBytes, config.DefaultRequestConnBytes)
	if o.RequestSourceBytes <= 0 {
		o.RequestSourceBytes = min(config.DefaultRequestSourceBytes, o.RequestBytes)
	}
	o.RequestSourceBytes = max(o.RequestSourceBytes, o.RequestConnBytes)
}

// checkRequestBudgets refuses budgets that cannot hold one record of the
// largest bucket.
func checkRequestBudgets(o *Options) error {
	if one := int64(o.Policy.Max()); one > o.RequestConnBytes || o.RequestConnBytes > o.RequestBytes {
		return fmt.Errorf("server: request budgets: want %d ≤ per connection (%d) ≤ total (%d): a record of the largest bucket must fit",
			one, o.RequestConnBytes, o.RequestBytes)
	}
	return nil
}

// requestBudget is the server's RequestBytes and the order in which the
// records still arriving began to.
type requestBudget struct {
	mu       sync.Mutex
	held     int64 // charged, all streams
	limit    int64 // RequestBytes
	connMax  int64 // RequestConnBytes
	srcMax   int64 // RequestSourceBytes (an IPv6 /48: netMax)
	netMax   int64
	bySource map[sourceKey]int64 // charged per source (sources.go)
	arriving list.List           // *bodyCharge still arriving with bytes held, oldest first
	dying    int64               // held by records pushed out, until their streams let go
	waiters  int                 // Takes waiting for dying bytes
	freed    chan struct{}       // closed (and replaced) when bytes are given back to waiters
	metrics  *metrics.Metrics
}

func newRequestBudget(o Options) *requestBudget {
	mult := int64(1)
	if o.MaxConnsPerAddr > 0 {
		mult = int64(max(1, o.MaxConnsPerNet/o.MaxConnsPerAddr))
	}
	if o.RequestSourceBytes <= 0 { // no share of its own: the total
		o.RequestSourceBytes = o.RequestBytes
	}
	return &requestBudget{limit: o.RequestBytes, connMax: o.RequestConnBytes, metrics: o.Metrics, freed: make(chan struct{}),
		srcMax: o.RequestSourceBytes, netMax: min(o.RequestBytes, o.RequestSourceBytes*mult), bySource: make(map[sourceKey]int64)}
}

// overShare says whether n more bytes would take c's source over its
// share. b.mu is held.
func (c *bodyCharge) overShare(n int64) bool {
	k := c.cs.keys
	return c.b.bySource[k.primary]+n > c.b.srcMax || k.hasNetwork && c.b.bySource[k.network]+n > c.b.netMax
}

// chargeSource counts n more (or, negative, fewer) bytes for c's source.
// b.mu is held.
func (c *bodyCharge) chargeSource(n int64) {
	k := c.cs.keys
	for _, key := range []sourceKey{k.primary, k.network} {
		if key == k.network && !k.hasNetwork {
			continue
		}
		if v := c.b.bySource[key] + n; v > 0 {
			c.b.bySource[key] = v
		} else {
			delete(c.b.bySource, key)
		}
	}
}

// errRequestBusy answers a record refused or pushed out by the budgets.
func errRequestBusy(what string) error {
	return wire.Errorf(wire.CodeUnavailable, "server busy receiving requests (%s), retry later", what)
}

// bodyCharge is what one stream's record buffer holds of the budgets. It
// is the stream's wire.Budget.
type bodyCharge struct {
	b       *requestBudget
	cs      *connState
	st      Stream
	held    int64         // guarded by b.mu
	elem    *list.Element // in b.arriving; guarded by b.mu
	reading bool          // a record is being read; guarded by b.mu
	evicted bool          // pushed out; guarded by b.mu
}

func (s *Server) newCharge(cs *connState, st Stream) *bodyCharge {
	return &bodyCharge{b: s.requests, cs: cs, st: st}
}

// requestRoomWait is how long a record waits for the records it pushed
// out to let their buffers go (their goroutines must run first).
const requestRoomWait = time.Second

// Take charges n more bytes of the stream's record buffer (wire.Budget).
// A record pushed out is still charged until its stream lets its buffer
// go (release), so the budget counts what is in memory; the record that
// pushed it out waits for that, at most requestRoomWait.
func (c *bodyCharge) Take(n int) error {
	b := c.b
	need := int64(n)
	var victims []*bodyCharge
	var timer *time.Timer
	b.mu.Lock()
	for b.held+need > b.limit || c.evicted || c.cs.requestHeld+need > b.connMax || c.overShare(need) {
		if c.evicted {
			b.mu.Unlock()
			return errRequestBusy("pushed out")
		}
		if c.cs.requestHeld+need > b.connMax {
			b.mu.Unlock()
			b.metrics.Refused(metrics.LimitRequestBytes)
			return errRequestBusy("this connection's share is full")
		}
		if c.overShare(need) {
			b.mu.Unlock()
			b.metrics.Refused(metrics.LimitRequestBytes)
			return errRequestBusy("your address's share is full")
		}
		if over := b.held - b.dying + need - b.limit; over > 0 {
			// Only records that began arriving before this one may go:
			// walk from the oldest until enough is found, or this record
			// is reached, before pushing any out.
			freed, end := int64(0), (*list.Element)(nil)
			for e := b.arriving.Front(); e != nil && e != c.elem && freed < over; e = e.Next() {
				freed += e.Value.(*bodyCharge).held
				end = e.Next()
			}
			if freed < over {
				b.mu.Unlock()
				b.metrics.Refused(metrics.LimitRequestBytes)
				return errRequestBusy("request memory full")
			}
			for e := b.arriving.Front(); e != end; {
				v := e.Value.(*bodyCharge)
				e = e.Next()
				b.arriving.Remove(v.elem)
				v.elem, v.evicted = nil, true
				b.dying += v.held
				victims = append(victims, v)
			}
		}
		// Wait for the records pushed out (by this one or another) to
		// give their bytes back.
		if timer == nil {
			timer = time.NewTimer(requestRoomWait)
			defer timer.Stop()
		}
		freed := b.freed
		b.waiters++
		b.mu.Unlock()
		for _, v := range victims {
			b.metrics.Refused(metrics.LimitRequestBytes)
			// Read returns at once with an error; the stream's handler
			// sees evicted, answers UNAVAILABLE and lets its buffer go.
			v.st.CancelRead(0)
		}
		victims = victims[:0]
		var timedOut bool
		select {
		case <-freed:
		case <-timer.C:
			timedOut = true
		}
		b.mu.Lock()
		b.waiters--
		if timedOut && b.held+need > b.limit {
			b.mu.Unlock()
			b.metrics.Refused(metrics.LimitRequestBytes)
			return errRequestBusy("request memory full")
		}
	}
	if c.reading && c.elem == nil {
		c.elem = b.arriving.PushBack(c)
	}
	c.held += need
	c.cs.requestHeld += need
	c.chargeSource(need)
	b.held += need
	b.metrics.SetRequestBytes(b.held)
	b.mu.Unlock()
	return nil
}

// dropLocked gives back everything c holds. b.mu is held.
func (c *bodyCharge) dropLocked() {
	b := c.b
	if c.elem != nil {
		b.arriving.Remove(c.elem)
		c.elem = nil
	}
	if c.held == 0 {
		return
	}
	if c.evicted {
		b.dying -= c.held
	}
	b.held -= c.held
	c.cs.requestHeld -= c.held
	c.chargeSource(-c.held)
	c.held = 0
	b.metrics.SetRequestBytes(b.held)
	if b.waiters > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
}

// release gives back the stream's charge when the stream is done with its
// record buffer. It may be called more than once.
func (c *bodyCharge) release() {
	c.b.mu.Lock()
	c.dropLocked()
	c.b.mu.Unlock()
}

// read reads the next request record of the stream, as one that may be
// pushed out while it arrives (and is not once it is read). A record
// pushed out, even one that then arrived whole, is answered with the
// UNAVAILABLE error.
func (c *bodyCharge) read(r *wire.Reader) (wire.Message, error) {
	c.begin()
	m, err := r.ReadMessage()
	if c.end() {
		return nil, errRequestBusy("pushed out")
	}
	return m, err
}

// begin marks a record arriving: from its first charged byte on (or now,
// if the stream holds bytes already) it may be pushed out by records that
// begin later.
func (c *bodyCharge) begin() {
	c.b.mu.Lock()
	c.reading = true
	if c.held > 0 && c.elem == nil {
		c.elem = c.b.arriving.PushBack(c)
	}
	c.b.mu.Unlock()
}

// end marks the record read (or failed) and reports whether it was
// pushed out.
func (c *bodyCharge) end() (evicted bool) {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.reading = false
	if c.elem != nil {
		c.b.arriving.Remove(c.elem)
		c.elem = nil
	}
	return c.evicted
}
