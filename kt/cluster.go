package kt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/quicprochat/qpc/kt/vrf"
)

// Several nodes (docs/key-transparency.md, "Several nodes"; ADR 0037).
//
// Nodes that share one database share the directory's tree (TreeStore),
// its log (LogDriver) and a queue of publishes (SharedQueue). At most one
// of them sequences at a time: the holder of the sequencer lease (Lease)
// takes the queued publishes into epochs, commits them and appends them to
// the log. Every node answers lookups, histories and consistency requests
// from the shared stores, under the newest checkpoint the log published;
// every node takes publishes, queueing them for the sequencer and waiting
// for their outcome.
//
// The stores fence their writes with the same lease (the tree's commit
// and the log's append check the lease's token inside their
// transactions), so a former holder that paused past its lease and woke
// up cannot commit an epoch or append to the log: only the lease decides
// who sequences, Hold only tells this node whether to try.

// Lease is the sequencer lease of a directory of several nodes.
type Lease interface {
	// Hold takes the lease when it is free or expired and renews it
	// when this node holds it; it reports whether this node holds it
	// now. The directory calls it once per epoch interval, so the
	// lease's time to live must be several intervals.
	Hold(ctx context.Context) (bool, error)
	// Release gives the lease up, if this node holds it.
	Release(ctx context.Context) error
}

// SharedQueue is the queue of publishes of a directory of several nodes:
// any node adds to it and waits for the outcome, the sequencer takes
// from it and settles what it took. Ids are the queue's. One update of a
// label at a time is queued or taken (ErrLabelQueued), on all nodes
// together, so that its version is known when it is queued.
type SharedQueue interface {
	// Add queues u (its ID is ignored) and returns its id:
	// ErrQueueFull when maxPending updates are queued or taken,
	// ErrLabelQueued when an update of u.Label is.
	Add(ctx context.Context, u QueuedUpdate, maxPending int) (int64, error)
	// Wait returns the outcome of update id once it is settled (its Err
	// set for an update the epoch refused), or ctx's error.
	Wait(ctx context.Context, id int64) (Published, error)
	// Withdraw removes update id if no epoch has taken it, reporting
	// whether it did.
	Withdraw(ctx context.Context, id int64) (bool, error)
	// Take marks at most max queued updates, oldest first, as taken by
	// epoch and returns them. The sequencer's.
	Take(ctx context.Context, epoch uint64, max int) ([]QueuedUpdate, error)
	// Taken returns the updates taken and not settled (after a failed
	// epoch, or taken by a former lease holder). The sequencer's.
	Taken(ctx context.Context) ([]QueuedUpdate, error)
	// Settle records the outcomes of taken updates and wakes their
	// waiters on every node. The sequencer's.
	Settle(ctx context.Context, ids []int64, results []Published) error
	// Requeue puts taken updates back in the queue. The sequencer's.
	Requeue(ctx context.Context, ids []int64) error
	// Close stops the queue's waiting.
	Close() error
}

// QueuedUpdate is one publish in a SharedQueue: the value for the
// label, and the version the publishing node expects it to get with that
// version's VRF proof (computed there, spreading the proving over the
// nodes; the epoch proves again if the version differs).
type QueuedUpdate struct {
	ID      int64
	Label   string
	Value   []byte
	Version uint32
	Index   Index
	Proof   [vrf.ProofSize]byte
	Epoch   uint64 // the epoch that took it (Taken)
	// First: the value is to be the label's first version, or nothing
	// (PublishFirst): the epoch refuses it with ErrVersionTaken when the
	// label has one.
	First bool
}

// ErrVersionTaken is PublishFirst's refusal: the label has a version
// already (another node published it).
var ErrVersionTaken = errors.New("kt: the label has a version already")

// PublishFirst publishes value as the first version of label, or nothing
// if the label has one (ErrVersionTaken): for values committed once,
// such as the token epoch length, which every node of several would
// otherwise publish again. On one node it is Publish after a look at the
// label's latest version; on several the epoch that takes it checks.
func (d *Directory) PublishFirst(ctx context.Context, label string, value []byte) (Published, error) {
	if d.opts.Queue != nil {
		return d.publishShared(ctx, label, value, true)
	}
	if v, err := d.LatestVersion(label); err != nil {
		return Published{}, err
	} else if v > 0 {
		return Published{}, ErrVersionTaken
	}
	return d.Publish(ctx, label, value)
}

// ErrLabelQueued is a SharedQueue's refusal of a second update of a label
// while one is queued: Publish waits for the first and queues again.
var ErrLabelQueued = errors.New("kt: an update of the label is queued")

// joinPoll is how often a node that does not sequence looks for a new
// checkpoint, and how often OpenDirectory looks while waiting for the
// first one.
const joinPoll = 50 * time.Millisecond

// join makes a node of several ready to serve: if it can take the lease
// it recovers and sequences, otherwise it serves the newest checkpoint
// another node published, waiting for one (or for the lease) until ctx
// ends.
func (d *Directory) join(ctx context.Context) error {
	for {
		held, err := d.opts.Lease.Hold(ctx)
		if err != nil {
			d.opts.Logger.Warn("kt: sequencer lease", "err", err)
		}
		if held {
			return d.acquired(ctx)
		}
		d.ts.bypass.Store(true)
		if err := d.refresh(ctx); err == nil {
			return nil
		} else if !errors.Is(err, ErrNoEpoch) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kt: waiting for the sequencer's first checkpoint: %w", ctx.Err())
		case <-time.After(joinPoll):
		}
	}
}

// acquired starts sequencing on a node that has just taken the lease:
// the cache is read again from the store (another node committed since),
// the log is brought level with the tree (the former holder may have
// committed an epoch without logging it), and the updates the former
// holder took are settled or queued again.
func (d *Directory) acquired(ctx context.Context) error {
	if err := viewTree(ctx, d.store, d.ts.refill); err != nil {
		return fmt.Errorf("kt: reading the tree on taking the sequencer lease: %w", err)
	}
	d.ts.bypass.Store(false)
	if err := d.recover(ctx); err != nil {
		return err
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	return d.reconcile(ctx)
}

// refresh serves the newest published checkpoint, if it is newer than the
// view: what a node that does not sequence does once per poll. ErrNoEpoch
// before the first checkpoint.
func (d *Directory) refresh(ctx context.Context) error {
	d.refreshMu.Lock()
	defer d.refreshMu.Unlock()
	raw, err := d.log.driver.ReadCheckpoint(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNoEpoch
	}
	if err != nil {
		return fmt.Errorf("kt: reading the checkpoint: %w", err)
	}
	cp, err := OpenCheckpoint(raw, d.opts.LogVerifier)
	if err != nil {
		return err
	}
	if cp.Size == 0 {
		return ErrNoEpoch
	}
	if v := d.view.Load(); v != nil && cp.Size <= v.checkpoint.Size {
		return nil
	}
	if w := d.log.wit; w != nil && !w.policy.Satisfied(raw) && !w.failOpen {
		return nil // publish late: the sequencer's node waits for the quorum, and so do we
	}
	e := cp.Size - 1
	var rec []byte
	var r *EpochRecord
	if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
		rec, r, err = d.epochRecord(s, e)
		return err
	}); err != nil {
		return err
	}
	// The checkpoint's last entry is the record lookups will be answered
	// under: the tree and the log must agree on it.
	got, err := d.log.entry(ctx, e, cp.Size)
	if err != nil {
		return fmt.Errorf("kt: reading log entry %d: %w", e, err)
	}
	if !bytes.Equal(got, rec) {
		return fmt.Errorf("kt: log entry %d differs from the database's epoch record", e)
	}
	// The cache first, then the view: a reader of the new epoch must not
	// find the nodes of an older one in the cache.
	if err := viewTree(ctx, d.store, d.ts.follow); err != nil {
		d.ts.bypass.Store(true)
		d.opts.Logger.Warn("kt: following the tree into the cache; reading the database instead", "err", err)
	} else {
		d.ts.bypass.Store(false)
	}
	for {
		old := d.view.Load()
		if old != nil && old.checkpoint.Size >= cp.Size {
			return nil
		}
		if d.view.CompareAndSwap(old, &view{epoch: e, record: r, raw: rec, checkpoint: cp}) {
			return nil
		}
	}
}

// runShared is the epoch loop of a node of several: each interval it
// holds or tries to take the lease; holding it, it makes an epoch,
// otherwise it follows the checkpoints the holder publishes.
func (d *Directory) runShared() {
	defer close(d.done)
	t := time.NewTicker(d.opts.EpochInterval)
	defer t.Stop()
	poll := time.NewTicker(min(joinPoll, d.opts.EpochInterval))
	defer poll.Stop()
	sequencing := !d.ts.bypass.Load()
	for {
		select {
		case <-d.stop:
			return
		case <-poll.C:
			if !sequencing {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := d.refresh(ctx); err != nil && !errors.Is(err, ErrNoEpoch) {
					d.opts.Logger.Warn("kt: following the sequencer's checkpoints", "err", err)
				}
				cancel()
			}
			continue
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*d.opts.EpochInterval+5*time.Second)
		held, err := d.opts.Lease.Hold(ctx)
		if err != nil {
			d.opts.Logger.Warn("kt: sequencer lease", "err", err)
		}
		switch {
		case held && !sequencing:
			d.opts.Logger.Info("kt: took the sequencer lease")
			if err := d.acquired(ctx); err != nil {
				d.opts.Logger.Warn("kt: starting to sequence", "err", err)
				d.ts.bypass.Store(true)
				break
			}
			sequencing = true
		case !held && sequencing:
			d.opts.Logger.Warn("kt: lost the sequencer lease; following")
			d.ts.bypass.Store(true)
			sequencing = false
		}
		if sequencing {
			if _, err := d.tickShared(ctx); err != nil && !errors.Is(err, ErrClosed) {
				d.opts.Logger.Warn("kt: epoch failed", "err", err)
			}
		}
		cancel()
	}
}

// tickShared makes one epoch from the shared queue. The stores refuse it
// if this node lost the lease meanwhile; the updates it took then stay
// taken, for the next holder to settle (reconcile).
func (d *Directory) tickShared(ctx context.Context) (uint64, error) {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if n, err := d.epochCount(); err != nil {
		return 0, err
	} else if v := d.view.Load(); v == nil || v.epoch+1 != n {
		if err := d.syncLog(ctx); err != nil {
			return 0, err
		}
	}
	if err := d.reconcile(ctx); err != nil {
		return 0, err
	}
	e, err := d.epochCount()
	if err != nil {
		return 0, err
	}
	taken, err := d.opts.Queue.Take(ctx, e, maxPerEpoch)
	if err != nil {
		return 0, fmt.Errorf("kt: taking queued updates: %w", err)
	}
	// A first version (PublishFirst) of a label that has one is refused
	// here: this node is the only writer, so what it reads now holds
	// when it commits.
	refused := make([]bool, len(taken))
	if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
		for i, q := range taken {
			if q.First {
				v, err := s.LatestVersion(q.Label)
				if err != nil {
					return err
				}
				refused[i] = v > 0
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	batch := make([]*update, 0, len(taken))
	for i, q := range taken {
		if !refused[i] {
			batch = append(batch, &update{label: q.Label, value: q.Value, version: q.Version, index: q.Index, proof: q.Proof})
		}
	}
	committed, err := d.commit(batch, false)
	if err != nil {
		return 0, err
	}
	if err := d.syncLog(ctx); err != nil {
		return 0, err
	}
	ids := make([]int64, len(taken))
	results := make([]Published, len(taken))
	for i, q := range taken {
		ids[i] = q.ID
		if refused[i] {
			results[i] = Published{Err: ErrVersionTaken}
		} else {
			results[i], committed = committed[0], committed[1:]
		}
	}
	if len(ids) > 0 {
		if err := d.opts.Queue.Settle(ctx, ids, results); err != nil {
			return 0, fmt.Errorf("kt: settling epoch %d's updates: %w", e, err)
		}
	}
	return e, nil
}

// reconcile settles the updates an earlier epoch took: those in a
// committed epoch with the version they got, the others back to the
// queue. Called with writeMu held, the log level with the tree.
func (d *Directory) reconcile(ctx context.Context) error {
	taken, err := d.opts.Queue.Taken(ctx)
	if err != nil || len(taken) == 0 {
		return err
	}
	var settle, requeue []int64
	var results []Published
	err = viewTree(ctx, d.store, func(s TreeSnapshot) error {
		n, err := s.Epochs()
		if err != nil {
			return err
		}
		for _, q := range taken {
			if q.Epoch >= n {
				requeue = append(requeue, q.ID)
				continue
			}
			v, rec, err := latestAt(s, q.Label, q.Epoch)
			if err != nil {
				return err
			}
			switch {
			case v > 0 && rec.added == q.Epoch && bytes.Equal(rec.value, q.Value):
				results = append(results, Published{Version: v, Epoch: q.Epoch})
			case q.First && v > 0:
				results = append(results, Published{Err: ErrVersionTaken})
			case v >= d.opts.MaxVersions:
				results = append(results, Published{Err: ErrTooManyVersions})
			default:
				requeue = append(requeue, q.ID)
				continue
			}
			settle = append(settle, q.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(requeue) > 0 {
		if err := d.opts.Queue.Requeue(ctx, requeue); err != nil {
			return fmt.Errorf("kt: queueing updates again: %w", err)
		}
	}
	if len(settle) > 0 {
		if err := d.opts.Queue.Settle(ctx, settle, results); err != nil {
			return fmt.Errorf("kt: settling updates of an earlier epoch: %w", err)
		}
		d.opts.Logger.Info("kt: settled updates an earlier epoch committed", "updates", len(settle))
	}
	return nil
}

// publishShared queues value through the shared queue and waits for the
// sequencer's outcome, with Publish's contract.
func (d *Directory) publishShared(ctx context.Context, label string, value []byte, first bool) (Published, error) {
	if err := checkUpdate(label, value); err != nil {
		return Published{}, err
	}
	wait := 10 * time.Millisecond
	var id int64
	for {
		if d.closed.Load() {
			return Published{}, ErrClosed
		}
		latest, err := d.LatestVersion(label)
		if err != nil {
			return Published{}, err
		}
		v := latest + 1
		if first && latest > 0 {
			return Published{}, ErrVersionTaken
		}
		if v > d.opts.MaxVersions {
			return Published{}, ErrTooManyVersions
		}
		q := QueuedUpdate{Label: label, Value: value, Version: v, First: first}
		q.Index, q.Proof = d.prove(label, v)
		id, err = d.opts.Queue.Add(ctx, q, d.opts.MaxPending)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrLabelQueued) {
			if ctx.Err() != nil {
				return Published{}, fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
			}
			return Published{}, err
		}
		// One update of a label at a time: this one waits for the
		// queued one's epoch, then reserves the version after it.
		select {
		case <-ctx.Done():
			return Published{}, fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, d.opts.EpochInterval/2+time.Millisecond)
	}
	p, err := d.opts.Queue.Wait(ctx, id)
	if err != nil && ctx.Err() != nil {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		ok, werr := d.opts.Queue.Withdraw(wctx, id)
		cancel()
		if werr == nil && ok {
			return Published{}, fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
		}
		// Taken by an epoch: its outcome, bounded by the epoch's own
		// time (and a takeover's, should the sequencer die).
		wctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 20*d.opts.EpochInterval+30*time.Second)
		p, err = d.opts.Queue.Wait(wctx, id)
		cancel()
	}
	if err != nil {
		return Published{}, fmt.Errorf("kt: waiting for the epoch: %w", err)
	}
	if p.Err == nil {
		// Read your writes: the version is served here too once
		// Publish returns.
		if v := d.view.Load(); v == nil || v.epoch < p.Epoch {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			for {
				_ = d.refresh(rctx)
				if v := d.view.Load(); (v != nil && v.epoch >= p.Epoch) || rctx.Err() != nil {
					break
				}
				select {
				case <-rctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
			}
			cancel()
		}
	}
	return p, p.Err
}

// enqueueShared is Enqueue through the shared queue.
func (d *Directory) enqueueShared(label string, value []byte) (<-chan Published, error) {
	if err := checkUpdate(label, value); err != nil {
		return nil, err
	}
	if d.closed.Load() {
		return nil, ErrClosed
	}
	ch := make(chan Published, 1)
	go func() {
		p, err := d.publishShared(context.Background(), label, value, false)
		p.Err = err
		ch <- p
	}()
	return ch, nil
}

// errStaleView reports a view the tree's snapshot cannot answer for: on a
// node of several, the snapshot must hold the view's epoch and at most
// one epoch after it (the records of that one carry their previous
// states; the nodes of an epoch further on do not).
var errStaleView = errors.New("kt: the served epoch and the tree moved apart")

// checkView refuses, on a node of several, a snapshot that cannot answer
// for v (errStaleView); on one node it accepts everything, as before.
func (d *Directory) checkView(s TreeSnapshot, v *view) error {
	if d.opts.Lease == nil {
		return nil
	}
	n, err := s.Epochs()
	if err != nil {
		return err
	}
	if v.epoch >= n || v.epoch+2 < n {
		return errStaleView
	}
	return nil
}

// retryStale runs answer again, after serving the newest checkpoint,
// while it finds its view stale (a few times: each retry follows a
// commit that moved the tree on).
func (d *Directory) retryStale(ctx context.Context, answer func() error) error {
	for attempt := 0; ; attempt++ {
		err := answer()
		if !errors.Is(err, errStaleView) && (d.opts.Lease == nil || !errors.Is(err, errNoState)) {
			return err
		}
		if attempt == 4 {
			return fmt.Errorf("kt: the tree moved on %d times while answering: %w", attempt+1, err)
		}
		if err := d.refresh(ctx); err != nil && !errors.Is(err, ErrNoEpoch) {
			return err
		}
	}
}
