package mls

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vectorDir holds the IETF MLS interoperability vectors: testdata/vectors in
// this package (gzip-compressed, see its README.md), so a fresh clone tests
// itself. The QPC_MLS_VECTORS environment variable points the tests at
// another copy instead (a directory of *.json or *.json.gz files).
func vectorDir() string {
	if d := os.Getenv("QPC_MLS_VECTORS"); d != "" {
		return d
	}
	return filepath.Join("testdata", "vectors")
}

// readVectorFile returns the JSON of one vector file from vectorDir: name
// itself if it is there, else name.gz decompressed.
func readVectorFile(name string) ([]byte, error) {
	dir := vectorDir()
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return data, err
	}
	f, err := os.Open(filepath.Join(dir, name+".gz"))
	if err != nil {
		return nil, fmt.Errorf("no %s or %s.gz in %s (QPC_MLS_VECTORS overrides the directory): %w", name, name, dir, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s.gz: %w", name, err)
	}
	data, err = io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%s.gz: %w", name, err)
	}
	return data, nil
}

// loadVectors decodes one vector file into v, failing the test if the file
// is missing: the vectors are the point of these tests.
func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	data, err := readVectorFile(name)
	if err != nil {
		t.Fatalf("vectors %s: %v", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("vectors %s: %v", name, err)
	}
}

// TestVectorFilesUnchanged checks every vector file against the SHA-256 in
// testdata/vectors/SHA256SUMS, taken from the upstream files: a vector that
// was edited (to make a test pass, say) or damaged fails here, and so does a
// listed file that is missing. It checks whatever vectorDir points at, so a
// QPC_MLS_VECTORS copy must be the same upstream version.
func TestVectorFilesUnchanged(t *testing.T) {
	sums, err := os.ReadFile(filepath.Join("testdata", "vectors", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		want, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: malformed line %q", line)
		}
		data, err := readVectorFile(name)
		if err != nil {
			t.Errorf("vectors %s: %v", name, err)
			continue
		}
		got := sha256.Sum256(data)
		if hex.EncodeToString(got[:]) != want {
			t.Errorf("vectors %s: SHA-256 %x, SHA256SUMS says %s: the file is not the upstream vector", name, got, want)
		}
		n++
	}
	if n < 16 {
		t.Errorf("SHA256SUMS lists %d files, want the 16 upstream vector files", n)
	}
}

// tally counts vector cases for the one summary line each file prints.
type tally struct {
	file                    string
	passed, failed, skipped int
	skipReasons             map[string]int
}

func newTally(file string) *tally { return &tally{file: file, skipReasons: map[string]int{}} }

func (c *tally) pass() { c.passed++ }

func (c *tally) fail(t testing.TB, format string, args ...any) {
	t.Helper()
	c.failed++
	t.Errorf(format, args...)
}

func (c *tally) skip(reason string) {
	c.skipped++
	c.skipReasons[reason]++
}

// report prints the summary line `vectors <file>: passed=N failed=N skipped=N`
// and the named reasons for any skipped cases. A file where nothing passed
// is a failure: it means the loader, not the code, is broken.
func (c *tally) report(t testing.TB) {
	t.Helper()
	fmt.Printf("vectors %s: passed=%d failed=%d skipped=%d\n", c.file, c.passed, c.failed, c.skipped)
	for reason, n := range c.skipReasons {
		t.Logf("vectors %s: skipped %d: %s", c.file, n, reason)
	}
	if c.passed == 0 {
		t.Errorf("vectors %s: no case passed", c.file)
	}
}

// hexBytes is a JSON string of hex digits decoded to bytes.
type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = b
	return nil
}
