package hostile_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/internal/litewitness"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/wire"
)

// threeWitnesses starts three litewitness witnesses (an implementation
// other than ours, on loopback).
func threeWitnesses(t *testing.T) []*litewitness.Witness {
	t.Helper()
	return []*litewitness.Witness{
		litewitness.Start(t, "witness.test/a"), litewitness.Start(t, "witness.test/b"), litewitness.Start(t, "witness.test/c"),
	}
}

func mustPolicy(t *testing.T, text string) *kt.WitnessPolicy {
	t.Helper()
	p, err := kt.ParseWitnessPolicy(text)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ktAlarm returns the first kt alarm with evidence.
func ktAlarm(t *testing.T, c *client.Client) *client.Alarm {
	t.Helper()
	alarms, err := c.Alarms()
	if err != nil {
		t.Fatal(err)
	}
	for i := range alarms {
		if alarms[i].Kind == client.AlarmKT && len(alarms[i].Evidence) > 0 {
			return &alarms[i]
		}
	}
	return nil
}

// TestHostileSplitViewWitnessed: clients pin a 2-of-3 witness policy.
// The lying server has its honest history cosigned by witnesses A and B
// only, and forks its directory (ForkKT): in the fork a rogue binding of
// bob, shown to alice alone, which it submits to all three witnesses,
// publishing whatever it gets (fail open). A and B refuse the fork (they
// cosigned the other history); C, which never saw the honest one, cosigns
// it: no 2-of-3 quorum can cosign both histories. Bob's client, on the
// honest history, verifies; alice's refuses the fork's checkpoint
// (ErrCosignature) and raises a kt alarm holding it. Before: a client
// pinned to no witness policy accepted the fork (and only gossip with a
// contact on the other history could have shown it).
func TestHostileSplitViewWitnessed(t *testing.T) {
	ws := threeWitnesses(t)
	pinned := mustPolicy(t, litewitness.Policy(2, ws...))
	h := hostile.Start(t, hostile.Options{KT: func(k *server.KTKeys, o *kt.DirectoryOptions) {
		for _, w := range ws {
			w.AddLog(t, k.Signer.Name(), k.VKey)
		}
		// The honest history goes to A and B only; clients pin 2 of 3.
		o.WitnessPolicy = mustPolicy(t, litewitness.Policy(2, ws[0], ws[1]))
		o.WitnessTimeout = 2 * time.Second
	}})
	// h.Pin carries the policy the server collects under; clients pin
	// the 2-of-3 one.
	pin := h.Pin()
	pin.WitnessPolicy = pinned.Text()
	ctx := ctxT(t)
	newUser := func(tag, handle string) *client.Client {
		c, err := client.Init(ctx, h.Addr(tag), pin, h.ClientOptions(t))
		if err != nil {
			t.Fatalf("init %s under the 2-of-3 policy: %v", handle, err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Register(ctx, handle, []byte("password of "+handle)); err != nil {
			t.Fatal(err)
		}
		return c
	}
	bob := newUser("bob", "bob")
	alice := newUser("alice", "alice")

	fork := h.ForkKTWith(t, func(o *kt.DirectoryOptions) {
		o.WitnessPolicy = pinned // the fork asks all three
		o.WitnessTimeout = time.Second
		o.WitnessFailOpen = true // and publishes what it gets
	})
	// The honest log moves on (A and B cosign its next checkpoint)
	// before the fork shows the witnesses its own next one.
	base, _ := fork.Checkpoint()
	deadline := time.Now().Add(10 * time.Second)
	for cp, _ := h.KT().Checkpoint(); cp.Size <= base.Size; cp, _ = h.KT().Checkpoint() {
		if time.Now().After(deadline) {
			t.Fatal("the honest log published nothing after the fork")
		}
		time.Sleep(20 * time.Millisecond)
	}
	publishRogue(t, fork, "bob")
	forkCP, err := fork.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	if got := pinned.Cosigners(forkCP.Raw); len(got) != 1 || got[0] != "witness.test/c" {
		t.Fatalf("the fork's checkpoint is cosigned by %v, want only witness.test/c (A and B cosigned the honest history)", got)
	}
	if honest, _ := h.KT().Checkpoint(); pinned.Satisfied(forkCP.Raw) || !pinned.Satisfied(honest.Raw) {
		t.Fatal("want the honest history, not the fork, to satisfy 2 of 3")
	}
	answerFromKT(t, h, "alice", fork)
	_, err = alice.AddContact(ctx, "bob")
	if !errors.Is(err, kt.ErrCosignature) {
		t.Fatalf("alice shown the fork with bob's rogue binding: %v, want ErrCosignature", err)
	}
	a := ktAlarm(t, alice)
	if a == nil || !bytes.Equal(a.Evidence[0], forkCP.Raw) {
		t.Fatalf("no kt alarm holding the fork's checkpoint: %+v", a)
	}
	if _, err := bob.AddContact(ctx, "alice"); err != nil {
		t.Fatalf("bob on the honest, cosigned history: %v", err)
	}
}

// publishRogue puts a binding of the server's own making (an identity
// key it holds) under label in d (a fork), runs the epoch and returns the
// key.
func publishRogue(t *testing.T, d *kt.Directory, label string) ed25519.PublicKey {
	t.Helper()
	b, key := signedBinding(t, label)
	ch, err := d.Enqueue(label, b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := d.Tick(ctx); err != nil {
		t.Fatalf("fork epoch: %v", err)
	}
	if p := <-ch; p.Err != nil {
		t.Fatal(p.Err)
	}
	return key.Public().(ed25519.PublicKey)
}

// signedBinding is a binding of label to a fresh identity key (also its
// one device key) and intro key, signed by that identity key.
func signedBinding(t *testing.T, label string) (*kt.Binding, ed25519.PrivateKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	intro, err := sealed.GenerateMailboxKey()
	if err != nil {
		t.Fatal(err)
	}
	b := &kt.Binding{Label: label, IdentityKeys: []ed25519.PublicKey{pub}, DeviceKeys: [][]byte{pub}, IntroKey: intro.Public().Bytes()}
	rand.Read(b.IntroSendID[:])
	if err := b.Sign(key); err != nil {
		t.Fatal(err)
	}
	return b, key
}

// TestHostileUncosignedCheckpoint: the server runs a 2-of-3 witness
// policy and its honest checkpoints are cosigned, but in one client's KT
// answers it strips the cosignatures, or forges them (the witnesses'
// names and key hashes, signatures of its own). The client, pinned to
// the policy, refuses the answer (ErrCosignature) and raises a kt alarm
// holding the checkpoint. Before: a client accepted any checkpoint the
// log signed.
func TestHostileUncosignedCheckpoint(t *testing.T) {
	ws := threeWitnesses(t)
	h := hostile.Start(t, hostile.Options{KT: func(k *server.KTKeys, o *kt.DirectoryOptions) {
		for _, w := range ws {
			w.AddLog(t, k.Signer.Name(), k.VKey)
		}
		o.WitnessPolicy = mustPolicy(t, litewitness.Policy(2, ws...))
		o.WitnessTimeout = 2 * time.Second
	}})
	h.NewUser(t, "bob", "bob")
	origin := h.KTKeys.Signer.Name()
	for _, tc := range []struct {
		name   string
		mangle func(raw []byte) []byte
	}{
		{"stripped", func(raw []byte) []byte {
			return keepSigs(raw, func(name, _ string) (string, bool) { return "", name == origin })
		}},
		{"forged", func(raw []byte) []byte {
			return keepSigs(raw, func(name, sig string) (string, bool) {
				if name == origin {
					return "", true
				}
				b, _ := base64.StdEncoding.DecodeString(sig)
				b[len(b)-1] ^= 1 // same key hash and timestamp, a signature that does not verify
				return base64.StdEncoding.EncodeToString(b), true
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := "alice-" + tc.name
			alice := h.NewUser(t, tag, "alice"+tc.name)
			ctx := ctxT(t)
			h.Rewrite(func(x *hostile.Exchange) {
				p, ok := x.Response.(*wire.KTProof)
				if !ok || x.Tag != tag {
					return
				}
				if _, ok := x.Request.(*wire.KTLookup); !ok {
					return
				}
				lp, err := kt.ParseLookupProof(p.Proof)
				if err != nil {
					t.Errorf("parsing the honest answer: %v", err)
					return
				}
				lp.Epoch.Checkpoint = tc.mangle(lp.Epoch.Checkpoint)
				x.Response = &wire.KTProof{Proof: lp.Marshal()}
			})
			_, err := alice.AddContact(ctx, "bob")
			if !errors.Is(err, kt.ErrCosignature) {
				t.Fatalf("lookup answered under a checkpoint with %s cosignatures: %v, want ErrCosignature", tc.name, err)
			}
			if ktAlarm(t, alice) == nil {
				t.Fatal("no kt alarm")
			}
		})
	}
}

// keepSigs rewrites the signature lines of a signed note: f gets each
// line's key name and base64 signature and returns a replacement
// signature ("" keeps it) and whether to keep the line.
func keepSigs(raw []byte, f func(name, sig string) (string, bool)) []byte {
	text, sigs, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return raw
	}
	var out bytes.Buffer
	out.Write(text)
	out.WriteString("\n\n")
	for _, line := range strings.SplitAfter(string(sigs), "\n") {
		fields := strings.Fields(strings.TrimPrefix(line, "— "))
		if len(fields) != 2 {
			continue
		}
		repl, keep := f(fields[0], fields[1])
		if !keep {
			continue
		}
		if repl == "" {
			repl = fields[1]
		}
		out.WriteString("— " + fields[0] + " " + repl + "\n")
	}
	return out.Bytes()
}
