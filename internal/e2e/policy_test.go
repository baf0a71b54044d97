package e2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
)

// TestHostilePaddingPolicy: a server that announces buckets of its own
// choosing (here eight fine ones below 4 KiB, which tell short messages
// apart by length) is refused by a client that pinned the default, with
// an error naming both policies; a client given the operator's policy
// connects, keeps the pin in its state, and uses it after a restart.
func TestHostilePaddingPolicy(t *testing.T) {
	fine, err := padding.NewPolicy(512, 1024, 1536, 2048, 2560, 3072, 3584, 131072)
	if err != nil {
		t.Fatal(err)
	}
	ms := startMessengerServerWith(t, func(o *server.Options) { o.Policy = fine })
	ctx := ctxT(t)

	// The low-level connection: refused, once (not retried).
	_, err = protocol.Dial(ctx, ms.addr, protocol.Options{MaxAttempts: 3})
	if !errors.Is(err, protocol.ErrPolicy) {
		t.Fatalf("dial with the default pin: %v, want ErrPolicy", err)
	}
	for _, want := range []string{fine.String(), padding.Default.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s: %v", want, err)
		}
	}
	conn, err := protocol.Dial(ctx, ms.addr, protocol.Options{Policy: fine})
	if err != nil {
		t.Fatalf("dial with the operator's policy pinned: %v", err)
	}
	if !conn.Policy().Equal(fine) {
		t.Fatalf("policy %s", conn.Policy())
	}
	conn.Close()

	// The messenger: Init with the default pin fails and leaves no state.
	home := t.TempDir()
	if _, err := client.Init(ctx, ms.addr, ms.pin(), messengerOptions(home)); !errors.Is(err, protocol.ErrPolicy) {
		t.Fatalf("init with the default pin: %v, want ErrPolicy", err)
	}
	if m, _ := filepath.Glob(filepath.Join(home, "state.db")); len(m) != 0 {
		t.Fatal("a refused init left a state behind")
	}
	opts := messengerOptions(home)
	opts.Dial.Policy = fine
	c, err := client.Init(ctx, ms.addr, ms.pin(), opts)
	if err != nil {
		t.Fatalf("init with the operator's policy: %v", err)
	}
	if err := c.Register(ctx, "alice", []byte("password of alice")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Reopened without saying the policy: the pinned one is used.
	c, err = client.Open(messengerOptions(home))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Reachable || st.Policy != fine.String() {
		t.Fatalf("status after reopening: reachable %v, policy %q (health %s)", st.Reachable, st.Policy, st.Health)
	}

	// The default server and the default pin still agree.
	def := startServer(t, nil)
	dial(t, def, protocol.Options{}).Close()
}

// TestPaddingPolicyUpgrade: the default moved from padding.V1 to V2
// (docs/adr/0018-buckets.md) without changing what any state pins. A
// client that pinned V1 keeps V1 when its server restarts announcing V2:
// it is refused, with an error that says how to follow (no release moves
// a pin unasked, so a server cannot move one victim to buckets of its
// choosing); once the user pins the default it talks again, under V2,
// and a new client pins V2 at Init.
func TestPaddingPolicyUpgrade(t *testing.T) {
	ms := startMessengerServerWith(t, func(o *server.Options) { o.Policy = padding.V1 })
	ctx := ctxT(t)
	opts := messengerOptions(t.TempDir())
	opts.Dial.Policy = padding.V1
	c, err := client.Init(ctx, ms.addr, ms.pin(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Register(ctx, "alice", []byte("password of alice")); err != nil {
		t.Fatal(err)
	}

	ms.opts.Policy = padding.V2
	ms.restart()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reachable || st.Policy != padding.V1.String() || !strings.Contains(st.Health, "qpc buckets default") {
		t.Fatalf("a V1 pin against a V2 server: reachable %v, policy %q, health %q", st.Reachable, st.Policy, st.Health)
	}
	if err := c.PinPolicy(ctx, padding.Policy{}); err != nil {
		t.Fatalf("pinning the default: %v", err)
	}
	if st, err = c.Status(ctx); err != nil || !st.Reachable || st.Policy != padding.V2.String() {
		t.Fatalf("after pinning the default: %+v, %v", st, err)
	}

	fresh := newUser(t, ms, "bob")
	if !fresh.Policy().Equal(padding.V2) {
		t.Fatalf("a new client pins %s", fresh.Policy())
	}
}
