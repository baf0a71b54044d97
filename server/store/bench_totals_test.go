package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkTotals is the cost of one metrics scrape's store totals with
// 10,000 and 100,000 mailboxes: the same for both when nothing is walked.
func BenchmarkTotals(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("mailboxes=%d", n), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "qpc.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			createMany(b, s, n, t0)
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				if _, err := s.Totals(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
