package witness

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/torchwood"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
)

// DBFile is the name of the witness database in the data directory.
const DBFile = "witness.db"

// MaxRequestBytes bounds an add-checkpoint request body: 63 proof lines
// and a checkpoint carrying a hundred post-quantum signatures fit.
const MaxRequestBytes = 1 << 20

// MaxBufferedBytes bounds the request bytes all add-checkpoint requests
// being read or checked hold at once (io.ReadAll may hold up to twice
// that): a request that would go beyond is answered 503 at once. Honest
// requests are a few kilobytes; without the bound, strangers sending
// bodies of MaxRequestBytes on many connections (and holding the last
// byte) made the witness hold one MiB each, without limit
// (TestWitnessStrangerMemory).
const MaxBufferedBytes = 16 << 20

// errBusy ends reading a request that would go beyond MaxBufferedBytes.
var errBusy = errors.New("witness: too many request bytes in flight")

// chargedReader counts the bytes read into w.buffered.
type chargedReader struct {
	r io.Reader
	w *Witness
	n int64
}

func (c *chargedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.n += int64(n)
		if c.w.buffered.Add(int64(n)) > MaxBufferedBytes {
			return n, errBusy
		}
	}
	return n, err
}

// Errors a refused checkpoint wraps, with the status code of
// c2sp.org/tlog-witness § add-checkpoint each is answered with.
var (
	ErrUnknownLog   = errors.New("witness: unknown log")                            // 404
	ErrBadSignature = errors.New("witness: no valid signature by a trusted key")    // 403
	ErrConflict     = errors.New("witness: conflicts with the cosigned checkpoint") // 409
	ErrBadProof     = errors.New("witness: consistency proof does not verify")      // 422
	ErrRefused      = errors.New("witness: refused by the log's check")             // 422
	ErrClosed       = errors.New("witness: closed")
)

// StatusError is a refused add-checkpoint: Code is the HTTP status to
// answer with and, for 409, Latest the size of the checkpoint last
// cosigned for the log.
type StatusError struct {
	Code   int
	Latest uint64
	Err    error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

func refuse(code int, err error) *StatusError { return &StatusError{Code: code, Err: err} }

// Options configure Open.
type Options struct {
	Dir  string // data directory: witness.key and witness.db
	Name string // cosigner name; used when the key is created, checked after
	Logs []Log  // the logs to witness; several Logs may share an origin
	// Logger gets one line per refused checkpoint; nil: slog.Default().
	Logger *slog.Logger
}

// Witness cosigns checkpoints of the logs it trusts (c2sp.org/tlog-witness).
type Witness struct {
	db     *bolt.DB
	keys   *keys
	logs   map[string]*logEntry
	logger *slog.Logger
	mux    *http.ServeMux
	closed bool
	mu     sync.RWMutex // closed
	// buffered is the request bytes held by requests in flight
	// (MaxBufferedBytes).
	buffered atomic.Int64
}

// logEntry is what the witness knows of one origin.
type logEntry struct {
	verifiers note.Verifiers
	checks    []func(ctx context.Context, old, new Tree, signed []byte) error
	mu        sync.Mutex // one add-checkpoint at a time per log
}

var (
	bucketLogs     = []byte("logs")
	bucketEvidence = []byte("evidence")
)

// maxEvidence bounds the refused checkpoints kept per log.
const maxEvidence = 1000

// Open opens (or creates) the witness in opts.Dir: it creates the key on
// first start (0600, see KeyFile) and the bbolt state.
func Open(opts Options) (*Witness, error) {
	if opts.Dir == "" {
		return nil, errors.New("witness: Dir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	logs := map[string]*logEntry{}
	var vs = map[string][]note.Verifier{}
	for _, l := range opts.Logs {
		if l.Origin == "" || bytes.ContainsAny([]byte(l.Origin), "\n") || l.Verifier == nil {
			return nil, fmt.Errorf("witness: log %q: an origin (one line) and a verifier are required", l.Origin)
		}
		e := logs[l.Origin]
		if e == nil {
			e = &logEntry{}
			logs[l.Origin] = e
		}
		vs[l.Origin] = append(vs[l.Origin], l.Verifier)
		if l.Check != nil {
			e.checks = append(e.checks, l.Check)
		}
	}
	for origin, list := range vs {
		logs[origin].verifiers = note.VerifierList(list...)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	k, err := loadOrCreateKeys(opts.Dir, opts.Name)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(opts.Dir, DBFile), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("witness: open database: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLogs, bucketEvidence} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("witness: database: %w", err)
	}
	w := &Witness{db: db, keys: k, logs: logs, logger: opts.Logger, mux: http.NewServeMux()}
	w.mux.HandleFunc("/add-checkpoint", w.serveAddCheckpoint)
	return w, nil
}

// Close closes the database; requests after Close fail with 503.
func (w *Witness) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.db.Close()
}

// Name returns the cosigner name.
func (w *Witness) Name() string { return w.keys.name }

// VerifierKey returns the vkey of the witness's Ed25519 cosignature/v1
// key (signature type 0x04): what log operators put in a witness policy.
func (w *Witness) VerifierKey() string { return w.keys.edSig.Verifier().String() }

// MLDSAVerifierKey returns the vkey of the witness's ML-DSA-44 subtree/v1
// key (signature type 0x06).
func (w *Witness) MLDSAVerifierKey() string {
	return vkey(w.keys.name, algMLDSA44, w.keys.mlPub.Bytes())
}

// Latest returns the tree last cosigned for origin and its signed
// checkpoint; a log never cosigned has size 0 and the empty tree's root,
// and no checkpoint.
func (w *Witness) Latest(origin string) (Tree, []byte, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return Tree{}, nil, ErrClosed
	}
	var st *state
	err := w.db.View(func(tx *bolt.Tx) (err error) {
		st, err = readState(tx, origin)
		return err
	})
	if err != nil {
		return Tree{}, nil, err
	}
	return st.tree, st.checkpoint, nil
}

// Evidence returns the checkpoints the log signed for a size the witness
// had already cosigned with another root (refused 409): each, with the
// recorded checkpoint (Latest, or an earlier one), proves that the log
// showed two histories. Only the log's verified signatures are kept, and
// at most the first 1000 per log.
func (w *Witness) Evidence(origin string) ([][]byte, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return nil, ErrClosed
	}
	var out [][]byte
	err := w.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvidence).Bucket([]byte(origin))
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			out = append(out, bytes.Clone(v))
			return nil
		})
	})
	return out, err
}

// ServeHTTP answers POST /add-checkpoint; mount it under the witness's
// submission prefix with http.StripPrefix.
func (w *Witness) ServeHTTP(rw http.ResponseWriter, r *http.Request) { w.mux.ServeHTTP(rw, r) }

func (w *Witness) serveAddCheckpoint(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		rw.Header().Set("Allow", http.MethodPost)
		http.Error(rw, "POST only", http.StatusMethodNotAllowed)
		return
	}
	cr := &chargedReader{r: http.MaxBytesReader(rw, r.Body, MaxRequestBytes), w: w}
	defer func() { w.buffered.Add(-cr.n) }()
	body, err := io.ReadAll(cr)
	if err != nil {
		if errors.Is(err, errBusy) {
			rw.Header().Set("Retry-After", "1")
			http.Error(rw, "busy", http.StatusServiceUnavailable)
			return
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(rw, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "reading request", http.StatusBadRequest)
		return
	}
	cosigs, err := w.AddCheckpoint(r.Context(), body)
	if err != nil {
		var se *StatusError
		if !errors.As(err, &se) {
			w.logger.Error("witness: add-checkpoint", "err", err)
			http.Error(rw, "internal error", http.StatusInternalServerError)
			return
		}
		if se.Code == http.StatusConflict {
			// c2sp.org/tlog-witness: the body is the latest cosigned size.
			rw.Header().Set("Content-Type", "text/x.tlog.size")
			rw.Header().Set("X-Content-Type-Options", "nosniff")
			rw.WriteHeader(http.StatusConflict)
			fmt.Fprintf(rw, "%d\n", se.Latest)
			return
		}
		http.Error(rw, se.Error(), se.Code)
		return
	}
	rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rw.Write(cosigs)
}

// AddCheckpoint runs an add-checkpoint request body through the checks of
// c2sp.org/tlog-witness and returns the cosignature lines (Ed25519
// cosignature/v1, then ML-DSA-44 subtree/v1). A refusal is a *StatusError
// carrying the HTTP status; any other error is internal (500). The new
// state is committed to disk before anything is signed.
func (w *Witness) AddCheckpoint(ctx context.Context, body []byte) ([]byte, error) {
	req, err := ParseRequest(body)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, err)
	}
	origin, _, _ := bytes.Cut(req.Checkpoint, []byte("\n"))
	le := w.logs[string(origin)]
	if le == nil {
		return nil, refuse(http.StatusNotFound, fmt.Errorf("%w: %q", ErrUnknownLog, origin))
	}
	n, err := note.Open(req.Checkpoint, le.verifiers)
	if err != nil {
		var unverified *note.UnverifiedNoteError
		var invalid *note.InvalidSignatureError
		if errors.As(err, &unverified) || errors.As(err, &invalid) {
			return nil, refuse(http.StatusForbidden, fmt.Errorf("%w: %v", ErrBadSignature, err))
		}
		return nil, refuse(http.StatusBadRequest, fmt.Errorf("%w: checkpoint: %v", ErrMalformed, err))
	}
	cp, err := torchwood.ParseCheckpoint(n.Text)
	if err != nil || cp.Origin != string(origin) {
		return nil, refuse(http.StatusBadRequest, fmt.Errorf("%w: checkpoint: %v", ErrMalformed, err))
	}
	nt := Tree{Size: uint64(cp.N), Root: cp.Hash}
	// What is kept is the note with the verified signatures only: the
	// signature lines of unknown keys are the sender's, not the log's.
	signed, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs})
	if err != nil {
		return nil, refuse(http.StatusBadRequest, fmt.Errorf("%w: checkpoint: %v", ErrMalformed, err))
	}
	if req.OldSize > nt.Size {
		return nil, refuse(http.StatusBadRequest, fmt.Errorf("%w: old size %d is above the checkpoint's %d", ErrMalformed, req.OldSize, nt.Size))
	}

	le.mu.Lock()
	defer le.mu.Unlock()
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return nil, ErrClosed
	}
	var st *state
	if err := w.db.View(func(tx *bolt.Tx) (err error) {
		st, err = readState(tx, cp.Origin)
		return err
	}); err != nil {
		return nil, err
	}
	old := st.tree
	if req.OldSize != old.Size {
		e := refuse(http.StatusConflict, fmt.Errorf("%w: old size %d, cosigned size %d", ErrConflict, req.OldSize, old.Size))
		e.Latest = old.Size
		return nil, e
	}
	if old.Size == nt.Size {
		if len(req.Proof) != 0 {
			return nil, refuse(http.StatusUnprocessableEntity, fmt.Errorf("%w: a proof between equal sizes must be empty", ErrBadProof))
		}
		if old.Root != nt.Root {
			e := refuse(http.StatusConflict, fmt.Errorf("%w: size %d was cosigned with another root", ErrConflict, nt.Size))
			e.Latest = old.Size
			return nil, w.keepEvidence(cp.Origin, signed, e)
		}
	} else if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, nt.Size, req.Proof, old.Root[:], nt.Root[:]); err != nil {
		// Not evidence by itself: anyone can pair a log's checkpoint
		// with a wrong proof.
		w.logger.Debug("witness: consistency proof refused", "origin", cp.Origin, "old", old.Size, "size", nt.Size, "err", err)
		return nil, refuse(http.StatusUnprocessableEntity, fmt.Errorf("%w: %v", ErrBadProof, err))
	}
	if old != nt || st.checkpoint == nil {
		if old != nt {
			for _, check := range le.checks {
				if err := check(ctx, old, nt, signed); err != nil {
					return nil, refuse(http.StatusUnprocessableEntity, fmt.Errorf("%w: %v", ErrRefused, err))
				}
			}
		}
		// Commit first: a cosignature exists only for a state on disk.
		if err := w.db.Update(func(tx *bolt.Tx) error {
			cur, err := readState(tx, cp.Origin)
			if err != nil {
				return err
			}
			if cur.tree != old {
				return errors.New("witness: state changed under the log's lock")
			}
			return tx.Bucket(bucketLogs).Put([]byte(cp.Origin), (&state{tree: nt, checkpoint: signed}).marshal())
		}); err != nil {
			return nil, fmt.Errorf("witness: commit: %w", err)
		}
	}
	return w.cosign(n.Text)
}

// cosign returns the witness's signature lines on the checkpoint text.
func (w *Witness) cosign(text string) ([]byte, error) {
	signed, err := note.Sign(&note.Note{Text: text}, w.keys.edSig, w.keys.mlSig)
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	// note.Sign returns text || "\n" || signature lines.
	return signed[len(text)+1:], nil
}

// keepEvidence stores a validly signed checkpoint that conflicts with the
// recorded one (at most maxEvidence per log) and returns refusal.
func (w *Witness) keepEvidence(origin string, signed []byte, refusal *StatusError) error {
	w.logger.Warn("witness: the log signed two roots for one size", "origin", origin, "err", refusal.Err)
	err := w.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketEvidence).CreateBucketIfNotExists([]byte(origin))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(signed)
		if b.Get(sum[:]) != nil || b.Stats().KeyN >= maxEvidence {
			return nil
		}
		return b.Put(sum[:], signed)
	})
	if err != nil {
		w.logger.Error("witness: keeping evidence", "origin", origin, "err", err)
	}
	return refusal
}

// state is the per-log record: the latest cosigned tree and its signed
// checkpoint. Encoding: u8 version (1) || u64 size || root (32) ||
// checkpoint.
type state struct {
	tree       Tree
	checkpoint []byte
}

const stateVersion = 1

// emptyRoot is the RFC 6962 hash of the empty tree, SHA-256("").
var emptyRoot = sha256.Sum256(nil)

func readState(tx *bolt.Tx, origin string) (*state, error) {
	v := tx.Bucket(bucketLogs).Get([]byte(origin))
	if v == nil {
		return &state{tree: Tree{Root: emptyRoot}}, nil
	}
	st, err := parseState(v)
	if err != nil {
		return nil, fmt.Errorf("witness: state of %q: %w", origin, err)
	}
	return st, nil
}

func (s *state) marshal() []byte {
	b := make([]byte, 0, 41+len(s.checkpoint))
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint64(b, s.tree.Size)
	b = append(b, s.tree.Root[:]...)
	return append(b, s.checkpoint...)
}

func parseState(v []byte) (*state, error) {
	if len(v) < 41 || v[0] != stateVersion {
		return nil, errors.New("corrupt record")
	}
	s := &state{tree: Tree{Size: binary.BigEndian.Uint64(v[1:9])}, checkpoint: bytes.Clone(v[41:])}
	copy(s.tree.Root[:], v[9:41])
	return s, nil
}

// LogFromVKey makes a Log from a log's note verifier key (Ed25519,
// signature type 0x01, as `qpc-server kt-vkey` prints it); the origin is
// the key name, as for qpc's key-transparency log.
func LogFromVKey(vk string) (Log, error) {
	v, err := note.NewVerifier(vk)
	if err != nil {
		return Log{}, fmt.Errorf("witness: log key %q: %w", vk, err)
	}
	return Log{Origin: v.Name(), Verifier: v}, nil
}
