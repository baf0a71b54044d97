package witness_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/kt/witness"
)

// FuzzParseRequest: the add-checkpoint decoder never panics, refuses with
// ErrMalformed, and what it accepts encodes back to the same bytes.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte("old 0\n\nexample.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/log AAAA\n"))
	f.Add([]byte("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\nx\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := witness.ParseRequest(body)
		if err != nil {
			if !errors.Is(err, witness.ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if len(r.Proof) > witness.MaxProofLines || len(r.Checkpoint) == 0 {
			t.Fatalf("accepted %d proof lines, %d checkpoint bytes", len(r.Proof), len(r.Checkpoint))
		}
		if got := r.Marshal(); !bytes.Equal(got, body) {
			t.Fatalf("re-encodes to %q, not %q", got, body)
		}
	})
}

// FuzzAddCheckpoint feeds bodies to a witness that trusts the memLog key
// (seeds carry valid checkpoints, so mutations of the old size and proof
// reach the consistency checks): no panic, every refusal a StatusError
// with a tlog-witness status, and the recorded size never goes back.
func FuzzAddCheckpoint(f *testing.F) {
	m, l := newMemLog(f)
	for i := range 9 {
		m.append(f, []byte{byte(i)})
	}
	f.Add(m.request(f, 0))
	f.Add(m.request(f, 3))
	f.Add(m.request(f, 9))
	w, err := witness.Open(witness.Options{Dir: f.TempDir(), Name: "witness.test/fuzz", Logs: []witness.Log{l}, Logger: quiet()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { w.Close() })
	f.Fuzz(func(t *testing.T, body []byte) {
		before, _, err := w.Latest(l.Origin)
		if err != nil {
			t.Fatal(err)
		}
		_, err = w.AddCheckpoint(context.Background(), body)
		var se *witness.StatusError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("internal error %v", err)
		}
		if se != nil {
			switch se.Code {
			case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity:
			default:
				t.Fatalf("status %d", se.Code)
			}
		}
		after, _, err := w.Latest(l.Origin)
		if err != nil {
			t.Fatal(err)
		}
		if after.Size < before.Size || after.Size == before.Size && after.Root != before.Root {
			t.Fatalf("state went from %d to %d", before.Size, after.Size)
		}
	})
}

// TestWitnessRequestVectors: the good_ seeds of FuzzParseRequest decode,
// the fail_ seeds are refused.
func TestWitnessRequestVectors(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParseRequest")
	files, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var good, fail int
	for _, fi := range files {
		data, err := os.ReadFile(filepath.Join(dir, fi.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lit, ok := strings.CutPrefix(string(data), "go test fuzz v1\n[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")\n")
		body, err := strconv.Unquote(lit)
		if !ok || !ok2 || err != nil {
			t.Fatalf("%s: not a fuzz corpus file", fi.Name())
		}
		_, err = witness.ParseRequest([]byte(body))
		switch {
		case strings.HasPrefix(fi.Name(), "good_"):
			good++
			if err != nil {
				t.Errorf("%s: %v", fi.Name(), err)
			}
		case strings.HasPrefix(fi.Name(), "fail_"):
			fail++
			if err == nil {
				t.Errorf("%s: accepted", fi.Name())
			}
		default:
			t.Errorf("%s is neither good_ nor fail_", fi.Name())
		}
	}
	if good == 0 || fail == 0 {
		t.Fatalf("%d good and %d fail vectors", good, fail)
	}
}
