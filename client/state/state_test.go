package state

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// tiny is a cheap KDF cost for tests; production uses the defaults.
func tiny() *Options {
	return &Options{Time: 1, MemoryKiB: 64, Threads: 1, LockTimeout: 200 * time.Millisecond}
}

var pass = []byte("correct horse battery staple")

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "qpc")
	s, err := Create(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func put(t *testing.T, s *Store, bucket, key, value string) {
	t.Helper()
	if err := s.Update(func(tx *Tx) error { return tx.Put(bucket, []byte(key), []byte(value)) }); err != nil {
		t.Fatal(err)
	}
}

func get(s *Store, bucket, key string) (string, error) {
	var v []byte
	err := s.View(func(tx *Tx) error {
		var err error
		v, err = tx.Get(bucket, []byte(key))
		return err
	})
	return string(v), err
}

func TestRoundTripAndReopen(t *testing.T) {
	s, dir := newStore(t)
	put(t, s, "contacts", "alice", "A")
	put(t, s, "contacts", "bob", "B")
	put(t, s, "contacts", "alice", "A2") // overwrite
	put(t, s, "contacts", "", "empty key")
	put(t, s, "settings", "alice", "other bucket")
	var seqs []uint64
	if err := s.Update(func(tx *Tx) error {
		for _, v := range []string{"m1", "m2", "m3"} {
			seq, err := tx.Append("outbox", []byte(v))
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seqs) != "[1 2 3]" {
		t.Fatalf("seqs = %v", seqs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(*Tx) error { return nil }); err == nil {
		t.Fatal("View after Close succeeded")
	}

	s, err := Open(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for k, want := range map[string]string{"alice": "A2", "bob": "B", "": "empty key"} {
		if got, err := get(s, "contacts", k); err != nil || got != want {
			t.Errorf("contacts[%q] = %q, %v; want %q", k, got, err, want)
		}
	}
	if got, err := get(s, "settings", "alice"); err != nil || got != "other bucket" {
		t.Errorf("settings[alice] = %q, %v", got, err)
	}
	if _, err := get(s, "contacts", "carol"); !errors.Is(err, ErrNoEntry) {
		t.Errorf("missing key: %v, want ErrNoEntry", err)
	}
	if _, err := get(s, "nosuchbucket", "x"); !errors.Is(err, ErrNoEntry) {
		t.Errorf("missing bucket: %v, want ErrNoEntry", err)
	}
	all := map[string]string{}
	if err := s.View(func(tx *Tx) error {
		return tx.ForEach("contacts", func(k, v []byte) error { all[string(k)] = string(v); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(all) != "map[:empty key alice:A2 bob:B]" {
		t.Errorf("ForEach = %v", all)
	}
	if err := s.Update(func(tx *Tx) error { return tx.Delete("contacts", []byte("bob")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := get(s, "contacts", "bob"); !errors.Is(err, ErrNoEntry) {
		t.Errorf("deleted key: %v", err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.Delete("contacts", []byte("never")) }); err != nil {
		t.Errorf("delete of a missing key: %v", err)
	}
	if err := s.View(func(tx *Tx) error { return tx.Put("contacts", []byte("x"), nil) }); err == nil {
		t.Error("Put in View succeeded")
	}
}

func TestReturnedValuesAreCopies(t *testing.T) {
	s, _ := newStore(t)
	put(t, s, "b", "k", "value")
	var kept []byte
	s.View(func(tx *Tx) error {
		return tx.ForEach("b", func(k, v []byte) error { kept = v; return nil })
	})
	v, _ := get(s, "b", "k")
	put(t, s, "b", "k", "VALUE")
	if string(kept) != "value" || v != "value" {
		t.Fatalf("kept %q, %q", kept, v)
	}
}

func TestSequenced(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Update(func(tx *Tx) error {
		for i := 1; i <= 300; i++ { // past 255, so byte order must be numeric order
			if _, err := tx.Append("history", []byte(fmt.Sprint("msg", i))); err != nil {
				return err
			}
		}
		return tx.DeleteSeq("history", 5)
	}); err != nil {
		t.Fatal(err)
	}
	collect := func(after uint64) (seqs []uint64) {
		t.Helper()
		if err := s.View(func(tx *Tx) error {
			return tx.ForEachSeq("history", after, func(seq uint64, v []byte) error {
				if string(v) != fmt.Sprint("msg", seq) {
					t.Fatalf("#%d = %q", seq, v)
				}
				seqs = append(seqs, seq)
				return nil
			})
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	all := collect(0)
	if len(all) != 299 || all[0] != 1 || all[3] != 4 || all[4] != 6 || all[298] != 300 {
		t.Fatalf("ForEachSeq(0) = %d entries %v...", len(all), all[:6])
	}
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("not ascending at %d: %v", i, all[i-1:i+1])
		}
	}
	if got := collect(297); fmt.Sprint(got) != "[298 299 300]" {
		t.Errorf("after 297: %v", got)
	}
	if got := collect(4); got[0] != 6 {
		t.Errorf("after 4 starts at %d", got[0])
	}
	if got := collect(300); len(got) != 0 {
		t.Errorf("after 300: %v", got)
	}
	if got := collect(^uint64(0)); len(got) != 0 {
		t.Errorf("after max: %v", got)
	}
	s.View(func(tx *Tx) error {
		if _, err := tx.GetSeq("history", 5); !errors.Is(err, ErrNoEntry) {
			t.Errorf("deleted seq: %v", err)
		}
		if v, err := tx.GetSeq("history", 7); err != nil || string(v) != "msg7" {
			t.Errorf("GetSeq 7 = %q, %v", v, err)
		}
		return nil
	})
	// Sequence numbers are never reused, even after deleting the last one.
	var seq uint64
	s.Update(func(tx *Tx) error {
		tx.DeleteSeq("history", 300)
		seq, _ = tx.Append("history", []byte("msg301"))
		return nil
	})
	if seq != 301 {
		t.Errorf("next seq = %d, want 301", seq)
	}
	// Stopping early returns fn's error.
	stop := errors.New("stop")
	n := 0
	err := s.View(func(tx *Tx) error {
		return tx.ForEachSeq("history", 0, func(uint64, []byte) error { n++; return stop })
	})
	if err != stop || n != 1 {
		t.Errorf("early stop: %v after %d", err, n)
	}
}

func TestBucketKindsDoNotMix(t *testing.T) {
	s, _ := newStore(t)
	put(t, s, "contacts", "a", "b")
	err := s.Update(func(tx *Tx) error { _, err := tx.Append("contacts", []byte("x")); return err })
	if !errors.Is(err, errKind) {
		t.Errorf("Append to keyed bucket: %v", err)
	}
	s.Update(func(tx *Tx) error { _, err := tx.Append("outbox", []byte("x")); return err })
	for name, f := range map[string]func(tx *Tx) error{
		"Put":     func(tx *Tx) error { return tx.Put("outbox", []byte("k"), nil) },
		"Get":     func(tx *Tx) error { _, err := tx.Get("outbox", []byte("k")); return err },
		"ForEach": func(tx *Tx) error { return tx.ForEach("outbox", func(_, _ []byte) error { return nil }) },
		"GetSeq":  func(tx *Tx) error { _, err := tx.GetSeq("contacts", 1); return err },
	} {
		if err := s.Update(f); !errors.Is(err, errKind) {
			t.Errorf("%s on the wrong kind: %v", name, err)
		}
	}
}

func TestAtomicity(t *testing.T) {
	s, _ := newStore(t)
	put(t, s, "b", "old", "kept")
	boom := errors.New("boom")
	err := s.Update(func(tx *Tx) error {
		if err := tx.Put("b", []byte("new"), []byte("v")); err != nil {
			return err
		}
		if err := tx.Put("fresh", []byte("k"), []byte("v")); err != nil {
			return err
		}
		if err := tx.Delete("b", []byte("old")); err != nil {
			return err
		}
		if _, err := tx.Append("q", []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Update returned %v, want fn's error unchanged", err)
	}
	if v, err := get(s, "b", "old"); v != "kept" || err != nil {
		t.Errorf("old = %q, %v", v, err)
	}
	for _, bk := range [][2]string{{"b", "new"}, {"fresh", "k"}} {
		if _, err := get(s, bk[0], bk[1]); !errors.Is(err, ErrNoEntry) {
			t.Errorf("%v survived a failed Update: %v", bk, err)
		}
	}
	s.View(func(tx *Tx) error {
		n := 0
		tx.ForEachSeq("q", 0, func(uint64, []byte) error { n++; return nil })
		if n != 0 {
			t.Errorf("appended entry survived")
		}
		return nil
	})
	raw := rawBuckets(t, s)
	if len(raw) != 2 { // meta and "b"
		t.Errorf("%d top-level buckets after a failed Update, want 2", len(raw))
	}
}

// rawBuckets lists the top-level bucket names through the open bbolt handle.
func rawBuckets(t *testing.T, s *Store) []string {
	var names []string
	s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			return nil
		})
	})
	return names
}

func TestCreateErrorsAndModes(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "qpc")
	s, err := Create(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if _, err := Create(dir, pass, tiny()); !errors.Is(err, ErrExists) {
		t.Errorf("second Create: %v, want ErrExists", err)
	}
	_, err = Open(filepath.Join(base, "nothing"), pass, tiny())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "qpc init") {
		t.Errorf("Open of a missing state: %v", err)
	}
	if _, err := Create(filepath.Join(base, "b"), pass, &Options{Time: 65}); err == nil {
		t.Error("Create with Time 65 succeeded")
	} else if _, serr := os.Stat(filepath.Join(base, "b", FileName)); serr == nil {
		t.Error("failed Create left a state file behind")
	}
}

func TestWrongPassphrase(t *testing.T) {
	s, dir := newStore(t)
	put(t, s, "b", "k", "v")
	s.Close()
	_, err := Open(dir, []byte("correct horse battery stapler"), tiny())
	if !errors.Is(err, ErrPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	// The failed Open released the lock.
	s, err = Open(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestLocked(t *testing.T) {
	_, dir := newStore(t) // stays open
	opts := tiny()
	opts.LockTimeout = 100 * time.Millisecond
	start := time.Now()
	_, err := Open(dir, pass, opts)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another qpc process is using "+dir) {
		t.Fatalf("second Open: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ErrLocked after %v", d)
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	s, dir := newStore(t)
	secrets := []string{"alice-handle-XYZ", "value-of-alice-QWERTY", "contacts-bucket-NAME", "outbox-message-PLMOKN", "outbox-queue-NAME", string(pass)}
	put(t, s, secrets[2], secrets[0], secrets[1])
	s.Update(func(tx *Tx) error { _, err := tx.Append(secrets[4], []byte(secrets[3])); return err })
	// ChangePassphrase rewrites everything; scan after it too.
	s.Close()
	raw, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		if bytes.Contains(raw, []byte(sec)) {
			t.Errorf("state.db contains %q in the clear", sec)
		}
		// A fixed 8-byte window catches partial leaks as well.
		if bytes.Contains(raw, []byte(sec[:8])) {
			t.Errorf("state.db contains the prefix %q", sec[:8])
		}
	}
	if !bytes.Contains(raw, []byte("meta")) {
		t.Error("scan is blind: not even the clear meta bucket name was found")
	}
}

// rawSwap exchanges the stored values of two entries in the only data bucket,
// editing the file with bbolt directly.
func rawSwap(t *testing.T, path string, keyLen int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	swapped := 0
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if string(name) == "meta" {
				return nil
			}
			var ks, vs [][]byte
			b.ForEach(func(k, v []byte) error {
				if len(k) == keyLen {
					ks = append(ks, append([]byte(nil), k...))
					vs = append(vs, append([]byte(nil), v...))
				}
				return nil
			})
			if len(ks) == 0 {
				return nil
			}
			if len(ks) != 2 {
				return fmt.Errorf("found %d entries", len(ks))
			}
			swapped++
			if err := b.Put(ks[0], vs[1]); err != nil {
				return err
			}
			return b.Put(ks[1], vs[0])
		})
	})
	if err != nil || swapped != 1 {
		t.Fatal(err, swapped)
	}
}

func TestSwappedValuesAreCorrupt(t *testing.T) {
	s, dir := newStore(t)
	put(t, s, "contacts", "alice", "A")
	put(t, s, "contacts", "bob", "B")
	s.Close()
	rawSwap(t, filepath.Join(dir, FileName), 32)
	s, err := Open(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"alice", "bob"} {
		if v, err := get(s, "contacts", k); !errors.Is(err, ErrCorrupt) {
			t.Errorf("swapped %s: %q, %v; want ErrCorrupt", k, v, err)
		}
	}
	if err := s.View(func(tx *Tx) error { return tx.ForEach("contacts", func(_, _ []byte) error { return nil }) }); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ForEach over swapped values: %v", err)
	}
}

func TestSwappedSeqValuesAreCorrupt(t *testing.T) {
	s, dir := newStore(t)
	s.Update(func(tx *Tx) error {
		tx.Append("outbox", []byte("first"))
		_, err := tx.Append("outbox", []byte("second"))
		return err
	})
	s.Close()
	rawSwap(t, filepath.Join(dir, FileName), 8)
	s, err := Open(dir, pass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	err = s.View(func(tx *Tx) error {
		_, err := tx.GetSeq("outbox", 1)
		return err
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("GetSeq of a swapped value: %v", err)
	}
}

func TestChangePassphrase(t *testing.T) {
	s, dir := newStore(t)
	put(t, s, "contacts", "alice", "A")
	put(t, s, "contacts", "bob", "B")
	s.Update(func(tx *Tx) error {
		for _, v := range []string{"1", "2", "3"} {
			tx.Append("outbox", []byte(v))
		}
		return tx.DeleteSeq("outbox", 3)
	})
	before := rawBuckets(t, s)
	newPass := []byte("new passphrase")
	if err := s.ChangePassphrase([]byte("not it"), newPass); !errors.Is(err, ErrPassphrase) {
		t.Fatalf("ChangePassphrase with a wrong old one: %v", err)
	}
	if err := s.ChangePassphrase(pass, newPass); err != nil {
		t.Fatal(err)
	}
	after := rawBuckets(t, s)
	for _, a := range after {
		for _, b := range before {
			if a == b && a != "meta" {
				t.Errorf("bucket name %x kept after ChangePassphrase", a)
			}
		}
	}
	check := func(s *Store) {
		t.Helper()
		if v, err := get(s, "contacts", "alice"); v != "A" || err != nil {
			t.Errorf("alice = %q, %v", v, err)
		}
		var seqs []string
		s.View(func(tx *Tx) error {
			return tx.ForEachSeq("outbox", 0, func(seq uint64, v []byte) error {
				seqs = append(seqs, fmt.Sprint(seq, "=", string(v)))
				return nil
			})
		})
		if fmt.Sprint(seqs) != "[1=1 2=2]" {
			t.Errorf("outbox = %v", seqs)
		}
	}
	check(s) // the open store keeps working with the new keys
	var seq uint64
	s.Update(func(tx *Tx) error { seq, _ = tx.Append("outbox", []byte("4")); return nil })
	if seq != 4 {
		t.Errorf("sequence after re-key = %d, want 4", seq)
	}
	s.Update(func(tx *Tx) error { return tx.DeleteSeq("outbox", 4) })
	s.Close()
	if _, err := Open(dir, pass, tiny()); !errors.Is(err, ErrPassphrase) {
		t.Errorf("old passphrase after change: %v", err)
	}
	s, err := Open(dir, newPass, tiny())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
}

func TestDefaults(t *testing.T) {
	o := (*Options)(nil).withDefaults()
	if o.Time != 3 || o.MemoryKiB != 64*1024 || o.Threads != 4 || o.LockTimeout != time.Second {
		t.Errorf("defaults = %+v", o)
	}
}

// Test vectors in testdata/, made by `go test -run TestTestdata -gen-testdata`.
var genTestdata = flag.Bool("gen-testdata", false, "regenerate testdata/*.db")

var (
	vecPass = []byte("qpc test vector passphrase")
	vecOpts = &Options{Time: 1, MemoryKiB: 64, Threads: 1}
)

func copyVector(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTestdata(t *testing.T) {
	if *genTestdata {
		generateVectors(t)
	}
	t.Run("good_v1", func(t *testing.T) {
		s, err := Open(copyVector(t, "good_v1.db"), vecPass, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for k, want := range map[string]string{"alice": "alice-handle-XYZ", "bob": "bob-handle-123"} {
			if got, err := get(s, "contacts", k); got != want || err != nil {
				t.Errorf("contacts[%s] = %q, %v", k, got, err)
			}
		}
		var seqs []string
		s.View(func(tx *Tx) error {
			return tx.ForEachSeq("outbox", 0, func(seq uint64, v []byte) error {
				seqs = append(seqs, fmt.Sprint(seq, "=", string(v)))
				return nil
			})
		})
		if fmt.Sprint(seqs) != "[1=msg-1 3=msg-3]" {
			t.Errorf("outbox = %v", seqs)
		}
		if _, err := Open(copyVector(t, "good_v1.db"), []byte("wrong"), nil); !errors.Is(err, ErrPassphrase) {
			t.Errorf("good_v1 with a wrong passphrase: %v", err)
		}
	})
	for name, want := range map[string]error{
		"fail_tampered_check.db":  ErrPassphrase, // indistinguishable from a wrong passphrase
		"fail_tampered_params.db": ErrPassphrase, // params are bound into the check's AAD
		"fail_bad_params.db":      ErrCorrupt,    // 4 GiB+ of memory: refused before Argon2 runs
		"fail_no_meta.db":         ErrCorrupt,
	} {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			s, err := Open(copyVector(t, name), vecPass, nil)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, want) {
				t.Fatalf("Open: %v, want %v", err, want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
	t.Run("fail_swapped_values", func(t *testing.T) {
		s, err := Open(copyVector(t, "fail_swapped_values.db"), vecPass, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if v, err := get(s, "contacts", "alice"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("alice = %q, %v; want ErrCorrupt", v, err)
		}
	})
}

func generateVectors(t *testing.T) {
	dir := t.TempDir()
	s, err := Create(dir, vecPass, vecOpts)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Update(func(tx *Tx) error {
		tx.Put("contacts", []byte("alice"), []byte("alice-handle-XYZ"))
		tx.Put("contacts", []byte("bob"), []byte("bob-handle-123"))
		for _, m := range []string{"msg-1", "msg-2", "msg-3"} {
			tx.Append("outbox", []byte(m))
		}
		return tx.DeleteSeq("outbox", 2)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	path := filepath.Join(dir, FileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good_v1.db", good)
	variant := func(name string, edit func(tx *bolt.Tx) error) {
		p := filepath.Join(t.TempDir(), FileName)
		os.WriteFile(p, good, 0o600)
		db, err := bolt.Open(p, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(edit); err != nil {
			t.Fatal(err)
		}
		db.Close()
		b, _ := os.ReadFile(p)
		write(name, b)
	}
	editMeta := func(key string, edit func([]byte)) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			m := tx.Bucket(metaBucket)
			v := append([]byte(nil), m.Get([]byte(key))...)
			edit(v)
			return m.Put([]byte(key), v)
		}
	}
	variant("fail_tampered_check.db", editMeta("check", func(v []byte) { v[30] ^= 1 }))
	variant("fail_tampered_params.db", editMeta("params", func(v []byte) { v[5]++ })) // time 1 → 2
	variant("fail_bad_params.db", editMeta("params", func(v []byte) { copy(v[6:10], []byte{0xff, 0xff, 0xff, 0xff}) }))
	variant("fail_no_meta.db", func(tx *bolt.Tx) error { return tx.DeleteBucket(metaBucket) })
	p := filepath.Join(t.TempDir(), FileName)
	os.WriteFile(p, good, 0o600)
	rawSwap(t, p, 32)
	b, _ := os.ReadFile(p)
	write("fail_swapped_values.db", b)
}
