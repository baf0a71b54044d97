package trace

import "testing"

func TestLabMailboxIDInverts(t *testing.T) {
	for _, c := range []struct {
		role byte
		u, j int32
	}{{1, 0, 0}, {2, 999_999, 10}, {2, 123456, 1<<20 - 1}} {
		r, u, j, ok := ownerOf(42, mailboxID(42, c.role, c.u, c.j))
		if !ok || r != c.role || u != c.u || j != c.j {
			t.Fatalf("ownerOf(mailboxID(%v)) = %d %d %d %v", c, r, u, j, ok)
		}
	}
}
