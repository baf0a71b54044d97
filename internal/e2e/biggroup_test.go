package e2e

import (
	"fmt"
	"slices"
	"testing"

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
	// ctxT's 20 s start now: nine registrations (each uploading its
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
	for _, u := range users[1:] {
		if got := texts(t, u); !slices.Equal(got, []string{"member0: hello crowd"}) {
			t.Fatalf("%s got %q", u.Handle(), got)
		}
	}
	if err := users[n-1].Send(ctx, "#crowd", "and back"); err != nil {
		t.Fatal(err)
	}
	for _, u := range users[:n-1] {
		if got := texts(t, u); !slices.Equal(got, []string{fmt.Sprintf("member%d: and back", n-1)}) {
			t.Fatalf("%s got %q", u.Handle(), got)
		}
	}
}
