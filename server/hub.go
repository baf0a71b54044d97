package server

import "sync"

// hub wakes the subscriptions of a mailbox when something is stored in it.
// A wake carries no data: the subscriber reads the store after its cursor,
// so a wake that arrives while it is busy is never lost, only merged.
type hub struct {
	mu   sync.Mutex
	subs map[[32]byte]map[*subscription]struct{}
}

type subscription struct {
	wake chan struct{} // buffered 1: pending wakes merge
	gone chan struct{} // closed when the mailbox is deleted
}

func newHub() *hub { return &hub{subs: make(map[[32]byte]map[*subscription]struct{})} }

// subscribe registers interest in a mailbox; call the returned func to stop.
func (h *hub) subscribe(id [32]byte) (*subscription, func()) {
	s := &subscription{wake: make(chan struct{}, 1), gone: make(chan struct{})}
	h.mu.Lock()
	if h.subs[id] == nil {
		h.subs[id] = make(map[*subscription]struct{})
	}
	h.subs[id][s] = struct{}{}
	h.mu.Unlock()
	return s, func() {
		h.mu.Lock()
		delete(h.subs[id], s)
		if len(h.subs[id]) == 0 {
			delete(h.subs, id)
		}
		h.mu.Unlock()
	}
}

func (h *hub) notify(id [32]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[id] {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// closeMailbox ends every subscription of a deleted mailbox.
func (h *hub) closeMailbox(id [32]byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[id] {
		close(s.gone)
	}
	delete(h.subs, id)
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
