package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	tclient "github.com/transparency-dev/tessera/client"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

// Check names what an epoch failed.
type Check string

// The checks, in the order the auditor makes them for each epoch.
const (
	// CheckInclusion: the epoch records read from the log, appended to
	// the log the auditor already audited, give the signed checkpoint's
	// root (RFC 6962 consistency, docs/key-transparency.md §8).
	CheckInclusion Check = "inclusion under the checkpoint"
	// CheckRecord: the log entry is an epoch record.
	CheckRecord Check = "epoch record"
	// CheckConsecutive: the record at log index e is epoch e.
	CheckConsecutive Check = "consecutive epochs"
	// CheckTimestamp: the record's time is not before the previous one's.
	CheckTimestamp Check = "timestamp"
	// CheckConfig: the record's config hash is the pinned one.
	CheckConfig Check = "config hash"
	// CheckUpdateList: the epoch's update list is published, parses and
	// names the epoch.
	CheckUpdateList Check = "update list"
	// CheckDigest: the update list hashes to the record's UpdatesDigest.
	CheckDigest Check = "updates digest"
	// CheckNewIndex: every inserted index is new (leaves are never
	// replaced).
	CheckNewIndex Check = "new index"
	// CheckRoot: inserting the list into the previous epoch's tree gives
	// exactly the record's root (nothing removed, nothing changed).
	CheckRoot Check = "root follows from the previous epoch"
)

// Error is an epoch the log got wrong: evidence that the log is not
// append-only, or that it is not auditable. An auditor never cosigns a
// checkpoint that covers it.
type Error struct {
	Epoch uint64
	Check Check
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("audit: epoch %d: %s check failed: %v", e.Epoch, e.Check, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrClosed is returned after Close.
var ErrClosed = errors.New("audit: auditor closed")

// Options configure an Auditor.
type Options struct {
	Log      Log           // where the log is read (HTTPLog, DirectoryLog)
	Verifier note.Verifier // the log's checkpoint key; its name is the origin
	// ConfigHash pins the directory configuration (kt.Config.Hash); zero
	// takes epoch 0's and holds every later epoch to it.
	ConfigHash [32]byte
	CacheDepth int // tree levels held in memory; 0: kt.DefaultCacheDepth
	// Now is the auditor's clock (nil: time.Now): an epoch dated more
	// than MaxClockSkew after it is not audited yet (ErrFutureEpoch).
	Now func() time.Time
}

// MaxClockSkew is how far after the auditor's clock an epoch record may
// be dated. Clients accept a record up to kt.DefaultMaxEpochAge from
// their clock either way, so a log that dated an epoch ahead by that much
// would have it accepted as fresh for twice as long after it stops (a
// freeze of 30 minutes instead of 15); an auditing witness cosigns such
// an epoch only once its time has (nearly) come.
const MaxClockSkew = 2 * time.Minute

// ErrFutureEpoch is an epoch record dated more than MaxClockSkew after the
// auditor's clock. It is not evidence (the clocks may disagree): the
// auditor stays before that epoch and audits it again when asked.
var ErrFutureEpoch = errors.New("audit: epoch record dated in the future")

// Auditor replays a log's epochs onto its own copy of the prefix tree.
// It is safe for concurrent use; audits run one at a time.
type Auditor struct {
	opts Options
	db   *bolt.DB
	tree *kt.ReplayTree

	mu     sync.Mutex
	closed bool
	st     state
}

// state is the auditor's position in the log, stored in bucketState and
// changed in the transaction that applies each epoch.
type state struct {
	size      uint64          // epochs audited: the log entries 0..size-1
	rng       [][]byte        // the RFC 6962 compact range of those entries
	last      *kt.EpochRecord // epoch size-1's record
	config    [32]byte
	hasConfig bool
}

var (
	bucketState = []byte("audit")
	keySize     = []byte("size")
	keyRange    = []byte("range")
	keyLast     = []byte("last")
	keyConfig   = []byte("config")
)

var rangeFactory = &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}

// Open opens (or creates) the auditor's database at path.
func Open(path string, opts Options) (*Auditor, error) {
	if opts.Log == nil || opts.Verifier == nil {
		return nil, errors.New("audit: Log and Verifier are required")
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("audit: open database: %w", err)
	}
	a := &Auditor{opts: opts, db: db}
	if a.tree, err = kt.OpenReplayTree(db, opts.CacheDepth); err != nil {
		db.Close()
		return nil, err
	}
	if err := a.load(); err != nil {
		db.Close()
		return nil, err
	}
	return a, nil
}

func (a *Auditor) load() error {
	return a.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketState)
		if err != nil {
			return fmt.Errorf("audit: state: %w", err)
		}
		if v := b.Get(keySize); v != nil {
			if len(v) != 8 {
				return errors.New("audit: state: bad size")
			}
			a.st.size = binary.BigEndian.Uint64(v)
		}
		r := b.Get(keyRange)
		if len(r)%32 != 0 {
			return errors.New("audit: state: bad range")
		}
		for ; len(r) > 0; r = r[32:] {
			a.st.rng = append(a.st.rng, bytes.Clone(r[:32]))
		}
		if _, err := rangeFactory.NewRange(0, a.st.size, a.st.rng); err != nil {
			return fmt.Errorf("audit: state: %w", err)
		}
		if v := b.Get(keyLast); v != nil {
			if a.st.last, err = kt.ParseEpochRecord(v); err != nil {
				return fmt.Errorf("audit: state: %w", err)
			}
		}
		if v := b.Get(keyConfig); len(v) == 32 {
			a.st.config, a.st.hasConfig = [32]byte(v), true
		}
		if (a.st.size == 0) != (a.st.last == nil) {
			return errors.New("audit: state: size and last record disagree")
		}
		return nil
	})
}

// Close closes the database; an audit under way finishes first.
func (a *Auditor) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	return a.db.Close()
}

// Size returns the number of epochs audited: the log's entries
// 0..Size()-1 all passed.
func (a *Auditor) Size() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.size
}

// Root returns the root of the auditor's tree: the last audited epoch's
// root.
func (a *Auditor) Root() ([32]byte, error) { return a.tree.Root() }

// Follow reads the log's newest checkpoint and audits up to it.
func (a *Auditor) Follow(ctx context.Context) (*kt.Checkpoint, error) {
	raw, err := a.opts.Log.ReadResource(ctx, "checkpoint")
	if err != nil {
		return nil, err
	}
	return a.audit(ctx, raw)
}

// Audit checks the log up to the signed checkpoint: every epoch from the
// last audited one to the checkpoint's last is in the log under it, and
// each one's tree follows from the previous one's (the checks are the
// Check… constants). A checkpoint no larger than the audited log must be
// consistent with it. It returns nil only if all of them pass; a
// failure the log is to blame for is an *Error, and the auditor stays at
// the last epoch that passed.
func (a *Auditor) Audit(ctx context.Context, signedCheckpoint []byte) error {
	_, err := a.audit(ctx, signedCheckpoint)
	return err
}

// CheckTree is the witness's hook (kt/witness Log.Check, whose old and
// new trees are a size and a root): it audits up to the signed checkpoint
// the witness was offered, whose tree must be (size, root). A witness
// built with
//
//	Check: func(ctx context.Context, _, new witness.Tree, cp []byte) error {
//		return a.CheckTree(ctx, new.Size, new.Root, cp)
//	}
//
// cosigns only checkpoints whose every epoch the auditor accepted.
func (a *Auditor) CheckTree(ctx context.Context, size uint64, root [32]byte, signedCheckpoint []byte) error {
	cp, err := kt.OpenCheckpoint(signedCheckpoint, a.opts.Verifier)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if cp.Size != size || cp.Root != root {
		return fmt.Errorf("audit: the checkpoint is of size %d, root %x; the witness was offered size %d, root %x", cp.Size, cp.Root[:8], size, root[:8])
	}
	return a.Audit(ctx, signedCheckpoint)
}

func (a *Auditor) audit(ctx context.Context, raw []byte) (*kt.Checkpoint, error) {
	cp, err := kt.OpenCheckpoint(raw, a.opts.Verifier)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, ErrClosed
	}
	if cp.Size == 0 {
		return nil, errors.New("audit: checkpoint of an empty log")
	}
	if cp.Size <= a.st.size {
		return cp, a.behind(ctx, cp)
	}
	pb, err := tclient.NewProofBuilder(ctx, cp.Size, tileFetcher(a.opts.Log))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// Range.Append reuses its slice: never let it write into st.rng.
	rng, err := rangeFactory.NewRange(0, a.st.size, cloneHashes(a.st.rng))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// One entry bundle (256 epochs) at a time: its records are proved in
	// the log under the checkpoint before any of them is applied.
	for start := a.st.size; start < cp.Size; {
		bundle := start / layout256
		end := min((bundle+1)*layout256, cp.Size)
		eb, err := tclient.GetEntryBundle(ctx, bundleFetcher(a.opts.Log), bundle, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("audit: epochs %d..%d: %w", start, end-1, err)
		}
		if uint64(len(eb.Entries)) < end-bundle*layout256 {
			return nil, &Error{Epoch: start, Check: CheckInclusion, Err: fmt.Errorf("entry bundle %d holds %d entries, the checkpoint of size %d needs %d", bundle, len(eb.Entries), cp.Size, end-bundle*layout256)}
		}
		entries := eb.Entries[start-bundle*layout256 : end-bundle*layout256]
		if err := verifyChunk(ctx, pb, rng, entries, end, cp); err != nil {
			return nil, &Error{Epoch: start, Check: CheckInclusion, Err: err}
		}
		for i, entry := range entries {
			if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(entry), nil); err != nil {
				return nil, fmt.Errorf("audit: %w", err)
			}
			if err := a.apply(ctx, start+uint64(i), entry, rng.Hashes()); err != nil {
				return nil, err
			}
		}
		start = end
	}
	return cp, nil
}

const layout256 = 256 // entries per tlog-tiles entry bundle

// verifyChunk checks that the audited log extended with entries (ending at
// end) is a prefix of cp's tree.
func verifyChunk(ctx context.Context, pb *tclient.ProofBuilder, audited *compact.Range, entries [][]byte, end uint64, cp *kt.Checkpoint) error {
	r, err := rangeFactory.NewRange(0, audited.End(), cloneHashes(audited.Hashes()))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := r.Append(rfc6962.DefaultHasher.HashLeaf(e), nil); err != nil {
			return err
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return err
	}
	if end == cp.Size {
		if !bytes.Equal(root, cp.Root[:]) {
			return fmt.Errorf("the audited log and entries up to %d do not give the root of the checkpoint of size %d", end, cp.Size)
		}
		return nil
	}
	prf, err := pb.ConsistencyProof(ctx, end, cp.Size)
	if err != nil {
		return fmt.Errorf("consistency proof %d..%d: %w", end, cp.Size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, end, cp.Size, prf, root, cp.Root[:]); err != nil {
		return fmt.Errorf("the audited log and entries up to %d are not a prefix of the checkpoint of size %d: %w", end, cp.Size, err)
	}
	return nil
}

// behind checks a checkpoint no larger than the audited log: the same
// root at the same size, or a consistency proof from it to the audited
// log.
func (a *Auditor) behind(ctx context.Context, cp *kt.Checkpoint) error {
	rng, err := rangeFactory.NewRange(0, a.st.size, a.st.rng)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if cp.Size == a.st.size {
		if !bytes.Equal(root, cp.Root[:]) {
			return &Error{Epoch: cp.Size - 1, Check: CheckInclusion, Err: fmt.Errorf("the checkpoint of size %d has another root than the audited log of that size", cp.Size)}
		}
		return nil
	}
	pb, err := tclient.NewProofBuilder(ctx, a.st.size, tileFetcher(a.opts.Log))
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	prf, err := pb.ConsistencyProof(ctx, cp.Size, a.st.size)
	if err != nil {
		return fmt.Errorf("audit: consistency proof %d..%d: %w", cp.Size, a.st.size, err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, cp.Size, a.st.size, prf, cp.Root[:], root); err != nil {
		return &Error{Epoch: cp.Size - 1, Check: CheckInclusion, Err: fmt.Errorf("the checkpoint of size %d is not a prefix of the audited log of size %d: %w", cp.Size, a.st.size, err)}
	}
	return nil
}

// apply checks log entry e (already proved in the log) and replays its
// update list; rng is the compact range of entries 0..e.
func (a *Auditor) apply(ctx context.Context, e uint64, entry []byte, rng [][]byte) error {
	fail := func(c Check, format string, args ...any) error {
		return &Error{Epoch: e, Check: c, Err: fmt.Errorf(format, args...)}
	}
	rec, err := kt.ParseEpochRecord(entry)
	if err != nil {
		return &Error{Epoch: e, Check: CheckRecord, Err: err}
	}
	if rec.Epoch != e {
		return fail(CheckConsecutive, "the log entry at index %d is the record of epoch %d", e, rec.Epoch)
	}
	if last := a.st.last; last != nil && rec.Timestamp < last.Timestamp {
		return fail(CheckTimestamp, "%s is before epoch %d's %s", rec.Time().UTC().Format(time.RFC3339Nano), last.Epoch, last.Time().UTC().Format(time.RFC3339Nano))
	}
	now := time.Now
	if a.opts.Now != nil {
		now = a.opts.Now
	}
	if ahead := rec.Time().Sub(now()); ahead > MaxClockSkew {
		return fmt.Errorf("%w: epoch %d is dated %s, %v after this clock (at most %v)", ErrFutureEpoch, e, rec.Time().UTC().Format(time.RFC3339), ahead.Round(time.Second), MaxClockSkew)
	}
	config := a.opts.ConfigHash
	if a.st.hasConfig {
		config = a.st.config
	} else if config == ([32]byte{}) {
		config = rec.ConfigHash
	}
	if rec.ConfigHash != config {
		return fail(CheckConfig, "config hash %x, pinned %x", rec.ConfigHash[:8], config[:8])
	}
	raw, err := a.opts.Log.ReadResource(ctx, kt.UpdatesResource(e))
	if errors.Is(err, fs.ErrNotExist) {
		return fail(CheckUpdateList, "the log does not publish it")
	}
	if err != nil {
		return fmt.Errorf("audit: epoch %d: %w", e, err)
	}
	ul, err := kt.ParseUpdateList(raw)
	if err != nil {
		return &Error{Epoch: e, Check: CheckUpdateList, Err: err}
	}
	if ul.Epoch != e {
		return fail(CheckUpdateList, "the list names epoch %d", ul.Epoch)
	}
	if d := ul.Digest(); d != rec.UpdatesDigest {
		return fail(CheckDigest, "the %d leaves hash to %x, the record says %x", len(ul.Leaves), d[:8], rec.UpdatesDigest[:8])
	}
	err = a.tree.Apply(e, ul.Leaves, func(tx *bolt.Tx, root [32]byte) error {
		if root != rec.Root {
			return fail(CheckRoot, "epoch %d's tree with the %d leaves of this epoch has root %x, the record says %x", e-1, len(ul.Leaves), root[:8], rec.Root[:8])
		}
		b := tx.Bucket(bucketState)
		flat := make([]byte, 0, 32*len(rng))
		for _, h := range rng {
			flat = append(flat, h...)
		}
		return errors.Join(
			b.Put(keySize, binary.BigEndian.AppendUint64(nil, e+1)),
			b.Put(keyRange, flat),
			b.Put(keyLast, entry),
			b.Put(keyConfig, config[:]),
		)
	})
	if errors.Is(err, kt.ErrDuplicateIndex) {
		return &Error{Epoch: e, Check: CheckNewIndex, Err: err}
	}
	if err != nil {
		if _, ok := errors.AsType[*Error](err); ok {
			return err
		}
		return fmt.Errorf("audit: epoch %d: %w", e, err)
	}
	a.st.size, a.st.last, a.st.config, a.st.hasConfig = e+1, rec, config, true
	a.st.rng = cloneHashes(rng)
	return nil
}

func cloneHashes(h [][]byte) [][]byte {
	out := make([][]byte, len(h))
	for i := range h {
		out[i] = bytes.Clone(h[i])
	}
	return out
}
