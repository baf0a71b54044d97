package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
)

// TestWallet: the wallet refills itself below its threshold, persists
// unspent tokens across a reopen, and its tokens pay for real sends.
func TestWallet(t *testing.T) {
	ts := startSecureServer(t, nil)
	ctx := ctxT(t)
	acct, anon := dial(t, ts, client.Options{}), dial(t, ts, client.Options{})
	sess := registered(t, acct, "gina")
	path := filepath.Join(t.TempDir(), "wallet")
	w, err := client.OpenWallet(path, acct, sess, client.WalletOptions{Low: 5, Batch: 10})
	if err != nil {
		t.Fatal(err)
	}
	if w.Len() != 0 {
		t.Fatalf("new wallet holds %d tokens", w.Len())
	}
	tok, err := w.Take(ctx) // empty: refills first
	if err != nil {
		t.Fatal(err)
	}
	mb, err := anon.CreateMailbox(ctx, tok)
	if err != nil {
		t.Fatalf("create with a wallet token: %v", err)
	}
	if w.Len() != 9 {
		t.Fatalf("after one take: %d tokens, want 9", w.Len())
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("wallet file mode: %v, %v", fi.Mode(), err)
	}
	for i := range 5 { // down to 4 < Low: a background refill starts
		tok, err := w.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.Send(ctx, mb.SendID, client.NewMessageID(), envelope(i), tok); err != nil {
			t.Fatalf("send %d with a wallet token: %v", i, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Len() < 10 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if w.Len() != 14 || w.RefillErr() != nil {
		t.Fatalf("after the refill: %d tokens (%v), want 14", w.Len(), w.RefillErr())
	}
	// Reopen: the unspent tokens are still there and still good.
	w2, err := client.OpenWallet(path, acct, sess, client.WalletOptions{Low: 1})
	if err != nil || w2.Len() != 14 {
		t.Fatalf("reopened wallet: %d tokens, %v", w2.Len(), err)
	}
	tok, _ = w2.Take(ctx)
	if _, err := anon.Send(ctx, mb.SendID, client.NewMessageID(), envelope(9), tok); err != nil {
		t.Fatalf("send with a token from the reopened wallet: %v", err)
	}
	// A corrupt file is an error, not an empty wallet.
	os.WriteFile(path, []byte{1, 0, 0, 0, 9, 1, 2}, 0o600)
	if _, err := client.OpenWallet(path, acct, sess, client.WalletOptions{}); err == nil {
		t.Fatal("corrupt wallet accepted")
	}
}
