package mls

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// vectorDir holds the IETF MLS interoperability vectors. The repository
// sits beside ../shared in every checkout (developer and CI alike); the
// QPC_MLS_VECTORS environment variable overrides the location.
func vectorDir() string {
	if d := os.Getenv("QPC_MLS_VECTORS"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "shared", "testdata", "mls")
}

// loadVectors decodes one vector file into v, failing the test if the file
// is missing: the vectors are the point of these tests.
func loadVectors(t testing.TB, name string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(vectorDir(), name))
	if err != nil {
		t.Fatalf("vectors %s: %v", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("vectors %s: %v", name, err)
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
