package server

import (
	"context"
	"time"

	"github.com/quicprochat/qpc/server/store"
)

// Cross-node wake-ups (docs/scaling.md, "Cross-node delivery"; ADR
// 0038). With several nodes on one shared store (store.Waker: the
// PostgreSQL store), a message stored through another node must wake the
// subscriptions this node holds, and a mailbox another node deleted must
// end them. The store tells; wakeLoop feeds the hub. A single-node store
// needs none of it: this node's hub hears of every write it makes.

// startWakes runs the store's wake-up listener until Shutdown, if the
// store is shared.
func (s *Server) startWakes() {
	w, ok := s.opts.Store.(store.Waker)
	if !ok {
		return
	}
	var ctx context.Context
	ctx, s.wakeStop = context.WithCancel(context.Background())
	s.wakeDone = make(chan struct{})
	go func() {
		defer close(s.wakeDone)
		defer s.opts.Metrics.SetWakeListener(false)
		err := w.Wakes(ctx, func(wk store.Wake) {
			switch wk.Kind {
			case store.WakeStored:
				s.opts.Metrics.WakeReceived()
				s.hub.notifyTag(wk.Tag)
			case store.WakeDeleted:
				// A hint to read the store, not its word: any role that
				// may connect to the database can notify, so a forged
				// deletion must not end the subscriptions of a mailbox
				// that exists. Woken, each reads its mailbox and, if it
				// is gone, ends with NOT_FOUND
				// (TestHostileDBRoleForgedDeletionKeepsSubscription).
				s.opts.Metrics.WakeReceived()
				s.hub.notifyTag(wk.Tag)
			case store.WakeListening:
				// Wakes sent while nobody listened are lost: every
				// subscriber reads its mailbox again (a deleted one
				// then ends with NOT_FOUND).
				s.hub.notifyAll()
				s.opts.Metrics.SetWakeListener(true)
			case store.WakeLost:
				s.opts.Metrics.SetWakeListener(false)
			}
		})
		if err != nil && ctx.Err() == nil {
			s.log.Warn("the store's wake-up listener stopped: subscribers hear only of sends through this node", "err", err)
		}
	}()
}

// wakeTagger is the store's WakeTag, for the hub's index of its
// mailboxes by tag, if the store is shared.
func wakeTagger(st store.Store) func([32]byte) [store.WakeTagSize]byte {
	if w, ok := st.(store.Waker); ok {
		return w.WakeTag
	}
	return nil
}

// stopWakes ends the listener and waits for it.
func (s *Server) stopWakes() {
	if s.wakeStop != nil {
		s.wakeStop()
		<-s.wakeDone
	}
}

// keepSubscribedInUse records, once a day (UTC), the mailboxes this node
// holds subscriptions to as in use in a shared store: another node's
// idle sweep knows only its own subscriptions, and would otherwise
// delete a mailbox subscribed here that nothing was fetched from for
// MailboxTTL. A subscription's first read records its day already; this
// carries it over the following days. It runs on the purge loop, before
// this node's own sweep; a failure is retried on the next round.
func (s *Server) keepSubscribedInUse() {
	w, ok := s.opts.Store.(store.Waker)
	if !ok {
		return
	}
	now := s.opts.Now()
	day := now.UTC().Truncate(24 * time.Hour)
	if day.Equal(s.keptDay) {
		return
	}
	if err := w.KeepInUse(context.Background(), s.hub.mailboxes(), now); err != nil {
		s.log.Warn("recording subscribed mailboxes as in use failed; the next sweep tries again", "err", err)
		return
	}
	s.keptDay = day
}
