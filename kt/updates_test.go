package kt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

var updateListVectors = flag.Bool("update-updatelist-vectors", false, "rewrite kt/testdata/updates from the cases in updates_test.go")

// vectorLeaves returns n deterministic leaves.
func vectorLeaves(seed string, n int) []Leaf {
	out := make([]Leaf, n)
	for i := range out {
		out[i].Index = sha256.Sum256([]byte(fmt.Sprintf("%s index %d", seed, i)))
		out[i].Commitment = sha256.Sum256([]byte(fmt.Sprintf("%s commitment %d", seed, i)))
	}
	return out
}

type updateListVector struct {
	name, comment string
	list          []byte
}

func updateListCases() []updateListVector {
	four := (&UpdateList{Epoch: 7, Leaves: vectorLeaves("four", 4)}).Marshal()
	one := (&UpdateList{Epoch: 1, Leaves: vectorLeaves("one", 1)}).Marshal()
	over := binary.BigEndian.AppendUint32(append([]byte{1}, make([]byte, 8)...), MaxEpochLeaves+1)
	v2 := bytes.Clone(one)
	v2[0] = 2
	return []updateListVector{
		{"good_genesis", "epoch 0, no leaves", (&UpdateList{}).Marshal()},
		{"good_one_leaf", "epoch 1, one leaf", one},
		{"good_four_leaves", "epoch 7, four leaves (the default padding)", four},
		{"fail_empty", "no bytes", nil},
		{"fail_version_2", "an unknown version", v2},
		{"fail_header_truncated", "12 of the 13 header bytes", one[:12]},
		{"fail_count_beyond_bytes", "the count says 4, 3 leaves follow", four[:len(four)-64]},
		{"fail_partial_leaf", "the last leaf cut in its commitment", four[:len(four)-1]},
		{"fail_trailing_byte", "one byte past the last leaf", append(bytes.Clone(four), 0)},
		{"fail_count_over_max", "a count of MaxEpochLeaves+1", over},
	}
}

// TestUpdateListVectors checks the good_ and fail_ vectors in
// testdata/updates: good ones parse, encode back to the same bytes and
// have the digest written beside them; fail ones are ErrUpdateList.
func TestUpdateListVectors(t *testing.T) {
	dir := filepath.Join("testdata", "updates")
	if *updateListVectors {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range updateListCases() {
			var b strings.Builder
			fmt.Fprintf(&b, "# %s: %s\nlist: %x\n", c.name, c.comment, c.list)
			if strings.HasPrefix(c.name, "good_") {
				u, err := ParseUpdateList(c.list)
				if err != nil {
					t.Fatal(err)
				}
				d := u.Digest()
				fmt.Fprintf(&b, "digest: %x\n", d)
			}
			if err := os.WriteFile(filepath.Join(dir, c.name+".hex"), []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*_*.hex"))
	if len(files) < len(updateListCases()) {
		t.Fatalf("%d vectors in %s, want %d", len(files), dir, len(updateListCases()))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".hex")
		t.Run(name, func(t *testing.T) {
			fields := readVector(t, f)
			list, err := hex.DecodeString(fields["list"])
			if err != nil {
				t.Fatal(err)
			}
			u, err := ParseUpdateList(list)
			if strings.HasPrefix(name, "fail_") {
				if !errors.Is(err, ErrUpdateList) {
					t.Fatalf("ParseUpdateList = %v, want ErrUpdateList", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(u.Marshal(), list) {
				t.Fatal("re-encoding differs")
			}
			d := u.Digest()
			if got := hex.EncodeToString(d[:]); got != fields["digest"] {
				t.Fatalf("digest %s, want %s", got, fields["digest"])
			}
		})
	}
}

func readVector(t *testing.T, path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	s := bufio.NewScanner(f)
	s.Buffer(nil, 4<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out[k] = strings.TrimSpace(v)
	}
	return out
}

func FuzzParseUpdateList(f *testing.F) {
	for _, c := range updateListCases() {
		f.Add(c.list)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		u, err := ParseUpdateList(raw)
		if err != nil {
			if !errors.Is(err, ErrUpdateList) {
				t.Fatalf("error %v is not ErrUpdateList", err)
			}
			return
		}
		if !bytes.Equal(u.Marshal(), raw) {
			t.Fatal("re-encoding differs")
		}
		if len(u.Leaves) > MaxEpochLeaves || len(raw) > MaxUpdateListSize {
			t.Fatalf("%d leaves in %d bytes accepted", len(u.Leaves), len(raw))
		}
		u.Digest()
	})
}

// TestUpdateListsReplay: every epoch's update list, read over HTTP as an
// auditor reads it, hashes to its record's UpdatesDigest, and replaying
// the lists in order onto a ReplayTree gives each record's root; a list
// is not served for an epoch that does not exist.
func TestUpdateListsReplay(t *testing.T) {
	d := newTestDir(t)
	d.publish(t, "alice", []byte("a1"))
	d.publish(t, "bob", []byte("b1"), []byte("b2"))
	d.publish(t, "alice", []byte("a2"))
	srv := httptest.NewServer(d.Handler("/kt"))
	defer srv.Close()
	get := func(rel string) (int, []byte) {
		resp, err := http.Get(srv.URL + "/kt/" + rel)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "replay.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rt, err := OpenReplayTree(db, 4)
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := d.Checkpoint()
	for e := range cp.Size {
		var raw []byte
		if err := d.boltDB().View(func(tx *bolt.Tx) error {
			raw, _, err = d.epochRecord(boltSnapshot{tx: tx}, e)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		rec, _ := ParseEpochRecord(raw)
		code, body := get(UpdatesResource(e))
		if code != http.StatusOK {
			t.Fatalf("updates/%d: HTTP %d", e, code)
		}
		u, err := ParseUpdateList(body)
		if err != nil {
			t.Fatalf("epoch %d: %v", e, err)
		}
		if u.Epoch != e || u.Digest() != rec.UpdatesDigest {
			t.Fatalf("epoch %d: list of epoch %d, digest matches %v", e, u.Epoch, u.Digest() == rec.UpdatesDigest)
		}
		if e > 0 && len(u.Leaves) < DefaultMinUpdates {
			t.Fatalf("epoch %d: %d leaves, padding makes at least %d", e, len(u.Leaves), DefaultMinUpdates)
		}
		if err := rt.Apply(e, u.Leaves, func(_ *bolt.Tx, root [32]byte) error {
			if root != rec.Root {
				return fmt.Errorf("epoch %d: replayed root %x, record %x", e, root[:8], rec.Root[:8])
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range []string{UpdatesResource(cp.Size), "updates/01", "updates/", "updates/x", "updates/1/2"} {
		if code, _ := get(rel); code != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, want 404", rel, code)
		}
	}
	// A leaf already in the tree is refused, and the refusal changes
	// nothing.
	u, _ := ParseUpdateList(func() []byte { _, b := get(UpdatesResource(1)); return b }())
	before, _ := rt.Root()
	err = rt.Apply(cp.Size, u.Leaves[:1], func(*bolt.Tx, [32]byte) error { return nil })
	if !errors.Is(err, ErrDuplicateIndex) {
		t.Fatalf("re-inserting a leaf: %v, want ErrDuplicateIndex", err)
	}
	if after, _ := rt.Root(); after != before {
		t.Fatal("a refused Apply changed the tree")
	}
}
