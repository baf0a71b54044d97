package server

import (
	"slices"
	"sync"
)

// hub wakes the subscriptions of a mailbox when something is stored in it.
// A wake carries no data: the subscriber reads the store after its cursor,
// so a wake that arrives while it is busy is never lost, only merged.
//
// A mailbox holds at most max subscriptions (Options.MaxSubsPerMailbox):
// a new one beyond it replaces the oldest, so a Send wakes a bounded
// number of subscribers, and an owner whose old connection died unnoticed
// is not locked out by its own stale subscriptions.
type hub struct {
	mu   sync.Mutex
	max  int
	subs map[[32]byte][]*subscription // oldest first
}

type subscription struct {
	wake     chan struct{} // buffered 1: pending wakes merge
	gone     chan struct{} // closed when the mailbox is deleted
	replaced chan struct{} // closed when a newer subscription took this one's place
}

func newHub(max int) *hub {
	return &hub{max: max, subs: make(map[[32]byte][]*subscription)}
}

// subscribe registers interest in a mailbox; call the returned func to stop.
func (h *hub) subscribe(id [32]byte) (*subscription, func()) {
	s := &subscription{wake: make(chan struct{}, 1), gone: make(chan struct{}), replaced: make(chan struct{})}
	h.mu.Lock()
	subs := h.subs[id]
	for len(subs) >= h.max {
		close(subs[0].replaced)
		subs = subs[1:]
	}
	h.subs[id] = append(subs, s)
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		subs := h.subs[id]
		if i := slices.Index(subs, s); i >= 0 {
			subs = slices.Delete(subs, i, i+1)
		}
		if len(subs) == 0 {
			delete(h.subs, id)
		} else {
			h.subs[id] = subs
		}
	}
}

func (h *hub) notify(id [32]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs[id] {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// notifyAll wakes every subscription: after the store's wake-up listener
// was away, since nobody knows what was stored meanwhile.
func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, subs := range h.subs {
		for _, s := range subs {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// mailboxes lists the mailboxes with a live subscription.
func (h *hub) mailboxes() [][32]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([][32]byte, 0, len(h.subs))
	for id := range h.subs {
		ids = append(ids, id)
	}
	return ids
}

// closeMailbox ends every subscription of a deleted mailbox.
func (h *hub) closeMailbox(id [32]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs[id] {
		close(s.gone)
	}
	delete(h.subs, id)
}

// subscribed reports whether the mailbox has a live subscription.
func (h *hub) subscribed(id [32]byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[id]) > 0
}

// count is the number of live subscriptions.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
