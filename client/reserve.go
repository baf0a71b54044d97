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
//
// The same crash leaves our next sequence number (convRecord.MySeq + 1)
// possibly used by the text sent early. The first message we number
// after it skips that number and says so (content.Message.SkippedBefore):
// a recipient excuses the one number before a message that says it, and
// reports every other gap, so a text the server withholds after a restart
// shows as missing, and an ordinary restart shows no gap
// (docs/adr/0045-restart-numbers.md, TestHostileWithheldAfterRestart).
type floors struct {
	mu sync.Mutex
	m  map[string]*floor
	// seqs: per conversation, the sequence number a text sent before its
	// state was written may have used, until a message numbered after it
	// is recorded.
	seqs map[string]uint64
}

type floor struct {
	sendReserve
	auth []byte // the authenticator of the epoch the floor was taken in; nil: unknown, any of its number
}

// apply skips g's ratchet to the floor of conversation id, setting it
// from stored, the reservation on disk, the first time. seq is the number
// our next message takes by the record read with it, if a text may have
// been sent early in the conversation (a direct one), else 0: the first
// time, it is noted as possibly used (usedSeq). It reports whether g
// changed.
func (f *floors) apply(id []byte, stored *sendReserve, seq uint64, g *mls.Group) (bool, error) {
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
			if seq > 0 {
				f.usedSeqLocked(k, seq)
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

// usedSeq notes that a message of conversation id numbered seq may have
// left without its record: the next message numbered seq skips it.
func (f *floors) usedSeq(id []byte, seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usedSeqLocked(hex.EncodeToString(id), seq)
}

func (f *floors) usedSeqLocked(k string, seq uint64) {
	if f.seqs == nil {
		f.seqs = map[string]uint64{}
	}
	f.seqs[k] = max(f.seqs[k], seq)
}

// skipSeq reports whether our next message in conversation id, which the
// record (mySeq, as the record about to be written holds it) numbers
// mySeq+1, must skip that number: a message may have left under it
// without its record. Once the record is past it, the note is dropped.
func (f *floors) skipSeq(id []byte, mySeq uint64) bool {
	k := hex.EncodeToString(id)
	f.mu.Lock()
	defer f.mu.Unlock()
	used, ok := f.seqs[k]
	if !ok {
		return false
	}
	if mySeq >= used {
		delete(f.seqs, k)
		return false
	}
	return mySeq+1 == used
}
