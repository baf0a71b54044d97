package store

import (
	"context"
	"time"
)

// Waker is implemented by a store that several server nodes share (the
// PostgreSQL store): what one node commits, the others learn of, so that
// a send through node A wakes a subscriber connected to node B. A store
// of one node (the bbolt store) does not implement it: the server's own
// hub hears of everything it stores.
type Waker interface {
	// Wakes calls fn, from one goroutine, for each mailbox another node
	// stored a message in or deleted, and for the listener's state
	// changes (WakeListening, WakeLost), until ctx is done or the store is
	// closed; it returns then. A lost connection to the database is
	// reconnected by Wakes itself: what was committed meanwhile is not
	// known, so each WakeListening after the first asks the caller to
	// wake every subscription it holds.
	Wakes(ctx context.Context, fn func(Wake)) error

	// KeepInUse records the mailboxes as used on now's day (UTC), as a
	// Fetch does: a node calls it at least daily for the mailboxes it
	// holds subscriptions to, so that another node's PurgeIdle, whose keep
	// func knows only its own subscriptions, does not delete them.
	KeepInUse(ctx context.Context, receiveIDs [][MailboxIDSize]byte, now time.Time) error
}

// WakeKind says what a Wake reports.
type WakeKind uint8

const (
	// WakeStored: a message was stored in the mailbox.
	WakeStored WakeKind = iota + 1
	// WakeDeleted: the mailbox was deleted (DeleteMailbox, PurgeIdle).
	WakeDeleted
	// WakeListening: the listener is (again) connected. Its Resync is
	// true after a reconnect: wakes may have been lost meanwhile.
	WakeListening
	// WakeLost: the listener's connection failed; it is reconnecting.
	WakeLost
)

// Wake is one report of Waker.Wakes. ReceiveID is set for WakeStored
// and WakeDeleted.
type Wake struct {
	Kind      WakeKind
	ReceiveID [MailboxIDSize]byte
	Resync    bool
}
