package hostile_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/audit"
	"github.com/quicprochat/qpc/server"
)

// TestAuditHostileServer: an auditor follows the real server's
// key-transparency log over HTTP (server.KTHandler, what kt_listen
// serves) while real clients register and publish their bindings, and
// agrees with it epoch by epoch. Then the server shows the auditor
// another history: a copy of its directory taken earlier and grown apart
// (a rogue binding for alice), served at the same address. The fork's
// epochs do not extend what the auditor already audited: it refuses the
// fork's checkpoint, naming the first epoch it was offered, and stays
// where it was.
func TestAuditHostileServer(t *testing.T) {
	ctx := context.Background()
	h := hostile.Start(t, hostile.Options{})
	var served atomic.Pointer[http.Handler]
	honest := server.KTHandler(h.KT(), "/kt")
	served.Store(&honest)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*served.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	cfg := h.KT().Config()
	a, err := audit.Open(filepath.Join(t.TempDir(), "audit.db"), audit.Options{
		Log: audit.HTTPLog(srv.URL+"/kt", nil), Verifier: h.KTKeys.Verifier, ConfigHash: cfg.Hash(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	h.NewUser(t, "alice", "alice")
	fork := h.ForkKT(t) // the server's copy, with alice's own binding
	h.NewUser(t, "bob", "bob")
	waitEpochs(t, h.KT(), 3)
	cp, err := a.Follow(ctx)
	if err != nil {
		t.Fatalf("following the honest server: %v", err)
	}
	audited := a.Size()
	if audited != cp.Size || audited < 3 {
		t.Fatalf("audited %d epochs of a checkpoint of size %d", audited, cp.Size)
	}

	// The fork grows apart until it is longer than what was audited.
	if _, err := fork.Enqueue("alice", []byte("ROGUE binding")); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fork.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if fcp, _ := fork.Checkpoint(); fcp.Size > audited {
			break
		}
	}
	forked := fork.Handler("/kt")
	served.Store(&forked)
	_, err = a.Follow(ctx)
	var refusal *audit.Error
	if !errors.As(err, &refusal) || refusal.Check != audit.CheckInclusion || refusal.Epoch != audited {
		t.Fatalf("the fork's checkpoint: %v; want a refusal of epoch %d (%s)", err, audited, audit.CheckInclusion)
	}
	if a.Size() != audited {
		t.Fatalf("the auditor moved to %d epochs on the fork", a.Size())
	}
	// Back on the honest log, it follows on.
	served.Store(&honest)
	waitEpochs(t, h.KT(), audited+1)
	if _, err := a.Follow(ctx); err != nil {
		t.Fatalf("the honest log again: %v", err)
	}
}

// waitEpochs waits until the directory serves a checkpoint of at least
// size epochs.
func waitEpochs(t *testing.T, d *kt.Directory, size uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cp, err := d.Checkpoint(); err == nil && cp.Size >= size {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no checkpoint of size %d", size)
}
