package kt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/kt/vrf"
	"golang.org/x/mod/sumdb/note"
)

// Files the directory keeps in its data directory.
const (
	DBFile      = "kt.db"  // the prefix tree, versions and epoch records (bbolt)
	LogDir      = "kt-log" // the epoch log as tlog-tiles (Tessera POSIX)
	maxPerEpoch = MaxEpochLeaves
)

// Defaults.
const (
	DefaultEpochInterval = time.Second
	DefaultMinUpdates    = 4
	DefaultCacheDepth    = 16
	// DefaultMaxPending bounds the publishes queued for the next epochs
	// (DirectoryOptions.MaxPending): at most MaxValueLen each, about
	// 17 MiB, and one epoch (maxPerEpoch) takes them all.
	DefaultMaxPending = 1024
	// DefaultMaxVersions bounds the versions of one label
	// (DirectoryOptions.MaxVersions). A client publishes when it
	// registers and again when its published KeyPackage nears its end
	// (client/identity.go: every 120 days or so per device), a few
	// times a year: 1,024 versions are centuries of that, while a label
	// flooded at the default publish rate (server kt_publish_rate) takes
	// days to reach them, and holds at most 1,024 × MaxValueLen = 16 MiB.
	DefaultMaxVersions = 1024
	// DefaultWitnessTimeout bounds how long one checkpoint waits for
	// the witnesses' cosignatures (DirectoryOptions.WitnessTimeout).
	DefaultWitnessTimeout = 5 * time.Second
)

// Errors.
var (
	ErrClosed          = errors.New("kt: directory closed")
	ErrLabel           = errors.New("kt: invalid label")
	ErrValue           = errors.New("kt: value too large")
	ErrTooManyVersions = errors.New("kt: label has too many versions")
	ErrQueueFull       = errors.New("kt: publish queue full")
	ErrWithdrawn       = errors.New("kt: publish withdrawn before its epoch, not published")
	ErrNoEpoch         = errors.New("kt: no epoch served yet")
)

// DirectoryOptions configure a Directory.
type DirectoryOptions struct {
	Dir           string      // data directory; DBFile and LogDir are made there
	LogSigner     note.Signer // signs checkpoints; its name is the log origin
	LogVerifier   note.Verifier
	VRFKey        *vrf.PrivateKey
	EpochInterval time.Duration // default 1 s
	MinUpdates    int           // default 4, at most MaxEpochLeaves; each epoch is padded up to it with fake leaves
	CacheDepth    int           // tree levels held in memory; default 16
	Logger        *slog.Logger
	Now           func() time.Time

	// What publishers and lookups can make the directory hold and
	// compute (docs/key-transparency.md §7).
	MaxPending  int    // publishes queued and not yet committed; default DefaultMaxPending
	MaxVersions uint32 // versions one label may reach; default DefaultMaxVersions, at most MaxVersion
	ProofCache  int    // VRF proofs kept in memory; default DefaultProofCache, negative: none

	// Witnesses (docs/key-transparency.md §1.6). With a policy that
	// requires cosignatures, each checkpoint is sent to its witnesses
	// (C2SP tlog-witness) and published, and its epoch served, only once
	// their cosignatures satisfy the policy ("publish late"): while they
	// cannot, lookups stay at the newest cosigned epoch. With
	// WitnessFailOpen a checkpoint is published after WitnessTimeout
	// without a quorum, counted and logged at WARN (WitnessStats).
	WitnessPolicy   *WitnessPolicy
	WitnessTimeout  time.Duration // per checkpoint; default DefaultWitnessTimeout
	WitnessFailOpen bool
	WitnessClient   *http.Client // for the witness requests; default http.DefaultClient
	// Tree, if set, is the store of the tree, versions and epoch
	// records (TreeStore), which the directory owns from then on; nil:
	// the bbolt file Dir/DBFile (OpenBoltTree).
	Tree TreeStore
	// OpenLog, if set, opens the epoch log's driver (LogDriver); nil:
	// Tessera's POSIX driver in Dir/LogDir (OpenPOSIXLog).
	OpenLog func(context.Context, LogConfig) (LogDriver, error)
	// Opened, if set, gets the directory once its database and log are
	// open, before OpenDirectory makes or recovers its last epoch and
	// waits for that epoch's checkpoint. Start serving Handler here: under
	// a policy that requires an auditing witness (§8, §9), the checkpoint
	// is cosigned only after that witness read the epoch's update list
	// from it. Only Handler, LogResource and UpdateList may be used until
	// OpenDirectory returns.
	Opened func(*Directory)

	// Lease and Queue make the directory one node of several sharing Tree
	// and the log OpenLog opens (docs/key-transparency.md, "Several
	// nodes"; ADR 0037): the node holding Lease sequences (builds the
	// epochs from Queue), every node serves lookups and proofs from the
	// shared stores and publishes through Queue. Both or neither; with
	// them Tree and OpenLog are required, and the stores must fence their
	// writes with the same lease.
	Lease Lease
	Queue SharedQueue

	// afterCommit, in tests, runs after an epoch's bbolt commit and
	// before its log append; an error stops the epoch there, as a crash
	// would.
	afterCommit func(epoch uint64) error
}

// Directory is the server side of key transparency: it owns the prefix
// tree, the epoch log and the VRF key, turns published values into epochs
// at a fixed cadence, and answers lookups, histories and consistency
// requests with proofs. It is safe for concurrent use.
type Directory struct {
	opts    DirectoryOptions
	cfg     Config
	cfgHash [32]byte
	store   TreeStore
	ts      *treeStore
	log     *epochLog
	writeMu sync.Mutex
	pendMu  sync.Mutex
	// refreshMu makes a follower's refreshes one at a time: each brings
	// the cache up to its snapshot before it serves its checkpoint, and
	// two at once could serve the newer checkpoint over the older cache.
	refreshMu sync.Mutex
	pending   []*update
	queued    int                     // updates enqueued and not yet settled (pending, being proved or in an epoch being committed)
	reserved  map[string]*reservation // labels with updates queued
	proofs    *proofCache
	view      atomic.Pointer[view]
	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	started   atomic.Bool
	stats     commitStats // guarded by writeMu

	proofsComputed atomic.Uint64
	publishLatency atomic.Int64 // the last epoch's append to its served checkpoint, ns
}

// reservation is what Enqueue knows of a label's versions while updates of
// it are queued or being committed.
type reservation struct {
	top uint32 // the highest version reserved; 0: read the database
	n   int    // updates of the label enqueued and not yet settled
}

// commitStats accumulates where epoch commits spend their time.
type commitStats struct {
	vrf  time.Duration // VRF proofs of new versions
	tree time.Duration // tree inserts, hashing and the bbolt commit
}

// view is what lookups are answered from: an epoch whose record is in a
// published checkpoint.
type view struct {
	epoch      uint64
	record     *EpochRecord
	raw        []byte
	checkpoint *Checkpoint
}

type update struct {
	label string
	value []byte
	done  chan Published
	// The VRF proof for the version reserved at Enqueue, computed there
	// so the epoch commit need not: used when the commit assigns that
	// same version (it does unless two publishes of a label raced).
	version uint32
	index   Index
	proof   [vrf.ProofSize]byte
}

// Published reports where a value landed.
type Published struct {
	Version uint32
	Epoch   uint64
	Err     error
}

// OpenDirectory opens (or creates) the directory in opts.Dir, reconciles
// the log with the database (appending epoch records that were committed
// but not yet logged when the process stopped), and serves the last epoch.
func OpenDirectory(ctx context.Context, opts DirectoryOptions) (*Directory, error) {
	if opts.LogSigner == nil || opts.LogVerifier == nil || opts.VRFKey == nil || opts.Dir == "" {
		return nil, errors.New("kt: Dir, LogSigner, LogVerifier and VRFKey are required")
	}
	if opts.EpochInterval <= 0 {
		opts.EpochInterval = DefaultEpochInterval
	}
	if opts.MinUpdates <= 0 {
		opts.MinUpdates = DefaultMinUpdates
	}
	if opts.MinUpdates > MaxEpochLeaves {
		return nil, fmt.Errorf("kt: MinUpdates %d is above the %d leaves an epoch may insert", opts.MinUpdates, MaxEpochLeaves)
	}
	if opts.CacheDepth <= 0 {
		opts.CacheDepth = DefaultCacheDepth
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.MaxVersions == 0 {
		opts.MaxVersions = DefaultMaxVersions
	}
	opts.MaxVersions = min(opts.MaxVersions, MaxVersion)
	if opts.ProofCache == 0 {
		opts.ProofCache = DefaultProofCache
	}
	if opts.WitnessTimeout <= 0 {
		opts.WitnessTimeout = DefaultWitnessTimeout
	}
	if (opts.Lease == nil) != (opts.Queue == nil) {
		return nil, errors.New("kt: Lease and Queue go together")
	}
	if opts.Lease != nil && (opts.Tree == nil || opts.OpenLog == nil) {
		return nil, errors.New("kt: a directory of several nodes (Lease) needs a shared Tree and OpenLog")
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("kt: %w", err)
	}
	d := &Directory{
		opts: opts,
		cfg: Config{
			Origin:        opts.LogSigner.Name(),
			VRFPublicKey:  opts.VRFKey.PublicKey(),
			EpochInterval: opts.EpochInterval,
			MinUpdates:    uint32(opts.MinUpdates),
		},
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		reserved: map[string]*reservation{},
		proofs:   newProofCache(opts.ProofCache),
	}
	d.cfgHash = d.cfg.Hash()
	st := opts.Tree
	if st == nil {
		var err error
		if st, err = OpenBoltTree(opts.Dir); err != nil {
			return nil, err
		}
	}
	d.store = st
	d.ts = newTreeStore(opts.CacheDepth)
	if err := viewTree(ctx, st, d.ts.refill); err != nil {
		st.Close()
		return nil, fmt.Errorf("kt: open tree: %w", err)
	}
	var err error
	var wit *witnessing
	if opts.WitnessPolicy.Required() {
		wit = &witnessing{policy: opts.WitnessPolicy, timeout: opts.WitnessTimeout, failOpen: opts.WitnessFailOpen}
	}
	if d.log, err = openEpochLog(ctx, opts.OpenLog, filepath.Join(opts.Dir, LogDir), opts.LogSigner, wit, opts.WitnessClient); err != nil {
		st.Close()
		return nil, err
	}
	if opts.Opened != nil {
		opts.Opened(d)
	}
	start := d.recover
	if opts.Lease != nil {
		start = d.join
	}
	if err := start(ctx); err != nil {
		d.log.close()
		st.Close()
		return nil, err
	}
	return d, nil
}

// Config returns the configuration verifiers pin (its Hash is in every
// epoch record).
func (d *Directory) Config() Config { return d.cfg }

// recover makes the log hold exactly the committed epochs, creating epoch
// 0 (the empty tree) on first use, and serves the last one.
func (d *Directory) recover(ctx context.Context) error {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	n, err := d.epochCount()
	if err != nil {
		return err
	}
	if n == 0 {
		if _, err := d.commit(nil, true); err != nil {
			return err
		}
	}
	return d.syncLog(ctx)
}

// epochCount is the number of committed epochs.
func (d *Directory) epochCount() (uint64, error) {
	var n uint64
	err := viewTree(context.Background(), d.store, func(s TreeSnapshot) error {
		var err error
		n, err = s.Epochs()
		return err
	})
	return n, err
}

func (d *Directory) epochRecord(s TreeSnapshot, e uint64) ([]byte, *EpochRecord, error) {
	raw, err := s.EpochRecord(e)
	if err != nil {
		return nil, nil, err
	}
	if raw == nil {
		return nil, nil, fmt.Errorf("kt: epoch %d not stored", e)
	}
	r, err := ParseEpochRecord(raw)
	return append([]byte(nil), raw...), r, err
}

// syncLog appends every committed epoch record the log lacks, checks the
// log's last entry against the database, waits for a checkpoint covering
// them all and serves the last epoch. Called with writeMu held.
func (d *Directory) syncLog(ctx context.Context) error {
	start := time.Now()
	n, err := d.epochCount()
	if err != nil {
		return err
	}
	size, err := d.log.size(ctx)
	if err != nil {
		return fmt.Errorf("kt: log size: %w", err)
	}
	if size > n {
		return fmt.Errorf("kt: the log has %d epochs, the database %d: the database is behind its log", size, n)
	}
	if size > 0 {
		got, err := d.log.entry(ctx, size-1, size)
		if err != nil {
			return fmt.Errorf("kt: reading log entry %d: %w", size-1, err)
		}
		var want []byte
		if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
			want, _, err = d.epochRecord(s, size-1)
			return err
		}); err != nil {
			return err
		}
		if string(got) != string(want) {
			return fmt.Errorf("kt: log entry %d differs from the database's epoch record", size-1)
		}
	}
	for e := size; e < n; e++ {
		var raw []byte
		if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
			raw, _, err = d.epochRecord(s, e)
			return err
		}); err != nil {
			return err
		}
		idx, err := d.log.add(ctx, raw)
		if err != nil {
			return err
		}
		if idx != e {
			return fmt.Errorf("kt: epoch %d was logged at index %d", e, idx)
		}
		if e < n-1 {
			d.opts.Logger.Info("kt: logged an epoch committed before a restart", "epoch", e)
		}
	}
	cpRaw, cp, unwitnessed, err := d.log.awaitCheckpoint(ctx, n, d.opts.LogVerifier)
	if err != nil {
		return err
	}
	d.publishLatency.Store(int64(time.Since(start)))
	if unwitnessed {
		d.opts.Logger.Warn("kt: checkpoint published WITHOUT the witness quorum (kt_witness_fail_open): clients pinned to the policy refuse it",
			"size", cp.Size, "cosigned_by", d.log.wit.policy.Cosigners(cpRaw))
	}
	var raw []byte
	var rec *EpochRecord
	if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
		raw, rec, err = d.epochRecord(s, n-1)
		return err
	}); err != nil {
		return err
	}
	_ = cpRaw
	d.view.Store(&view{epoch: n - 1, record: rec, raw: raw, checkpoint: cp})
	return nil
}

// Publish queues value as the next version of label and waits until the
// epoch holding it is served (about one epoch interval; Start must have
// been called, or the caller drives epochs with Tick). An error after the
// epoch's database commit (a failed log append) still leaves the version
// stored: the next epoch logs it first.
//
// When ctx ends before an epoch has taken the update, the update is
// withdrawn from the queue and the error is ErrWithdrawn (wrapping
// ctx.Err()): it will not be published, so a caller that gave up is never
// answered "not published" for a version that appears later. Once an
// epoch has taken it, Publish waits for that epoch's outcome (bounded by
// the epoch's own timeout) and reports it whatever ctx says.
func (d *Directory) Publish(ctx context.Context, label string, value []byte) (Published, error) {
	if d.opts.Queue != nil {
		return d.publishShared(ctx, label, value, false)
	}
	u, err := d.enqueue(label, value)
	if err != nil {
		return Published{}, err
	}
	select {
	case p := <-u.done:
		return p, p.Err
	case <-ctx.Done():
	}
	if d.withdraw(u) {
		return Published{}, fmt.Errorf("%w: %w", ErrWithdrawn, ctx.Err())
	}
	p := <-u.done
	return p, p.Err
}

// Enqueue queues value as the next version of label; the channel reports
// the outcome once the next epoch is served. At most MaxPending updates
// wait at once (ErrQueueFull beyond), and a label gets at most MaxVersions
// versions (ErrTooManyVersions beyond).
func (d *Directory) Enqueue(label string, value []byte) (<-chan Published, error) {
	if d.opts.Queue != nil {
		return d.enqueueShared(label, value)
	}
	u, err := d.enqueue(label, value)
	if err != nil {
		return nil, err
	}
	return u.done, nil
}

// checkUpdate refuses a label or a value no epoch takes (ErrLabel,
// ErrValue).
func checkUpdate(label string, value []byte) error {
	if len(label) == 0 || len(label) > MaxLabelLen {
		return ErrLabel
	}
	if len(value) > MaxValueLen {
		return ErrValue
	}
	return nil
}

func (d *Directory) enqueue(label string, value []byte) (*update, error) {
	if err := checkUpdate(label, value); err != nil {
		return nil, err
	}
	if d.closed.Load() {
		return nil, ErrClosed
	}
	// A slot in the queue first, so that no more than MaxPending updates
	// (and their values) are ever held, proved or not.
	d.pendMu.Lock()
	if d.queued >= d.opts.MaxPending {
		d.pendMu.Unlock()
		return nil, ErrQueueFull
	}
	d.queued++
	r := d.reserved[label]
	if r == nil {
		r = &reservation{}
		d.reserved[label] = r
	}
	r.n++
	top := r.top
	d.pendMu.Unlock()
	fail := func(err error) (*update, error) {
		d.pendMu.Lock()
		d.unreserve(label, r)
		d.pendMu.Unlock()
		return nil, err
	}
	// Reserve the next version and prove it here, in the caller's
	// goroutine, spreading VRF work over the epoch interval.
	var latest uint32
	if top == 0 {
		var err error
		if latest, err = d.LatestVersion(label); err != nil {
			return fail(err)
		}
	}
	d.pendMu.Lock()
	v := max(latest, r.top) + 1
	if v > d.opts.MaxVersions {
		d.unreserve(label, r)
		d.pendMu.Unlock()
		return nil, ErrTooManyVersions
	}
	r.top = v
	d.pendMu.Unlock()
	u := &update{label: label, value: append([]byte(nil), value...), done: make(chan Published, 1), version: v}
	u.index, u.proof = d.prove(label, v)
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	if d.closed.Load() { // Close has answered the queue already
		d.unreserve(label, r)
		return nil, ErrClosed
	}
	d.pending = append(d.pending, u)
	return u, nil
}

// unreserve settles one update of label: it leaves the queue. Called
// with pendMu held.
func (d *Directory) unreserve(label string, r *reservation) {
	d.queued--
	if r.n--; r.n <= 0 {
		delete(d.reserved, label)
	}
}

// withdraw takes u out of the queue if no epoch has taken it yet.
func (d *Directory) withdraw(u *update) bool {
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	i := slices.Index(d.pending, u)
	if i < 0 {
		return false
	}
	d.pending = slices.Delete(d.pending, i, i+1)
	r := d.reserved[u.label]
	if r.top == u.version {
		// Nothing of this label was reserved after u: the next Enqueue
		// takes u's version again (and its proof, from the cache).
		r.top--
	}
	d.unreserve(u.label, r)
	return true
}

// Start runs one epoch per interval until Close.
func (d *Directory) Start() {
	if d.started.Swap(true) {
		return
	}
	if d.opts.Lease != nil {
		go d.runShared()
		return
	}
	go func() {
		defer close(d.done)
		t := time.NewTicker(d.opts.EpochInterval)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), 10*d.opts.EpochInterval+5*time.Second)
				if _, err := d.Tick(ctx); err != nil && !errors.Is(err, ErrClosed) {
					d.opts.Logger.Warn("kt: epoch failed", "err", err)
				}
				cancel()
			}
		}
	}()
}

// Tick makes one epoch from the queued updates (padded with fake leaves),
// logs its record, waits for a checkpoint and serves it. It returns the new
// epoch number.
func (d *Directory) Tick(ctx context.Context) (uint64, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if d.opts.Lease != nil {
		return d.tickShared(ctx)
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	// An epoch committed but not logged (a failed append) goes first.
	if n, err := d.epochCount(); err != nil {
		return 0, err
	} else if v := d.view.Load(); v == nil || v.epoch+1 != n {
		if err := d.syncLog(ctx); err != nil {
			return 0, err
		}
	}
	d.pendMu.Lock()
	batch := d.pending
	if len(batch) > maxPerEpoch {
		batch = batch[:maxPerEpoch]
	}
	// The rest moves to a new array: the old one would keep the batch's
	// values reachable after they are settled.
	if rest := d.pending[len(batch):]; len(rest) > 0 {
		d.pending = slices.Clone(rest)
	} else {
		d.pending = nil
	}
	d.pendMu.Unlock()
	results, err := d.commit(batch, false)
	d.release(batch, results, err)
	if err != nil {
		for _, u := range batch {
			u.done <- Published{Err: err}
		}
		return 0, err
	}
	e := results[0].Epoch
	if d.opts.afterCommit != nil {
		if err := d.opts.afterCommit(e); err != nil {
			for i, u := range batch {
				results[i].Err = err
				u.done <- results[i]
			}
			return 0, err
		}
	}
	if err := d.syncLog(ctx); err != nil {
		for i, u := range batch {
			results[i].Err = err
			u.done <- results[i]
		}
		return 0, err
	}
	for i, u := range batch {
		u.done <- results[i]
	}
	return e, nil
}

// release settles the updates of a committed (or failed) batch: they
// leave the queue, and a label's reservation goes with its last queued
// update. After a failed commit a label's reservation is reset, so the
// next Enqueue reads the database again.
func (d *Directory) release(batch []*update, results []Published, err error) {
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	for i, u := range batch {
		r := d.reserved[u.label]
		if err != nil {
			r.top = 0
		} else if results[i].Err == nil {
			r.top = max(r.top, results[i].Version)
		}
		d.unreserve(u.label, r)
	}
}

// commit writes one epoch to the database: the updates as new versions,
// padding, the tree nodes and the epoch record. genesis makes epoch 0.
func (d *Directory) commit(batch []*update, genesis bool) ([]Published, error) {
	results := make([]Published, max(len(batch), 1))
	// Versions first (one writer: they cannot change before the update
	// below), then the VRF proofs in parallel: proving is most of the cost
	// of an insert.
	vers := make([]uint32, len(batch))
	ctx := context.Background()
	if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
		seen := map[string]uint32{}
		for i, u := range batch {
			v, ok := seen[u.label]
			if !ok {
				var err error
				if v, err = s.LatestVersion(u.label); err != nil {
					return err
				}
			}
			v++
			seen[u.label] = v
			vers[i] = v
		}
		return nil
	}); err != nil {
		return nil, err
	}
	recs := make([]versionRecord, len(batch))
	vrfStart := time.Now()
	parallel(len(batch), func(i int) {
		if vers[i] > d.opts.MaxVersions {
			return
		}
		u := batch[i]
		recs[i] = versionRecord{index: u.index, proof: u.proof, value: u.value}
		if u.version != vers[i] {
			recs[i].index, recs[i].proof = d.prove(u.label, vers[i])
		}
		rand.Read(recs[i].opening[:])
	})
	d.stats.vrf += time.Since(vrfStart)
	treeStart := time.Now()
	// The epoch's leaves, then the tree's new nodes, are made in read
	// transactions (the tree on two goroutines), outside the write
	// transaction: there is one writer (writeMu), so nothing they read
	// changes before it. Everything is written in that one transaction,
	// all or nothing.
	var e uint64
	if err := viewTree(ctx, d.store, func(s TreeSnapshot) error {
		var err error
		if e, err = s.Epochs(); err == nil && e == 0 && !genesis {
			err = errors.New("kt: no genesis epoch")
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("kt: commit epoch: %w", err)
	}
	// The update list an auditor replays (§1.5): every leaf this epoch
	// inserts, in order, stored with the record.
	ul := UpdateList{Epoch: e, Leaves: make([]Leaf, 0, max(len(batch), d.opts.MinUpdates))}
	for i := range batch {
		if vers[i] > d.opts.MaxVersions {
			results[i] = Published{Err: ErrTooManyVersions}
			continue
		}
		recs[i].added = e
		ul.Leaves = append(ul.Leaves, Leaf{Index: recs[i].index})
		results[i] = Published{Version: vers[i]}
	}
	for i := range results {
		if results[i].Err == nil {
			results[i].Epoch = e
		}
	}
	// The commitments (an HMAC each), in parallel, in the list's order.
	live := make([]int, 0, len(ul.Leaves))
	for i := range batch {
		if results[i].Err == nil {
			live = append(live, i)
		}
	}
	parallel(len(live), func(j int) {
		i := live[j]
		ul.Leaves[j].Commitment = Commit(recs[i].opening, batch[i].label, vers[i], e, batch[i].value)
	})
	if !genesis {
		// Padding: fake leaves at random indices with random
		// commitments, indistinguishable from real ones.
		for n := len(batch); n < d.opts.MinUpdates; n++ {
			var l Leaf
			rand.Read(l.Index[:])
			rand.Read(l.Commitment[:])
			ul.Leaves = append(ul.Leaves, l)
		}
	}
	dirty, root, err := insertLeaves(func(int) (nodeSource, func()) {
		snap, err := d.store.Snapshot(ctx)
		if err != nil {
			return errSource{err}, func() {}
		}
		return txNodes{ts: d.ts, snap: snap}, snap.Release
	}, e, ul.Leaves, parallelInsertMin)
	if err != nil {
		return nil, fmt.Errorf("kt: commit epoch: %w", err)
	}
	c := EpochCommit{Epoch: e, Nodes: encodeNodes(dirty, d.opts.Lease != nil), UpdateList: ul.Marshal()}
	for i, u := range batch {
		if results[i].Err == nil {
			c.Versions = append(c.Versions, VersionWrite{Label: u.label, Version: vers[i], Record: recs[i].marshal()})
		}
	}
	rec := EpochRecord{Epoch: e, Timestamp: uint64(d.opts.Now().UnixMilli()), Root: root, UpdatesDigest: ul.Digest(), ConfigHash: d.cfgHash}
	c.Record = rec.Marshal()
	d.ts.stagePrevs(e, dirty)
	err = d.store.CommitEpoch(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("kt: commit epoch: %w", err)
	}
	d.ts.publish(dirty)
	d.ts.mu.Lock()
	d.ts.epochs = e + 1
	d.ts.mu.Unlock()
	d.stats.tree += time.Since(treeStart)
	return results, nil
}

// Close stops the epoch loop and closes the log and the database.
func (d *Directory) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	if d.started.Load() {
		close(d.stop)
		<-d.done
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	d.pendMu.Lock()
	for _, u := range d.pending {
		u.done <- Published{Err: ErrClosed}
		d.unreserve(u.label, d.reserved[u.label])
	}
	d.pending = nil
	d.pendMu.Unlock()
	var lerr error
	if d.opts.Lease != nil {
		// Released, the lease passes to another node at once rather
		// than after its time to live.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		lerr = errors.Join(d.opts.Lease.Release(ctx), d.opts.Queue.Close())
		cancel()
	}
	return errors.Join(lerr, d.log.close(), d.store.Close())
}

// LogResource reads a tlog-tiles resource of the epoch log (see
// ReadLogResource).
func (d *Directory) LogResource(rel string) ([]byte, error) { return d.log.driver.ReadResource(rel) }

// UpdateList returns the encoded update list of committed epoch e
// (§1.5); ErrResource for an epoch not committed, or committed before
// update lists were kept. Lists are served from the commit on, before
// the epoch's checkpoint is published: a log that waits for its
// witnesses' cosignatures before publishing must let an auditing witness
// replay the epoch first, and the list tells nothing the checkpoint will
// not.
func (d *Directory) UpdateList(e uint64) ([]byte, error) {
	var out []byte
	err := viewTree(context.Background(), d.store, func(s TreeSnapshot) error {
		b, err := s.UpdateList(e)
		if b != nil {
			out = append([]byte(nil), b...)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("kt: update list %d: %w", e, err)
	}
	if out == nil {
		return nil, ErrResource
	}
	return out, nil
}

// LogDir returns the directory holding the epoch log's tiles: "" when
// the log is not Tessera's POSIX driver (DirectoryOptions.OpenLog).
func (d *Directory) LogDir() string {
	if p, ok := d.log.driver.(*posixLog); ok {
		return p.dir
	}
	return ""
}

// Checkpoint returns the checkpoint lookups are currently answered under.
func (d *Directory) Checkpoint() (*Checkpoint, error) {
	v := d.view.Load()
	if v == nil {
		return nil, ErrNoEpoch
	}
	return v.checkpoint, nil
}

// parallelInsertMin is the fewest leaves on each side of the root for
// which an epoch's inserts run on two goroutines.
const parallelInsertMin = 256

// errSource is a nodeSource that fails: a read transaction that could
// not be begun.
type errSource struct{ err error }

func (s errSource) node(nodeID) (*nodeRecord, error) { return nil, s.err }

// parallel runs f(0..n-1) on GOMAXPROCS goroutines.
func parallel(n int, f func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		}()
	}
	wg.Wait()
}

// LatestVersion returns the newest committed version of label (0: none).
func (d *Directory) LatestVersion(label string) (uint32, error) {
	var v uint32
	err := viewTree(context.Background(), d.store, func(s TreeSnapshot) error {
		var err error
		v, err = s.LatestVersion(label)
		return err
	})
	return v, err
}

// Queued is the number of publishes enqueued and not yet settled: at most
// MaxPending.
func (d *Directory) Queued() int {
	d.pendMu.Lock()
	defer d.pendMu.Unlock()
	return d.queued
}
