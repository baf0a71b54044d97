package ktstoretest_test

import (
	"testing"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktstoretest"
)

// TestBoltTree runs the tree suite against the embedded bbolt store.
func TestBoltTree(t *testing.T) {
	ktstoretest.RunTree(t, func(t *testing.T) ktstoretest.TreeStorage {
		dir := t.TempDir()
		return func(t *testing.T) kt.TreeStore {
			s, err := kt.OpenBoltTree(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	})
}
