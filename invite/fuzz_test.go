package invite

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse what a user might paste: no panic; a refusal is
// one of the package's errors; what is accepted is canonical, so it
// encodes back to the same text (case and white space aside).
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*_*.txt")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrCritical) {
				t.Fatalf("Parse: error %v is none of the package's", err)
			}
			return
		}
		out, err := inv.Encode()
		if err != nil {
			t.Fatalf("accepted invite does not encode: %v", err)
		}
		if want := strings.ToLower(strings.Join(strings.Fields(s), "")); out != want && !optionalSkipped(t, s) {
			t.Fatalf("re-encoded\n%s\nwant\n%s", out, want)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("re-encoded invite refused: %v", err)
		}
	})
}

// optionalSkipped reports an invite holding an optional field, which
// Parse skips and Encode therefore leaves out.
func optionalSkipped(t *testing.T, s string) bool {
	raw, err := b32.DecodeString(strings.TrimPrefix(strings.ToLower(strings.Join(strings.Fields(s), "")), Prefix))
	if err != nil {
		t.Fatal(err)
	}
	b := raw[:len(raw)-4]
	for len(b) >= 3 {
		n := int(b[1])<<8 | int(b[2])
		if b[0]&optionalBit != 0 && b[0] != fieldMore {
			return true
		}
		b = b[min(3+n, len(b)):]
	}
	return false
}

// FuzzParseBody fuzzes the fields behind a valid checksum, which random
// text rarely gets past: the same contract as FuzzParse.
func FuzzParseBody(f *testing.F) {
	for _, inv := range samples(f) {
		f.Add(body(f, inv))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxLen/2 {
			return
		}
		s := raw(b)
		inv, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrCritical) {
				t.Fatalf("Parse: error %v (a valid checksum cannot fail otherwise)", err)
			}
			return
		}
		out, err := inv.Encode()
		if err != nil {
			t.Fatalf("accepted invite does not encode: %v", err)
		}
		if out != s && !optionalSkipped(t, s) {
			t.Fatalf("re-encoded\n%s\nwant\n%s", out, s)
		}
	})
}
