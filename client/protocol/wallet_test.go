package protocol

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/quicprochat/qpc/tokens"
)

// memWallet is a WalletStore in memory.
type memWallet struct{ b []byte }

func (m *memWallet) Load() ([]byte, error) { return m.b, nil }
func (m *memWallet) Save(b []byte) error   { m.b = bytes.Clone(b); return nil }

// issued returns n real tokens of the issuer's current epoch and its key.
func issued(t *testing.T, iss *tokens.Issuer, n int) ([]tokens.Token, *tokens.PublicKey) {
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

// TestWalletEncoding: version 2 keeps the tokens, the epoch length and
// the checked keys across a reopen; a version 1 wallet's tokens were
// obtained under keys never checked, so none is spent; damaged key
// sections are refused.
func TestWalletEncoding(t *testing.T) {
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	iss, err := tokens.NewIssuer(secret, tokens.WithEpochLength(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	toks, pk := issued(t, iss, 3)
	raw, _ := pk.MarshalBinary()
	st := &memWallet{}
	w, err := NewWallet(st, nil, nil, WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.toks = toks
	if err := w.remember(pk.Epoch, raw, time.Hour); err != nil {
		t.Fatal(err)
	}
	w2, err := NewWallet(st, nil, nil, WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if w2.Len() != 3 || w2.EpochLength() != time.Hour || !bytes.Equal(w2.KnownKeys()[pk.Epoch], raw) {
		t.Fatalf("reopened: %d tokens, %v, keys %v", w2.Len(), w2.EpochLength(), w2.KnownKeys())
	}
	if err := w2.remember(pk.Epoch, append(bytes.Clone(raw[:len(raw)-1]), raw[len(raw)-1]^1), 0); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("another key for a remembered epoch: %v", err)
	}
	if got, err := w2.TakeN(context.Background(), 5); len(got) != 3 || !errors.Is(err, ErrNoTokens) {
		t.Fatalf("take 5 of 3: %d, %v", len(got), err)
	}

	// Version 1: the same tokens, no keys: none is spent.
	v1 := []byte{walletVersion1, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(v1[1:], uint32(len(toks)))
	for _, tk := range toks {
		b, _ := tk.MarshalBinary()
		v1 = append(v1, b...)
	}
	w1, err := NewWallet(&memWallet{b: v1}, nil, nil, WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tok, err := w1.Take(context.Background()); tok != nil || !errors.Is(err, ErrNoTokens) {
		t.Fatalf("a version 1 token was spent: %v", err)
	}

	// Damaged key sections.
	good := st.b
	for name, b := range map[string][]byte{
		"truncated":     good[:len(good)-1],
		"trailing":      append(bytes.Clone(good), 0),
		"epoch differs": func() []byte { b := bytes.Clone(good); b[len(b)-tokens.PublicKeySize-1] ^= 1; return b }(),
	} {
		if _, err := NewWallet(&memWallet{b: b}, nil, nil, WalletOptions{}); !errors.Is(err, ErrWalletCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestEpochPlausible: the named epoch must contain an instant within
// TokenEpochSkew of the clock.
func TestEpochPlausible(t *testing.T) {
	start := time.Unix(1000*3600, 0) // epoch 1000 of one hour begins
	for _, tc := range []struct {
		now   time.Time
		epoch uint32
		ok    bool
	}{
		{start.Add(30 * time.Minute), 1000, true},
		{start.Add(30 * time.Minute), 999, false},
		{start.Add(30 * time.Minute), 1001, false},
		{start.Add(2 * time.Minute), 999, true},   // within the skew of the boundary
		{start.Add(-2 * time.Minute), 1000, true}, // a clock a little behind
		{start.Add(-6 * time.Minute), 1000, false},
		{start, 1002, false},
	} {
		if got := epochPlausible(tc.epoch, tc.now, time.Hour); got != tc.ok {
			t.Errorf("epoch %d at %v: %v, want %v", tc.epoch, tc.now.Sub(start), got, tc.ok)
		}
	}
}

// FuzzWalletDecode: any bytes either decode to a wallet whose encoding
// decodes to the same tokens and keys, or are ErrWalletCorrupt; nothing
// panics.
func FuzzWalletDecode(f *testing.F) {
	f.Add([]byte{walletVersion1, 0, 0, 0, 0})
	f.Add([]byte{walletVersion, 0, 0, 0, 0, 0, 0, 14, 16, 0})
	f.Add([]byte{walletVersion, 0, 0, 0, 1, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := NewWallet(&memWallet{b: b}, nil, nil, WalletOptions{})
		if err != nil {
			if !errors.Is(err, ErrWalletCorrupt) {
				t.Fatalf("error not ErrWalletCorrupt: %v", err)
			}
			return
		}
		st := &memWallet{}
		w.store = st
		w.mu.Lock()
		err = w.save(w.toks)
		w.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		w2, err := NewWallet(st, nil, nil, WalletOptions{})
		if err != nil || w2.Len() != w.Len() || len(w2.KnownKeys()) != len(w.KnownKeys()) || w2.EpochLength() != w.EpochLength() {
			t.Fatalf("re-encoding changed the wallet: %v", err)
		}
	})
}
