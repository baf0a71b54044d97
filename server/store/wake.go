package store

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
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

	// WakeTag is the mailbox's tag in the wakes of this store (WakeTagOf
	// under the store's wake key): a Wake names its mailbox by the tag
	// alone, and the caller finds the mailboxes it holds under it.
	WakeTag(receiveID [MailboxIDSize]byte) [WakeTagSize]byte
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

// Wake is one report of Waker.Wakes. Tag is set for WakeStored and
// WakeDeleted: the mailbox's WakeTag, never its receive ID, since the
// wakes pass through the database, where any role that may connect can
// listen (ADR 0038, "Keyed tags"). Two mailboxes may share a tag (one
// chance in 2^128 per pair): a wake is only a hint to read, so a shared
// tag costs a read, nothing more.
type Wake struct {
	Kind   WakeKind
	Tag    [WakeTagSize]byte
	Resync bool
}

// Wake tags (ADR 0038, "Keyed tags"). The nodes of one deployment name a
// mailbox in their wakes by
//
//	tag = HMAC-SHA256(wake key, receive ID)[:16]     (RFC 2104; truncation: RFC 2104 section 5)
//	wake key = HKDF-SHA256(IKM = the token master secret (tokens.key), salt = none,
//	                       info = WakeKeyInfo, L = 32)   (RFC 5869 sections 2.2, 2.3)
//
// tokens.key is a secret every node of one server holds already (ADR
// 0039 checks that they agree), a master secret made for derivation; the
// distinct info label keeps the wake key independent of the token keys
// derived from the same secret. A database role that cannot read the
// nodes' key files cannot tie a tag to a mailbox of the tables.
const (
	WakeTagSize = 16
	WakeKeySize = 32
	WakeKeyInfo = "qpc-server wake-up tag key v1"
)

// DeriveWakeKey derives the wake key from the token master secret.
func DeriveWakeKey(secret []byte) ([]byte, error) {
	if len(secret) < 32 {
		return nil, errors.New("store: wake key: the master secret is shorter than 32 bytes")
	}
	return hkdf.Key(sha256.New, secret, nil, WakeKeyInfo, WakeKeySize)
}

// WakeTagOf is the tag of the mailbox receiveID under the wake key.
func WakeTagOf(key []byte, receiveID [MailboxIDSize]byte) [WakeTagSize]byte {
	m := hmac.New(sha256.New, key)
	m.Write(receiveID[:])
	var tag [WakeTagSize]byte
	copy(tag[:], m.Sum(nil))
	return tag
}
