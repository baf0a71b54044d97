package client

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/mls"
)

// Where a conversation's record keeps what the fork choice needs
// (commitorder.go, docs/adr/0032-conversation-record-apart.md). The
// record itself (bucketConvs) is rewritten with every message sent or
// received: it holds the current group state, which advances with each
// one. What the fork choice keeps
// beside it changes far less often, and is far larger: the states of up
// to maxChain past epochs (several KB each) and the plaintexts we sent in
// each kept epoch (up to maxResend each). Kept inside the record they made
// every message rewrite tens to hundreds of KB, with an fsync, on both
// sides of a direct chat (issue 22). So they live apart, each under its
// own key:
//
//   - bucketConvStates: a past epoch's state, under the conversation's ID
//     and the link's Slot. It is written when the epoch is left, again
//     only when a late message of that epoch is read with it (the state's
//     keys advance), and deleted with the link.
//   - bucketConvOut: the commit we followed out of a past epoch (a few KB
//     to tens of KB in a large group), under the link's Slot, kept to echo
//     it to a member on another branch (echo.go); written when the epoch
//     is left or the branch switched, deleted with the link.
//   - bucketConvSent: each plaintext we sent, under the conversation's ID
//     and a number from the record's counter (SentNext), written once when
//     it is sent. An epoch's messages are a range [SentFrom, SentTo) of
//     those numbers (the record's for the current epoch, a link's for a
//     past one); a range is deleted with its epoch.
//
//   - bucketConvGroup and bucketConvRatchets: the current group state in
//     two parts (mls.SplitState, docs/adr/0044-ratchets-apart.md), under
//     the conversation's ID. The ratchets (the secret tree, a few hundred
//     bytes in a direct chat) advance with every message sent or read and
//     are rewritten with the record; the base (the ratchet tree, our keys,
//     the epoch secrets: ~14 KB in a direct chat, more in a large group)
//     changes with the epoch and is rewritten only then. The ratchets name
//     the base they belong to (its hash): a base and ratchets that were not
//     written together do not load (ErrCorruptState).
//
// Numbers are never reused, so an epoch dropped by a fork choice and an
// epoch of the same number on the branch that won never share a key.
// The writes are queued on the record (ops) as it changes and made, in
// order, by putConv in the transaction that stores the record, so the
// record and what it points at are durable together.

const (
	bucketConvStates = "conv-states"
	bucketConvSent   = "conv-sent"
	bucketConvOut    = "conv-out"
	// bucketConvGroup and bucketConvRatchets hold the current group
	// state's two parts.
	bucketConvGroup    = "conv-group"
	bucketConvRatchets = "conv-ratchets"
)

// convOp is a queued write beside a conversation's record: val nil
// deletes.
type convOp struct {
	bucket string
	key    []byte
	val    []byte
}

func (r *convRecord) slotKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), r.ID...), n)
}

func (r *convRecord) queue(bucket string, n uint64, val []byte) {
	r.ops = append(r.ops, convOp{bucket, r.slotKey(n), val})
}

// pending returns the newest queued write of key in bucket, if any.
func (r *convRecord) pending(bucket string, key []byte) (val []byte, ok bool) {
	for i := len(r.ops) - 1; i >= 0; i-- {
		if op := r.ops[i]; op.bucket == bucket && string(op.key) == string(key) {
			return op.val, true
		}
	}
	return nil, false
}

// setLinkState makes raw the state of past epoch l, stored under l's
// slot (a new one the first time).
func (r *convRecord) setLinkState(l *epochLink, raw []byte) {
	if l.Slot == 0 {
		r.StateNext++
		l.Slot = r.StateNext
	}
	l.State = raw
	r.queue(bucketConvStates, l.Slot, raw)
}

// setLinkOut keeps out, the commit we followed out of l's epoch, apart
// from the record (nil: none).
func (r *convRecord) setLinkOut(l *epochLink, out []byte) {
	if l.Slot == 0 {
		r.StateNext++
		l.Slot = r.StateNext
	}
	l.Out, l.HasOut = out, out != nil
	r.queue(bucketConvOut, l.Slot, out)
}

// linkOut returns the commit we followed out of l's epoch, or nil.
func (r *convRecord) linkOut(tx *state.Tx, l *epochLink) ([]byte, error) {
	if l.Out != nil || !l.HasOut {
		return l.Out, nil
	}
	key := r.slotKey(l.Slot)
	if v, ok := r.pending(bucketConvOut, key); ok {
		l.Out = v
		return v, nil
	}
	v, err := tx.Get(bucketConvOut, key)
	if err != nil {
		return nil, fmt.Errorf("%w: epoch %d's commit: %v", ErrCorruptState, l.Epoch, err)
	}
	l.Out = v
	return v, nil
}

// dropLink deletes what link l kept apart: its state, the commit out of
// it and its sent messages.
func (r *convRecord) dropLink(l *epochLink) {
	if l.Slot != 0 {
		r.queue(bucketConvStates, l.Slot, nil)
		r.queue(bucketConvOut, l.Slot, nil)
	}
	r.dropSent(l.SentFrom, l.SentTo)
}

func (r *convRecord) dropSent(from, to uint64) {
	for n := from; n < to; n++ {
		r.queue(bucketConvSent, n, nil)
	}
}

// noteSent keeps plain, a content message we sent in the current epoch,
// to send it again if a fork choice drops the epoch. Only the newest
// maxResend of an epoch are kept.
func (r *convRecord) noteSent(plain []byte) {
	if r.SentTo != r.SentNext { // never: the current range ends at the counter
		r.SentFrom, r.SentTo = r.SentNext, r.SentNext
	}
	if r.SentTo-r.SentFrom >= maxResend {
		r.queue(bucketConvSent, r.SentFrom, nil)
		r.SentFrom++
	}
	r.queue(bucketConvSent, r.SentNext, plain)
	r.SentNext++
	r.SentTo = r.SentNext
}

// linkState returns the state of the kept past epoch r.Chain[i].
func (c *Client) linkState(r *convRecord, i int) ([]byte, error) {
	l := r.Chain[i]
	if l.State != nil {
		return l.State, nil
	}
	if l.Slot == 0 {
		return nil, fmt.Errorf("%w: epoch %d's state was not kept", ErrCorruptState, l.Epoch)
	}
	key := r.slotKey(l.Slot)
	if v, ok := r.pending(bucketConvStates, key); ok && v != nil {
		l.State = v
		return v, nil
	}
	err := c.store.View(func(tx *state.Tx) error {
		v, err := tx.Get(bucketConvStates, key)
		l.State = v
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: epoch %d's state: %v", ErrCorruptState, l.Epoch, err)
	}
	return l.State, nil
}

// sentIn returns the messages we sent numbered [from, to), oldest first;
// one that is missing is left out.
func (c *Client) sentIn(r *convRecord, from, to uint64) ([][]byte, error) {
	var out [][]byte
	err := c.store.View(func(tx *state.Tx) error {
		for n := from; n < to; n++ {
			key := r.slotKey(n)
			if v, ok := r.pending(bucketConvSent, key); ok {
				if v != nil {
					out = append(out, v)
				}
				continue
			}
			v, err := tx.Get(bucketConvSent, key)
			if errors.Is(err, state.ErrNoEntry) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// putConv stores r and makes the writes queued beside it, in order, in
// tx.
func putConv(tx *state.Tx, r *convRecord) error {
	for _, op := range r.ops {
		var err error
		if op.val == nil {
			err = tx.Delete(op.bucket, op.key)
		} else {
			err = tx.Put(op.bucket, op.key, op.val)
		}
		if err != nil {
			return err
		}
	}
	r.ops = nil
	if err := putGroup(tx, r); err != nil {
		return err
	}
	return putJSON(tx, bucketConvs, r.ID, r)
}

// putGroup stores r's group state in its two parts, in tx: the ratchets
// always, the base only when it differs from the one stored (what is on
// disk in tx, not what this process last wrote: a transaction that failed
// wrote nothing). A record from before the split (LegacyGroup) loses its
// copy here.
func putGroup(tx *state.Tx, r *convRecord) error {
	r.LegacyGroup = nil
	if r.Group == nil {
		if err := tx.Delete(bucketConvGroup, r.ID); err != nil {
			return err
		}
		return tx.Delete(bucketConvRatchets, r.ID)
	}
	base, ratchets, err := mls.SplitState(r.Group)
	if err != nil {
		return fmt.Errorf("%w: group state: %v", ErrCorruptState, err)
	}
	// The ratchets on disk name the base on disk (they are written
	// together, and do not load otherwise): comparing them is comparing
	// the bases, without reading one (194 KB in a 128-member group).
	old, err := tx.Get(bucketConvRatchets, r.ID)
	if err != nil && !errors.Is(err, state.ErrNoEntry) {
		return err
	}
	if !mls.SameBase(old, ratchets) {
		if err := tx.Put(bucketConvGroup, r.ID, base); err != nil {
			return err
		}
	}
	return tx.Put(bucketConvRatchets, r.ID, ratchets)
}

// getGroup reads r's group state into r.Group, in tx: from the record
// itself if it is from before the split, else from its two parts (none:
// the conversation has no group state).
func getGroup(tx *state.Tx, r *convRecord) error {
	if r.LegacyGroup != nil {
		r.Group = r.LegacyGroup
		return nil
	}
	base, err := tx.Get(bucketConvGroup, r.ID)
	if errors.Is(err, state.ErrNoEntry) {
		r.Group = nil
		return nil
	}
	if err != nil {
		return err
	}
	ratchets, err := tx.Get(bucketConvRatchets, r.ID)
	if err != nil {
		return fmt.Errorf("%w: group ratchets: %v", ErrCorruptState, err)
	}
	if r.Group, err = mls.JoinState(base, ratchets); err != nil {
		return fmt.Errorf("%w: group state: %v", ErrCorruptState, err)
	}
	return nil
}

// migrateChain moves what a record from before this layout kept inside
// itself (the past epochs' states, the messages sent) to the keys beside
// it; they are written with the record's next putConv.
func migrateChain(r *convRecord) {
	for _, l := range r.Chain {
		if l.LegacyState != nil {
			r.setLinkState(l, l.LegacyState)
			l.LegacyState = nil
		}
		if l.LegacyOut != nil {
			r.setLinkOut(l, l.LegacyOut)
			l.LegacyOut = nil
		}
		if l.LegacySent != nil {
			l.SentFrom = r.SentNext
			for _, p := range l.LegacySent {
				r.queue(bucketConvSent, r.SentNext, p)
				r.SentNext++
			}
			l.SentTo, l.LegacySent = r.SentNext, nil
		}
	}
	if r.LegacySent != nil {
		r.SentFrom = r.SentNext
		for _, p := range r.LegacySent {
			r.queue(bucketConvSent, r.SentNext, p)
			r.SentNext++
		}
		r.SentTo, r.LegacySent = r.SentNext, nil
	}
}
