package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/witness"
	"github.com/quicprochat/qpc/server"
)

// TestWitnessAuditFlag plays a lying log operator against `qpc-server
// witness --audit`: a real key-transparency directory, served over HTTP,
// whose honest checkpoint the witness cosigns; then an epoch whose
// published update list is not the one its signed record commits to (so
// nobody can check that its prefix tree follows from the previous one).
// The auditing witness refuses that checkpoint (422) and cosigns nothing.
// Before: `qpc-server witness` could not audit at all (the auditor of
// issue 23 item 4 existed only as a library), so no deployed witness
// could back the promise that an auditing witness's cosignature means
// every epoch was checked.
func TestWitnessAuditFlag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "server"), 0o700); err != nil {
		t.Fatal(err)
	}
	keys, err := server.LoadOrCreateKTKeys(filepath.Join(dir, "server"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := kt.OpenDirectory(ctx, kt.DirectoryOptions{
		Dir: filepath.Join(dir, "server"), LogSigner: keys.Signer, LogVerifier: keys.Verifier, VRFKey: keys.VRF,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var tamper atomic.Uint64 // epoch+1 whose update list is served altered
	honest := d.Handler("/kt")
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e, ok := kt.ParseUpdatesPath(strings.TrimPrefix(r.URL.Path, "/kt/")); ok && tamper.Load() == e+1 {
			b, err := d.UpdateList(e)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			b[len(b)-1] ^= 1 // one commitment changed
			w.Write(b)
			return
		}
		honest.ServeHTTP(w, r)
	}))
	defer hs.Close()

	p := start(t, "witness", "--data-dir", filepath.Join(dir, "witness"), "--listen", "127.0.0.1:0",
		"--log", keys.VKey, "--audit", keys.Signer.Name()+"="+hs.URL+"/kt")
	var addr string
	deadline := time.Now().Add(20 * time.Second)
	for addr == "" {
		if m := witnessAddr.FindStringSubmatch(p.stderr.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) || exited(p) {
			t.Fatalf("no address; stderr:\n%s", p.stderr.String())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	post := func(old uint64) (int, string, uint64) {
		t.Helper()
		cp, err := d.Consistency(ctx, old)
		if err != nil {
			t.Fatal(err)
		}
		body := (&witness.Request{OldSize: old, Proof: cp.Hashes, Checkpoint: cp.Checkpoint}).Marshal()
		resp, err := http.Post("http://"+addr+"/add-checkpoint", "text/plain", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c, err := kt.OpenCheckpoint(cp.Checkpoint, keys.Verifier)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(out), c.Size
	}
	tick := func() {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := d.Tick(tctx); err != nil {
			t.Fatal(err)
		}
	}

	tick()
	code, out, size := post(0)
	if code != http.StatusOK {
		t.Fatalf("honest checkpoint of size %d: %d %s\nstderr:\n%s", size, code, out, p.stderr.String())
	}
	tamper.Store(size + 1) // the next epoch is size
	tick()
	if code, out, n := post(size); code != http.StatusUnprocessableEntity || !strings.Contains(out, "updates digest") {
		t.Fatalf("checkpoint of size %d over an epoch whose update list is not the committed one: %d %s, want 422 (updates digest)", n, code, out)
	}
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
