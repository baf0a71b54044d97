package server

import (
	"slices"
	"sync"

	"github.com/quicprochat/qpc/server/store"
)

// hub wakes the subscriptions of a mailbox when something is stored in it.
// A wake carries no data: the subscriber reads the store after its cursor,
// so a wake that arrives while it is busy is never lost, only merged.
//
// A mailbox holds at most max subscriptions (Options.MaxSubsPerMailbox):
// a new one beyond it replaces the oldest, so a Send wakes a bounded
// number of subscribers, and an owner whose old connection died unnoticed
// is not locked out by its own stale subscriptions.
//
// With a shared store (store.Waker) the hub also indexes its mailboxes
// by wake tag: another node's wake names a mailbox by its tag alone
// (ADR 0038, "Keyed tags"), and notifyTag wakes every mailbox held under
// it (two at once only if their tags collide, a chance of 2^-128 per
// pair, and then one costs a read).
type hub struct {
	mu    sync.Mutex
	max   int
	subs  map[[32]byte][]*subscription // oldest first
	tagOf func([32]byte) [store.WakeTagSize]byte
	byTag map[[store.WakeTagSize]byte][][32]byte // the mailboxes of subs, when tagOf is set
}

type subscription struct {
	wake     chan struct{} // buffered 1: pending wakes merge
	gone     chan struct{} // closed when the mailbox is deleted
	replaced chan struct{} // closed when a newer subscription took this one's place
}

// newHub makes a hub of at most max subscriptions per mailbox; tagOf,
// if set, is the store's store.Waker.WakeTag.
func newHub(max int, tagOf func([32]byte) [store.WakeTagSize]byte) *hub {
	h := &hub{max: max, subs: make(map[[32]byte][]*subscription), tagOf: tagOf}
	if tagOf != nil {
		h.byTag = make(map[[store.WakeTagSize]byte][][32]byte)
	}
	return h
}

// Under h.mu: the index by tag follows the mailboxes of h.subs.
func (h *hub) indexAdd(id [32]byte) {
	if h.tagOf != nil {
		tag := h.tagOf(id)
		h.byTag[tag] = append(h.byTag[tag], id)
	}
}

func (h *hub) indexRemove(id [32]byte) {
	if h.tagOf == nil {
		return
	}
	tag := h.tagOf(id)
	ids := slices.DeleteFunc(h.byTag[tag], func(x [32]byte) bool { return x == id })
	if len(ids) == 0 {
		delete(h.byTag, tag)
	} else {
		h.byTag[tag] = ids
	}
}

// subscribe registers interest in a mailbox; call the returned func to stop.
func (h *hub) subscribe(id [32]byte) (*subscription, func()) {
	s := &subscription{wake: make(chan struct{}, 1), gone: make(chan struct{}), replaced: make(chan struct{})}
	h.mu.Lock()
	subs := h.subs[id]
	if len(subs) == 0 {
		h.indexAdd(id)
	}
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
			if _, ok := h.subs[id]; ok {
				h.indexRemove(id)
			}
			delete(h.subs, id)
		} else {
			h.subs[id] = subs
		}
	}
}

func (h *hub) notify(id [32]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wakeLocked(id)
}

func (h *hub) wakeLocked(id [32]byte) {
	for _, s := range h.subs[id] {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// notifyTag wakes the subscriptions of every mailbox held under the wake
// tag (none if the hub has no tags: a store of one node).
func (h *hub) notifyTag(tag [store.WakeTagSize]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range h.byTag[tag] {
		h.wakeLocked(id)
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
	if _, ok := h.subs[id]; ok {
		h.indexRemove(id)
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
