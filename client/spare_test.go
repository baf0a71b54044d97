package client

import (
	"bytes"
	"testing"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/tokens"
)

// TestSpareSkipsOldTokens: the outbox's spare pool hands out tokens in
// the order they came, never one of an epoch the server no longer
// accepts (it is dropped), and what is left stays for later entries.
func TestSpareSkipsOldTokens(t *testing.T) {
	c := backupFixture(t)
	tok := func(epoch uint32, b byte) []byte {
		tk := tokens.Token{Epoch: epoch}
		tk.Input[0] = b
		raw, err := tk.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	old, a, b := tok(3, 1), tok(5, 2), tok(6, 3)
	var rest []uint64
	err := c.store.Update(func(tx *state.Tx) error {
		if err := addSpare(tx, [][]byte{old, a, b}); err != nil {
			return err
		}
		var err error
		rest, err = assignSpare(tx, []uint64{1000}, 4)
		return err
	})
	if err != nil || len(rest) != 0 {
		t.Fatalf("assignSpare: rest %v, %v", rest, err)
	}
	var got []byte
	var pool [][]byte
	err = c.store.View(func(tx *state.Tx) error {
		var err error
		if got, err = tx.Get(bucketOutboxTokens, seqKey(1000)); err != nil {
			return err
		}
		pool, err = getSpare(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, a) {
		t.Fatalf("entry got a token of another epoch or order")
	}
	if len(pool) != 1 || !bytes.Equal(pool[0], b) {
		t.Fatalf("the pool holds %d tokens, want the epoch 6 one", len(pool))
	}
}
