package client

import (
	"encoding/json"
	"errors"
	"sync"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/tokens"
)

// Tokens an outbox entry did not need. Every entry is given a token when
// it is queued (outbox.go), but it is sent with Conn.SendPaid: a token
// pays for wire.SendsPerToken Sends on the connection that shows it
// (docs/adr/0017-token-per-connection.md), so most entries go out on the
// allowance of an earlier one and their tokens are never shown. Such a
// token goes to the spare pool, kept in the state beside the entries'
// tokens, and the next entries queued take their tokens from there
// before the wallet.
//
// Only a token this process assigned and never showed goes back: a token
// once shown to the server (even by an attempt whose answer was lost) is
// tied to the connection that showed it, and showing it again on another
// connection, of another conversation, would link the two. The record of
// which tokens were shown is in memory; after a restart, the tokens of
// entries queued before it are treated as shown and are never pooled (at
// worst a token is lost, as before SendPaid).

// keySpareTokens is the spare pool in bucketOutboxTokens (whose other
// keys are 8-byte sequence numbers).
var keySpareTokens = []byte("spare")

// maxSpareTokens bounds the pool; a token beyond it is dropped. Each text
// takes one from the pool, so it rarely holds more than a few.
const maxSpareTokens = 256

// unshownTokens are the outbox entries (by sequence number) whose tokens
// this process assigned and has not shown to the server.
type unshownTokens struct {
	mu  sync.Mutex
	set map[uint64]bool
}

func (u *unshownTokens) add(seqs ...uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.set == nil {
		u.set = map[uint64]bool{}
	}
	for _, s := range seqs {
		u.set[s] = true
	}
}

// shown records that seq's token was shown, or that it is gone.
func (u *unshownTokens) shown(seq uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.set, seq)
}

// free reports whether seq's token was never shown, and forgets it.
func (u *unshownTokens) free(seq uint64) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	ok := u.set[seq]
	delete(u.set, seq)
	return ok
}

func getSpare(tx *state.Tx) ([][]byte, error) {
	raw, err := tx.Get(bucketOutboxTokens, keySpareTokens)
	if errors.Is(err, state.ErrNoEntry) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var toks [][]byte
	if err := jsonUnmarshal(raw, &toks); err != nil {
		return nil, err
	}
	return toks, nil
}

func putSpare(tx *state.Tx, toks [][]byte) error {
	if len(toks) == 0 {
		return tx.Delete(bucketOutboxTokens, keySpareTokens)
	}
	if len(toks) > maxSpareTokens {
		toks = toks[len(toks)-maxSpareTokens:]
	}
	raw, err := json.Marshal(toks)
	if err != nil {
		return err
	}
	return tx.Put(bucketOutboxTokens, keySpareTokens, raw)
}

// addSpare puts tokens never shown into the pool.
func addSpare(tx *state.Tx, toks [][]byte) error {
	if len(toks) == 0 {
		return nil
	}
	pool, err := getSpare(tx)
	if err != nil {
		return err
	}
	return putSpare(tx, append(pool, toks...))
}

// spareOldest is the oldest token epoch the pool may hand out (the
// wallet's view of the clock; 0: any). The caller holds c.op.
func (c *Client) spareOldest() uint32 {
	if c.wallet == nil {
		return 0
	}
	return c.wallet.OldestEpoch()
}

// spareCount is how many tokens the pool holds, counting those of sent
// entries that go to it when their deletion is written (retire.go): the
// transactions that take from the pool (update) write those first.
func (c *Client) spareCount() int {
	n := c.retiring.free()
	c.store.View(func(tx *state.Tx) error {
		toks, err := getSpare(tx)
		n += len(toks)
		return err
	})
	return n
}

// assignSpare gives entries of need tokens from the pool, in order, and
// returns the entries still without one. Tokens of an epoch before
// oldest, which the server no longer accepts, are dropped from the pool.
func assignSpare(tx *state.Tx, need []uint64, oldest uint32) ([]uint64, error) {
	all, err := getSpare(tx)
	if err != nil || len(all) == 0 {
		return need, err
	}
	pool := all[:0:0]
	for _, raw := range all {
		if tok, err := tokens.ParseToken(raw); err == nil && tok.Epoch >= oldest {
			pool = append(pool, raw)
		}
	}
	n := min(len(pool), len(need))
	for i := range n {
		if err := tx.Put(bucketOutboxTokens, seqKey(need[i]), pool[i]); err != nil {
			return nil, err
		}
	}
	if err := putSpare(tx, pool[n:]); err != nil {
		return nil, err
	}
	return need[n:], nil
}

// assignAll gives the entries of need tokens, from the pool first, then
// taken from the wallet (take, nil: none), whose encoding after the take
// it stores; taken tokens left over (the pool grew meanwhile) go to the
// pool. It returns the entries given a token.
func assignAll(tx *state.Tx, take *tokenTake, need []uint64, oldest uint32) ([]uint64, error) {
	rest, err := assignSpare(tx, need, oldest)
	if err != nil {
		return nil, err
	}
	assigned := need[:len(need)-len(rest)]
	if take == nil {
		return assigned, nil
	}
	n := min(len(take.toks), len(rest))
	if err := take.record(tx, rest[:n], take.toks[:n]); err != nil {
		return nil, err
	}
	if err := addSpare(tx, take.toks[n:]); err != nil {
		return nil, err
	}
	return append(assigned, rest[:n]...), nil
}

// retire deletes a sent entry and its token, putting the token in the
// pool if it was never shown (free).
func retire(tx *state.Tx, seq uint64, free bool) error {
	if free {
		tok, err := tx.Get(bucketOutboxTokens, seqKey(seq))
		if err == nil {
			err = addSpare(tx, [][]byte{tok})
		}
		if err != nil && !errors.Is(err, state.ErrNoEntry) {
			return err
		}
	}
	if err := tx.DeleteSeq(bucketOutbox, seq); err != nil {
		return err
	}
	return tx.Delete(bucketOutboxTokens, seqKey(seq))
}
