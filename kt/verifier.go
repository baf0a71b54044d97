package kt

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicprochat/qpc/kt/vrf"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Errors a Verifier reports. ErrInconsistent and ErrRollback mean the log
// misbehaved: keep the evidence (SplitViewError) and warn the user.
// ErrStale means the answer is not under the newest epoch, or that
// epoch's time is too far from the verifier's clock. ErrAdvanced means
// another answer advanced the newest checkpoint while this one was
// checked: ask again.
var (
	ErrInvalid      = errors.New("kt: proof does not verify")
	ErrRollback     = errors.New("kt: checkpoint is older than one already seen")
	ErrInconsistent = errors.New("kt: checkpoint is inconsistent with one already seen")
	ErrConfig       = errors.New("kt: epoch record names another directory configuration")
	ErrStale        = errors.New("kt: answer is not under the newest epoch")
	ErrAdvanced     = errors.New("kt: the newest checkpoint changed while the answer was checked; ask again")
)

// DefaultMaxEpochAge is how far an epoch record's time may be from the
// verifier's clock (either way) by default. The directory makes an epoch
// every interval (1 s by default) even when idle, so a served record is
// normally seconds old; the bound leaves room for a stalled log and for
// clients whose clocks are off by minutes, while limiting how long a
// server can freeze a client on an old view of the directory (a key
// change hidden, a revoked key kept in use) to this long.
const DefaultMaxEpochAge = 15 * time.Minute

// SplitViewError carries two signed checkpoints that cannot both be
// honest: the same size with different roots, or sizes for which the
// consistency proof failed. Two notes of one size with different roots
// convince anyone holding the log key on their own; for two sizes, anyone
// can ask the log for the consistency proof between them, and no honest
// log can fail to give one.
type SplitViewError struct {
	Seen, Shown []byte
}

func (e *SplitViewError) Error() string { return ErrInconsistent.Error() }
func (e *SplitViewError) Unwrap() error { return ErrInconsistent }

// Verifier checks directory answers for a client. It is pinned to the
// log's note verifier key, the VRF public key and the configuration hash,
// and keeps the newest checkpoint it has accepted: every later answer must
// come with a checkpoint at least as new and provably consistent with it,
// and lookups and histories must be under the newest epoch of that
// checkpoint, recent by the verifier's clock (docs/key-transparency.md
// §4). It is safe for concurrent use.
type Verifier struct {
	logKey     note.Verifier
	vrfKey     []byte
	configHash [32]byte

	mu     sync.Mutex
	policy *WitnessPolicy // nil: no cosignatures required
	latest *Checkpoint
	now    func() time.Time
	maxAge time.Duration

	// beforeAccept, in tests, runs between checking an answer and
	// accepting its checkpoint.
	beforeAccept func()
}

// NewVerifier pins a verifier. vkey is the note verifier key printed by
// `qpc-server kt-vkey`. Its clock is time.Now and its bound on epoch age
// DefaultMaxEpochAge (see SetClock).
func NewVerifier(vkey string, vrfKey []byte, configHash [32]byte) (*Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("kt: verifier key: %w", err)
	}
	if len(vrfKey) != vrf.PublicKeySize {
		return nil, errors.New("kt: VRF public key must be 32 bytes")
	}
	return &Verifier{logKey: v, vrfKey: bytes.Clone(vrfKey), configHash: configHash, now: time.Now, maxAge: DefaultMaxEpochAge}, nil
}

// NewVerifierFromConfig pins a verifier to a configuration's VRF key and hash.
func NewVerifierFromConfig(vkey string, cfg Config) (*Verifier, error) {
	return NewVerifier(vkey, cfg.VRFPublicKey, cfg.Hash())
}

// SetClock sets the clock epoch records are judged by (nil: time.Now)
// and how far a record's time may be from it, before or after (0:
// DefaultMaxEpochAge). A lookup or history whose epoch record is further
// off is refused with ErrStale.
func (v *Verifier) SetClock(now func() time.Time, maxAge time.Duration) {
	if now == nil {
		now = time.Now
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxEpochAge
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.now, v.maxAge = now, maxAge
}

// SetWitnessPolicy pins the witness policy checkpoints must satisfy
// (nil: none). From then on an answer whose checkpoint lacks the
// cosignatures of a quorum is refused with a *CosignatureError
// (ErrCosignature), before its checkpoint is accepted.
func (v *Verifier) SetWitnessPolicy(p *WitnessPolicy) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !p.Required() {
		p = nil
	}
	v.policy = p
}

// WitnessPolicy is the pinned witness policy, or nil.
func (v *Verifier) WitnessPolicy() *WitnessPolicy {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.policy
}

// checkCosigned checks cp against the pinned witness policy.
func (v *Verifier) checkCosigned(cp *Checkpoint) error {
	v.mu.Lock()
	p := v.policy
	v.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.Check(cp.Raw)
}

// KnownSize is the size of the newest accepted checkpoint (0: none); send
// it with each request so the answer carries a consistency proof from it.
func (v *Verifier) KnownSize() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.latest == nil {
		return 0
	}
	return v.latest.Size
}

// Latest returns the newest accepted checkpoint, or nil.
func (v *Verifier) Latest() *Checkpoint {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.latest
}

// SetLatest restores a checkpoint kept from an earlier session; it must
// verify under the pinned key.
func (v *Verifier) SetLatest(raw []byte) error {
	cp, err := OpenCheckpoint(raw, v.logKey)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.latest = cp
	return nil
}

// checkAdvance checks that cp may follow prev (nil: none), given a
// consistency proof from size known. It does not store cp.
func checkAdvance(prev, cp *Checkpoint, known uint64, consistency [][]byte) error {
	if prev == nil {
		return nil
	}
	switch {
	case cp.Size < prev.Size:
		return fmt.Errorf("%w: size %d after %d", ErrRollback, cp.Size, prev.Size)
	case cp.Size == prev.Size:
		if subtle.ConstantTimeCompare(cp.Root[:], prev.Root[:]) != 1 {
			return &SplitViewError{Seen: prev.Raw, Shown: cp.Raw}
		}
		return nil
	}
	if known != prev.Size {
		return fmt.Errorf("%w: consistency proof from size %d, want %d", ErrInvalid, known, prev.Size)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, prev.Size, cp.Size, consistency, prev.Root[:], cp.Root[:]); err != nil {
		return &SplitViewError{Seen: prev.Raw, Shown: cp.Raw}
	}
	return nil
}

// accept stores cp as the latest. prev is the latest cp was checked
// against (checkAdvance); the check and the store are one step under the
// lock: if another answer advanced the latest meanwhile, cp is accepted
// only when it is that same checkpoint, a different one of the same size
// is a split view, and anything else is ErrAdvanced (cp was proved
// consistent with prev, not with the new latest: two answers from two
// forks of one log must not both be accepted).
func (v *Verifier) accept(prev, cp *Checkpoint) error {
	if v.beforeAccept != nil {
		v.beforeAccept()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.latest
	if cur == prev {
		if cur == nil || cp.Size > cur.Size {
			v.latest = cp
		}
		return nil
	}
	if cur != nil && cp.Size == cur.Size {
		if subtle.ConstantTimeCompare(cp.Root[:], cur.Root[:]) != 1 {
			return &SplitViewError{Seen: cur.Raw, Shown: cp.Raw}
		}
		return nil
	}
	return ErrAdvanced
}

// snapshot returns the latest checkpoint and the clock.
func (v *Verifier) snapshot() (*Checkpoint, time.Time, time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.latest, v.now(), v.maxAge
}

// verifyEpoch checks an EpochProof and returns its record, its checkpoint
// and the latest checkpoint it was checked against (for accept). The
// record must be the checkpoint's last leaf (the newest epoch: the
// directory serves epoch N under the checkpoint of size N+1) and its time
// within maxAge of the verifier's clock.
func (v *Verifier) verifyEpoch(p *EpochProof) (*EpochRecord, *Checkpoint, *Checkpoint, error) {
	prev, now, maxAge := v.snapshot()
	cp, err := OpenCheckpoint(p.Checkpoint, v.logKey)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkAdvance(prev, cp, p.KnownSize, p.Consistency); err != nil {
		return nil, nil, nil, err
	}
	if err := v.checkCosigned(cp); err != nil {
		return nil, nil, nil, err
	}
	rec, err := ParseEpochRecord(p.Record)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if rec.Epoch >= cp.Size {
		return nil, nil, nil, fmt.Errorf("%w: epoch %d is not in a log of size %d", ErrInvalid, rec.Epoch, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(p.Record)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, rec.Epoch, cp.Size, leaf, p.Inclusion, cp.Root[:]); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: epoch record inclusion: %v", ErrInvalid, err)
	}
	if rec.ConfigHash != v.configHash {
		return nil, nil, nil, ErrConfig
	}
	if rec.Epoch != cp.Size-1 {
		return nil, nil, nil, fmt.Errorf("%w: epoch %d of a log of %d epochs", ErrStale, rec.Epoch, cp.Size)
	}
	if age := now.Sub(rec.Time()); age > maxAge || age < -maxAge {
		return nil, nil, nil, fmt.Errorf("%w: epoch %d is from %s, %v from this clock (at most %v)", ErrStale, rec.Epoch, rec.Time().UTC().Format(time.RFC3339), age.Round(time.Second), maxAge)
	}
	return rec, cp, prev, nil
}

// verifyVersion checks the VRF proof of (label, version) and returns the
// index and what the map proof shows against root.
func (v *Verifier) verifyVersion(label string, p *VersionProof, root [32]byte) (present bool, commitment [32]byte, err error) {
	beta, err := vrf.Verify(v.vrfKey, vrfInput(label, p.Version), p.VRF[:])
	if err != nil {
		return false, commitment, fmt.Errorf("%w: VRF proof of version %d: %v", ErrInvalid, p.Version, err)
	}
	got, present, c, err := p.Map.Evaluate(IndexOf(beta))
	if err != nil {
		return false, commitment, fmt.Errorf("%w: map proof of version %d: %v", ErrInvalid, p.Version, err)
	}
	if got != root {
		return false, commitment, fmt.Errorf("%w: map proof of version %d: %v", ErrInvalid, p.Version, ErrRootMismatch)
	}
	return present, c, nil
}

// LookupResult is a verified lookup.
type LookupResult struct {
	Label      string
	Version    uint32 // 0: never published
	Added      uint64
	Value      []byte
	Record     *EpochRecord
	Checkpoint *Checkpoint
}

// VerifyLookup checks a lookup proof for label and, when it verifies,
// advances the latest checkpoint. The result's Version is the greatest
// version of label at the newest epoch: ladder(Version) is present and
// every version of absentSet(Version) absent, so no other answer under
// this log can show a greater one (§3.2).
func (v *Verifier) VerifyLookup(label string, p *LookupProof) (*LookupResult, error) {
	rec, cp, prev, err := v.verifyEpoch(&p.Epoch)
	if err != nil {
		return nil, err
	}
	if err := v.verifyLookupBody(label, p, rec); err != nil {
		return nil, err
	}
	if err := v.accept(prev, cp); err != nil {
		return nil, err
	}
	return lookupResult(label, p, rec, cp), nil
}

// VerifyLookupBatch checks a batch proof for labels, in the order asked,
// and, when every label's proof verifies, advances the latest checkpoint.
// Each result is what VerifyLookup returns for that label: all share the
// epoch. One label whose proof does not verify fails the batch.
func (v *Verifier) VerifyLookupBatch(labels []string, p *BatchLookupProof) ([]*LookupResult, error) {
	if len(p.Lookups) != len(labels) {
		return nil, fmt.Errorf("%w: %d lookups for %d labels", ErrInvalid, len(p.Lookups), len(labels))
	}
	rec, cp, prev, err := v.verifyEpoch(&p.Epoch)
	if err != nil {
		return nil, err
	}
	for i, label := range labels {
		if err := v.verifyLookupBody(label, &p.Lookups[i], rec); err != nil {
			return nil, fmt.Errorf("label %d of the batch: %w", i, err)
		}
	}
	if err := v.accept(prev, cp); err != nil {
		return nil, err
	}
	out := make([]*LookupResult, len(labels))
	for i, label := range labels {
		out[i] = lookupResult(label, &p.Lookups[i], rec, cp)
	}
	return out, nil
}

func lookupResult(label string, p *LookupProof, rec *EpochRecord, cp *Checkpoint) *LookupResult {
	res := &LookupResult{Label: label, Version: p.Version, Record: rec, Checkpoint: cp}
	if p.Version > 0 {
		res.Added, res.Value = p.Added, bytes.Clone(p.Value)
	}
	return res
}

// verifyLookupBody checks everything of a lookup proof but its epoch
// proof, against rec's root.
func (v *Verifier) verifyLookupBody(label string, p *LookupProof, rec *EpochRecord) error {
	if p.Version > MaxVersion || len(p.Value) > MaxValueLen {
		return fmt.Errorf("%w: version out of range", ErrInvalid)
	}
	if p.Added > rec.Epoch {
		return fmt.Errorf("%w: version added after its epoch", ErrInvalid)
	}
	want := ladder(p.Version)
	if len(p.Ladder) != len(want) {
		return fmt.Errorf("%w: ladder has %d versions, want %d", ErrInvalid, len(p.Ladder), len(want))
	}
	for i := range want {
		lp := &p.Ladder[i]
		if lp.Version != want[i] {
			return fmt.Errorf("%w: ladder version %d, want %d", ErrInvalid, lp.Version, want[i])
		}
		present, c, err := v.verifyVersion(label, lp, rec.Root)
		if err != nil {
			return err
		}
		if !present {
			return fmt.Errorf("%w: ladder version %d is absent", ErrInvalid, lp.Version)
		}
		if lp.Version == p.Version && c != Commit(p.Opening, label, p.Version, p.Added, p.Value) {
			return fmt.Errorf("%w: value does not match its commitment", ErrInvalid)
		}
	}
	return v.verifyAbsent(label, p.Version, p.Absent, rec.Root)
}

// verifyAbsent checks that proofs show every version of absentSet(k)
// absent, in order.
func (v *Verifier) verifyAbsent(label string, k uint32, proofs []VersionProof, root [32]byte) error {
	want := absentSet(k)
	if len(proofs) != len(want) {
		return fmt.Errorf("%w: %d absence proofs, want %d", ErrInvalid, len(proofs), len(want))
	}
	for i := range want {
		if proofs[i].Version != want[i] {
			return fmt.Errorf("%w: absence proof of version %d, want %d", ErrInvalid, proofs[i].Version, want[i])
		}
		present, _, err := v.verifyVersion(label, &proofs[i], root)
		if err != nil {
			return err
		}
		if present {
			return fmt.Errorf("%w: version %d exists beyond version %d", ErrInvalid, want[i], k)
		}
	}
	return nil
}

// VersionEntry is one verified version in a history.
type VersionEntry struct {
	Version uint32
	Added   uint64
	Value   []byte
}

// History is a verified history.
type History struct {
	Label      string
	Since      uint32
	Versions   []VersionEntry // contiguous; empty: never published
	More       bool           // a page: versions after the last one exist (ask again from it)
	Record     *EpochRecord
	Checkpoint *Checkpoint
}

// Latest returns the last version of the history (0 when none): the
// greatest version of the label unless More.
func (h *History) Latest() uint32 {
	if len(h.Versions) == 0 {
		return 0
	}
	return h.Versions[len(h.Versions)-1].Version
}

// VerifyHistory checks a history proof for label from version since at
// the newest epoch: the versions are contiguous and start exactly at
// since (version 1 when since is 0), each is present with its value, and
// either every version of absentSet(last) is absent (last is the greatest
// version: no version after it can be shown to anyone under this log
// without contradicting this proof) or, for a page, the version after the
// last is present. A greatest version below since comes alone (or not at
// all, when the label has none): the caller decides what that means.
func (v *Verifier) VerifyHistory(label string, since uint32, p *HistoryProof) (*History, error) {
	rec, cp, prev, err := v.verifyEpoch(&p.Epoch)
	if err != nil {
		return nil, err
	}
	if p.Since != since {
		return nil, fmt.Errorf("%w: history from version %d, asked %d", ErrInvalid, p.Since, since)
	}
	first := max(since, 1)
	h := &History{Label: label, Since: since, More: p.More, Record: rec, Checkpoint: cp}
	var latest uint32
	for i := range p.Entries {
		e := &p.Entries[i]
		ver := e.Proof.Version
		switch {
		case i == 0 && ver != first && (ver > first || len(p.Entries) != 1 || p.More):
			return nil, fmt.Errorf("%w: history from version %d starts at version %d", ErrInvalid, first, ver)
		case i > 0 && ver != latest+1:
			return nil, fmt.Errorf("%w: history skips from version %d to %d", ErrInvalid, latest, ver)
		case i > 0 && e.Added < p.Entries[i-1].Added:
			return nil, fmt.Errorf("%w: version %d added before its predecessor", ErrInvalid, ver)
		case ver == 0 || ver > MaxVersion || e.Added > rec.Epoch:
			return nil, fmt.Errorf("%w: version %d out of range", ErrInvalid, ver)
		}
		present, c, err := v.verifyVersion(label, &e.Proof, rec.Root)
		if err != nil {
			return nil, err
		}
		if !present || c != Commit(e.Opening, label, ver, e.Added, e.Value) {
			return nil, fmt.Errorf("%w: version %d does not match its commitment", ErrInvalid, ver)
		}
		latest = ver
		h.Versions = append(h.Versions, VersionEntry{Version: ver, Added: e.Added, Value: bytes.Clone(e.Value)})
	}
	if p.More {
		if len(p.Entries) == 0 || p.Next.Version != latest+1 || len(p.Absent) != 0 {
			return nil, fmt.Errorf("%w: history page does not prove the version after it", ErrInvalid)
		}
		present, _, err := v.verifyVersion(label, &p.Next, rec.Root)
		if err != nil {
			return nil, err
		}
		if !present {
			return nil, fmt.Errorf("%w: history page claims version %d, which is absent", ErrInvalid, latest+1)
		}
	} else if err := v.verifyAbsent(label, latest, p.Absent, rec.Root); err != nil {
		return nil, err
	}
	if err := v.accept(prev, cp); err != nil {
		return nil, err
	}
	return h, nil
}

// VerifyConsistency checks a consistency proof from the latest checkpoint
// to the one it carries, and accepts that one.
func (v *Verifier) VerifyConsistency(p *ConsistencyProof) (*Checkpoint, error) {
	cp, err := OpenCheckpoint(p.Checkpoint, v.logKey)
	if err != nil {
		return nil, err
	}
	prev, _, _ := v.snapshot()
	if err := checkAdvance(prev, cp, p.Old, p.Hashes); err != nil {
		return nil, err
	}
	if err := v.checkCosigned(cp); err != nil {
		return nil, err
	}
	return cp, v.accept(prev, cp)
}

// CompareCheckpoint checks a checkpoint another client saw (checkpoint
// gossip) against the latest: the same size must have the same root; for
// a different size, pass the consistency proof between the two (from the
// smaller to the larger) fetched from the log. A nil error means the two
// views agree; a *SplitViewError holds the evidence that they do not.
func (v *Verifier) CompareCheckpoint(other []byte, consistency [][]byte) error {
	cp, err := OpenCheckpoint(other, v.logKey)
	if err != nil {
		return err
	}
	v.mu.Lock()
	mine := v.latest
	v.mu.Unlock()
	if mine == nil {
		return errors.New("kt: no checkpoint to compare with")
	}
	small, large := mine, cp
	if cp.Size < mine.Size {
		small, large = cp, mine
	}
	if small.Size == large.Size {
		if small.Root != large.Root {
			return &SplitViewError{Seen: mine.Raw, Shown: cp.Raw}
		}
		return nil
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, small.Size, large.Size, consistency, small.Root[:], large.Root[:]); err != nil {
		return &SplitViewError{Seen: mine.Raw, Shown: cp.Raw}
	}
	return nil
}

// NoteVerifier is the pinned checkpoint key, to open checkpoints other
// clients gossip.
func (v *Verifier) NoteVerifier() note.Verifier { return v.logKey }
