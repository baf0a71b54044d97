package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ktDir runs a key-transparency directory for a test server: keys in dir
// (server.LoadOrCreateKTKeys, as qpc-server does), epochs every 200 ms.
type ktDir struct {
	t    *testing.T
	dir  string
	keys *server.KTKeys
	d    *kt.Directory
}

const ktEpoch = 200 * time.Millisecond

func openKT(t *testing.T, dir string) *ktDir {
	t.Helper()
	keys, err := server.LoadOrCreateKTKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k := &ktDir{t: t, dir: dir, keys: keys}
	k.open()
	t.Cleanup(k.close)
	return k
}

func (k *ktDir) open() {
	k.t.Helper()
	d, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: k.dir, LogSigner: k.keys.Signer, LogVerifier: k.keys.Verifier, VRFKey: k.keys.VRF,
		EpochInterval: ktEpoch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		k.t.Fatal(err)
	}
	d.Start()
	k.d = d
}

func (k *ktDir) close() {
	if k.d != nil {
		k.d.Close()
		k.d = nil
	}
}

// verifier is a client's verifier pinned to this directory.
func (k *ktDir) verifier(t *testing.T) *kt.Verifier {
	t.Helper()
	v, err := kt.NewVerifierFromConfig(k.keys.VKey, k.d.Config())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// startKTServer runs a secure server with a KT directory in its data dir.
func startKTServer(t *testing.T) (*testServer, *ktDir) {
	t.Helper()
	dir := t.TempDir()
	k := openKT(t, dir)
	ts := startSecureServer(t, func(o *server.Options) { o.KT = k.d })
	return ts, k
}

// identity is an account's identity key and its current binding.
type identity struct {
	priv ed25519.PrivateKey
}

func newIdentity() identity {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	return identity{priv: priv}
}

func (id identity) binding(t *testing.T, label string, intro byte, tombstone bool) *kt.Binding {
	t.Helper()
	b := &kt.Binding{
		Label:        label,
		IdentityKeys: []ed25519.PublicKey{id.priv.Public().(ed25519.PublicKey)},
		IntroKey:     make([]byte, 1216), // an X-Wing public key's size
		TokenKeys:    []kt.TokenKeyCommitment{{Epoch: 1}},
		Tombstone:    tombstone,
	}
	b.IntroSendID[0] = intro
	if err := b.Sign(id.priv); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKTPublishLookupMonitor(t *testing.T) {
	ts, k := startKTServer(t)
	acct := dial(t, ts, protocol.Options{})
	anon := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	sess := registered(t, acct, "alice")
	alice := newIdentity()
	owner := protocol.NewKTOwner("alice")
	vAlice, vBob := k.verifier(t), k.verifier(t)

	// Never published: a verified absence.
	res, b, err := anon.KTLookup(ctx, vBob, "alice")
	if err != nil || res.Version != 0 || b != nil {
		t.Fatalf("lookup before publishing: %v %+v", err, res)
	}
	ver, _, err := acct.KTPublish(ctx, sess, owner, alice.binding(t, "alice", 1, false))
	if err != nil || ver != 1 {
		t.Fatalf("publish: %v, version %d", err, ver)
	}
	res, b, err = anon.KTLookup(ctx, vBob, "alice")
	if err != nil || res.Version != 1 || b.IntroSendID[0] != 1 {
		t.Fatalf("lookup: %v", err)
	}
	// A key change is a new version.
	alice2 := newIdentity()
	if ver, _, err = acct.KTPublish(ctx, sess, owner, alice2.binding(t, "alice", 2, false)); err != nil || ver != 2 {
		t.Fatalf("second publish: %v, version %d", err, ver)
	}
	res, b, err = anon.KTLookup(ctx, vBob, "alice")
	if err != nil || res.Version != 2 || !b.IdentityKeys[0].Equal(alice2.priv.Public()) {
		t.Fatalf("lookup after key change: %v", err)
	}
	if alarms, err := acct.KTMonitor(ctx, vAlice, sess, owner); err != nil || len(alarms) != 0 {
		t.Fatalf("monitor: %v %v", err, alarms)
	}
	// The verifier advanced with each answer; a checkpoint refresh is consistent.
	if _, err := anon.KTCheckpoint(ctx, vBob); err != nil {
		t.Fatal(err)
	}

	// Only the account itself may publish under its name, and only a
	// binding that verifies.
	bobSess := registered(t, acct, "bob")
	if _, _, err := acct.KTPublish(ctx, bobSess, protocol.NewKTOwner("alice"), newIdentity().binding(t, "alice", 9, false)); !isCode(err, wire.CodeAuth) {
		t.Fatalf("publishing under another's name: %v", err)
	}
	forged := newIdentity().binding(t, "bob", 9, false)
	forged.IntroSendID[0]++
	if _, _, err := acct.KTPublish(ctx, bobSess, protocol.NewKTOwner("bob"), forged); !isCode(err, wire.CodeProtocol) {
		t.Fatalf("publishing a binding that does not verify: %v", err)
	}

	// Deleting the account: a tombstone version first.
	if err := acct.KTDeleteAccount(ctx, sess, owner, alice2.binding(t, "alice", 1, false)); err == nil {
		t.Fatal("deleted with a binding that is not a tombstone")
	}
	if err := acct.KTDeleteAccount(ctx, sess, owner, alice2.binding(t, "alice", 0, true)); err != nil {
		t.Fatal(err)
	}
	res, b, err = anon.KTLookup(ctx, vBob, "alice")
	if err != nil || res.Version != 3 || !b.Tombstone {
		t.Fatalf("lookup after deletion: %v", err)
	}
}

// TestKTAttackRogueKey: the server publishes a key alice never published
// and shows it to bob. Bob's lookup verifies (the server can always sign a
// binding with a key of its own), but alice's monitoring raises an alarm
// whose evidence verifies for anyone.
func TestKTAttackRogueKey(t *testing.T) {
	ts, k := startKTServer(t)
	acct := dial(t, ts, protocol.Options{})
	anon := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	sess := registered(t, acct, "alice")
	owner := protocol.NewKTOwner("alice")
	if _, _, err := acct.KTPublish(ctx, sess, owner, newIdentity().binding(t, "alice", 1, false)); err != nil {
		t.Fatal(err)
	}
	vAlice, vBob := k.verifier(t), k.verifier(t)
	if alarms, err := acct.KTMonitor(ctx, vAlice, sess, owner); err != nil || len(alarms) != 0 {
		t.Fatalf("monitor before the attack: %v %v", err, alarms)
	}

	// The attack, from inside the server.
	mallory := newIdentity()
	if _, err := k.d.Publish(ctx, "alice", mallory.binding(t, "alice", 66, false).Marshal()); err != nil {
		t.Fatal(err)
	}
	_, b, err := anon.KTLookup(ctx, vBob, "alice")
	if err != nil || !b.IdentityKeys[0].Equal(mallory.priv.Public()) {
		t.Fatalf("bob did not get the rogue key: %v", err)
	}
	alarms, err := acct.KTMonitor(ctx, vAlice, sess, owner)
	if err != nil {
		t.Fatal(err)
	}
	if len(alarms) != 1 || alarms[0].Version != 2 {
		t.Fatalf("alarms: %v", alarms)
	}
	rogue, err := kt.ParseBinding(alarms[0].Value)
	if err != nil || !rogue.IdentityKeys[0].Equal(mallory.priv.Public()) {
		t.Fatal("the alarm does not carry the rogue binding")
	}
	// The evidence convinces a third party holding only the pinned keys.
	third := k.verifier(t)
	p, err := kt.ParseHistoryProof(alarms[0].Proof)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := third.VerifyHistory("alice", p.Since, p); err != nil || h.Latest() != 2 {
		t.Fatalf("evidence: %v", err)
	}
	if err := third.CompareCheckpoint(alarms[0].Checkpoint, nil); err != nil {
		t.Fatalf("evidence checkpoint: %v", err)
	}
}

// TestKTAttackSplitView: a malicious operator runs two forks of its log
// under one key and shows alice and bob different checkpoints of the same
// size; their verifiers expose it when they compare (checkpoint gossip).
func TestKTAttackSplitView(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	ka := openKT(t, dirA)
	// The fork shares the keys.
	for _, f := range []string{server.KTNoteKeyFile, server.KTVRFKeyFile} {
		data, err := os.ReadFile(filepath.Join(dirA, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, f), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kb := openKT(t, dirB)
	ka.d.Close()
	kb.d.Close()
	// Stop both epoch loops, then grow them by the same number of epochs
	// with different contents.
	ka.d, kb.d = nil, nil
	a := reopenManual(t, ka)
	b := reopenManual(t, kb)
	ctx := ctxT(t)
	pa, _ := a.Enqueue("alice", newIdentity().binding(t, "alice", 1, false).Marshal())
	pb, _ := b.Enqueue("alice", newIdentity().binding(t, "alice", 2, false).Marshal())
	for _, d := range []*kt.Directory{a, b} {
		if _, err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	<-pa
	<-pb
	// The epoch loops ran for a moment before they were stopped, so the
	// forks may have logged different numbers of epochs: even them up.
	for range 10 {
		ca, err := a.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		cb, err := b.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		if ca.Size == cb.Size {
			break
		}
		behind := a
		if cb.Size < ca.Size {
			behind = b
		}
		if _, err := behind.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tsA := startSecureServer(t, func(o *server.Options) { o.KT = a })
	tsB := startSecureServer(t, func(o *server.Options) { o.KT = b })
	vAlice, err := kt.NewVerifierFromConfig(ka.keys.VKey, a.Config())
	if err != nil {
		t.Fatal(err)
	}
	vBob, _ := kt.NewVerifierFromConfig(ka.keys.VKey, b.Config())
	ra, _, err := dial(t, tsA, protocol.Options{}).KTLookup(ctx, vAlice, "alice")
	if err != nil {
		t.Fatal(err)
	}
	rb, _, err := dial(t, tsB, protocol.Options{}).KTLookup(ctx, vBob, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ra.Checkpoint.Size != rb.Checkpoint.Size {
		t.Fatalf("forks of different sizes: %d, %d", ra.Checkpoint.Size, rb.Checkpoint.Size)
	}
	var sv *kt.SplitViewError
	if err := vAlice.CompareCheckpoint(rb.Checkpoint.Raw, nil); !errors.As(err, &sv) {
		t.Fatalf("alice compares bob's checkpoint: %v", err)
	}
	if err := vBob.CompareCheckpoint(ra.Checkpoint.Raw, nil); !errors.As(err, &sv) {
		t.Fatalf("bob compares alice's checkpoint: %v", err)
	}
	// And once alice has seen fork A, fork B's answers are refused.
	if _, _, err := dial(t, tsB, protocol.Options{}).KTLookup(ctx, vAlice, "alice"); !errors.Is(err, kt.ErrInconsistent) {
		t.Fatalf("alice on fork B: %v", err)
	}
}

// reopenManual opens the directory without its epoch loop: the test drives epochs.
func reopenManual(t *testing.T, k *ktDir) *kt.Directory {
	t.Helper()
	d, err := kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: k.dir, LogSigner: k.keys.Signer, LogVerifier: k.keys.Verifier, VRFKey: k.keys.VRF,
		EpochInterval: ktEpoch, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestKTAttackRollback: the server is restored from an old backup of its
// KT state; a client that saw a newer checkpoint refuses its answers.
func TestKTAttackRollback(t *testing.T) {
	ts, k := startKTServer(t)
	acct := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	sess := registered(t, acct, "alice")
	owner := protocol.NewKTOwner("alice")
	v := k.verifier(t)
	if _, _, err := acct.KTPublish(ctx, sess, owner, newIdentity().binding(t, "alice", 1, false)); err != nil {
		t.Fatal(err)
	}
	// Back up the KT state (closed, so the copy is whole).
	k.close()
	backup := t.TempDir()
	copyKT(t, k.dir, backup)
	k.open()
	ts.opts.KT = k.d
	ts.restart()
	acct = dial(t, ts, protocol.Options{})
	if _, _, err := acct.KTPublish(ctx, sess, owner, newIdentity().binding(t, "alice", 2, false)); err != nil {
		t.Fatal(err)
	}
	if res, _, err := acct.KTLookup(ctx, v, "alice"); err != nil || res.Version != 2 {
		t.Fatalf("lookup: %v", err)
	}
	// Roll back.
	k.close()
	for _, f := range []string{kt.DBFile, kt.LogDir} {
		os.RemoveAll(filepath.Join(k.dir, f))
	}
	copyKT(t, backup, k.dir)
	k.open()
	ts.opts.KT = k.d
	ts.restart()
	acct = dial(t, ts, protocol.Options{})
	// Let the rolled-back log grow past nothing: it stays behind v's
	// checkpoint for a while, and any answer meanwhile is refused.
	if _, _, err := acct.KTLookup(ctx, v, "alice"); !errors.Is(err, kt.ErrRollback) && !errors.Is(err, kt.ErrInconsistent) {
		t.Fatalf("lookup on the rolled-back log: %v", err)
	}
	// A fresh client, knowing nothing, accepts it: rollback is caught only
	// by clients that remember (docs/key-transparency.md §6).
	if _, _, err := acct.KTLookup(ctx, k.verifier(t), "alice"); err != nil {
		t.Fatal(err)
	}
}

func copyKT(t *testing.T, from, to string) {
	t.Helper()
	for _, f := range []string{kt.DBFile, kt.LogDir} {
		if out, err := exec.Command("cp", "-a", filepath.Join(from, f), to).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
	}
}

// TestKTTilesOverQUICAndHTTP: the QUIC KTTile request serves the same
// bytes as the HTTP listener, and they check with sumdb/note and tlog
// alone.
func TestKTTilesOverQUICAndHTTP(t *testing.T) {
	ts, k := startKTServer(t)
	acct := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	sess := registered(t, acct, "alice")
	if _, _, err := acct.KTPublish(ctx, sess, protocol.NewKTOwner("alice"), newIdentity().binding(t, "alice", 1, false)); err != nil {
		t.Fatal(err)
	}
	var hs *httptest.Server
	httpGet := func(p string) []byte {
		resp, err := http.Get(hs.URL + "/kt/" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	// Stop epochs so the log holds still while both are read.
	k.close()
	k.d = reopenManual(t, k)
	ts.opts.KT = k.d
	ts.restart()
	acct = dial(t, ts, protocol.Options{})
	hs = httptest.NewServer(server.KTHandler(k.d, "/kt"))
	defer hs.Close()

	cpRaw, err := acct.KTTile(ctx, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cpRaw, httpGet("checkpoint")) {
		t.Fatal("checkpoint over QUIC differs from HTTP")
	}
	n, err := note.Open(cpRaw, note.VerifierList(k.keys.Verifier))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(n.Text, "\n")
	size, _ := strconv.Atoi(lines[1])
	tilePath := fmt.Sprintf("tile/0/000.p/%d", size)
	tile, err := acct.KTTile(ctx, tilePath)
	if err != nil || !bytes.Equal(tile, httpGet(tilePath)) || len(tile) != 32*size {
		t.Fatalf("level-0 tile over QUIC: %v", err)
	}
	hashes := make([]tlog.Hash, size)
	for i := range hashes {
		copy(hashes[i][:], tile[32*i:])
	}
	root := treeHash(hashes)
	if base64.StdEncoding.EncodeToString(root[:]) != lines[2] {
		t.Fatal("tile hashes do not give the checkpoint's root")
	}
	if _, err := acct.KTTile(ctx, ".state/treeState"); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("state file over QUIC: %v", err)
	}
}

// treeHash is the RFC 6962 root of leaf hashes, with tlog's node hash.
func treeHash(h []tlog.Hash) tlog.Hash {
	if len(h) == 1 {
		return h[0]
	}
	k := 1
	for k*2 < len(h) {
		k *= 2
	}
	return tlog.NodeHash(treeHash(h[:k]), treeHash(h[k:]))
}

// TestKTTokenKeys: the server commits each token epoch's public key in
// the log; a client checks the key it was given against it, and a key of
// the server's own for this client is refused.
func TestKTTokenKeys(t *testing.T) {
	ts, k := startKTServer(t)
	pubCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		server.PublishTokenKeys(pubCtx, k.d, ts.issuer, tokenEpoch, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() { cancel(); <-done }()
	c := dial(t, ts, protocol.Options{})
	ctx := ctxT(t)
	v := k.verifier(t)
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cur := keys.Keys[keys.Current]
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = c.KTTokenKey(ctx, v, cur)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("current token key: %v", err)
	}
	// The next epoch's key is committed too.
	next, err := ts.issuer.PublicKey(keys.Current + 1)
	if err != nil {
		t.Fatal(err)
	}
	for {
		err = c.KTTokenKey(ctx, v, next)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("next token key: %v", err)
	}
	// A per-user key: another issuer's key for the same epoch.
	secret := make([]byte, tokens.MasterSecretSize)
	rand.Read(secret)
	other, _ := tokens.NewIssuer(secret, tokens.WithEpochLength(tokenEpoch), tokens.WithClock(ts.clock.now))
	tagged, err := other.PublicKey(keys.Current)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.KTTokenKey(ctx, v, tagged); !errors.Is(err, protocol.ErrTokenKeyMismatch) {
		t.Fatalf("a key of the server's own: %v", err)
	}
}
