package accountstest_test

import (
	"testing"

	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/accounts/accountstest"
)

// TestBolt runs the conformance suite against the embedded bbolt store,
// which also keeps the suite itself honest: it must pass on a real backend.
func TestBolt(t *testing.T) {
	accountstest.Run(t, func(t *testing.T) accounts.Store {
		s, err := accounts.OpenBolt(t.TempDir())
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
