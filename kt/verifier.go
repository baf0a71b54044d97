package kt

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"

	"github.com/quicprochat/qpc/kt/vrf"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// Errors a Verifier reports. ErrInconsistent and ErrRollback mean the log
// misbehaved: keep the evidence (SplitViewError) and warn the user.
var (
	ErrInvalid      = errors.New("kt: proof does not verify")
	ErrRollback     = errors.New("kt: checkpoint is older than one already seen")
	ErrInconsistent = errors.New("kt: checkpoint is inconsistent with one already seen")
	ErrConfig       = errors.New("kt: epoch record names another directory configuration")
)

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
// come with a checkpoint at least as new and provably consistent with it.
// It is safe for concurrent use.
type Verifier struct {
	logKey     note.Verifier
	vrfKey     []byte
	configHash [32]byte

	mu     sync.Mutex
	latest *Checkpoint
}

// NewVerifier pins a verifier. vkey is the note verifier key printed by
// `qpc-server kt-vkey`.
func NewVerifier(vkey string, vrfKey []byte, configHash [32]byte) (*Verifier, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("kt: verifier key: %w", err)
	}
	if len(vrfKey) != vrf.PublicKeySize {
		return nil, errors.New("kt: VRF public key must be 32 bytes")
	}
	return &Verifier{logKey: v, vrfKey: bytes.Clone(vrfKey), configHash: configHash}, nil
}

// NewVerifierFromConfig pins a verifier to a configuration's VRF key and hash.
func NewVerifierFromConfig(vkey string, cfg Config) (*Verifier, error) {
	return NewVerifier(vkey, cfg.VRFPublicKey, cfg.Hash())
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

// checkAdvance checks that cp may follow the latest checkpoint, given a
// consistency proof from the size the latest had. It does not store cp.
func (v *Verifier) checkAdvance(cp *Checkpoint, known uint64, consistency [][]byte) error {
	v.mu.Lock()
	prev := v.latest
	v.mu.Unlock()
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

// accept stores cp as the latest if it is newer (re-checking under the
// lock, as another answer may have advanced the latest meanwhile).
func (v *Verifier) accept(cp *Checkpoint) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.latest == nil || cp.Size > v.latest.Size {
		v.latest = cp
		return nil
	}
	if cp.Size == v.latest.Size && cp.Root != v.latest.Root {
		return &SplitViewError{Seen: v.latest.Raw, Shown: cp.Raw}
	}
	return nil
}

// verifyEpoch checks an EpochProof and returns its record and checkpoint.
func (v *Verifier) verifyEpoch(p *EpochProof) (*EpochRecord, *Checkpoint, error) {
	cp, err := OpenCheckpoint(p.Checkpoint, v.logKey)
	if err != nil {
		return nil, nil, err
	}
	if err := v.checkAdvance(cp, p.KnownSize, p.Consistency); err != nil {
		return nil, nil, err
	}
	rec, err := ParseEpochRecord(p.Record)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if rec.Epoch >= cp.Size {
		return nil, nil, fmt.Errorf("%w: epoch %d is not in a log of size %d", ErrInvalid, rec.Epoch, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(p.Record)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, rec.Epoch, cp.Size, leaf, p.Inclusion, cp.Root[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: epoch record inclusion: %v", ErrInvalid, err)
	}
	if rec.ConfigHash != v.configHash {
		return nil, nil, ErrConfig
	}
	return rec, cp, nil
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
// advances the latest checkpoint.
func (v *Verifier) VerifyLookup(label string, p *LookupProof) (*LookupResult, error) {
	rec, cp, err := v.verifyEpoch(&p.Epoch)
	if err != nil {
		return nil, err
	}
	if p.Version > MaxVersion || len(p.Value) > MaxValueLen {
		return nil, fmt.Errorf("%w: version out of range", ErrInvalid)
	}
	if p.Added > rec.Epoch {
		return nil, fmt.Errorf("%w: version added after its epoch", ErrInvalid)
	}
	want := ladder(p.Version)
	if len(p.Ladder) != len(want) {
		return nil, fmt.Errorf("%w: ladder has %d versions, want %d", ErrInvalid, len(p.Ladder), len(want))
	}
	for i := range want {
		lp := &p.Ladder[i]
		if lp.Version != want[i] {
			return nil, fmt.Errorf("%w: ladder version %d, want %d", ErrInvalid, lp.Version, want[i])
		}
		present, c, err := v.verifyVersion(label, lp, rec.Root)
		if err != nil {
			return nil, err
		}
		if !present {
			return nil, fmt.Errorf("%w: ladder version %d is absent", ErrInvalid, lp.Version)
		}
		if lp.Version == p.Version && c != Commit(p.Opening, label, p.Version, p.Added, p.Value) {
			return nil, fmt.Errorf("%w: value does not match its commitment", ErrInvalid)
		}
	}
	if p.Next.Version != p.Version+1 {
		return nil, fmt.Errorf("%w: next version %d, want %d", ErrInvalid, p.Next.Version, p.Version+1)
	}
	present, _, err := v.verifyVersion(label, &p.Next, rec.Root)
	if err != nil {
		return nil, err
	}
	if present {
		return nil, fmt.Errorf("%w: a newer version exists", ErrInvalid)
	}
	if err := v.accept(cp); err != nil {
		return nil, err
	}
	res := &LookupResult{Label: label, Version: p.Version, Record: rec, Checkpoint: cp}
	if p.Version > 0 {
		res.Added, res.Value = p.Added, bytes.Clone(p.Value)
	}
	return res, nil
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
	Since      uint64
	Versions   []VersionEntry // contiguous, ending at the latest; empty: never published
	Record     *EpochRecord
	Checkpoint *Checkpoint
}

// Latest returns the newest version (0 when none).
func (h *History) Latest() uint32 {
	if len(h.Versions) == 0 {
		return 0
	}
	return h.Versions[len(h.Versions)-1].Version
}

// VerifyHistory checks a history proof for label since epoch since: the
// versions are contiguous, the first is version 1 or was added before
// since, each is present with its value, and every version of
// absentSet(latest) is absent, so no version after the latest can be shown
// to anyone under this log without contradicting this proof.
func (v *Verifier) VerifyHistory(label string, since uint64, p *HistoryProof) (*History, error) {
	rec, cp, err := v.verifyEpoch(&p.Epoch)
	if err != nil {
		return nil, err
	}
	if p.Since != since {
		return nil, fmt.Errorf("%w: history since %d, asked %d", ErrInvalid, p.Since, since)
	}
	h := &History{Label: label, Since: since, Record: rec, Checkpoint: cp}
	var latest uint32
	for i := range p.Entries {
		e := &p.Entries[i]
		ver := e.Proof.Version
		switch {
		case i == 0 && ver != 1 && e.Added >= since:
			return nil, fmt.Errorf("%w: history starts at version %d, added in epoch %d >= %d", ErrInvalid, ver, e.Added, since)
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
	want := absentSet(latest)
	if len(p.Absent) != len(want) {
		return nil, fmt.Errorf("%w: %d absence proofs, want %d", ErrInvalid, len(p.Absent), len(want))
	}
	for i := range want {
		if p.Absent[i].Version != want[i] {
			return nil, fmt.Errorf("%w: absence proof of version %d, want %d", ErrInvalid, p.Absent[i].Version, want[i])
		}
		present, _, err := v.verifyVersion(label, &p.Absent[i], rec.Root)
		if err != nil {
			return nil, err
		}
		if present {
			return nil, fmt.Errorf("%w: version %d exists beyond the history", ErrInvalid, want[i])
		}
	}
	if err := v.accept(cp); err != nil {
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
	if err := v.checkAdvance(cp, p.Old, p.Hashes); err != nil {
		return nil, err
	}
	return cp, v.accept(cp)
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
