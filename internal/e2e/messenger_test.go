package e2e

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/server"
)

// messengerServer is a production-like server for the messenger: tokens
// required, accounts, key transparency with the token keys committed.
type messengerServer struct {
	*testServer
	kt *ktDir
}

func startMessengerServer(t *testing.T) *messengerServer {
	t.Helper()
	return startMessengerServerWith(t, nil)
}

// startMessengerServerWith is startMessengerServer with adjusted options.
func startMessengerServerWith(t *testing.T, mutate func(*server.Options)) *messengerServer {
	t.Helper()
	k := openKT(t, t.TempDir())
	ts := startSecureServer(t, func(o *server.Options) {
		o.KT = k.d
		if mutate != nil {
			mutate(o)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		server.PublishTokenKeys(ctx, k.d, ts.issuer, tokenEpoch, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	t.Cleanup(func() { cancel(); <-done })
	ms := &messengerServer{ts, k}
	// Wait for the token key to be in the log.
	waitCtx, cancelWait := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelWait()
	if err := protocol.WaitTokenKey(waitCtx, ts.addr, ms.pin(), protocol.Options{Policy: ts.opts.Policy}, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return ms
}

func (ms *messengerServer) pin() protocol.KTPin {
	cfg := ms.kt.d.Config()
	return protocol.KTPin{VKey: ms.kt.keys.VKey, VRFKey: cfg.VRFPublicKey, ConfigHash: cfg.Hash()}
}

// tinyKDF keeps Argon2id cheap in tests that make many clients; the CLI
// tests run the real cost.
var tinyKDF = &state.Options{Time: 1, MemoryKiB: 64, Threads: 1}

func messengerOptions(home string) client.Options {
	return client.Options{
		Home: home, Passphrase: []byte("local passphrase"), KDF: tinyKDF,
		Dial:   protocol.Options{MaxAttempts: 8, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// newUser initialises a client in a fresh home and registers handle.
func newUser(t *testing.T, ms *messengerServer, handle string) *client.Client {
	t.Helper()
	ctx := ctxT(t)
	c, err := client.Init(ctx, ms.addr, ms.pin(), messengerOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	return c
}

// addContacts has each of users add handle as a contact, so that they
// join the groups it creates without an invitation to accept.
func addContacts(t *testing.T, ctx context.Context, handle string, users ...*client.Client) {
	t.Helper()
	for _, u := range users {
		if _, err := u.AddContact(ctx, handle); err != nil {
			t.Fatalf("%s adds %s: %v", u.Handle(), handle, err)
		}
	}
}

// texts syncs c and returns the texts it received, as "from: text".
func texts(t *testing.T, c *client.Client) []string {
	t.Helper()
	ev, err := c.Sync(ctxT(t))
	if err != nil {
		t.Fatalf("%s sync: %v", c.Handle(), err)
	}
	var out []string
	for _, e := range ev {
		if e.Kind == client.EventAlarm {
			t.Errorf("%s: alarm %v", c.Handle(), e.Alarm)
		}
		if e.Kind == client.EventMessage {
			out = append(out, e.From+": "+e.Text)
		}
	}
	return out
}

func TestMessengerDirect(t *testing.T) {
	ms := startMessengerServer(t)
	alice, bob := newUser(t, ms, "alice"), newUser(t, ms, "bob")
	ctx := ctxT(t)
	ca, err := alice.AddContact(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := bob.AddContact(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ca.SafetyNumber != cb.SafetyNumber || len(ca.SafetyNumber) != 60 {
		t.Fatalf("safety numbers differ: %s / %s", ca.SafetyNumber, cb.SafetyNumber)
	}
	if err := alice.Send(ctx, "bob", "hello bob"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: hello bob"}) {
		t.Fatalf("bob got %q", got)
	}
	if err := bob.Send(ctx, "alice", "hello alice"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); !slices.Equal(got, []string{"bob: hello alice"}) {
		t.Fatalf("alice got %q", got)
	}
	for i := range 3 {
		if err := alice.Send(ctx, "bob", strings.Repeat("x", i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: x", "alice: xx", "alice: xxx"}) {
		t.Fatalf("bob got %q", got)
	}
	// Nothing more, and nothing twice.
	if got := texts(t, bob); len(got) != 0 {
		t.Fatalf("bob got again %q", got)
	}
}

func TestMessengerGroup(t *testing.T) {
	ms := startMessengerServer(t)
	alice, bob, carol := newUser(t, ms, "alice"), newUser(t, ms, "bob"), newUser(t, ms, "carol")
	ctx := ctxT(t)
	addContacts(t, ctx, "alice", bob, carol)
	if err := alice.CreateGroup(ctx, "team", []string{"bob", "carol"}); err != nil {
		t.Fatal(err)
	}
	texts(t, bob)
	texts(t, carol)
	texts(t, alice)
	if err := bob.Send(ctx, "#team", "hi all"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, alice); !slices.Equal(got, []string{"bob: hi all"}) {
		t.Fatalf("alice got %q", got)
	}
	if got := texts(t, carol); !slices.Equal(got, []string{"bob: hi all"}) {
		t.Fatalf("carol got %q", got)
	}
	if err := alice.RemoveMember(ctx, "team", "carol"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Send(ctx, "#team", "carol is gone"); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, bob); !slices.Equal(got, []string{"alice: carol is gone"}) {
		t.Fatalf("bob got %q", got)
	}
	ev, err := carol.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	for _, e := range ev {
		if e.Kind == client.EventMessage {
			t.Fatalf("carol read %q after her removal", e.Text)
		}
		removed = removed || e.Kind == client.EventRemoved
	}
	if !removed {
		t.Fatalf("carol was not told she was removed: %v", ev)
	}
	if err := carol.Send(ctx, "#team", "still here?"); err == nil {
		t.Fatal("carol could still send to the group")
	}
}
