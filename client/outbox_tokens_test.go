package client

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/tokens"
)

// TestTokenTakeOneTransaction: tokens taken for outbox entries leave the
// stored wallet in the transaction that assigns them, never before it and
// never after it, so no token is ever both in the stored wallet and
// assigned (a crash would then spend it twice, linking two sends); and a
// refill that stored the wallet between the take and that transaction is
// not undone by it.
func TestTokenTakeOneTransaction(t *testing.T) {
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	toks, pk := issued(t, iss, 8)
	raw, _ := pk.MarshalBinary()
	st, err := state.Create(t.TempDir(), []byte("pass"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws := walletStore{st}
	w, err := NewWallet(ws, nil, nil, WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.toks = toks[:5]
	if err := w.remember(pk.Epoch, raw, time.Hour); err != nil {
		t.Fatal(err)
	}
	stored := func() [][]byte {
		t.Helper()
		w2, err := NewWallet(ws, nil, nil, WalletOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, tk := range w2.toks {
			b, _ := tk.MarshalBinary()
			out = append(out, b)
		}
		return out
	}
	assigned := func(seq uint64) []byte {
		t.Helper()
		var b []byte
		if err := st.View(func(tx *state.Tx) error {
			v, err := tx.Get(bucketOutboxTokens, seqKey(seq))
			if errors.Is(err, state.ErrNoEntry) {
				return nil
			}
			b = v
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	has := func(set [][]byte, tok []byte) bool {
		for _, s := range set {
			if bytes.Equal(s, tok) {
				return true
			}
		}
		return false
	}

	take, err := takeTokens(w, 2)
	if err != nil || take == nil || len(take.toks) != 2 {
		t.Fatalf("take 2: %v, %v", take, err)
	}
	if n := len(stored()); n != 5 {
		t.Fatalf("the take alone changed the stored wallet: %d tokens", n)
	}
	err = st.Update(func(tx *state.Tx) error { return take.record(tx, []uint64{1, 2}, take.toks) })
	if err := take.done(err); err != nil {
		t.Fatal(err)
	}
	after := stored()
	for i, seq := range []uint64{1, 2} {
		if !bytes.Equal(assigned(seq), take.toks[i]) || has(after, take.toks[i]) {
			t.Fatalf("token %d: assigned %x, still in the stored wallet %v", i, assigned(seq), has(after, take.toks[i]))
		}
	}
	if len(after) != 3 {
		t.Fatalf("stored wallet: %d tokens, want 3", len(after))
	}

	// A refill stores the wallet between a take and its transaction: the
	// transaction's older encoding must not undo it.
	take, err = takeTokens(w, 1)
	if err != nil || take == nil {
		t.Fatalf("take 1: %v", err)
	}
	w.mu.Lock()
	w.toks = append(w.toks, toks[5:]...)
	err = w.save(w.toks)
	w.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(func(tx *state.Tx) error { return take.record(tx, []uint64{3}, take.toks) })
	if err := take.done(err); err != nil {
		t.Fatal(err)
	}
	after = stored()
	if has(after, take.toks[0]) || !bytes.Equal(assigned(3), take.toks[0]) {
		t.Fatal("the token taken before the refill is in the stored wallet, or not assigned")
	}
	for _, tk := range toks[5:] {
		b, _ := tk.MarshalBinary()
		if !has(after, b) {
			t.Fatal("a refilled token is missing from the stored wallet")
		}
	}
	if len(after) != 5 {
		t.Fatalf("stored wallet: %d tokens, want 5", len(after))
	}

	// Too few entries for the tokens taken: refused, nothing written.
	take, _ = takeTokens(w, 2)
	err = st.Update(func(tx *state.Tx) error { return take.record(tx, []uint64{4}, take.toks) })
	if err == nil {
		t.Fatal("two tokens recorded for one entry")
	}
	take.done(err)
	if assigned(4) != nil {
		t.Fatal("a refused record assigned a token")
	}
}
