package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/tokens"
)

// TestTokenTakeOneTransaction: tokens taken for outbox entries leave the
// stored wallet in the transaction that assigns them, never before it and
// never after it, so no token is ever both in the stored wallet and
// assigned (a crash would then spend it twice, linking two sends); and a
// spend or refill that stored the wallet between the take and that
// transaction is not undone by it.
func TestTokenTakeOneTransaction(t *testing.T) {
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	toks, pk := issuedTokens(t, iss, 8)
	raw, _ := pk.MarshalBinary()
	st, err := state.Create(t.TempDir(), []byte("pass"), cheapKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws := walletStore{st}
	// The wallet holds all eight tokens, under the issuer's key,
	// remembered as checked (the version 2 encoding, protocol/wallet.go).
	enc := []byte{2}
	enc = binary.BigEndian.AppendUint32(enc, uint32(len(toks)))
	for _, tk := range toks {
		b, _ := tk.MarshalBinary()
		enc = append(enc, b...)
	}
	enc = binary.BigEndian.AppendUint32(enc, uint32(time.Hour/time.Second))
	enc = append(enc, 1)
	enc = binary.BigEndian.AppendUint32(enc, pk.Epoch)
	enc = append(enc, raw...)
	if err := ws.Save(enc); err != nil {
		t.Fatal(err)
	}
	w, err := protocol.NewWallet(ws, nil, nil, protocol.WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stored := func() [][]byte {
		t.Helper()
		enc, err := ws.Load()
		if err != nil || len(enc) < 5 {
			t.Fatalf("stored wallet: %d bytes, %v", len(enc), err)
		}
		var out [][]byte
		n := int(binary.BigEndian.Uint32(enc[1:]))
		for i := range n {
			out = append(out, enc[5+i*tokens.TokenSize:5+(i+1)*tokens.TokenSize])
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
	if n := len(stored()); n != 8 {
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
	if len(after) != 6 {
		t.Fatalf("stored wallet: %d tokens, want 6", len(after))
	}

	// Another spend stores the wallet between a take and its transaction
	// (as a refill would): the transaction's older encoding, which still
	// holds that spent token, must not undo it.
	take, err = takeTokens(w, 1)
	if err != nil || take == nil {
		t.Fatalf("take 1: %v", err)
	}
	spent, err := w.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if has(stored(), spent) {
		t.Fatal("the spend did not store the wallet")
	}
	err = st.Update(func(tx *state.Tx) error { return take.record(tx, []uint64{3}, take.toks) })
	if err := take.done(err); err != nil {
		t.Fatal(err)
	}
	after = stored()
	if has(after, take.toks[0]) || !bytes.Equal(assigned(3), take.toks[0]) {
		t.Fatal("the token taken before the spend is in the stored wallet, or not assigned")
	}
	if has(after, spent) {
		t.Fatal("the transaction's older encoding put a spent token back in the stored wallet")
	}
	if len(after) != 4 {
		t.Fatalf("stored wallet: %d tokens, want 4", len(after))
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

// issuedTokens returns n real tokens of the issuer's current epoch and
// its key.
func issuedTokens(t *testing.T, iss *tokens.Issuer, n int) ([]tokens.Token, *tokens.PublicKey) {
	t.Helper()
	pk, err := iss.PublicKey(iss.Epoch())
	if err != nil {
		t.Fatal(err)
	}
	bl, req, err := tokens.Blind(pk, n)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := iss.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := bl.Finalize(resp)
	if err != nil {
		t.Fatal(err)
	}
	return toks, pk
}
