package kt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api"
	tclient "github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

// epochLog is the RFC 6962 log of epoch records, kept by Tessera's POSIX
// driver as C2SP tlog-tiles files in one directory.
type epochLog struct {
	dir      string
	appender *tessera.Appender
	shutdown func(context.Context) error
	reader   tessera.LogReader
	cancel   context.CancelFunc
}

// checkpointInterval is Tessera's POSIX minimum; a checkpoint follows each
// epoch within about this long.
const checkpointInterval = 100 * time.Millisecond

func openEpochLog(dir string, signer note.Signer) (*epochLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kt: log dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("kt: log driver: %w", err)
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithBatching(1, time.Millisecond).
		WithCheckpointInterval(checkpointInterval).
		WithCheckpointRepublishInterval(time.Minute)
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("kt: log appender: %w", err)
	}
	return &epochLog{dir: dir, appender: app, shutdown: shutdown, reader: reader, cancel: cancel}, nil
}

func (l *epochLog) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.shutdown(ctx)
	l.cancel()
	return err
}

// size is the number of integrated entries.
func (l *epochLog) size(ctx context.Context) (uint64, error) {
	n, err := l.reader.IntegratedSize(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

// add appends one entry and returns its index once integrated.
func (l *epochLog) add(ctx context.Context, entry []byte) (uint64, error) {
	idx, err := l.appender.Add(ctx, tessera.NewEntry(entry))()
	if err != nil {
		return 0, fmt.Errorf("kt: log append: %w", err)
	}
	return idx.Index, nil
}

// awaitCheckpoint polls until a published checkpoint covers size entries.
func (l *epochLog) awaitCheckpoint(ctx context.Context, size uint64, v note.Verifier) ([]byte, *Checkpoint, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		raw, err := l.reader.ReadCheckpoint(ctx)
		if err == nil {
			cp, err := OpenCheckpoint(raw, v)
			if err != nil {
				return nil, nil, err
			}
			if cp.Size >= size {
				return raw, cp, nil
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("kt: waiting for a checkpoint of size %d: %w", size, ctx.Err())
		case <-t.C:
		}
	}
}

// entry reads the log entry at index of a log of at least index+1 entries.
func (l *epochLog) entry(ctx context.Context, index, logSize uint64) ([]byte, error) {
	eb, err := tclient.GetEntryBundle(ctx, l.reader.ReadEntryBundle, index/256, logSize)
	if err != nil {
		return nil, err
	}
	return entryAt(eb, index)
}

func entryAt(eb api.EntryBundle, index uint64) ([]byte, error) {
	i := int(index % 256)
	if i >= len(eb.Entries) {
		return nil, fmt.Errorf("kt: entry %d not in its bundle", index)
	}
	return eb.Entries[i], nil
}

// proofBuilder reads tiles for proofs against a tree of size n.
func (l *epochLog) proofBuilder(ctx context.Context, n uint64) (*tclient.ProofBuilder, error) {
	return tclient.NewProofBuilder(ctx, n, l.reader.ReadTile)
}
