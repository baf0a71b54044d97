package pgtree_test

import (
	"testing"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pgtree"
	"github.com/quicprochat/qpc/kt/kttest"
)

// TestDirectoryOnPostgres runs the real directory on the PostgreSQL tree
// store: labels published through epochs are looked up with proofs a
// client's verifier accepts, also after the directory is reopened on a
// new store of the same database (as another node would open it).
func TestDirectoryOnPostgres(t *testing.T) {
	url, dir := pgtest.DB(t), t.TempDir()
	k := kttest.NewKeys(t, "kt.test/pg")
	openDir := func() *kt.Directory {
		d, err := kt.OpenDirectory(bg, kt.DirectoryOptions{
			Dir: dir, LogSigner: k.Signer, LogVerifier: k.Verifier, VRFKey: k.VRF,
			Logger: quiet, Tree: open(t, url, pgtree.Options{Logger: quiet}),
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	publish := func(d *kt.Directory, label string, value string) {
		t.Helper()
		ch, err := d.Enqueue(label, []byte(value))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Tick(bg); err != nil {
			t.Fatal(err)
		}
		if p := <-ch; p.Err != nil {
			t.Fatal(p.Err)
		}
	}
	check := func(d *kt.Directory, label, want string) {
		t.Helper()
		v, err := kt.NewVerifierFromConfig(k.VKey, d.Config())
		if err != nil {
			t.Fatal(err)
		}
		r, err := kttest.Lookup(t, d, v, label)
		if err != nil {
			t.Fatalf("VerifyLookup(%s): %v", label, err)
		}
		if string(r.Value) != want {
			t.Fatalf("lookup of %s = %q, want %q", label, r.Value, want)
		}
	}
	d := openDir()
	publish(d, "alice", "alice key 1")
	publish(d, "bob", "bob key 1")
	publish(d, "alice", "alice key 2")
	check(d, "alice", "alice key 2")
	check(d, "bob", "bob key 1")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openDir()
	defer d.Close()
	if v, err := d.LatestVersion("alice"); err != nil || v != 2 {
		t.Fatalf("LatestVersion(alice) after reopening = %d, %v; want 2", v, err)
	}
	check(d, "alice", "alice key 2")
	publish(d, "carol", "carol key 1")
	check(d, "carol", "carol key 1")
	check(d, "bob", "bob key 1")
}
