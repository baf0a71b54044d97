package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
)

// TestMessengerSplitView: a server that equivocates — one store, one
// identity, one account database, but two key-transparency logs (the same
// signing keys), one shown to alice's connections and the other to bob's —
// is caught through checkpoint gossip as soon as alice and bob talk, and
// `qpc status` shows the alarm with its evidence.
func TestMessengerSplitView(t *testing.T) {
	ms := startMessengerServer(t)
	ctx := ctxT(t)

	// Fork B: the same log keys, its own log.
	dirB := t.TempDir()
	for _, f := range []string{server.KTNoteKeyFile, server.KTVRFKeyFile} {
		data, err := os.ReadFile(filepath.Join(ms.kt.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kb := openKT(t, dirB)
	pubCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		server.PublishTokenKeys(pubCtx, kb.d, ms.issuer, tokenEpoch, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })

	// Frontend B serves the same store and accounts with fork B.
	id, err := server.LoadIdentity(ms.dir)
	if err != nil {
		t.Fatal(err)
	}
	opts := ms.opts
	opts.Identity, opts.Store, opts.Accounts, opts.Tokens, opts.TokenEpoch, opts.KT = id, ms.store, ms.accounts, ms.issuer, tokenEpoch, kb.d
	srvB, err := server.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srvB.Serve(pc) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srvB.Shutdown(sctx)
		<-served
	})
	addrB := id.Address(pc.LocalAddr().String()).String()
	waitTokenKey(t, addrB, ms)

	alice := newUser(t, ms, "alice")
	bobHome := t.TempDir()
	bob, err := client.Init(ctx, addrB, ms.pin(), messengerOptions(bobHome))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if err := bob.Register(ctx, "bob", []byte("password of bob")); err != nil {
		t.Fatal(err)
	}
	// The server copies each account's binding into the other fork, so
	// that lookups work on both: the forks differ only in what else they
	// hold (their padding leaves, here).
	mirror := func(label string, fromAddr string, to *ktDir) {
		t.Helper()
		c, err := protocol.Dial(ctx, fromAddr, protocol.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		res, _, err := c.KTLookup(ctx, ms.kt.verifier(t), label)
		if err != nil {
			t.Fatalf("lookup %s: %v", label, err)
		}
		if _, err := to.d.Publish(ctx, label, res.Value); err != nil {
			t.Fatal(err)
		}
	}
	mirror("alice", ms.addr, kb)
	mirror("bob", addrB, ms.kt)

	if _, err := alice.AddContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "bob", "hello from fork A"); err != nil {
		t.Fatal(err)
	}
	splitView := func(c *client.Client) bool {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.Sync(ctx); err != nil {
				t.Fatalf("%s sync: %v", c.Handle(), err)
			}
			alarms, err := c.Alarms()
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range alarms {
				if a.Kind == client.AlarmSplitView {
					if len(a.Evidence) != 2 || string(a.Evidence[0]) == string(a.Evidence[1]) {
						t.Fatalf("split-view alarm without two checkpoints: %+v", a)
					}
					return true
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		return false
	}
	if !splitView(bob) {
		t.Fatal("bob did not detect the split view from alice's gossip")
	}
	if err := bob.Send(ctx, "alice", "hello from fork B"); err != nil {
		t.Fatal(err)
	}
	if !splitView(alice) {
		t.Fatal("alice did not detect the split view from bob's gossip")
	}
	bob.Close()

	// qpc status shows it.
	qpc := buildQPC(t)
	cmd := exec.Command(qpc, "status")
	cmd.Env = append(os.Environ(), "QPC_HOME="+bobHome, "QPC_PASSPHRASE=local passphrase")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qpc status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "ALARM") || !strings.Contains(string(out), "split-view") {
		t.Fatalf("qpc status shows no split-view alarm:\n%s", out)
	}
}

// waitTokenKey waits until the server at addr has committed its token key.
func waitTokenKey(t *testing.T, addr string, ms *messengerServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := protocol.WaitTokenKey(ctx, addr, ms.pin(), protocol.Options{}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
}

// buildQPC builds the qpc command into a temporary directory.
func buildQPC(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "qpc")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/quicprochat/qpc/cmd/qpc").CombinedOutput()
	if err != nil {
		t.Fatalf("go build qpc: %v\n%s", err, out)
	}
	return bin
}
