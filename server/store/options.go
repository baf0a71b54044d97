package store

import (
	"cmp"
	"errors"
	"log/slog"
	"time"
)

// Defaults applied by Open to zero Options fields.
const (
	DefaultOpenTimeout     = 5 * time.Second
	DefaultMaxBatch        = 256
	DefaultTimeGranularity = time.Minute
	DefaultMaxEnvelope     = 1 << 20
)

// Options tune the bbolt store. The zero value is usable: every zero field
// takes the default above.
type Options struct {
	// OpenTimeout bounds the wait for the file lock held by another process
	// (for example a second server started on the same data directory), so
	// that a misconfiguration fails instead of hanging.
	OpenTimeout time.Duration

	// MaxBatch caps the operations committed in one transaction. Larger
	// batches amortise the fsync further but make every caller in the batch
	// wait for the slowest operation's work.
	MaxBatch int

	// TimeGranularity is the resolution of every stored time (mailbox
	// creation, message arrival): times are truncated to it before they
	// reach the disk, so the server never holds a precise arrival time that
	// could correlate a sender's send with a recipient's fetch. It must be a
	// whole number of seconds.
	TimeGranularity time.Duration

	// MaxEnvelope is the largest envelope Put accepts (ErrTooLarge above)
	// and the largest the server can still deliver: the server sets it
	// from its padding policy (server.MaxDeliverable). Open refuses a store
	// that holds a longer envelope, with an *OversizeError, instead of
	// letting it block its mailbox for good.
	MaxEnvelope int

	// MaxSize, if positive, caps the size of the data file in bytes; a
	// transaction that would grow the file beyond it fails with
	// ErrStorageFailed instead of filling the disk. Zero means no cap.
	MaxSize int

	// Logger receives storage failures. Nothing logged names a mailbox,
	// message or key. Nil means slog.Default().
	Logger *slog.Logger

	// OnCommit, if set, is called by the writer goroutine after every write
	// transaction, so the server can feed histograms of batch size and
	// commit latency. It must return quickly: the next transaction waits.
	OnCommit func(CommitInfo)

	// WakeKey is the key of the wake tags (DeriveWakeKey) of a store that
	// several nodes share (the PostgreSQL store), which refuses to open
	// without one: every node of a deployment must hold the same key. The
	// bbolt store ignores it.
	WakeKey []byte
}

// CommitInfo describes one write transaction of the group-commit writer.
type CommitInfo struct {
	Ops      int           // operations in the transaction
	Duration time.Duration // db.Update including fsync
	Err      error         // non-nil if the transaction was rolled back
}

// WithDefaults returns o with every zero field set to its default, or
// why o is invalid. Another backend (pgstore) takes the fields that apply
// to it from here.
func (o Options) WithDefaults() (Options, error) { return o.withDefaults() }

func (o Options) withDefaults() (Options, error) {
	o.OpenTimeout = cmp.Or(o.OpenTimeout, DefaultOpenTimeout)
	o.MaxBatch = cmp.Or(o.MaxBatch, DefaultMaxBatch)
	o.TimeGranularity = cmp.Or(o.TimeGranularity, DefaultTimeGranularity)
	o.MaxEnvelope = cmp.Or(o.MaxEnvelope, DefaultMaxEnvelope)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	switch {
	case o.OpenTimeout < 0:
		return o, errors.New("negative OpenTimeout")
	case o.MaxBatch < 0:
		return o, errors.New("negative MaxBatch")
	case o.TimeGranularity < time.Second || o.TimeGranularity%time.Second != 0:
		// Times are stored as Unix seconds; a finer granularity would be
		// silently coarsened, so refuse it rather than mislead.
		return o, errors.New("TimeGranularity must be a whole number of seconds")
	case o.MaxEnvelope < 0:
		return o, errors.New("negative MaxEnvelope")
	case o.MaxSize < 0:
		return o, errors.New("negative MaxSize")
	}
	return o, nil
}
