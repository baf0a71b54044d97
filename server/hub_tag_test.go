package server

import (
	"testing"

	"github.com/quicprochat/qpc/server/store"
)

// TestHubNotifyTag: a wake by tag wakes the mailboxes held under it (both
// of two whose tags collide), and the index forgets a mailbox with its
// last subscription and on deletion.
func TestHubNotifyTag(t *testing.T) {
	key := make([]byte, store.WakeKeySize)
	collide := [32]byte{9}
	tagOf := func(id [32]byte) [store.WakeTagSize]byte {
		if id == collide {
			id = [32]byte{1}
		}
		return store.WakeTagOf(key, id)
	}
	h := newHub(2, tagOf)
	woken := func(s *subscription) bool {
		select {
		case <-s.wake:
			return true
		default:
			return false
		}
	}
	a, stopA := h.subscribe([32]byte{1})
	a2, stopA2 := h.subscribe([32]byte{1})
	c, _ := h.subscribe(collide)
	other, stopOther := h.subscribe([32]byte{2})
	h.notifyTag(tagOf([32]byte{1}))
	if !woken(a) || !woken(a2) || !woken(c) || woken(other) {
		t.Fatal("a wake by tag woke the wrong subscriptions")
	}
	stopA()
	if len(h.byTag) != 2 {
		t.Fatalf("the index holds %d tags, want 2", len(h.byTag))
	}
	stopA2()
	h.closeMailbox(collide)
	stopOther()
	if len(h.byTag) != 0 || len(h.subs) != 0 {
		t.Fatalf("the index holds %d tags after the last subscription ended", len(h.byTag))
	}
	h.notifyTag(tagOf([32]byte{1})) // nothing held: nothing to wake
}
