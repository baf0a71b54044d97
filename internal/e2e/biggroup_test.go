package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/server"
)

// TestMessengerBigGroup: a group whose Welcome (ratchet tree with X-Wing
// keys) is larger than one envelope: the Welcome goes out in chunks, each
// its own envelope and token, and every member joins and reads.
func TestMessengerBigGroup(t *testing.T) {
	// Every test user comes from 127.0.0.1 with a few connections each.
	ms := startMessengerServerWith(t, func(o *server.Options) {
		o.MaxConnsPerAddr, o.MaxStreamsPerAddr, o.MaxStreamsTotal = 1000, 1<<20, 1<<20
	})
	const n = 9
	var users []*client.Client
	var handles []string
	for i := range n {
		h := fmt.Sprintf("member%d", i)
		users = append(users, newUser(t, ms, h))
		handles = append(handles, h)
	}
	// ctxT's deadline starts now: nine registrations (each uploading its
	// one-time KeyPackages) can take most of that under -race.
	ctx := ctxT(t)
	addContacts(t, ctx, handles[0], users[1:]...)
	if err := users[0].CreateGroup(ctx, "crowd", handles[1:]); err != nil {
		t.Fatal(err)
	}
	for _, u := range users[1:] {
		texts(t, u)
	}
	texts(t, users[0])
	if err := users[0].Send(ctx, "#crowd", "hello crowd"); err != nil {
		t.Fatal(err)
	}
	awaitGroupText(t, users[0], users[1:], "member0: hello crowd")
	if err := users[n-1].Send(ctx, "#crowd", "and back"); err != nil {
		t.Fatal(err)
	}
	awaitGroupText(t, users[n-1], users[:n-1], fmt.Sprintf("member%d: and back", n-1))
}

// awaitGroupText syncs every member in rounds, the sender too (its flushes
// carry the text to members whose mailbox it learns on the way), until each
// reader has shown want exactly once and nothing else. A joiner checks the
// group's members lazily (ADR 0041): its text waits in its outbox for a
// member whose mailbox it does not know yet, until that member's
// announcement arrives or one flush's lookup finds it, so on a loaded
// machine a text can need more than one round to reach everyone.
func awaitGroupText(t *testing.T, sender *client.Client, readers []*client.Client, want string) {
	t.Helper()
	got := map[string][]string{}
	deadline := time.Now().Add(60 * time.Second)
	for {
		done := true
		for _, u := range readers {
			got[u.Handle()] = append(got[u.Handle()], texts(t, u)...)
			if !slices.Equal(got[u.Handle()], []string{want}) {
				done = false
			}
		}
		if done {
			return
		}
		for h, g := range got {
			if len(g) > 1 || len(g) == 1 && g[0] != want {
				t.Fatalf("%s got %q, want only %q", h, g, want)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: %v, want %q for every member", got, want)
		}
		texts(t, sender)
	}
}
