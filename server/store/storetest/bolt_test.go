package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/server/store/storetest"
)

// TestBolt runs the conformance suite against the embedded bbolt store,
// which also keeps the suite itself honest: it must pass on a real backend.
func TestBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.Open(filepath.Join(t.TempDir(), "qpc.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}
