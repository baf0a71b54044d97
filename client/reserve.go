package client

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/quicprochat/qpc/mls"
)

// Sending before the state is written (docs/adr/0042-early-send.md).
//
// A text's envelope may leave while the transaction that records it (the
// message, the advanced group state, the outbox entry and its token) is
// still being written, instead of after it: Send returns only once both
// are done, and nothing else runs in between (the operation lock). What a
// crash in that window must not cost is a second use of the MLS
// generation the envelope used (RFC 9420 §9.1: each key and nonce is used
// once): the state on disk still names it as the next. So every stored
// group state carries a reservation, sendReserve: the generations of our
// application ratchet below Gen in epoch Epoch may have been used without
// being recorded. A text is sent early only when the reservation already
// on disk covers its generation (the one before it wrote it), and after a
// restart our ratchet first skips to the reservation (floors), losing at
// most reserveAhead generations, which receivers step over as they do a
// late message (the skipped keys were never used).
//
// The token is not shown early: an early send goes out only on the
// connection's allowance (Conn.SendAllowed); one that needs a token waits
// for the transaction and is sent by flush, as before.

// reserveAhead is how many generations past the next one a stored state
// reserves: the one text that may be in flight when it is written.
const reserveAhead = 1

// sendReserve is the bound stored with a group state.
type sendReserve struct {
	Epoch uint64
	Gen   uint32
}

// reserveFor is the reservation stored with g: its next generation, which
// the next text may use before its state is written.
func reserveFor(g *mls.Group) *sendReserve {
	next, err := g.NextSendGeneration()
	if err != nil || next > ^uint32(0)-reserveAhead {
		return nil // exhausted: Encrypt fails anyway
	}
	return &sendReserve{Epoch: g.Epoch(), Gen: next + reserveAhead}
}

// covers reports whether a text at generation gen of epoch may leave
// before its state is written: the stored reservation r covers it.
func (r *sendReserve) covers(epoch uint64, gen uint32) bool {
	return r != nil && r.Epoch == epoch && gen < r.Gen
}

// floors are the generations our ratchets must not go below, per
// conversation: the reservation read from disk the first time this
// process loaded its group (what a crash before it may have used), raised
// when an early send's transaction failed.
//
// A floor holds for the epoch it was taken in, named by its authenticator
// as well as its number: after a fork choice (commitorder.go) another
// branch's epoch of the same number has other keys, which no text used;
// skipping them lost generations for nothing, and past MaxForwardDistance
// (1024) failed every load of the group, so that each envelope of the
// conversation was dropped unread until a restart
// (TestAttackFloorOtherBranch).
type floors struct {
	mu sync.Mutex
	m  map[string]*floor
}

type floor struct {
	sendReserve
	auth []byte // the authenticator of the epoch the floor was taken in; nil: unknown, any of its number
}

// apply skips g's ratchet to the floor of conversation id, setting it
// from stored, the reservation on disk, the first time. It reports
// whether g changed.
func (f *floors) apply(id []byte, stored *sendReserve, g *mls.Group) (bool, error) {
	k := hex.EncodeToString(id)
	auth := g.EpochAuthenticator()
	f.mu.Lock()
	fl, seen := f.m[k]
	if !seen {
		if f.m == nil {
			f.m = map[string]*floor{}
		}
		if stored != nil {
			// The reservation is stored with the state g was read from.
			fl = &floor{sendReserve: *stored}
			if stored.Epoch == g.Epoch() {
				fl.auth = auth
			}
		}
		f.m[k] = fl
	}
	f.mu.Unlock()
	if fl == nil || fl.Epoch != g.Epoch() || fl.auth != nil && !bytes.Equal(fl.auth, auth) || !g.Active() {
		return false, nil
	}
	next, err := g.NextSendGeneration()
	if err != nil || next >= fl.Gen {
		return false, nil
	}
	if err := g.SkipSendTo(fl.Gen); err != nil {
		return false, fmt.Errorf("%w: skipping to the reserved generation: %v", ErrCorruptState, err)
	}
	return true, nil
}

// raise sets conversation id's floor to at least r, in the epoch whose
// authenticator is auth.
func (f *floors) raise(id []byte, r *sendReserve, auth []byte) {
	k := hex.EncodeToString(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]*floor{}
	}
	if old := f.m[k]; old == nil || old.Epoch != r.Epoch || !bytes.Equal(old.auth, auth) || old.Gen < r.Gen {
		f.m[k] = &floor{sendReserve: *r, auth: auth}
	}
}
