package server

import (
	"context"
	"time"
)

// Purging: expired messages and idle mailboxes are deleted on
// PurgeInterval, in the background.

func (s *Server) purgeLoop() {
	defer close(s.purgeDone)
	t := time.NewTicker(s.opts.PurgeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.purgeStop:
			return
		case <-t.C:
			n, err := s.opts.Store.PurgeExpired(context.Background(), s.opts.Now(), s.opts.TTL)
			if err != nil {
				s.log.Warn("expiry sweep failed", "err", err)
			} else if n > 0 {
				s.log.Info("expired messages purged", "count", n)
			}
			s.keepSubscribedInUse()
			s.purgeIdle()
			if s.opts.Accounts != nil {
				if _, err := s.opts.Accounts.PurgeExpired(context.Background()); err != nil {
					s.log.Warn("account expiry sweep failed", "err", err)
				}
			}
		}
	}
}

// purgeIdle deletes the mailboxes whose owner has not fetched from them
// for MailboxTTL (docs/storage.md, "Idle mailboxes"). A mailbox with a
// live subscription is in use however long nothing arrives: it is kept.
// A subscription that starts while its mailbox is deleted ends with
// NOT_FOUND, as after DeleteMailbox.
func (s *Server) purgeIdle() {
	n, err := s.opts.Store.PurgeIdle(context.Background(), s.opts.Now(), s.opts.MailboxTTL, s.hub.subscribed, s.hub.closeMailbox)
	if err != nil {
		s.log.Warn("idle mailbox sweep failed", "err", err)
	} else if n > 0 {
		s.log.Info("idle mailboxes deleted", "count", n)
	}
}
