package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/client/backup"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"golang.org/x/mod/sumdb/note"
)

var cheapKDF = &state.Options{Time: 1, MemoryKiB: 64, Threads: 1}

// newFixture creates an empty local state in a fresh home dir/name and
// a profile of alice's for it: a KT pin and an identity key of its own,
// registered, nothing published (so no server is needed). The caller
// stores the profile.
func newFixture(t *testing.T, name string) (home string, st *state.Store, p *profile) {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-test")
	if err != nil {
		t.Fatal(err)
	}
	vrfKey, _, _ := ed25519.GenerateKey(rand.Reader)
	_, idKey, _ := ed25519.GenerateKey(rand.Reader)
	home = filepath.Join(t.TempDir(), name)
	if st, err = state.Create(home, []byte("local"), cheapKDF); err != nil {
		t.Fatal(err)
	}
	return home, st, &profile{Server: "qpc://pin@127.0.0.1:4433", KTVKey: vkey, KTVRF: vrfKey, Handle: "alice", IdentityKey: idKey}
}

// backupFixture makes a local state with a profile (registered, not yet
// published, so a restore needs no server), a session, a wallet and an
// entry in every bucket a backup carries.
func backupFixture(t *testing.T) *Client {
	t.Helper()
	home, st, p := newFixture(t, "orig")
	p.KTConfig = [32]byte{7}
	p.MLSSigPub, p.MLSSigPriv = []byte("sigpub"), []byte("sigpriv")
	p.KeyPackage, p.Device = []byte("kp"), [16]byte{1, 2, 3}
	p.Intro = &mailboxRecord{OwnerKey: p.IdentityKey, Sealing: []byte("intro sealing")}
	p.Session, p.RecvCursor = &protocol.Session{}, 3
	var err error
	err = st.Update(func(tx *state.Tx) error {
		raw, _ := json.Marshal(p)
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(tx.Put(bucketMeta, keyProfile, raw))
		must(tx.Put(bucketMeta, keyWallet, []byte("tokens")))
		must(tx.Put(bucketContacts, []byte("bob"), []byte(`{"Handle":"bob"}`)))
		must(tx.Put(bucketConvs, []byte{1, 2}, []byte(`{"ID":"AQI=","Group":"bWxz","Chain":[{"Epoch":3,"Slot":1,"SentFrom":0,"SentTo":1,"HasOut":true}],"StateNext":1,"SentNext":1}`)))
		must(tx.Put(bucketConvStates, []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 1}, []byte("epoch 3")))
		must(tx.Put(bucketConvSent, []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0}, []byte("sent in epoch 3")))
		must(tx.Put(bucketConvOut, []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 1}, []byte("the commit out of epoch 3")))
		must(tx.Put(bucketConvGroup, []byte{1, 2}, []byte("group base")))
		must(tx.Put(bucketConvRatchets, []byte{1, 2}, []byte("group ratchets")))
		must(tx.Put(bucketSeen, []byte("msg"), []byte{1}))
		must(tx.Put(bucketSettings, []byte("receipts:bob"), []byte(`{"delivery":true}`)))
		must(tx.Put(bucketUnread, []byte{1, 2}, []byte(`[]`)))
		must(tx.Put(bucketDelivery, []byte("content-id"), []byte(`"read"`)))
		must(tx.Put(bucketChunks, []byte("chunk-set"), []byte(`{}`)))
		must(tx.Put(bucketChunkSets, []byte("chunk-set"), []byte(`{}`)))
		must(tx.Put(bucketChunkParts, []byte("chunk-set\x00\x00"), []byte("chunk")))
		must(tx.Put(bucketReadMarks, []byte{1, 2}, []byte(`{"History":3}`)))
		must(tx.Put(bucketReadMarks, readBaselineKey, []byte(`{"History":1}`)))
		must(tx.Put(bucketOneTimeKPs, []byte("kp-ref"), []byte(`{"KeyPackage":"a3A="}`)))
		must(tx.Put(bucketInvites, []byte("1a2b"), []byte(`{"ID":"1a2b","From":"eve"}`)))
		_, err := tx.Append(bucketReceipts, []byte("r1"))
		must(err)
		must(tx.Put(bucketOutboxTokens, seqKey(1), []byte("token")))
		for i := 0; i < 4; i++ {
			_, err := tx.Append(bucketHistory, []byte{'h', byte('0' + i)})
			must(err)
		}
		// An outbox with a hole: entry 1 was sent.
		_, err = tx.Append(bucketOutbox, []byte("o1"))
		must(err)
		_, err = tx.Append(bucketOutbox, []byte("o2"))
		must(err)
		must(tx.DeleteSeq(bucketOutbox, 1))
		_, err = tx.Append(bucketAlarms, []byte(`{"Kind":"kt"}`))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	c, err := Open(Options{Home: home, Passphrase: []byte("local")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dump lists a state's entries bucket by bucket, as strings.
func dump(t *testing.T, c *Client) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := c.store.View(func(tx *state.Tx) error {
		for _, b := range append(backupKeyed, bucketOutboxTokens) {
			tx.ForEach(b, func(k, v []byte) error { out[b] = append(out[b], string(k)+"="+string(v)); return nil })
		}
		for _, b := range backupSequenced {
			tx.ForEachSeq(b, 0, func(_ uint64, v []byte) error { out[b] = append(out[b], string(v)); return nil })
		}
		if w, err := tx.Get(bucketMeta, keyWallet); err == nil {
			out["wallet"] = []string{string(w)}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func prompter(pass ...string) (func(int) ([]byte, error), *int) {
	n := new(int)
	return func(attempt int) ([]byte, error) {
		*n = attempt
		if attempt > len(pass) {
			return []byte(pass[len(pass)-1]), nil
		}
		return []byte(pass[attempt-1]), nil
	}, n
}

func TestBackupRoundTrip(t *testing.T) {
	c := backupFixture(t)
	orig := dump(t, c)
	for _, withHistory := range []bool{true, false} {
		var buf bytes.Buffer
		if err := c.ExportBackup(&buf, []byte("backup pass"), withHistory); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(buf.Bytes(), []byte("alice")) || bytes.Contains(buf.Bytes(), []byte("intro sealing")) {
			t.Fatal("the backup holds clear text")
		}
		home := filepath.Join(t.TempDir(), "restored")
		prompt, tries := prompter("wrong", "backup pass")
		r, err := RestoreBackup(context.Background(), bytes.NewReader(buf.Bytes()), prompt, Options{Home: home, Passphrase: []byte("new local"), KDF: cheapKDF})
		if err != nil {
			t.Fatal(err)
		}
		if *tries != 2 {
			t.Fatalf("%d prompts, want 2", *tries)
		}
		got := dump(t, r)
		r.Close()
		for _, b := range append(backupKeyed, bucketOutbox, bucketAlarms, bucketReceipts) {
			if len(orig[b]) == 0 {
				t.Fatalf("the fixture has nothing in %s", b)
			}
			if b == bucketReadMarks && !withHistory {
				// Without the history they start afresh: all of it (none) is read.
				if want := []string{`baseline={"History":0}`}; !equalStrings(got[b], want) {
					t.Errorf("%s without the history: %q, want %q", b, got[b], want)
				}
				continue
			}
			if !equalStrings(got[b], orig[b]) {
				t.Errorf("%s: %q, want %q", b, got[b], orig[b])
			}
		}
		if withHistory != equalStrings(got[bucketHistory], orig[bucketHistory]) || !withHistory && len(got[bucketHistory]) != 0 {
			t.Errorf("history (included %v): %q", withHistory, got[bucketHistory])
		}
		if got["wallet"] != nil || got[bucketOutboxTokens] != nil {
			t.Errorf("tokens were restored: %q %q", got["wallet"], got[bucketOutboxTokens])
		}
		// The state opens with the new local passphrase, without a session.
		r, err = Open(Options{Home: home, Passphrase: []byte("new local")})
		if err != nil {
			t.Fatal(err)
		}
		p := r.prof
		if p.Handle != "alice" || !p.IdentityKey.Equal(c.prof.IdentityKey) || p.Device != c.prof.Device ||
			p.Server != c.prof.Server || string(p.MLSSigPriv) != "sigpriv" || p.Intro == nil || p.Session != nil {
			t.Errorf("profile: %+v", p)
		}
		if want := map[bool]uint64{true: 3, false: 0}[withHistory]; p.RecvCursor != want {
			t.Errorf("recv cursor %d, want %d", p.RecvCursor, want)
		}
		r.Close()
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		if m[s]--; m[s] < 0 {
			return false
		}
	}
	return true
}

func TestBackupRestoreFailures(t *testing.T) {
	c := backupFixture(t)
	var buf bytes.Buffer
	if err := c.ExportBackup(&buf, []byte("backup pass"), false); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	tampered := bytes.Clone(good)
	tampered[len(tampered)-40] ^= 1
	wrong, _ := prompter("nope")
	right, _ := prompter("backup pass")
	for name, tc := range map[string]struct {
		data   []byte
		prompt func(int) ([]byte, error)
		want   error
	}{
		"wrong passphrase": {good, wrong, backup.ErrTooManyTries},
		"truncated":        {good[:len(good)/2], right, backup.ErrCorrupt},
		"tampered":         {tampered, right, backup.ErrCorrupt},
		"empty":            {nil, right, backup.ErrCorrupt},
	} {
		home := filepath.Join(t.TempDir(), "h")
		_, err := RestoreBackup(context.Background(), bytes.NewReader(tc.data), tc.prompt, Options{Home: home, Passphrase: []byte("x"), KDF: cheapKDF})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: something was left in the home: %v", name, err)
		}
	}
	// An existing state is never overwritten, and the prompt is not asked.
	asked := false
	_, err := RestoreBackup(context.Background(), bytes.NewReader(good), func(int) ([]byte, error) { asked = true; return []byte("backup pass"), nil },
		Options{Home: c.Home(), Passphrase: []byte("x")})
	if !errors.Is(err, state.ErrExists) || asked {
		t.Fatalf("restore over a state: %v (asked %v)", err, asked)
	}
	// A document of a newer version is refused.
	payload, _ := json.Marshal(map[string]any{"format": backupFormat, "version": 99})
	buf.Reset()
	if err := backup.Export(&buf, payload, []byte("p"), nil); err != nil {
		t.Fatal(err)
	}
	p, _ := prompter("p")
	home := filepath.Join(t.TempDir(), "h")
	if _, err := RestoreBackup(context.Background(), bytes.NewReader(buf.Bytes()), p, Options{Home: home, Passphrase: []byte("x"), KDF: cheapKDF}); !errors.Is(err, ErrBackupVersion) {
		t.Fatalf("newer version: %v", err)
	}
	if err := c.ExportBackup(&buf, nil, false); err == nil {
		t.Fatal("empty passphrase accepted")
	}
}

func TestContactString(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	s := FormatContactString("bob", pub)
	h, fp, err := ParseContactString(s)
	if err != nil || h != "bob" || fp != Fingerprint(pub) || len(fp) != 32 || !IsContactString(s) {
		t.Fatalf("%q: %q %q %v", s, h, fp, err)
	}
	for _, bad := range []string{"bob", "qpc:contact:bob", "qpc:contact:bob#12", "qpc:contact:B@d#" + fp, "qpc:contact:bob#" + fp + "zz"} {
		if _, _, err := ParseContactString(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
