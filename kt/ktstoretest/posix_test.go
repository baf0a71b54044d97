package ktstoretest_test

import (
	"context"
	"testing"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/kt/ktstoretest"
)

// TestPOSIXLog runs the log suite against Tessera's POSIX driver.
func TestPOSIXLog(t *testing.T) {
	ktstoretest.RunLog(t, func(t *testing.T) ktstoretest.LogStorage {
		dir := t.TempDir()
		return func(t *testing.T, c kt.LogConfig) kt.LogDriver {
			l, err := kt.OpenPOSIXLog(context.Background(), dir, c)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
	})
}
