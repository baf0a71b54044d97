package client

import (
	"sync"
	"time"

	"github.com/quicprochat/qpc/client/state"
)

// Sent entries are deleted from the outbox later, not in a transaction
// of their own (docs/adr/0042-early-send.md). Once the
// server has acknowledged an entry it is marked retiring in memory:
// flush, Pending, Status, QueuedSince and the cover schedule skip it as
// if it were gone, and its deletion (with its token, pooled if it was
// never shown: spare.go) is written in the next transaction the client
// makes anyway (update: a text queued, an envelope received), or after
// Options.RetireAfter if none comes first, or at Close.
//
// Nothing that must survive a crash waits on it: the entry's message was
// stored by the server under its message ID, so a crash before the
// deletion is written only sends it again under the same ID, which the
// server stores once and the recipient, who marks every envelope it
// processed as seen by that ID (fetchloop.go seenKey), never shows twice.
// What a crash costs is the retired entry's token if it was never shown
// (it is not pooled after a restart, spare.go).

// DefaultRetireAfter is how long a sent entry may wait for a transaction
// to carry its deletion before it is written on its own.
const DefaultRetireAfter = 200 * time.Millisecond

// retiring is the set of sent entries whose deletion is not written yet.
type retiring struct {
	mu     sync.Mutex
	set    map[uint64]bool // entry seq -> its token was never shown
	timer  *time.Timer     // armed while set is not empty
	gen    uint64          // names the armed timer
	closed bool
}

func (r *retiring) has(seq uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[seq]
	return ok
}

// free counts the entries whose tokens go to the spare pool when they
// are retired.
func (r *retiring) free() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.set {
		if f {
			n++
		}
	}
	return n
}

func (r *retiring) snapshot() map[uint64]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.set) == 0 {
		return nil
	}
	out := make(map[uint64]bool, len(r.set))
	for s, f := range r.set {
		out[s] = f
	}
	return out
}

// written forgets the entries whose deletion was committed, and stops
// the timer once none is left: it runs only when no transaction came
// within RetireAfter of a retirement.
func (r *retiring) written(done map[uint64]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range done {
		delete(r.set, s)
	}
	if len(r.set) == 0 && r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

func (r *retiring) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
}

// retireLater marks sent entries (seq -> token never shown) retiring and
// starts the timer that bounds how long their deletion waits. The caller
// holds c.op.
func (c *Client) retireLater(sent []uint64, free map[uint64]bool) {
	if len(sent) == 0 {
		return
	}
	r := &c.retiring
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set = map[uint64]bool{}
	}
	for _, s := range sent {
		r.set[s] = free[s]
	}
	d := c.opts.RetireAfter
	if d == 0 {
		d = DefaultRetireAfter
	}
	if d > 0 && r.timer == nil && !r.closed {
		r.gen++
		gen := r.gen
		r.timer = time.AfterFunc(d, func() { c.retireTimer(gen) })
	}
}

// retireTimer writes the deletions no transaction has carried yet; gen
// names the timer that fired (a timer stopped too late to keep its
// callback from running finds another armed, or none, and leaves it).
func (c *Client) retireTimer(gen uint64) {
	c.op.Lock()
	defer c.op.Unlock()
	r := &c.retiring
	r.mu.Lock()
	if r.gen == gen {
		r.timer = nil
	}
	closed := r.closed
	r.mu.Unlock()
	if !closed {
		c.retireAll()
	}
}

// retireAll writes the pending deletions in a transaction of their own;
// a failure leaves them for the next transaction. The caller holds c.op.
func (c *Client) retireAll() {
	if c.retiring.snapshot() == nil {
		return
	}
	defer c.timed(TimeSendDone, time.Now())
	c.update(func(*state.Tx) error { return nil })
}

// update is store.Update that also writes the deletions of the sent
// entries retiring, before fn, in the same transaction: the transactions
// a client makes anyway carry them, and no fsync is spent on them alone.
// The caller holds c.op.
func (c *Client) update(fn func(*state.Tx) error) error {
	done := c.retiring.snapshot()
	err := c.store.Update(func(tx *state.Tx) error {
		for seq, free := range done {
			if err := retire(tx, seq, free); err != nil {
				return err
			}
		}
		return fn(tx)
	})
	if err == nil {
		c.retiring.written(done)
	}
	return err
}
