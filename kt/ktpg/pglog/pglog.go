package pglog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	flog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"

	"github.com/quicprochat/qpc/internal/pgmigrate"
	"github.com/quicprochat/qpc/internal/pgtx"
	"github.com/quicprochat/qpc/kt"
)

// Fence is the check an Append runs inside its transaction, after it has
// locked the log's head row and before it writes anything. An error
// rolls the transaction back (the log is unchanged) and is returned
// wrapped in ErrFenced. The KT sequencer passes its lease check
// (internal/pglease) here: the lease row and the log rows commit or
// roll back together, so a node that lost the lease cannot integrate an
// entry however long it paused.
type Fence func(ctx context.Context, tx pgx.Tx) error

// Options are Open's options.
type Options struct {
	// Fence, if not nil, runs in every Append's transaction (see Fence).
	// AppendFenced gives one for a single append instead.
	Fence Fence
	// Logger hears of checkpoints the publisher could not publish under
	// a witness policy (nil: slog.Default()).
	Logger *slog.Logger
}

// ErrFenced wraps the error of a Fence that refused an Append.
var ErrFenced = errors.New("pglog: append refused by the fence")

// ErrClosed is returned by a Log's methods after Close.
var ErrClosed = errors.New("pglog: log closed")

// ErrEntryTooLong refuses an entry an entry bundle cannot hold (C2SP
// tlog-tiles: a big-endian uint16 length precedes each entry).
var ErrEntryTooLong = errors.New("pglog: entry longer than 65535 bytes")

// Log is kt.LogDriver on PostgreSQL. It keeps no state of its own: any
// number of Logs (nodes) may read one database; Appends from several are
// serialised by the head row's lock, and the fence decides which may
// integrate.
type Log struct {
	pool   *pgxpool.Pool
	signer note.Signer
	fence  Fence
	log    *slog.Logger
	closed atomic.Bool

	// Under a witness policy (witness.go): publish signs and has a
	// checkpoint cosigned; the publisher goroutine runs it after each
	// Append (wake) and every republishInterval, until stop.
	publish func(ctx context.Context, size uint64, root []byte) ([]byte, error)
	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

var _ kt.LogDriver = (*Log)(nil)

// hashSize is the size of a SHA-256 hash: one tile node (RFC 6962 §2.1).
const hashSize = sha256.Size

// width is the number of hashes of a full tile and of entries of a full
// bundle (C2SP tlog-tiles).
const width = layout.TileWidth

// readTimeout bounds ReadResource, which has no context of its own.
const readTimeout = 10 * time.Second

// Open applies the log's migrations to the database behind pool and
// returns the log. A new log gets the checkpoint of the empty tree, signed
// by c.Signer, as Tessera's POSIX driver publishes one. ctx bounds the
// opening only; pool stays the caller's (Close does not close it).
func Open(ctx context.Context, pool *pgxpool.Pool, c kt.LogConfig, o Options) (*Log, error) {
	if c.Signer == nil {
		return nil, errors.New("pglog: open: LogConfig.Signer is required")
	}
	if _, err := pgmigrate.Migrate(ctx, pool, migrationFiles, "migrations", versionTable); err != nil {
		return nil, fmt.Errorf("pglog: open: migrating the schema: %w", err)
	}
	l := &Log{pool: pool, signer: c.Signer, fence: o.Fence, log: o.Logger}
	if l.log == nil {
		l.log = slog.Default()
	}
	empty := rfc6962.DefaultHasher.EmptyRoot()
	cp, err := l.sign(0, empty)
	if err != nil {
		return nil, fmt.Errorf("pglog: open: %w", err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO ktlog_head (id, size, range_hashes, checkpoint, checkpoint_size)
		VALUES (1, 0, '', $1, 0) ON CONFLICT (id) DO NOTHING`, cp); err != nil {
		return nil, fmt.Errorf("pglog: open: creating the log: %w", err)
	}
	if c.Witnesses != nil {
		if err := l.startPublisher(c); err != nil {
			return nil, fmt.Errorf("pglog: open: %w", err)
		}
	}
	return l, nil
}

// Close stops the log: later calls fail with ErrClosed. Every Append
// that returned was committed; nothing is pending. Under a witness policy
// it stops the publisher, waiting for a publication under way.
func (l *Log) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.stop != nil {
		l.stop()
		<-l.done
	}
	return nil
}

// sign returns the checkpoint of a tree of size entries with root, as a
// note signed by the log's signer (C2SP tlog-checkpoint: origin, size,
// base64 root hash).
func (l *Log) sign(size uint64, root []byte) ([]byte, error) {
	body := flog.Checkpoint{Origin: l.signer.Name(), Size: size, Hash: root}.Marshal()
	cp, err := note.Sign(&note.Note{Text: string(body)}, l.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the checkpoint: %w", err)
	}
	return cp, nil
}

// Append integrates entry at the next index under Options.Fence.
func (l *Log) Append(ctx context.Context, entry []byte) (uint64, error) {
	return l.AppendFenced(ctx, entry, l.fence)
}

// AppendFenced integrates entry at the next index in one transaction
// that runs fence (nil: none) after locking the head row; see the
// package documentation. It returns the entry's index once committed.
func (l *Log) AppendFenced(ctx context.Context, entry []byte, fence Fence) (uint64, error) {
	if l.closed.Load() {
		return 0, ErrClosed
	}
	if len(entry) > 0xffff {
		return 0, ErrEntryTooLong
	}
	var index uint64
	err := pgtx.Write(ctx, l.pool, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		index, err = l.integrate(ctx, tx, entry, fence)
		return err
	}, nil, func(_ context.Context, err error) error {
		if errors.Is(err, ErrFenced) {
			return err
		}
		return fmt.Errorf("pglog: append: %w", err)
	})
	if err == nil && l.wake != nil {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return index, err
}

// integrate is Append's transaction body.
func (l *Log) integrate(ctx context.Context, tx pgx.Tx, entry []byte, fence Fence) (uint64, error) {
	var (
		size   int64
		hashes []byte
	)
	if err := tx.QueryRow(ctx, `SELECT size, range_hashes FROM ktlog_head WHERE id = 1 FOR UPDATE`).Scan(&size, &hashes); err != nil {
		return 0, fmt.Errorf("locking the head: %w", err)
	}
	if fence != nil {
		if err := fence(ctx, tx); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrFenced, err)
		}
	}
	index := uint64(size)
	r, err := loadRange(index, hashes)
	if err != nil {
		return 0, err
	}
	// The new leaf and every node it completes (RFC 6962 §2.1); nodes
	// at a height that is a multiple of 8 are the tiles' (C2SP
	// tlog-tiles).
	type node struct {
		level, index uint64
		hash         []byte
	}
	var nodes []node
	visit := func(id compact.NodeID, h []byte) {
		if id.Level%layout.TileHeight == 0 {
			nodes = append(nodes, node{uint64(id.Level), id.Index, h})
		}
	}
	if err := r.Append(rfc6962.DefaultHasher.HashLeaf(entry), visit); err != nil {
		return 0, fmt.Errorf("extending the tree: %w", err)
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return 0, fmt.Errorf("the tree's root: %w", err)
	}
	for _, n := range nodes {
		if err := appendTo(ctx, tx, "tiles", n.level/layout.TileHeight, n.index, n.hash); err != nil {
			return 0, err
		}
	}
	rec := make([]byte, 2, 2+len(entry))
	binary.BigEndian.PutUint16(rec, uint16(len(entry)))
	if err := appendTo(ctx, tx, "bundles", 0, index, append(rec, entry...)); err != nil {
		return 0, err
	}
	if l.publish != nil {
		// Under a witness policy the publisher has the checkpoint
		// cosigned once this commits (witness.go).
		if _, err := tx.Exec(ctx, `UPDATE ktlog_head SET size = $1, range_hashes = $2 WHERE id = 1`,
			int64(index+1), bytes.Join(r.Hashes(), nil)); err != nil {
			return 0, fmt.Errorf("writing the head: %w", err)
		}
		return index, nil
	}
	cp, err := l.sign(index+1, root)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `UPDATE ktlog_head SET size = $1, range_hashes = $2, checkpoint = $3, checkpoint_size = $1 WHERE id = 1`,
		int64(index+1), bytes.Join(r.Hashes(), nil), cp); err != nil {
		return 0, fmt.Errorf("writing the head: %w", err)
	}
	return index, nil
}

// appendTo appends data as the element at position in%256 of the tile
// (table tiles, at level) or bundle (table bundles) number in/256, which
// must hold exactly the elements before it.
func appendTo(ctx context.Context, tx pgx.Tx, table string, level, in uint64, data []byte) error {
	idx, pos := int64(in/width), int16(in%width)
	var (
		tag pgconn.CommandTag
		err error
	)
	switch {
	case table == "tiles" && pos == 0:
		tag, err = tx.Exec(ctx, `INSERT INTO ktlog_tiles (level, idx, width, data) VALUES ($1, $2, 1, $3)`, int64(level), idx, data)
	case table == "tiles":
		tag, err = tx.Exec(ctx, `UPDATE ktlog_tiles SET width = width + 1, data = data || $4 WHERE level = $1 AND idx = $2 AND width = $3`, int64(level), idx, pos, data)
	case pos == 0:
		tag, err = tx.Exec(ctx, `INSERT INTO ktlog_bundles (idx, width, data) VALUES ($1, 1, $2)`, idx, data)
	default:
		tag, err = tx.Exec(ctx, `UPDATE ktlog_bundles SET width = width + 1, data = data || $3 WHERE idx = $1 AND width = $2`, idx, pos, data)
	}
	if err != nil {
		return fmt.Errorf("writing %s %d/%d: %w", table, level, idx, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("writing %s %d/%d: the stored one does not hold the %d elements before this one", table, level, idx, pos)
	}
	return nil
}

// loadRange rebuilds the compact range [0, size) from its stored hashes.
func loadRange(size uint64, stored []byte) (*compact.Range, error) {
	if len(stored)%hashSize != 0 {
		return nil, fmt.Errorf("the stored compact range has %d bytes, not a multiple of %d", len(stored), hashSize)
	}
	hs := make([][]byte, 0, len(stored)/hashSize)
	for i := 0; i < len(stored); i += hashSize {
		hs = append(hs, stored[i:i+hashSize])
	}
	f := &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r, err := f.NewRange(0, size, hs)
	if err != nil {
		return nil, fmt.Errorf("the stored compact range of %d entries: %w", size, err)
	}
	return r, nil
}

// IntegratedSize returns the number of integrated entries.
func (l *Log) IntegratedSize(ctx context.Context) (uint64, error) {
	if l.closed.Load() {
		return 0, ErrClosed
	}
	var size int64
	if err := l.pool.QueryRow(ctx, `SELECT size FROM ktlog_head WHERE id = 1`).Scan(&size); err != nil {
		return 0, fmt.Errorf("pglog: size: %w", err)
	}
	return uint64(size), nil
}

// ReadCheckpoint returns the newest checkpoint.
func (l *Log) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	var cp []byte
	err := l.pool.QueryRow(ctx, `SELECT checkpoint FROM ktlog_head WHERE id = 1`).Scan(&cp)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pglog: checkpoint: %w", fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("pglog: checkpoint: %w", err)
	}
	return cp, nil
}

// ReadTile returns the hash tile at level and index: full when p is 0,
// else its first p hashes. A tile not yet that wide is fs.ErrNotExist.
func (l *Log) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if level > 1<<62 || index > 1<<62 {
		return nil, fmt.Errorf("pglog: tile %d/%d: %w", level, index, fs.ErrNotExist)
	}
	var (
		w    int16
		data []byte
	)
	err := l.pool.QueryRow(ctx, `SELECT width, data FROM ktlog_tiles WHERE level = $1 AND idx = $2`, int64(level), int64(index)).Scan(&w, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pglog: tile %d/%d: %w", level, index, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("pglog: tile %d/%d: %w", level, index, err)
	}
	want := wantWidth(p)
	if int(w) < want || len(data) != int(w)*hashSize {
		return nil, fmt.Errorf("pglog: tile %d/%d of width %d: %w", level, index, want, fs.ErrNotExist)
	}
	return data[:want*hashSize], nil
}

// ReadEntryBundle returns the entry bundle at index: full when p is 0,
// else its first p entries.
func (l *Log) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if index > 1<<62 {
		return nil, fmt.Errorf("pglog: bundle %d: %w", index, fs.ErrNotExist)
	}
	var (
		w    int16
		data []byte
	)
	err := l.pool.QueryRow(ctx, `SELECT width, data FROM ktlog_bundles WHERE idx = $1`, int64(index)).Scan(&w, &data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pglog: bundle %d: %w", index, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("pglog: bundle %d: %w", index, err)
	}
	want := wantWidth(p)
	if int(w) < want {
		return nil, fmt.Errorf("pglog: bundle %d of width %d: %w", index, want, fs.ErrNotExist)
	}
	n, err := bundlePrefix(data, want)
	if err != nil {
		return nil, fmt.Errorf("pglog: bundle %d: %w", index, err)
	}
	return data[:n], nil
}

// wantWidth is the number of elements a resource of partial width p has.
func wantWidth(p uint8) int {
	if p == 0 {
		return width
	}
	return int(p)
}

// bundlePrefix returns the length of the first n entries of the entry
// bundle b (each a big-endian uint16 length and that many bytes, C2SP
// tlog-tiles), or an error if b holds fewer or is malformed before them.
func bundlePrefix(b []byte, n int) (int, error) {
	off := 0
	for i := range n {
		if len(b)-off < 2 {
			return 0, fmt.Errorf("entry %d: truncated length at byte %d of %d", i, off, len(b))
		}
		l := int(binary.BigEndian.Uint16(b[off:]))
		off += 2
		if len(b)-off < l {
			return 0, fmt.Errorf("entry %d: %d bytes at byte %d of %d", i, l, off, len(b))
		}
		off += l
	}
	return off, nil
}

// ReadResource returns the tlog-tiles resource at rel as the typed reads
// do; a path that is not one of them in its canonical form, or a resource
// that does not exist, is kt.ErrResource.
func (l *Log) ReadResource(rel string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	var (
		data []byte
		err  error
	)
	switch {
	case rel == "checkpoint":
		data, err = l.ReadCheckpoint(ctx)
	case strings.HasPrefix(rel, "tile/entries/"):
		idx, p, perr := layout.ParseTileIndexPartial(strings.TrimPrefix(rel, "tile/entries/"))
		if perr != nil || layout.EntriesPath(idx, p) != rel {
			return nil, kt.ErrResource
		}
		data, err = l.ReadEntryBundle(ctx, idx, p)
	case strings.HasPrefix(rel, "tile/"):
		level, rest, ok := strings.Cut(strings.TrimPrefix(rel, "tile/"), "/")
		if !ok {
			return nil, kt.ErrResource
		}
		lv, idx, p, perr := layout.ParseTileLevelIndexPartial(level, rest)
		if perr != nil || layout.TilePath(lv, idx, p) != rel {
			return nil, kt.ErrResource
		}
		data, err = l.ReadTile(ctx, lv, idx, p)
	default:
		return nil, kt.ErrResource
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", kt.ErrResource, err)
	}
	return data, nil
}
