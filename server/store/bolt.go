package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded Store: one bbolt file, one writer goroutine.
//
// Writes are queued and the writer commits everything queued (up to
// Options.MaxBatch operations) in one fsynced transaction, acknowledging
// each operation only after that commit. Reads use their own read-only
// transactions and run concurrently with the writer.
type Bolt struct {
	db       *bolt.DB
	pageSize int // db.Info().PageSize, which panics once db is closed
	gran     time.Duration
	maxBatch int
	maxEnv   int
	log      *slog.Logger
	onCommit func(CommitInfo)
	// idem is the idempotency index (idem.go): Open builds it, then only
	// the writer touches it. idemKeys is its size, for Stats.
	idem     *idemIndex
	idemKeys atomic.Int64
	// keys is the key-slot file (keys.go); the writer alone changes it,
	// Fetch reads keys from it.
	keys     *keyFile
	keySlots atomic.Int64
	// keysUnsynced: the key-slot file has writes not yet synced (the
	// writer syncs them when idle).
	keysUnsynced atomic.Bool
	unreadable   atomic.Uint64
	updateMu     sync.Mutex
	// totals are the store-wide sums (totals.go): loaded at Open, then
	// changed by the writer as its transactions commit.
	totMu  sync.Mutex
	totals Totals

	queue chan *op
	// mu orders submissions against Close: a submitter holds it shared
	// while it sends on queue, so Close (exclusive) can close queue without
	// racing a send. The writer never takes it, so it keeps draining.
	mu         sync.RWMutex
	closed     bool
	shut       atomic.Bool // lock-free copy of closed for readers
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	commits       atomic.Uint64
	failedCommits atomic.Uint64
	ops           atomic.Uint64
	failedOps     atomic.Uint64
	commitNanos   atomic.Int64
	largestBatch  atomic.Int64
	// Where committed operations spent their time (see Stats).
	queuedNanos atomic.Int64
	txnNanos    atomic.Int64
	wakeNanos   atomic.Int64
}

var _ Store = (*Bolt)(nil)

// Stats are cumulative counters of the group-commit writer, for metrics.
// Mean batch size is Ops/Commits; mean commit latency CommitTime/Commits.
type Stats struct {
	Commits       uint64        // write transactions committed
	FailedCommits uint64        // write transactions rolled back by a storage failure
	Ops           uint64        // operations in committed transactions
	FailedOps     uint64        // operations in failed transactions
	CommitTime    time.Duration // total time in committed transactions, fsync included
	LargestBatch  int           // most operations seen in one transaction
	Queued        int           // operations waiting for the writer now

	// The life of a committed operation, summed over Ops: OpQueued from
	// submission until the writer took it (it waits for the transaction
	// before its own), OpTxn from then until its transaction committed,
	// and OpWake from the commit until the submitter's goroutine ran
	// again (scheduling delay). Divide by Ops for the means.
	OpQueued, OpTxn, OpWake time.Duration
	// PagesWritten counts the database pages write transactions wrote
	// (bbolt copies every page it changes, so this is the commits' I/O in
	// pages of the file's page size); PageSize is that size.
	PagesWritten int64
	PageSize     int
	// IdempotencyKeys is the number of message IDs the in-memory
	// idempotency index holds (one per message accepted within the TTL).
	IdempotencyKeys int
	// KeySlots is the size of the key-slot file, in slots (one per stored
	// message at its fullest, 32 bytes each).
	KeySlots int
	// Unreadable counts the times a stored message was found without a
	// usable key: at Open after a crash, and at each Fetch that met one
	// (it is skipped, and deleted at expiry). Nonzero means the key-slot
	// file was lost, replaced or damaged; the log says more.
	Unreadable uint64
}

// Open opens or creates the store file at path (mode 0600, its directory
// 0700 if it must be created) and starts the writer.
func Open(path string, opts Options) (*Bolt, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	// The file holds every queued envelope and the mailbox graph; nobody
	// but the server's user has any business reading it.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w: %w", ErrStorageFailed, err)
	}
	db, err := openBolt(path, o)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w: %w", ErrStorageFailed, err)
	}
	keys, unreadable, err := openSchema(db, path, time.Now(), o.Logger)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open: %w", err)
	}
	fail := func(err error) (*Bolt, error) {
		keys.abandon()
		if db != nil {
			_ = db.Close()
		}
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyCompact) != nil {
			return errCompact
		}
		return nil
	}); errors.Is(err, errCompact) {
		if db, err = compactStore(db, path, o); err != nil {
			return fail(fmt.Errorf("%w: compacting after the upgrade: %w", ErrStorageFailed, err))
		}
		o.Logger.Info("store: the upgraded file was copied afresh and the old one overwritten with zeros")
	} else if err != nil {
		return fail(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return checkEnvelopeLimit(tx, o.MaxEnvelope) }); err != nil {
		return fail(err)
	}
	idem := newIdemIndex()
	var totals Totals
	if err := db.View(func(tx *bolt.Tx) error {
		if err := loadIdem(tx, idem); err != nil {
			return err
		}
		var err error
		totals, err = sumTotals(tx)
		return err
	}); err != nil {
		return fail(err)
	}
	s := &Bolt{
		db:         db,
		pageSize:   db.Info().PageSize,
		gran:       o.TimeGranularity,
		maxBatch:   o.MaxBatch,
		maxEnv:     o.MaxEnvelope,
		log:        o.Logger,
		onCommit:   o.OnCommit,
		idem:       idem,
		keys:       keys,
		totals:     totals,
		queue:      make(chan *op, 4*o.MaxBatch),
		writerDone: make(chan struct{}),
	}
	s.idemKeys.Store(int64(idem.keys))
	s.keySlots.Store(int64(keys.slotCount()))
	s.unreadable.Store(uint64(unreadable))
	go s.writer()
	return s, nil
}

// loadIdem fills the idempotency index from the arrivals.
func loadIdem(tx *bolt.Tx, idem *idemIndex) error {
	return tx.Bucket(bucketArrivals).ForEach(func(k, v []byte) error {
		a, err := decodeArrival(k, v)
		if err != nil {
			return err
		}
		// The same message ID twice in one mailbox cannot be written (Put
		// looks it up first); should a file hold it anyway, the later
		// arrival is the one a retry refers to.
		if prev, ok := idem.get(a.rid, a.id); !ok || prev.seq < a.seq {
			idem.set(a.rid, a.id, idemEntry{seq: a.seq, received: a.received})
		}
		return nil
	})
}

// OversizeError is Open's refusal of a store that holds envelopes longer
// than Options.MaxEnvelope: the limit shrank (a smaller padding policy)
// while they waited. Opened anyway, they could never be delivered, and the
// first of them would block every later message of its mailbox. It
// matches ErrOversize.
type OversizeError struct {
	Count   int       // envelopes over the limit
	Largest int       // the longest of them, in bytes
	Limit   int       // Options.MaxEnvelope
	Newest  time.Time // when the newest of them arrived (coarse)
}

// ErrOversize is what OversizeError matches with errors.Is.
var ErrOversize = errors.New("stored envelopes exceed the envelope limit")

func (e *OversizeError) Error() string {
	return fmt.Sprintf("%d stored envelopes are longer than the limit of %d bytes (the longest %d bytes, the newest received %s)",
		e.Count, e.Limit, e.Largest, e.Newest.UTC().Format(time.DateOnly))
}

func (e *OversizeError) Is(target error) bool { return target == ErrOversize }

// checkEnvelopeLimit refuses a limit below an envelope still stored, and
// records the limit. It scans the messages only when the limit is smaller
// than the one recorded at the last Open (or none was recorded, by a
// store older than the record), so a normal start reads one key.
func checkEnvelopeLimit(tx *bolt.Tx, limit int) error {
	meta := tx.Bucket(bucketMeta)
	recorded, known := int64(0), false
	if v := meta.Get(keyEnvelopeLimit); v != nil {
		n, err := decodeEnvelopeLimit(v)
		if err != nil {
			return err
		}
		recorded, known = int64(n), true
	}
	if !known || recorded > int64(limit) {
		over := OversizeError{Limit: limit}
		err := tx.Bucket(bucketMessages).ForEach(func(_, v []byte) error {
			_, received, _, sealed, err := decodeMessage(v)
			if err != nil {
				return err
			}
			if n := len(sealed) - sealOverhead; n > limit {
				over.Count++
				over.Largest = max(over.Largest, n)
				if t := fromUnix(received); t.After(over.Newest) {
					over.Newest = t
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if over.Count > 0 {
			return &over
		}
	}
	if err := meta.Put(keyEnvelopeLimit, encodeEnvelopeLimit(limit)); err != nil {
		return fmt.Errorf("%w: %w", ErrStorageFailed, err)
	}
	return nil
}

// Stats returns the writer's counters so far.
func (s *Bolt) Stats() Stats {
	db := s.db.Stats()
	return Stats{
		Commits:       s.commits.Load(),
		FailedCommits: s.failedCommits.Load(),
		Ops:           s.ops.Load(),
		FailedOps:     s.failedOps.Load(),
		CommitTime:    time.Duration(s.commitNanos.Load()),
		LargestBatch:  int(s.largestBatch.Load()),
		Queued:        len(s.queue),
		OpQueued:      time.Duration(s.queuedNanos.Load()),
		OpTxn:         time.Duration(s.txnNanos.Load()),
		OpWake:        time.Duration(s.wakeNanos.Load()),
		PagesWritten:  db.TxStats.GetPageCount(),
		PageSize:      s.pageSize,

		IdempotencyKeys: int(s.idemKeys.Load()),
		KeySlots:        int(s.keySlots.Load()),
		Unreadable:      s.unreadable.Load(),
	}
}

// Close stops accepting operations (they fail with ErrClosed), commits
// everything already queued, and closes the file. It is idempotent.
func (s *Bolt) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.shut.Store(true)
		close(s.queue)
		s.mu.Unlock()
		<-s.writerDone
		s.updateMu.Lock()
		defer s.updateMu.Unlock()
		// The next generation goes into the bbolt file first; the key
		// file is marked clean at it only after, so a crash between the
		// two leaves files that do not match, and the next Open checks.
		gen := s.keys.gen + 1
		if err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyKeyGen, binary.BigEndian.AppendUint64(nil, gen))
		}); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w: %w", ErrStorageFailed, err)
		}
		if err := s.db.Close(); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("store: close: %w: %w", ErrStorageFailed, err)
		}
		clean := &gen
		if s.closeErr != nil {
			clean = nil
		}
		if err := s.keys.close(clean); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("store: close: %w: key-slot file: %w", ErrStorageFailed, err)
		}
	})
	return s.closeErr
}
