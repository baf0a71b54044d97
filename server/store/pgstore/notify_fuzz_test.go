package pgstore

import (
	"encoding/hex"
	"strings"
	"testing"
)

// FuzzParsePayload: any payload decodes to IDs that encode back to it,
// or is refused; nothing panics.
func FuzzParsePayload(f *testing.F) {
	id := strings.Repeat("ab", 32)
	f.Add("s0123456789abcdef" + id)
	f.Add("d0123456789abcdef" + id + id)
	f.Add("s0123456789abcdef")
	f.Add("x0123456789abcdef" + id)
	f.Add("s0123456789abcdeg" + id)
	f.Add("s0123456789abcdef" + id[:63])
	f.Fuzz(func(t *testing.T, p string) {
		kind, node, ids, err := parsePayload(p)
		if err != nil {
			return
		}
		var b strings.Builder
		b.WriteByte(kind)
		b.WriteString(node)
		for _, id := range ids {
			b.WriteString(hex.EncodeToString(id[:]))
		}
		if !strings.EqualFold(b.String(), p) {
			t.Fatalf("payload %q decodes to %q", p, b.String())
		}
	})
}
