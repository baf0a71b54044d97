package kt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/tessera/api"
	tclient "github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// epochLog is the RFC 6962 log of epoch records as the directory uses
// it: a LogDriver (Tessera's POSIX driver unless DirectoryOptions.OpenLog
// says otherwise) and the witness policy its checkpoints are held to.
type epochLog struct {
	driver LogDriver
	wit    *witnessing // nil: no witness policy
}

// witnessing is how the log has its checkpoints cosigned: Tessera sends
// each new checkpoint to the policy's witnesses (C2SP tlog-witness) and
// publishes it once their cosignatures satisfy the policy; with failOpen
// it publishes it after the timeout whatever it got.
type witnessing struct {
	policy   *WitnessPolicy
	timeout  time.Duration
	failOpen bool

	failures    atomic.Uint64 // witness requests that failed (transport error or a status other than 200)
	requests    atomic.Uint64 // witness requests made
	unwitnessed atomic.Uint64 // checkpoints served without a quorum (fail open)
	witnessed   atomic.Uint64 // size of the newest served checkpoint that satisfies the policy
}

// countingTransport counts the log's requests to witnesses and their
// failures.
type countingTransport struct {
	next http.RoundTripper
	w    *witnessing
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.w.requests.Add(1)
	resp, err := c.next.RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusOK {
		c.w.failures.Add(1)
	}
	return resp, err
}

// checkpointInterval is Tessera's POSIX minimum; a checkpoint follows each
// epoch within about this long.
const checkpointInterval = 100 * time.Millisecond

// openEpochLog opens the log with open (nil: the POSIX driver in dir),
// giving it a client that counts witness requests.
func openEpochLog(ctx context.Context, open func(context.Context, LogConfig) (LogDriver, error), dir string, signer note.Signer, wit *witnessing, hc *http.Client) (*epochLog, error) {
	c := LogConfig{Signer: signer}
	if wit != nil {
		if hc == nil {
			hc = http.DefaultClient
		}
		next := hc.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		counted := *hc
		counted.Transport = countingTransport{next: next, w: wit}
		c.Witnesses, c.WitnessTimeout, c.WitnessFailOpen, c.HTTPClient = wit.policy, wit.timeout, wit.failOpen, &counted
	}
	if open == nil {
		open = func(ctx context.Context, c LogConfig) (LogDriver, error) { return OpenPOSIXLog(ctx, dir, c) }
	}
	driver, err := open(ctx, c)
	if err != nil {
		return nil, err
	}
	return &epochLog{driver: driver, wit: wit}, nil
}

func (l *epochLog) close() error { return l.driver.Close() }

// size is the number of integrated entries.
func (l *epochLog) size(ctx context.Context) (uint64, error) {
	n, err := l.driver.IntegratedSize(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

// add appends one entry and returns its index once integrated.
func (l *epochLog) add(ctx context.Context, entry []byte) (uint64, error) {
	idx, err := l.driver.Append(ctx, entry)
	if err != nil {
		return 0, fmt.Errorf("kt: log append: %w", err)
	}
	return idx, nil
}

// awaitCheckpoint polls until a published checkpoint covers size entries
// and, under a witness policy, satisfies it. With fail open, a checkpoint
// published without a quorum is taken too (unwitnessed reports it).
func (l *epochLog) awaitCheckpoint(ctx context.Context, size uint64, v note.Verifier) (raw []byte, cp *Checkpoint, unwitnessed bool, err error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		raw, err := l.driver.ReadCheckpoint(ctx)
		if err == nil {
			cp, err := OpenCheckpoint(raw, v)
			if err != nil {
				return nil, nil, false, err
			}
			if cp.Size >= size {
				if l.wit == nil {
					return raw, cp, false, nil
				}
				if l.wit.policy.Satisfied(raw) {
					l.wit.witnessed.Store(cp.Size)
					return raw, cp, false, nil
				}
				// Publish late: a checkpoint without its quorum (one
				// published before the policy was configured) is not
				// served; the next publication brings one.
				if l.wit.failOpen {
					l.wit.unwitnessed.Add(1)
					return raw, cp, true, nil
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, false, err
		}
		select {
		case <-ctx.Done():
			if l.wit != nil && !l.wit.failOpen {
				return nil, nil, false, fmt.Errorf("kt: waiting for a checkpoint of size %d cosigned under the witness policy (publish late): %w", size, ctx.Err())
			}
			return nil, nil, false, fmt.Errorf("kt: waiting for a checkpoint of size %d: %w", size, ctx.Err())
		case <-t.C:
		}
	}
}

// entry reads the log entry at index of a log of at least index+1 entries.
func (l *epochLog) entry(ctx context.Context, index, logSize uint64) ([]byte, error) {
	eb, err := tclient.GetEntryBundle(ctx, l.driver.ReadEntryBundle, index/256, logSize)
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
	return tclient.NewProofBuilder(ctx, n, l.driver.ReadTile)
}
