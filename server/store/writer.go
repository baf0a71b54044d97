package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The group-commit writer. Every write is an op: do queues it and waits;
// the one writer goroutine takes everything queued (up to
// Options.MaxBatch), runs it in one bbolt transaction (update) together
// with the idempotency index, the key-slot file and the totals, and
// answers each op only once that transaction is durable, so concurrent
// writes share one fsync.

const (
	opQueued int32 = iota
	opTaken
	opCancelled
)

// op is one queued write. run executes inside the writer's transaction; it
// must do all its reads and checks before its first write, so that a
// refusal (quota, not found, corrupt record) returned as a plain error
// leaves nothing behind and the other operations of the transaction go on.
// A failed write is returned as *abortError and rolls the whole
// transaction back.
type op struct {
	state atomic.Int32
	run   func(tx *txn) error
	err   error // written by the writer before done is closed
	done  chan struct{}
	// Timestamps for Stats: submitted by the caller; taken and committed
	// by the writer before done is closed.
	submitted, taken, committed time.Time
}

// txn is what an operation runs in: the writer's bbolt transaction, the
// idempotency index, whose changes are undone if the transaction fails,
// and the key-slot file, whose new keys are synced before the
// transaction commits and whose freed slots are zeroed only after.
type txn struct {
	*bolt.Tx
	idem *idemIndex
	keys *keyFile
	// tot collects the transaction's change to the store's totals,
	// applied only if it commits.
	tot *totalsDelta
}

type abortError struct{ err error }

func (e *abortError) Error() string { return e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }

// write marks a bbolt write error as fatal to the transaction.
func write(err error) error {
	if err == nil {
		return nil
	}
	return &abortError{err}
}

// do queues run for the writer and waits until its transaction committed.
// A context cancelled before the writer took the operation abandons it;
// once taken, the caller waits for the outcome, because the write may
// already be durable and the caller must not report it as lost.
func (s *Bolt) do(ctx context.Context, run func(tx *txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{run: run, done: make(chan struct{}), submitted: time.Now()}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.queue <- o:
		s.mu.RUnlock()
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	select {
	case <-o.done:
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err()
		}
		<-o.done
	}
	if !o.committed.IsZero() {
		s.wakeNanos.Add(int64(time.Since(o.committed)))
	}
	return o.err
}

func (s *Bolt) writer() {
	defer close(s.writerDone)
	batch := make([]*op, 0, s.maxBatch)
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	for {
		var (
			first *op
			ok    bool
		)
		if s.keysUnsynced.Load() {
			// Zeros over freed key slots are written but not synced.
			// The next commit that stores a message syncs them with its
			// new keys; if none comes within keySyncDelay, sync them
			// alone. (Under load that is one key-file sync per commit;
			// a crash before it is covered by Open's check.)
			idle.Reset(keySyncDelay)
			select {
			case first, ok = <-s.queue:
				idle.Stop()
			case <-idle.C:
				s.syncKeys()
				continue
			}
		} else {
			first, ok = <-s.queue
		}
		if !ok {
			return
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < s.maxBatch {
			select {
			case o, ok := <-s.queue:
				if !ok {
					break drain
				}
				batch = append(batch, o)
			default:
				break drain
			}
		}
		s.commit(batch)
		clear(batch) // let the committed envelopes be collected
		// The callers just woken sit in this goroutine's run queue; on a
		// small machine they would wait behind the next batch's work
		// (about 1 ms at 64 concurrent senders on 2 cores). Yielding lets
		// them answer their clients first, and the next batch is larger
		// for it (docs/benchmarks.md, "Where a send's time goes").
		runtime.Gosched()
	}
}

// keySyncDelay is how long zeros written over freed key slots may wait
// for the next commit's sync before the idle writer syncs them alone.
const keySyncDelay = 200 * time.Millisecond

// syncKeys syncs the key-slot file if zeroed slots were written since the
// last sync. A failure is logged; the next commit's sync tries again.
func (s *Bolt) syncKeys() {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	if err := s.keys.sync(); err != nil {
		s.log.Error("store: syncing the key-slot file failed", "err", err)
	}
	s.keysUnsynced.Store(s.keys.unsynced || len(s.keys.dirty) > 0)
}

func (s *Bolt) commit(batch []*op) {
	start := time.Now()
	live := batch[:0]
	for _, o := range batch {
		if o.state.CompareAndSwap(opQueued, opTaken) {
			o.taken = start
			live = append(live, o)
		}
	}
	if len(live) == 0 {
		return
	}
	err := s.update(func(tx *txn) error {
		for _, o := range live {
			if err := runOp(o, tx); err != nil {
				return err
			}
		}
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		// bbolt rolled the transaction back: none of these operations
		// happened, whatever each one concluded inside it.
		s.failedCommits.Add(1)
		s.failedOps.Add(uint64(len(live)))
		s.log.Error("store: write transaction failed", "ops", len(live), "err", err)
		for _, o := range live {
			o.err = fmt.Errorf("%w: %w", ErrStorageFailed, err)
		}
	} else {
		s.commits.Add(1)
		s.ops.Add(uint64(len(live)))
		s.commitNanos.Add(int64(elapsed))
		end := start.Add(elapsed)
		var queued int64
		for _, o := range live {
			o.committed = end
			queued += int64(o.taken.Sub(o.submitted))
		}
		s.queuedNanos.Add(queued)
		s.txnNanos.Add(int64(elapsed) * int64(len(live)))
		if n := int64(len(live)); n > s.largestBatch.Load() {
			s.largestBatch.Store(n) // only the writer stores it
		}
	}
	if s.onCommit != nil {
		s.onCommit(CommitInfo{Ops: len(live), Duration: elapsed, Err: err})
	}
	for _, o := range live {
		close(o.done)
	}
}

// update runs fn in a write transaction and keeps the idempotency index's
// changes only if it commits. The writer is its only caller in the
// server; updateMu serializes the index for tests and benchmarks that
// call it from several goroutines.
func (s *Bolt) update(fn func(tx *txn) error) error {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	var tot totalsDelta
	err := s.db.Update(func(tx *bolt.Tx) error {
		tot = totalsDelta{} // bbolt does not retry, but be exact if it did
		if err := fn(&txn{Tx: tx, idem: s.idem, keys: s.keys, tot: &tot}); err != nil {
			return err
		}
		// The new messages' keys are durable before the commit that
		// stores the messages: one sync for the whole batch.
		if err := s.keys.prepare(); err != nil {
			return err
		}
		if testHookPrepared != nil {
			testHookPrepared()
		}
		return nil
	})
	if err == nil && testHookCommitted != nil {
		testHookCommitted()
	}
	var kerr error
	if err != nil {
		s.idem.rollback()
		kerr = s.keys.rollback()
	} else {
		s.idem.commit()
		kerr = s.keys.commit()
		s.addTotals(tot)
	}
	if kerr != nil {
		// The outcome stands (committed or rolled back); a key that
		// should be zeros is still written in the file until the
		// retry at the next commit or sync.
		s.log.Error("store: writing zeroed key slots failed", "err", kerr)
	}
	s.idemKeys.Store(int64(s.idem.keys))
	s.keySlots.Store(int64(s.keys.slotCount()))
	s.keysUnsynced.Store(s.keys.unsynced || len(s.keys.dirty) > 0)
	return err
}

// Test hooks, nil outside tests: called by update after the key-slot
// file was synced and before the bbolt commit, and after the commit
// before freed slots are zeroed, the two moments a crash is interesting.
var testHookPrepared, testHookCommitted func()

// runOp runs one operation, turning a panic into a rolled-back transaction:
// a bug in one operation must not kill the writer and hang every caller.
func runOp(o *op, tx *txn) (abort error) {
	defer func() {
		if r := recover(); r != nil {
			abort = fmt.Errorf("operation panicked: %v", r)
		}
	}()
	err := o.run(tx)
	var ae *abortError
	if errors.As(err, &ae) {
		return ae.err
	}
	o.err = err
	return nil
}
