package kt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

// LogDriver keeps and sequences the epoch log: an append-only RFC 6962
// log of entries (one epoch record each) published as C2SP tlog-tiles
// (a signed checkpoint, hash tiles and entry bundles). It is the seam the
// directory reaches its log through; OpenPOSIXLog is the embedded one
// (Tessera's POSIX driver, files in a directory), kt/ktpg/pglog the one
// on PostgreSQL. Every implementation must pass the conformance suite in
// kt/ktstoretest (RunLog).
//
// # One sequencer
//
// Append is the sequencer's: the one node that builds epochs calls it,
// one entry at a time, and the index it returns must be the entry's
// position for ever. An implementation that several nodes share must make
// sure that only one of them integrates entries at a time, and that a node
// which lost the right cannot integrate afterwards (Tessera's POSIX driver
// holds lock files in the log directory; a database needs a lease whose
// fencing token the integrating transaction checks, so that a paused
// former holder's append fails rather than forks the log). Acknowledged
// means durable: once Append returns an index, a crash of any node loses
// neither the entry nor its position.
//
// The readers (IntegratedSize, ReadCheckpoint, ReadTile, ReadEntryBundle,
// ReadResource) may run on every node, concurrently with Append, and see
// only integrated entries and published checkpoints: a checkpoint commits
// to a tree whose tiles and bundles are all readable by then.
type LogDriver interface {
	// Append adds entry at the next index and returns that index once the
	// entry is durably integrated (a later checkpoint commits to it).
	// Concurrent Appends get distinct, consecutive indices.
	Append(ctx context.Context, entry []byte) (uint64, error)
	// IntegratedSize is the number of integrated entries (0 for a new
	// log).
	IntegratedSize(ctx context.Context) (uint64, error)
	// ReadCheckpoint returns the latest published checkpoint, a signed
	// note (C2SP tlog-checkpoint) signed by LogConfig.Signer; an error
	// matching fs.ErrNotExist before the first.
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	// ReadTile returns the hash tile at level and index, partial with p
	// hashes when p > 0 (C2SP tlog-tiles).
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	// ReadEntryBundle returns the entry bundle at index, partial with p
	// entries when p > 0 (C2SP tlog-tiles).
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
	// ReadResource returns the tlog-tiles resource at the relative path
	// rel ("checkpoint", "tile/<L>/<N>[.p/<W>]", "tile/entries/<N>[.p/<W>]"),
	// exactly as ReadCheckpoint, ReadTile or ReadEntryBundle would; any
	// other path, or one that does not exist, is ErrResource.
	ReadResource(rel string) ([]byte, error)
	// Close stops the driver, first integrating what it acknowledged.
	Close() error
}

// LogConfig is what a LogDriver is opened with.
type LogConfig struct {
	// Signer signs checkpoints; its name is the log's origin.
	Signer note.Signer
	// Witnesses, if not nil, is the policy the driver asks witnesses to
	// cosign checkpoints under (C2SP tlog-witness) before publishing
	// them, waiting at most WitnessTimeout, then publishing whatever it
	// got if WitnessFailOpen. HTTPClient makes those requests (nil:
	// http.DefaultClient).
	Witnesses       *WitnessPolicy
	WitnessTimeout  time.Duration
	WitnessFailOpen bool
	HTTPClient      *http.Client
}

// posixLog is Tessera's POSIX driver: the log as files in dir.
type posixLog struct {
	dir      string
	appender *tessera.Appender
	shutdown func(context.Context) error
	reader   tessera.LogReader
	cancel   context.CancelFunc
}

var _ LogDriver = (*posixLog)(nil)

// OpenPOSIXLog opens (or creates) the log in dir with Tessera's POSIX
// driver. ctx bounds the opening only; the driver runs until Close.
// Tessera's lock files in dir keep a second process from integrating
// into the same log at once.
func OpenPOSIXLog(_ context.Context, dir string, c LogConfig) (LogDriver, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kt: log dir: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg := posix.Config{Path: dir}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(c.Signer).
		WithBatching(1, time.Millisecond).
		WithCheckpointInterval(checkpointInterval).
		WithCheckpointRepublishInterval(time.Minute)
	if c.Witnesses != nil {
		group, err := c.Witnesses.tesseraGroup()
		if err != nil {
			cancel()
			return nil, err
		}
		cfg.HTTPClient = c.HTTPClient
		if cfg.HTTPClient == nil {
			cfg.HTTPClient = http.DefaultClient
		}
		opts.WithWitnesses(group, &tessera.WitnessOptions{Timeout: c.WitnessTimeout, FailOpen: c.WitnessFailOpen})
		// A checkpoint that did not get its cosignatures is tried again
		// soon even when the log has not grown (a restart, witnesses
		// back after an outage).
		opts.WithCheckpointRepublishInterval(time.Second)
	}
	driver, err := posix.New(ctx, cfg)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("kt: log driver: %w", err)
	}
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("kt: log appender: %w", err)
	}
	return &posixLog{dir: dir, appender: app, shutdown: shutdown, reader: reader, cancel: cancel}, nil
}

func (l *posixLog) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.shutdown(ctx)
	l.cancel()
	return err
}

func (l *posixLog) Append(ctx context.Context, entry []byte) (uint64, error) {
	idx, err := l.appender.Add(ctx, tessera.NewEntry(entry))()
	if err != nil {
		return 0, err
	}
	return idx.Index, nil
}

func (l *posixLog) IntegratedSize(ctx context.Context) (uint64, error) {
	n, err := l.reader.IntegratedSize(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

func (l *posixLog) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	return l.reader.ReadCheckpoint(ctx)
}

func (l *posixLog) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return l.reader.ReadTile(ctx, level, index, p)
}

func (l *posixLog) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	return l.reader.ReadEntryBundle(ctx, index, p)
}

func (l *posixLog) ReadResource(rel string) ([]byte, error) { return ReadLogResource(l.dir, rel) }
