package kt

import (
	"context"
	"errors"
	"fmt"
)

// MaxHistoryServed bounds the versions of one history answer, so that it
// fits one record (wire.MaxKTProof) even with large bindings; a longer
// history is served in pages (HistoryProof.More), the owner asking again
// from the last version of each.
const MaxHistoryServed = 32

// epochProof builds the EpochProof of the view for a requester that knows
// a log of size known (0: none).
func (d *Directory) epochProof(ctx context.Context, v *view, known uint64) (EpochProof, error) {
	size := v.checkpoint.Size
	if known > size {
		// The requester saw a larger log than this one: answer without a
		// consistency proof and let its verifier report the rollback.
		known = 0
	}
	p := EpochProof{Record: v.raw, Checkpoint: v.checkpoint.Raw, KnownSize: known}
	pb, err := d.log.proofBuilder(ctx, size)
	if err != nil {
		return p, fmt.Errorf("kt: proof builder: %w", err)
	}
	if p.Inclusion, err = pb.InclusionProof(ctx, v.epoch); err != nil {
		return p, fmt.Errorf("kt: inclusion proof: %w", err)
	}
	if known > 0 && known < size {
		if p.Consistency, err = pb.ConsistencyProof(ctx, known, size); err != nil {
			return p, fmt.Errorf("kt: consistency proof: %w", err)
		}
	}
	return p, nil
}

// latestAt returns the newest version of label added at or before epoch e
// (0 when none) and its record.
func latestAt(s TreeSnapshot, label string, e uint64) (uint32, *versionRecord, error) {
	top, err := s.LatestVersion(label)
	if err != nil {
		return 0, nil, err
	}
	for v := top; v > 0; v-- {
		rec, err := getVersion(s, label, v)
		if err != nil {
			return 0, nil, err
		}
		if rec.added <= e {
			return v, rec, nil
		}
	}
	return 0, nil, nil
}

func getVersion(s TreeSnapshot, label string, v uint32) (*versionRecord, error) {
	raw, err := s.Version(label, v)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("kt: version %d of a label missing", v)
	}
	return parseVersionRecord(raw)
}

// ProofBudget is asked, before a lookup or history answer computes VRF
// proofs its cache does not hold, for n of them; an error refuses the
// request (Lookup and History return it wrapped). Each proof costs about
// a quarter of a millisecond of a core, and an absence set holds up to 20
// (absentSet), so a budget is how a server keeps anonymous lookups of
// labels nobody asked for before from costing it without bound.
type ProofBudget func(n int) error

// versionProof proves (label, version) in the tree at epoch e; rec is the
// stored version when present, nil to take the VRF proof from the cache or
// compute it.
func (d *Directory) versionProof(src nodeSource, e uint64, label string, version uint32, rec *versionRecord) (VersionProof, error) {
	p := VersionProof{Version: version}
	var idx Index
	if rec != nil {
		p.VRF, idx = rec.proof, rec.index
	} else {
		idx, p.VRF = d.prove(label, version)
	}
	mp, err := proveIndex(src, e, idx)
	if err != nil {
		return p, err
	}
	p.Map = mp
	return p, nil
}

// charge asks budget (when not nil) for the proofs of versions of label
// the cache lacks.
func (d *Directory) charge(budget ProofBudget, label string, versions []uint32) error {
	if budget == nil {
		return nil
	}
	if n := d.uncached(label, versions); n > 0 {
		return budget(n)
	}
	return nil
}

// Lookup proves label's current value at the served epoch.
func (d *Directory) Lookup(ctx context.Context, label string, known uint64) (*LookupProof, error) {
	return d.LookupCharged(ctx, label, known, nil)
}

// answerView is what an answer is built from: a snapshot of the tree
// checked to hold the served view, the tree's nodes read through the
// directory's cache, and the view's epoch.
type answerView struct {
	snap  TreeSnapshot
	src   nodeSource
	epoch uint64
}

// withView runs answer on the served epoch: ep is that epoch's proof for a
// requester knowing a log of size known, and av a snapshot that can answer
// for it (checkView). A view found stale runs everything again
// (retryStale), so answer must build its result afresh each time. An error
// other than ErrNoEpoch and errStaleView from the snapshot or answer is
// wrapped once with op.
func (d *Directory) withView(ctx context.Context, op string, known uint64, answer func(ep EpochProof, av answerView) error) error {
	return d.retryStale(ctx, func() error {
		v := d.view.Load()
		if v == nil {
			return ErrNoEpoch
		}
		ep, err := d.epochProof(ctx, v, known)
		if err != nil {
			return err
		}
		err = viewTree(ctx, d.store, func(s TreeSnapshot) error {
			if err := d.checkView(s, v); err != nil {
				return err
			}
			return answer(ep, answerView{snap: s, src: txNodes{ts: d.ts, snap: s}, epoch: v.epoch})
		})
		if err != nil && !errors.Is(err, ErrNoEpoch) && !errors.Is(err, errStaleView) {
			return fmt.Errorf("kt: %s: %w", op, err)
		}
		return err
	})
}

// LookupCharged is Lookup, asking budget first for the VRF proofs it must
// compute (nil: no limit).
func (d *Directory) LookupCharged(ctx context.Context, label string, known uint64, budget ProofBudget) (*LookupProof, error) {
	if len(label) == 0 || len(label) > MaxLabelLen {
		return nil, ErrLabel
	}
	var p *LookupProof
	err := d.withView(ctx, "lookup", known, func(ep EpochProof, av answerView) error {
		p = &LookupProof{Epoch: ep}
		return d.lookupBody(av, label, budget, p)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// LookupBatch proves the current values of 1 to MaxBatchLabels labels at
// the served epoch, under one epoch proof (§5: which labels may share a
// batch is the client's choice). budget (nil: no limit) is asked for the
// VRF proofs of each label in turn.
func (d *Directory) LookupBatch(ctx context.Context, labels []string, known uint64, budget ProofBudget) (*BatchLookupProof, error) {
	if len(labels) == 0 || len(labels) > MaxBatchLabels {
		return nil, fmt.Errorf("kt: lookup batch of %d labels: %w", len(labels), ErrLabel)
	}
	for _, label := range labels {
		if len(label) == 0 || len(label) > MaxLabelLen {
			return nil, ErrLabel
		}
	}
	var p *BatchLookupProof
	err := d.withView(ctx, "lookup batch", known, func(ep EpochProof, av answerView) error {
		p = &BatchLookupProof{Epoch: ep, Lookups: make([]LookupProof, len(labels))}
		for i, label := range labels {
			if err := d.lookupBody(av, label, budget, &p.Lookups[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// lookupBody fills p with label's greatest version at the view's epoch,
// its ladder and its absence set.
func (d *Directory) lookupBody(av answerView, label string, budget ProofBudget, p *LookupProof) error {
	k, rec, err := latestAt(av.snap, label, av.epoch)
	if err != nil {
		return err
	}
	p.Version = k
	if k > 0 {
		p.Added, p.Opening, p.Value = rec.added, rec.opening, rec.value
		for _, lv := range ladder(k) {
			_, vp, err := d.storedVersionProof(av, label, lv)
			if err != nil {
				return err
			}
			p.Ladder = append(p.Ladder, vp)
		}
	}
	p.Absent, err = d.absenceProofs(av, label, k, budget)
	return err
}

// storedVersionProof reads the stored version ver of label and proves it
// at the view's epoch.
func (d *Directory) storedVersionProof(av answerView, label string, ver uint32) (*versionRecord, VersionProof, error) {
	r, err := getVersion(av.snap, label, ver)
	if err != nil {
		return nil, VersionProof{}, err
	}
	vp, err := d.versionProof(av.src, av.epoch, label, ver, r)
	return r, vp, err
}

// absenceProofs proves that k is label's greatest version at the view's
// epoch: every version of absentSet(k) is absent. budget is asked first
// for the VRF proofs the cache lacks.
func (d *Directory) absenceProofs(av answerView, label string, k uint32, budget ProofBudget) ([]VersionProof, error) {
	absent := absentSet(k)
	if err := d.charge(budget, label, absent); err != nil {
		return nil, err
	}
	var ps []VersionProof
	for _, ver := range absent {
		vp, err := d.versionProof(av.src, av.epoch, label, ver, nil)
		if err != nil {
			return nil, err
		}
		ps = append(ps, vp)
	}
	return ps, nil
}

// History proves, for its owner, every version of label from version
// since (1 when since is 0) to the greatest, at most MaxHistoryServed of
// them per answer (see HistoryProof).
func (d *Directory) History(ctx context.Context, label string, since uint32, known uint64) (*HistoryProof, error) {
	return d.HistoryCharged(ctx, label, since, known, nil)
}

// HistoryCharged is History, asking budget first for the VRF proofs it
// must compute (nil: no limit).
func (d *Directory) HistoryCharged(ctx context.Context, label string, since uint32, known uint64, budget ProofBudget) (*HistoryProof, error) {
	if len(label) == 0 || len(label) > MaxLabelLen {
		return nil, ErrLabel
	}
	var p *HistoryProof
	err := d.withView(ctx, "history", known, func(ep EpochProof, av answerView) error {
		p = &HistoryProof{Epoch: ep, Since: since}
		k, _, err := latestAt(av.snap, label, av.epoch)
		if err != nil {
			return err
		}
		first := max(since, 1)
		if first > k {
			first = k // the greatest version alone (none when k is 0)
		}
		last := k
		if k > 0 && k-first+1 > MaxHistoryServed {
			last = first + MaxHistoryServed - 1
		}
		for ver := first; ver >= 1 && ver <= last; ver++ {
			r, vp, err := d.storedVersionProof(av, label, ver)
			if err != nil {
				return err
			}
			p.Entries = append(p.Entries, HistoryEntry{Added: r.added, Opening: r.opening, Value: r.value, Proof: vp})
		}
		if last < k {
			p.More = true
			_, p.Next, err = d.storedVersionProof(av, label, last+1)
			return err
		}
		p.Absent, err = d.absenceProofs(av, label, k, budget)
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Consistency proves that the log of size old is a prefix of the served
// checkpoint's log.
func (d *Directory) Consistency(ctx context.Context, old uint64) (*ConsistencyProof, error) {
	v := d.view.Load()
	if v == nil {
		return nil, ErrNoEpoch
	}
	size := v.checkpoint.Size
	if old > size {
		old = 0 // as in epochProof: the verifier reports the rollback
	}
	p := &ConsistencyProof{Checkpoint: v.checkpoint.Raw, Old: old}
	if old == 0 || old == size {
		return p, nil
	}
	pb, err := d.log.proofBuilder(ctx, size)
	if err != nil {
		return nil, err
	}
	if p.Hashes, err = pb.ConsistencyProof(ctx, old, size); err != nil {
		return nil, fmt.Errorf("kt: consistency proof: %w", err)
	}
	return p, nil
}
