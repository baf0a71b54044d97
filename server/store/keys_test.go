package store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The key-slot file: crash safety, lost keys, the upgrade from plaintext.

// keyOf returns the key of a stored message, read from the store's copy
// of the key-slot file.
func keyOf(t *testing.T, s *Bolt, m Mailbox, seq uint64) [keySize]byte {
	t.Helper()
	var key [keySize]byte
	if err := s.db.View(func(tx *bolt.Tx) error {
		_, _, slot, _, err := decodeMessage(tx.Bucket(bucketMessages).Get(messageKey(m.ReceiveID, seq)))
		if err != nil {
			return err
		}
		var ok bool
		if key, ok = s.keys.key(slot); !ok {
			t.Fatalf("message %d has no key", seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return key
}

// snapshot copies the store's two files to dir, as a crash at this moment
// would leave them on disk.
func snapshot(t *testing.T, path, dir string) string {
	t.Helper()
	for _, suffix := range []string{"", KeyFileSuffix} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Error(err)
			return ""
		}
		if err := os.WriteFile(filepath.Join(dir, "qpc.db"+suffix), data, 0o600); err != nil {
			t.Error(err)
		}
	}
	return filepath.Join(dir, "qpc.db")
}

// TestCrashBetweenKeyAndCommit takes the files as a crash would leave
// them at the two moments the key-slot file and bbolt disagree: after a
// new message's key was synced but before its transaction committed, and
// after an Ack committed but before the message's key was zeroed. Opened
// again, each loses no message that was stored and keeps no key of a
// message that is not: the key is found in none of the files.
func TestCrashBetweenKeyAndCommit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qpc.db")
	s := openTest(t, path, Options{})
	m := mkMailbox(t, s)
	keptID, keptEnv := mid(), randomEnvelope(3000)
	kept := mustPut(t, s, m, keptID, keptEnv, Quota{}, t0)
	keptKey := keyOf(t, s, m, kept.Seq)

	// A crash after the new message's key was synced, before its commit.
	before := t.TempDir()
	var beforePath string
	testHookPrepared = func() { beforePath = snapshot(t, path, before) }
	newID, newEnv := mid(), randomEnvelope(3000)
	stored := mustPut(t, s, m, newID, newEnv, Quota{}, t0)
	testHookPrepared = nil
	newKey := keyOf(t, s, m, stored.Seq)

	// A crash after the Ack of the first committed, before its key was zeroed.
	after := t.TempDir()
	var afterPath string
	testHookCommitted = func() { afterPath = snapshot(t, path, after) }
	if n, err := s.Ack(ctx, m.ReceiveID, [][MessageIDSize]byte{keptID}); err != nil || n != 1 {
		t.Fatalf("Ack: %d, %v", n, err)
	}
	testHookCommitted = nil
	if beforePath == "" || afterPath == "" {
		t.Fatal("a snapshot was not taken")
	}
	// The snapshots do hold the keys in question: the moments are real.
	for _, c := range []struct {
		path string
		key  [keySize]byte
	}{{beforePath, newKey}, {afterPath, keptKey}} {
		if data, _ := os.ReadFile(c.path + KeyFileSuffix); !bytes.Contains(data, c.key[:]) {
			t.Fatalf("%s does not hold the key", c.path+KeyFileSuffix)
		}
	}

	for _, c := range []struct {
		name     string
		path     string
		want     []byte // the one message stored
		gone     [keySize]byte
		goneEnv  []byte
		wantSeqs uint64
	}{
		{"before commit", beforePath, keptEnv, newKey, newEnv, kept.Seq},
		{"before zeroing", afterPath, newEnv, keptKey, keptEnv, stored.Seq},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs lockedBuffer
			s := openTest(t, c.path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if !strings.Contains(logs.String(), "keys_zeroed=1") {
				t.Errorf("the scrub was not logged as zeroing one key: %q", logs.String())
			}
			msgs := mustFetch(t, s, m)
			if len(msgs) != 1 || msgs[0].Seq != c.wantSeqs || !bytes.Equal(msgs[0].Envelope, c.want) {
				t.Fatalf("after the crash the mailbox holds %d messages", len(msgs))
			}
			checkInvariants(t, s)
			if st := s.Stats(); st.Unreadable != 0 {
				t.Errorf("%d unreadable messages", st.Unreadable)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if found := findRemnants(t, filepath.Dir(c.path), windows([][]byte{c.gone[:], c.goneEnv})); len(found) != 0 {
				t.Errorf("the key or envelope of the message that is not stored is still in the files: %v", found)
			}
		})
	}
}

// TestLostKeys: a stored message whose key is gone (a slot zeroed behind
// the store's back, a key file replaced) cannot be delivered. Fetch skips
// it and delivers the rest, the operator sees it in Stats and the log, and
// it goes at expiry; Open after a crash counts it too. Nothing panics.
func TestLostKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := mkMailbox(t, s)
	var envs [][]byte
	for i := range 3 {
		envs = append(envs, randomEnvelope(100+i))
		mustPut(t, s, m, mid(), envs[i], Quota{}, t0)
	}
	lost := keyOf(t, s, m, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path + KeyFileSuffix)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(data, lost[:])
	copy(data[at:], make([]byte, keySize))

	for _, unclean := range []bool{false, true} {
		if unclean {
			data[len(keyFileMagic)+1] = stateInUse
		}
		if err := os.WriteFile(path+KeyFileSuffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var logs lockedBuffer
		s := openTest(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		atOpen := s.Stats().Unreadable
		if want := map[bool]uint64{false: 0, true: 1}[unclean]; atOpen != want {
			t.Errorf("unclean=%v: Open counted %d unreadable messages, want %d", unclean, atOpen, want)
		}
		msgs := mustFetch(t, s, m)
		if len(msgs) != 2 || msgs[0].Seq != 1 || msgs[1].Seq != 3 || !bytes.Equal(msgs[1].Envelope, envs[2]) {
			t.Fatalf("unclean=%v: Fetch returned %d messages", unclean, len(msgs))
		}
		if st := s.Stats(); st.Unreadable != atOpen+1 {
			t.Errorf("unclean=%v: %d unreadable after Fetch, want %d", unclean, st.Unreadable, atOpen+1)
		}
		if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "messages=1") {
			t.Errorf("unclean=%v: not logged as an error: %q", unclean, logs.String())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// It goes at expiry, with its counters.
	s = openTest(t, path, Options{})
	if n, err := s.PurgeExpired(ctx, t0.Add(2*time.Hour), time.Hour); err != nil || n != 3 {
		t.Fatalf("PurgeExpired: %d, %v", n, err)
	}
	checkInvariants(t, s)
}

// TestKeyFileMissingOrForeign: a store whose key file is missing opens
// only if it holds no message (a new key file is made); one whose key
// file belongs to another store is refused.
func TestKeyFileMissingOrForeign(t *testing.T) {
	dir := t.TempDir()
	path, other := filepath.Join(dir, "qpc.db"), filepath.Join(dir, "other.db")
	for _, p := range []string{path, other} {
		s, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, mkMailbox(t, s), mid(), []byte("x"), Quota{}, t0)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := os.ReadFile(path + KeyFileSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other+KeyFileSuffix, path+KeyFileSuffix); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "another store") {
		t.Fatalf("Open with another store's key file: %v", err)
	}
	if err := os.Remove(path + KeyFileSuffix); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); !errors.Is(err, ErrStorageFailed) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open without the key file: %v", err)
	}
	if _, err := os.Stat(path + KeyFileSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused Open made a key file: %v", err)
	}
	// Restored, it opens, and the message is there.
	if err := os.WriteFile(path+KeyFileSuffix, keys, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTest(t, path, Options{})
	if st := s.Stats(); st.Unreadable != 0 {
		t.Fatalf("%d unreadable", st.Unreadable)
	}
	checkInvariants(t, s)

	// An empty store gets a new key file.
	empty := filepath.Join(dir, "empty.db")
	e, err := Open(empty, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mkMailbox(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(empty + KeyFileSuffix); err != nil {
		t.Fatal(err)
	}
	e = openTest(t, empty, Options{})
	m := mkMailbox(t, e)
	mustPut(t, e, m, mid(), []byte("y"), Quota{}, t0)
	checkInvariants(t, e)
}

// TestFetchDuringAck: a Fetch that still sees a message whose Ack has
// committed meanwhile finds its slot zeroed or already reused. That is
// not a lost key: the message is simply not returned, and nothing is
// counted.
func TestFetchDuringAck(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, "", Options{})
	m := mkMailbox(t, s)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := mid()
			if _, err := s.Put(ctx, m.SendID, id, randomEnvelope(64), Quota{}, t0, nil); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.Ack(ctx, m.ReceiveID, [][MessageIDSize]byte{id}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		msgs, _, err := s.Fetch(ctx, m.ReceiveID, 0, 100, t0)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			if len(msg.Envelope) != 64 {
				t.Fatalf("envelope of %d bytes", len(msg.Envelope))
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := s.Stats().Unreadable; n != 0 {
		t.Fatalf("%d unreadable messages counted during acks", n)
	}
	checkInvariants(t, s)
}

// schema2Envelope is envelope i of testdata/schema2.db (see
// TestUpgradeFromSchema2).
func schema2Envelope(i byte, n int) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{'s', 'c', 'h', 'e', 'm', 'a', '2', i}).Read(b)
	return b
}

// TestUpgradeFromSchema2 opens testdata/schema2.db, written by the schema
// 2 store (commit 7d3988e): mailbox a with messages 1 (3000 bytes), 2
// (3000, acknowledged) and 3 (5000, an overflow page) sent an hour apart,
// and mailbox b, deleted, whose message 4 (3000) went with it. Every
// envelope is a ChaCha8 stream (schema2Envelope). The file holds all four
// in the clear, the gone ones in freed pages. After the upgrade the data
// directory holds none of them in the clear, and messages 1 and 3 are
// delivered intact.
func TestUpgradeFromSchema2(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "schema2.db"))
	if err != nil {
		t.Fatal(err)
	}
	envs := [][]byte{schema2Envelope(1, 3000), schema2Envelope(2, 3000), schema2Envelope(3, 5000), schema2Envelope(4, 3000)}
	for i, env := range envs {
		if !bytes.Contains(src, env[:64]) {
			t.Fatalf("the fixture does not hold envelope %d in the clear: the test would prove nothing", i+1)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "qpc.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	fill := func(b byte) (x [32]byte) {
		copy(x[:], bytes.Repeat([]byte{b}, 32))
		return
	}
	a := Mailbox{ReceiveID: fill(0xa2), SendID: fill(0xb2), OwnerKey: fill(0xc2)}

	var logs lockedBuffer
	s, err := Open(path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"schema 2 to 4", "messages=2", "overwritten with zeros"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("upgrade log lacks %q: %q", want, logs.String())
		}
	}
	checkInvariants(t, s)
	msgs := mustFetch(t, s, a)
	if len(msgs) != 2 || msgs[0].Seq != 1 || msgs[1].Seq != 3 || !bytes.Equal(msgs[0].Envelope, envs[0]) || !bytes.Equal(msgs[1].Envelope, envs[2]) {
		t.Fatalf("after the upgrade mailbox a holds %d messages", len(msgs))
	}
	var id2 [MessageIDSize]byte
	copy(id2[:], bytes.Repeat([]byte{2}, MessageIDSize))
	if r := mustPut(t, s, a, id2, []byte("retry"), Quota{}, t0); !r.Duplicate || r.Seq != 2 {
		t.Errorf("retry of the acknowledged message: %+v", r)
	}
	if _, err := s.Mailbox(context.Background(), fill(0xd2)); !errors.Is(err, ErrNotFound) {
		t.Errorf("the deleted mailbox: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if found := findRemnants(t, dir, windows(envs)); len(found) != 0 {
		t.Errorf("envelopes in the clear after the upgrade: %v", found)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("the data directory holds %d files, want qpc.db and its key file", len(entries))
	}
	logs = lockedBuffer{}
	s = openTest(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if logs.String() != "" {
		t.Errorf("second open logged: %q", logs.String())
	}
	if msgs := mustFetch(t, s, a); len(msgs) != 2 {
		t.Fatalf("after reopening %d messages", len(msgs))
	}
	checkInvariants(t, s)
}

// TestIdleWriterSyncsZeroedSlots: an Ack's zeros reach the key-slot file
// at once (a copy of the file taken after Ack no longer holds the key),
// and are synced by the idle writer within keySyncDelay even if no other
// write comes.
func TestIdleWriterSyncsZeroedSlots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s := openTest(t, path, Options{})
	m := mkMailbox(t, s)
	id := mid()
	r := mustPut(t, s, m, id, randomEnvelope(100), Quota{}, t0)
	key := keyOf(t, s, m, r.Seq)
	if n, err := s.Ack(context.Background(), m.ReceiveID, [][MessageIDSize]byte{id}); err != nil || n != 1 {
		t.Fatalf("Ack: %d, %v", n, err)
	}
	if data, err := os.ReadFile(path + KeyFileSuffix); err != nil || bytes.Contains(data, key[:]) {
		t.Fatalf("the key-slot file still holds the acknowledged message's key (%v)", err)
	}
	deadline := time.Now().Add(10 * keySyncDelay)
	for s.keysUnsynced.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the idle writer did not sync the zeroed slot")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKeyFileFromAnotherTime: a key-slot file restored from an earlier
// close than qpc.db (same store, so the same ID) is clean but not of the
// store's generation. Open does not trust it: it checks it against the
// messages, counts the one whose key the old file lacks, and delivers
// the others.
func TestKeyFileFromAnotherTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpc.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := mkMailbox(t, s)
	first := randomEnvelope(200)
	mustPut(t, s, m, mid(), first, Quota{}, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + KeyFileSuffix)
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, m, mid(), randomEnvelope(200), Quota{}, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+KeyFileSuffix, old, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	s = openTest(t, path, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if !strings.Contains(logs.String(), "generation") || s.Stats().Unreadable != 1 {
		t.Fatalf("Open trusted a key file of another generation (%d unreadable): %q", s.Stats().Unreadable, logs.String())
	}
	if msgs := mustFetch(t, s, m); len(msgs) != 1 || !bytes.Equal(msgs[0].Envelope, first) {
		t.Fatalf("Fetch returned %d messages", len(msgs))
	}
	// The message without its key keeps its slot: a new message gets
	// another, and both go their way.
	mustPut(t, s, m, mid(), randomEnvelope(10), Quota{}, t0)
	if n, err := s.PurgeExpired(context.Background(), t0.Add(2*time.Hour), time.Hour); err != nil || n != 3 {
		t.Fatalf("PurgeExpired: %d, %v", n, err)
	}
	checkInvariants(t, s)
}
