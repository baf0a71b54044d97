package pglog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/tessera"

	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
)

// Under a witness policy (LogConfig.Witnesses) a checkpoint is published
// only once it is cosigned (C2SP tlog-witness), which takes requests to
// the witnesses: too slow to hold the head row's lock for. So Append
// commits the entry, its tiles and the new tree size without a
// checkpoint, and a publisher goroutine has the tree's checkpoint signed
// and cosigned by Tessera's own publisher (tessera.AppendOptions'
// CheckpointPublisher, the one its POSIX driver uses, so the witnesses
// see the same requests) and stores it in a second transaction, only
// over an older or equal one. Both of its transactions run the fence
// (Options.Fence): on a node that is not the sequencer the publisher
// asks no witness and writes nothing. Readers see the previous checkpoint
// until then; its tiles were all written before it.

// republishInterval is how often the publisher runs without an Append to
// wake it: it publishes a tree another node grew, and asks the witnesses
// again for a checkpoint of the same size (cosignatures a witness that was
// down gives once it is back), as Tessera's POSIX driver does under a
// policy.
const republishInterval = time.Second

// reader is the log as Tessera's checkpoint publisher reads it (the old
// checkpoint the witnesses may know, tiles for consistency proofs).
type reader struct{ *Log }

func (r reader) NextIndex(ctx context.Context) (uint64, error) { return r.IntegratedSize(ctx) }

var _ tessera.LogReader = reader{}

// startPublisher sets up Tessera's checkpoint publisher for c's policy
// and starts the publisher goroutine.
func (l *Log) startPublisher(c kt.LogConfig) error {
	group, err := c.Witnesses.TesseraGroup()
	if err != nil {
		return err
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(c.Signer).
		WithWitnesses(group, &tessera.WitnessOptions{Timeout: c.WitnessTimeout, FailOpen: c.WitnessFailOpen})
	l.publish = opts.CheckpointPublisher(reader{l}, hc)
	l.wake = make(chan struct{}, 1)
	l.done = make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	l.stop = stop
	go l.publisher(ctx)
	return nil
}

func (l *Log) publisher(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(republishInterval)
	defer t.Stop()
	var last time.Time // of this node's last publication
	for {
		if err := l.publishOnce(ctx, &last); err != nil && ctx.Err() == nil && !errors.Is(err, ErrFenced) {
			// Tried again at the next wake or tick; the directory
			// counts witness failures and waits for its checkpoint.
			l.log.Warn("kt log: checkpoint not published", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-t.C:
		}
	}
}

// publishOnce publishes the checkpoint of the current tree if it is newer
// than the published one, or republishes it after republishInterval.
func (l *Log) publishOnce(ctx context.Context, last *time.Time) error {
	var (
		size, cpSize int64
		hashes       []byte
	)
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT size, range_hashes, checkpoint_size FROM ktlog_head WHERE id = 1`).Scan(&size, &hashes, &cpSize); err != nil {
			return err
		}
		if l.fence != nil {
			if err := l.fence(ctx, tx); err != nil {
				return fmt.Errorf("%w: %w", ErrFenced, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Due at every tick: the ticker's period is the interval, and a
	// round a little late must not skip the next one.
	if size == cpSize && time.Since(*last) < republishInterval*9/10 {
		return nil
	}
	r, err := loadRange(uint64(size), hashes)
	if err != nil {
		return err
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return err
	}
	*last = time.Now()
	cp, err := l.publish(ctx, uint64(size), root)
	if err != nil {
		return fmt.Errorf("pglog: checkpoint of %d entries: %w", size, err)
	}
	return pgtx.Write(ctx, l.pool, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM ktlog_head WHERE id = 1 FOR UPDATE`); err != nil {
			return err
		}
		if l.fence != nil {
			if err := l.fence(ctx, tx); err != nil {
				return fmt.Errorf("%w: %w", ErrFenced, err)
			}
		}
		_, err := tx.Exec(ctx, `UPDATE ktlog_head SET checkpoint = $1, checkpoint_size = $2 WHERE id = 1 AND checkpoint_size <= $2`, cp, size)
		return err
	}, nil, func(_ context.Context, err error) error {
		return fmt.Errorf("pglog: publishing the checkpoint: %w", err)
	})
}
