package record

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// readAny reads b as the record its schema (taken from a vector's file
// name) names, and writes what it read back with the matching writer.
func readAny(schema string, b []byte) (rewritten []byte, err error) {
	var out bytes.Buffer
	switch schema {
	case "observer":
		h, evs, err := ReadObserver(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		w, err := NewObserverWriter(&out, h.Start)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if err := w.Write(e); err != nil {
				return nil, err
			}
		}
		if err := w.Flush(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	case "network":
		h, ps, err := ReadNetwork(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		w, err := NewNetworkWriter(&out, h.Start)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			if err := w.Write(p); err != nil {
				return nil, err
			}
		}
		if err := w.Flush(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	case "truth":
		h, xs, err := ReadTruth(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		w, err := NewTruthWriter(&out, h.Seed, h.Scenario)
		if err != nil {
			return nil, err
		}
		for _, x := range xs {
			if err := w.Write(x); err != nil {
				return nil, err
			}
		}
		if err := w.Flush(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	panic("unknown schema " + schema)
}

func TestRecordVectors(t *testing.T) {
	files, err := filepath.Glob("testdata/*.jsonl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	var good, bad int
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".jsonl")
		kind, rest, _ := strings.Cut(name, "_")
		schema, _, _ := strings.Cut(rest, "_")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			out, err := readAny(schema, b)
			switch kind {
			case "good":
				good++
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				// What the writer wrote reads back to itself.
				again, err := readAny(schema, out)
				if err != nil {
					t.Fatalf("rewritten record refused: %v\n%s", err, out)
				}
				if !bytes.Equal(again, out) {
					t.Fatalf("rewrite not stable:\n%s\n%s", out, again)
				}
			case "fail":
				bad++
				if err == nil {
					t.Fatal("accepted")
				}
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("error %v does not wrap ErrFormat", err)
				}
				t.Logf("refused: %v", err)
			default:
				t.Fatalf("vector %s is neither good_ nor fail_", name)
			}
		})
	}
	if good < 3 || bad < 10 {
		t.Fatalf("only %d good and %d fail vectors", good, bad)
	}
}

func TestObserverRoundTrip(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 123, time.UTC)
	epoch := uint32(0)
	evs := []Event{
		{T: 0, Conn: "c1", Ev: EvOpen, Transport: TransportOnion},
		{T: 5, Conn: "c1", Ev: EvRequest, Kind: "Send", SendID: "00ff", Bucket: 4096, Epoch: &epoch},
		{T: 5, Conn: "c1", Ev: EvError, Kind: "Send", Code: "NOT_FOUND"},
		{T: 9, Conn: "c1", Ev: EvClose},
	}
	var buf bytes.Buffer
	w, err := NewObserverWriter(&buf, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(Event{T: 8, Conn: "c1", Ev: EvClose}); !errors.Is(err, ErrFormat) {
		t.Fatalf("writer took a time that goes back: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"epoch":0`) {
		t.Fatalf("epoch 0 lost:\n%s", buf.String())
	}
	h, got, err := ReadObserver(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !h.Start.Equal(start) || h.V != Version || h.Schema != SchemaObserver {
		t.Fatalf("header %+v", h)
	}
	if !reflect.DeepEqual(got, evs) {
		t.Fatalf("read %+v, wrote %+v", got, evs)
	}
}

func TestNetworkWriteNowConcurrent(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewNetworkWriter(&buf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i := range 200 {
				dir := DirUp
				if (g+i)%2 == 1 {
					dir = DirDown
				}
				if err := w.WriteNow("127.0.0.1:1", dir, i); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	_, ps, err := ReadNetwork(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 800 {
		t.Fatalf("read %d packets, wrote 800", len(ps))
	}
}

func TestTruthWriterOneKindPerLine(t *testing.T) {
	w, err := NewTruthWriter(io.Discard, 1, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(Truth{}); !errors.Is(err, ErrFormat) {
		t.Fatalf("empty line: %v", err)
	}
	if err := w.Write(Truth{User: &TruthUser{User: "u1"}, Conv: &TruthConv{Conv: "k", Members: []string{"u1"}}}); !errors.Is(err, ErrFormat) {
		t.Fatalf("two kinds in one line: %v", err)
	}
}

// FuzzReaders feeds arbitrary bytes to the three readers: none panics,
// every error wraps ErrFormat, and what one accepts the writer writes
// back to a record that reads the same.
func FuzzReaders(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.jsonl")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err == nil && len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, schema := range []string{"observer", "network", "truth"} {
			out, err := readAny(schema, b)
			if err != nil {
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("%s: error %v does not wrap ErrFormat", schema, err)
				}
				continue
			}
			again, err := readAny(schema, out)
			if err != nil {
				t.Fatalf("%s: rewritten record refused: %v", schema, err)
			}
			if !bytes.Equal(again, out) {
				t.Fatalf("%s: rewrite not stable", schema)
			}
		}
	})
}

func TestReaderLineTooLong(t *testing.T) {
	long := `{"v":1,"schema":"qpc-observer","start":"2026-12-01T10:00:00Z"}` + "\n" +
		`{"t":0,"conn":"c1","ev":"request","kind":"KTLookup","handle":"` + strings.Repeat("x", MaxLine) + `"}` + "\n"
	_, _, err := ReadObserver(strings.NewReader(long))
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("a line over MaxLine: %v", err)
	}
}
