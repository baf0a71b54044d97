package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/kttest"
)

// TestHostileContactVersionRollback: a verified lookup shows a contact at
// a lower version than the one this client stored (or the same version
// with another binding): a directory that dropped leaves of its map
// between epochs (docs/key-transparency.md §5) can produce such an
// answer under a log consistent with everything the client saw. Before:
// the stored version was never compared and the older binding replaced
// the newer. Now: an alarm, and the answer is not used.
func TestHostileContactVersionRollback(t *testing.T) {
	k := kttest.NewKeys(t, "kt.test/log")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	d := kttest.OpenDirectory(t, t.TempDir(), k)
	if _, err := d.Enqueue("bob", []byte("bob binding 1")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := kt.NewVerifierFromConfig(k.VKey, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.Lookup(ctx, "bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.VerifyLookup("bob", p)
	if err != nil || res.Version != 1 {
		t.Fatalf("lookup: %v", err)
	}

	st, err := state.Create(t.TempDir(), []byte("pass"), &state.Options{Time: 1, MemoryKiB: 64, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	opts := Options{Logger: quiet}
	opts.setDefaults()
	c := newClient(st, opts)
	c.prof = &profile{Handle: "alice"}
	h := sha256.Sum256(res.Value)

	for _, tc := range []struct {
		name string
		prev *Contact
		bad  bool
	}{
		{"first lookup", nil, false},
		{"same version, same binding", &Contact{Version: 1, ValueHash: h}, false},
		{"stored before value hashes", &Contact{Version: 1}, false},
		{"older version", &Contact{Version: 3, ValueHash: sha256.Sum256([]byte("bob binding 3"))}, true},
		{"same version, another binding", &Contact{Version: 1, ValueHash: sha256.Sum256([]byte("other"))}, true},
	} {
		before, _ := c.Alarms()
		err := c.checkContactVersion("bob", tc.prev, res, h)
		after, _ := c.Alarms()
		if tc.bad != errors.Is(err, ErrKTVersionRollback) || tc.bad != (len(after) == len(before)+1) {
			t.Fatalf("%s: %v, %d alarms after %d", tc.name, err, len(after), len(before))
		}
		if tc.bad && (after[len(after)-1].Kind != AlarmKT || len(after[len(after)-1].Evidence) != 1) {
			t.Fatalf("%s: alarm %+v", tc.name, after[len(after)-1])
		}
	}
}
