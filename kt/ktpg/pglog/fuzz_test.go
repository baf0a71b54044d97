package pglog

import (
	"bytes"
	"testing"

	"github.com/transparency-dev/tessera/api"
)

// FuzzBundlePrefix: bundlePrefix, which cuts a stored entry bundle to a
// partial width for ReadEntryBundle, never panics, and what it returns is
// a bundle that Tessera's client parses into exactly the first n entries
// of the whole (C2SP tlog-tiles entry bundles).
func FuzzBundlePrefix(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 2, 'b', 'c'}, 1)
	f.Add([]byte{0, 1, 'a', 0, 2, 'b', 'c'}, 2)
	f.Add([]byte{0, 0, 0, 3, 'x'}, 2)
	f.Add([]byte{0xff, 0xff}, 1)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 256 {
			return
		}
		off, err := bundlePrefix(b, n)
		if err != nil {
			return
		}
		if off < 0 || off > len(b) {
			t.Fatalf("bundlePrefix(%x, %d) = %d, outside the bundle", b, n, off)
		}
		var part api.EntryBundle
		if err := part.UnmarshalText(b[:off]); err != nil {
			t.Fatalf("the prefix of %d entries does not parse: %v", n, err)
		}
		if len(part.Entries) != n {
			t.Fatalf("the prefix holds %d entries, want %d", len(part.Entries), n)
		}
		var whole api.EntryBundle
		if whole.UnmarshalText(b) == nil {
			for i, e := range part.Entries {
				if !bytes.Equal(e, whole.Entries[i]) {
					t.Fatalf("entry %d of the prefix differs from the whole's", i)
				}
			}
		}
	})
}
