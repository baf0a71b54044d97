package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestObserverRecordNeverOverwrites: observer_record names a new file; an
// existing one (an earlier run's record) is refused and left as it was.
func TestObserverRecordNeverOverwrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "observer.jsonl")
	f, err := openObserverRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("earlier run\n")
	f.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file mode %v, %v; want 0600", fi.Mode(), err)
	}
	if _, err := openObserverRecord(path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("an existing record was opened again: %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != "earlier run\n" {
		t.Fatalf("the earlier record changed: %q", raw)
	}
}
