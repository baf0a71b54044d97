package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
)

// verifier is a fresh KT verifier pinned to ms.
func (ms *messengerServer) verifier(t *testing.T) *kt.Verifier {
	t.Helper()
	p := ms.pin()
	v, err := kt.NewVerifier(p.VKey, p.VRFKey, p.ConfigHash)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// issued is how many tokens the account obtained this epoch.
func issued(t *testing.T, c *protocol.Conn, s *protocol.Session) int {
	t.Helper()
	q, err := c.TokenQuota(ctxT(t), s)
	if err != nil {
		t.Fatal(err)
	}
	return q.Issued
}

// TestWallet: a spend never refills; Refill obtains tokens under the key
// committed in key transparency and remembers it across a reopen; the
// refill schedule tops the wallet up below its low-water mark; the tokens
// pay for real sends.
func TestWallet(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)
	acct, anon := dial(t, ms.testServer, protocol.Options{}), dial(t, ms.testServer, protocol.Options{})
	sess := registered(t, acct, "gina")
	path := filepath.Join(t.TempDir(), "wallet")
	opts := protocol.WalletOptions{Low: 5, Batch: 10, KT: ms.verifier(t), Now: ms.clock.now}
	w, err := protocol.OpenWallet(path, acct, sess, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Take(ctx); !errors.Is(err, protocol.ErrNoTokens) {
		t.Fatalf("take from an empty wallet: %v, want ErrNoTokens", err)
	}
	if n := issued(t, acct, sess); n != 0 {
		t.Fatalf("a take from an empty wallet obtained %d tokens", n)
	}
	if err := w.Refill(ctx); err != nil {
		t.Fatal(err)
	}
	if len(w.KnownKeys()) != 1 || w.EpochLength() != tokenEpoch {
		t.Fatalf("after a refill: keys %v, epoch length %v", w.KnownKeys(), w.EpochLength())
	}
	tok, err := w.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := anon.CreateMailbox(ctx, tok)
	if err != nil {
		t.Fatalf("create with a wallet token: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("wallet file mode: %v, %v", fi.Mode(), err)
	}
	for i := range 5 { // down to 4 < Low: nothing refills until the schedule runs
		tok, err := w.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(i), tok); err != nil {
			t.Fatalf("send %d with a wallet token: %v", i, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if w.Len() != 4 || issued(t, acct, sess) != 10 {
		t.Fatalf("spends refilled: %d tokens, %d issued", w.Len(), issued(t, acct, sess))
	}
	// The schedule (fast here) tops it up.
	fast := opts
	fast.RefillMean = 20 * time.Millisecond
	w, err = protocol.OpenWallet(path, acct, sess, fast)
	if err != nil || w.Len() != 4 {
		t.Fatalf("reopened wallet: %d tokens, %v", w.Len(), err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.RunRefills(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for w.Len() < 5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-done
	if w.Len() != 14 || w.RefillErr() != nil || len(w.ScheduledRefills()) != 1 {
		t.Fatalf("after the scheduled refill: %d tokens (%v), %d refills, want 14 and 1", w.Len(), w.RefillErr(), len(w.ScheduledRefills()))
	}
	// Reopen: the unspent tokens and the checked key are still there.
	w2, err := protocol.OpenWallet(path, acct, sess, protocol.WalletOptions{Low: 1, KT: opts.KT, Now: ms.clock.now})
	if err != nil || w2.Len() != 14 || len(w2.KnownKeys()) != 1 {
		t.Fatalf("reopened wallet: %d tokens, %d keys, %v", w2.Len(), len(w2.KnownKeys()), err)
	}
	tok, _ = w2.Take(ctx)
	if _, err := anon.Send(ctx, mb.SendID, protocol.NewMessageID(), envelope(9), tok); err != nil {
		t.Fatalf("send with a token from the reopened wallet: %v", err)
	}
	// Without a verifier there is no refill.
	w3, err := protocol.OpenWallet(filepath.Join(t.TempDir(), "w3"), acct, sess, protocol.WalletOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w3.Refill(ctx); !errors.Is(err, protocol.ErrNoKTVerifier) {
		t.Fatalf("refill without a KT verifier: %v", err)
	}
	// A corrupt file is an error, not an empty wallet.
	os.WriteFile(path, []byte{1, 0, 0, 0, 9, 1, 2}, 0o600)
	if _, err := protocol.OpenWallet(path, acct, sess, protocol.WalletOptions{}); err == nil {
		t.Fatal("corrupt wallet accepted")
	}
}
