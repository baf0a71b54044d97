package pglog_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/quicprochat/qpc/internal/litewitness"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktpg/pglog"
	"github.com/quicprochat/qpc/kt/kttest"
	"github.com/quicprochat/qpc/kt/vrf"
)

// TestDirectoryOnPGLog runs the real KT directory with its epoch log on
// pglog and checks it the way clients and an independent auditor do:
// lookups verify with kt.Verifier (inclusion of each epoch record in the
// signed checkpoint, consistency as the log grows, also across a reopen
// of the directory on the same database), and the checkpoint, tiles and
// bundles served over HTTP check with golang.org/x/mod/sumdb's note and
// tlog alone.
func TestDirectoryOnPGLog(t *testing.T) {
	ctx := context.Background()
	skey, vkey, err := note.GenerateKey(rand.Reader, "pglog.example/kt")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	nv, _ := note.NewVerifier(vkey)
	seed := make([]byte, 32)
	rand.Read(seed)
	vk, err := vrf.NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.DB(t)
	p := pool(t, url)
	dir := t.TempDir()
	openDir := func(p *pgxpool.Pool) *kt.Directory {
		d, err := kt.OpenDirectory(ctx, kt.DirectoryOptions{
			Dir: dir, LogSigner: signer, LogVerifier: nv, VRFKey: vk,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			OpenLog: func(ctx context.Context, c kt.LogConfig) (kt.LogDriver, error) {
				return pglog.Open(ctx, p, c, pglog.Options{})
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	publish := func(d *kt.Directory, label string) {
		t.Helper()
		ch, err := d.Enqueue(label, []byte("key of "+label))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if p := <-ch; p.Err != nil {
			t.Fatal(p.Err)
		}
	}
	d := openDir(p)
	v, err := kt.NewVerifierFromConfig(vkey, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	verify := func(d *kt.Directory, label string) {
		t.Helper()
		res, err := kttest.Lookup(t, d, v, label)
		if err != nil {
			t.Fatalf("lookup of %s does not verify: %v", label, err)
		}
		if res.Version != 1 || !bytes.Equal(res.Value, []byte("key of "+label)) {
			t.Fatalf("lookup of %s: version %d, value %q", label, res.Version, res.Value)
		}
	}
	publish(d, "alice")
	verify(d, "alice")
	publish(d, "bob")
	verify(d, "alice") // consistency from the first checkpoint
	srv := httptest.NewServer(d.Handler("/kt"))
	defer srv.Close()
	independent(t, srv.URL+"/kt", nv)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Another node's directory on the same database (a pool of its
	// own) grows the same log.
	d = openDir(pool(t, url))
	defer d.Close()
	publish(d, "carol")
	verify(d, "carol")
	verify(d, "bob")
}

// independent checks the log served at base with golang.org/x/mod/sumdb
// alone: the checkpoint's signature, that the level-0 tile holds the RFC
// 6962 leaf hashes of the bundle's entries (§2.1), and that they hash to
// the checkpoint's root. The log must fit one tile.
func independent(t *testing.T, base string, nv note.Verifier) {
	t.Helper()
	get := func(p string) []byte {
		t.Helper()
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s, %v", p, resp.Status, err)
		}
		return b
	}
	n, err := note.Open(get("/checkpoint"), note.VerifierList(nv))
	if err != nil {
		t.Fatalf("the served checkpoint's signature: %v", err)
	}
	// C2SP tlog-checkpoint: origin, size, base64 root, then extensions.
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != nv.Name() {
		t.Fatalf("the served checkpoint: %q", n.Text)
	}
	var tree tlog.Tree
	if tree.N, err = strconv.ParseInt(lines[1], 10, 64); err != nil {
		t.Fatalf("the served checkpoint's size: %v", err)
	}
	if root, err := base64.StdEncoding.DecodeString(lines[2]); err != nil || len(root) != len(tree.Hash) {
		t.Fatalf("the served checkpoint's root: %q", lines[2])
	} else {
		copy(tree.Hash[:], root)
	}
	if tree.N == 0 || tree.N >= 256 {
		t.Fatalf("a log of %d entries; the check reads one partial tile", tree.N)
	}
	suffix := fmt.Sprintf(".p/%d", tree.N)
	tile, bundle := get("/tile/0/000"+suffix), get("/tile/entries/000"+suffix)
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, k := range idx {
			out[j] = stored[k]
		}
		return out, nil
	})
	for i := int64(0); len(bundle) > 0; i++ {
		l := int(binary.BigEndian.Uint16(bundle))
		e := bundle[2 : 2+l]
		bundle = bundle[2+l:]
		h := tlog.RecordHash(e)
		if int64(len(tile)) < 32*(i+1) || !bytes.Equal(h[:], tile[32*i:32*i+32]) {
			t.Fatalf("entry %d's hash is not in its tile", i)
		}
		hs, err := tlog.StoredHashes(i, e, hr)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
	}
	root, err := tlog.TreeHash(tree.N, hr)
	if err != nil || root != tree.Hash {
		t.Fatalf("the tiles do not hash to the checkpoint's root (%v)", err)
	}
}

// TestCosignedOnPGLog: under a 2-of-3 witness policy with three real
// witnesses (litewitness, an implementation other than ours), the
// directory on pglog serves only checkpoints the policy accepts; with two
// witnesses down the log integrates the epoch but publishes nothing
// ("publish late": the served checkpoint stays the last cosigned one),
// and with one back the waiting epoch is published, cosigned.
func TestCosignedOnPGLog(t *testing.T) {
	ctx := context.Background()
	ws := make([]*litewitness.Witness, 3)
	for i := range ws {
		ws[i] = litewitness.Start(t, "witness.test/"+string(rune('a'+i)))
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, "pglog.example/witnessed")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	nv, _ := note.NewVerifier(vkey)
	for _, w := range ws {
		w.AddLog(t, signer.Name(), vkey)
	}
	policy, err := kt.ParseWitnessPolicy(litewitness.Policy(2, ws...))
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	vk, err := vrf.NewPrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	p := pool(t, pgtest.DB(t))
	var logs *pglog.Log
	d, err := kt.OpenDirectory(ctx, kt.DirectoryOptions{
		Dir: t.TempDir(), LogSigner: signer, LogVerifier: nv, VRFKey: vk,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		WitnessPolicy: policy, WitnessTimeout: time.Second,
		OpenLog: func(ctx context.Context, c kt.LogConfig) (kt.LogDriver, error) {
			l, err := pglog.Open(ctx, p, c, pglog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			logs = l
			return l, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tick := func(label string, within time.Duration) error {
		if _, err := d.Enqueue(label, []byte("key of "+label)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		_, err := d.Tick(ctx)
		return err
	}
	if err := tick("alice", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	v, err := kt.NewVerifierFromConfig(vkey, d.Config())
	if err != nil {
		t.Fatal(err)
	}
	v.SetWitnessPolicy(policy)
	lookup := func(label string) *kt.LookupResult {
		t.Helper()
		res, err := kttest.Lookup(t, d, v, label)
		if err != nil {
			t.Fatalf("lookup of %s under the policy: %v", label, err)
		}
		return res
	}
	res := lookup("alice")
	if got := policy.Cosigners(res.Checkpoint.Raw); len(got) < 2 {
		t.Fatalf("served checkpoint cosigned by %v, want at least 2", got)
	}
	served, err := d.LogResource("checkpoint")
	if err != nil || !bytes.Equal(served, res.Checkpoint.Raw) {
		t.Fatalf("the tiles' checkpoint differs from the one lookups are answered under (%v)", err)
	}

	ws[1].Stop()
	ws[2].Stop()
	if err := tick("bob", 2500*time.Millisecond); err == nil {
		t.Fatal("an epoch was published with 1 of 3 witnesses up under a 2-of-3 policy")
	}
	// The publisher republishes every second while witnesses cosign, so
	// on a slow run the bytes may have changed before the witnesses
	// stopped: what must hold is the quorum and the size served.
	got, err := d.LogResource("checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	if c := policy.Cosigners(got); len(c) < 2 {
		t.Fatalf("the log published a checkpoint without a quorum (cosigned by %v):\n%s", c, got)
	}
	if lines := strings.SplitN(string(got), "\n", 3); len(lines) < 3 || lines[1] != strconv.FormatUint(res.Checkpoint.Size, 10) {
		t.Fatalf("the log's public checkpoint is not the one served at size %d:\n%s", res.Checkpoint.Size, got)
	}
	if n, err := logs.IntegratedSize(ctx); err != nil || n <= res.Checkpoint.Size {
		t.Fatalf("the waiting epoch is not integrated: size %d, %v", n, err)
	}

	ws[1].Restart(t)
	if err := tick("carol", 30*time.Second); err != nil {
		t.Fatalf("epoch with the quorum back: %v", err)
	}
	if lookup("carol").Version != 1 {
		t.Fatal("carol's key is not published")
	}
	res2 := lookup("bob")
	if res2.Version != 1 || res2.Checkpoint.Size <= res.Checkpoint.Size {
		t.Fatalf("after the quorum came back: version %d at size %d", res2.Version, res2.Checkpoint.Size)
	}
	if got := policy.Cosigners(res2.Checkpoint.Raw); len(got) < 2 {
		t.Fatalf("checkpoint after the quorum came back cosigned by %v", got)
	}
}
