package store

import (
	"context"
	"errors"
	"time"
)

// ID sizes fixed by the protocol (docs/protocol.md §4).
const (
	MailboxIDSize = 32 // receive and send IDs
	MessageIDSize = 16 // client-chosen idempotency key
	OwnerKeySize  = 32 // Ed25519 public key of the mailbox owner
)

// Errors returned by every Store implementation. Callers match them with
// errors.Is; implementations wrap them once with the operation.
var (
	ErrNotFound      = errors.New("mailbox not found")
	ErrExists        = errors.New("mailbox already exists")
	ErrQuotaCount    = errors.New("mailbox quota exceeded: too many messages")
	ErrQuotaBytes    = errors.New("mailbox quota exceeded: too many bytes")
	ErrTooLarge      = errors.New("envelope too large")
	ErrClosed        = errors.New("store closed")
	ErrStorageFailed = errors.New("storage failure")
	ErrSpent         = errors.New("authorization already spent")
)

// SpendKeySize is the size of a spend key.
const SpendKeySize = 32

// Spend is a one-time authorization (an anonymous delivery token) that a
// write consumes. The store records Key in the same transaction as the
// write it pays for, so a token is spent exactly when the write is
// durable, and refuses a key it has seen (ErrSpent). Until is when the
// record may be forgotten: after it, the token is no longer accepted
// anyway. Nothing links a spend key to the mailbox or message it paid for.
type Spend struct {
	Key   [SpendKeySize]byte
	Until time.Time
}

// Mailbox is what the server keeps about one mailbox. It names no account:
// the owner key belongs to the mailbox alone.
type Mailbox struct {
	ReceiveID [MailboxIDSize]byte
	SendID    [MailboxIDSize]byte
	OwnerKey  [OwnerKeySize]byte
	Created   time.Time // coarse (see Options.TimeGranularity)
	// LastUsed is the start (00:00 UTC) of the day its owner last fetched
	// from it, or of the day it was created (PurgeIdle). Ignored by
	// CreateMailbox, which sets it from Created.
	LastUsed time.Time
}

// Message is one stored envelope. Seq orders messages within a mailbox and
// is the cursor of Fetch; it is assigned by the store, starting at 1.
type Message struct {
	Seq        uint64
	ID         [MessageIDSize]byte
	ReceivedAt time.Time // coarse arrival time
	Envelope   []byte
}

// Quota limits one mailbox. Zero fields mean "no limit".
type Quota struct {
	MaxMessages int
	MaxBytes    int64
}

// PutResult reports where a sent message landed.
type PutResult struct {
	ReceiveID [MailboxIDSize]byte // the mailbox the send ID resolved to
	Seq       uint64
	Duplicate bool // the message ID was already stored (or stored and acked)
}

// Store is the durable mailbox storage behind the delivery service.
//
// Every mutating call returns only after its change is durable (committed
// and synced); a nil error is a promise the data survives a crash.
// Implementations must be safe for concurrent use.
type Store interface {
	// CreateMailbox stores a new mailbox; ErrExists if either ID is taken.
	// A non-nil spend is consumed with it (ErrSpent if already seen).
	CreateMailbox(ctx context.Context, m Mailbox, spend *Spend) error
	// Mailbox returns the mailbox with the given receive ID, or ErrNotFound.
	Mailbox(ctx context.Context, receiveID [MailboxIDSize]byte) (Mailbox, error)
	// Put stores an envelope for the mailbox whose send ID is sendID.
	// A message ID already seen for that mailbox within the idempotency
	// window is not stored again: the original result is returned with
	// Duplicate set, even if the message was acked since. Quota errors are
	// ErrQuotaCount / ErrQuotaBytes; an unknown send ID is ErrNotFound.
	// A non-nil spend is consumed with a newly stored message (ErrSpent if
	// already seen); a duplicate consumes nothing, so a retry carrying the
	// same token is acknowledged again.
	Put(ctx context.Context, sendID [MailboxIDSize]byte, id [MessageIDSize]byte, envelope []byte, q Quota, now time.Time, spend *Spend) (PutResult, error)
	// Fetch returns up to limit stored messages with Seq > after, in
	// order, and whether more remain. Expiry is PurgeExpired's job (Fetch
	// has no TTL to judge by): a message past its TTL may be returned until
	// the next purge removes it. A Fetch is the owner's use of the mailbox:
	// it records the day of now as the mailbox's LastUsed (at most one
	// write per mailbox and day).
	Fetch(ctx context.Context, receiveID [MailboxIDSize]byte, after uint64, limit int, now time.Time) (msgs []Message, more bool, err error)
	// Ack deletes the named messages; unknown or already deleted IDs are
	// ignored (idempotent). It returns how many were deleted now.
	Ack(ctx context.Context, receiveID [MailboxIDSize]byte, ids [][MessageIDSize]byte) (int, error)
	// Spend consumes a one-time authorization that pays for no write of
	// this store (a KeyPackage fetch, whose write is the account service's):
	// the key is recorded durably before Spend returns, and a key seen
	// before, by Spend, CreateMailbox or Put, is ErrSpent. Spending is the
	// whole operation, so a retry after a lost answer is ErrSpent too. A
	// nil spend is a no-op.
	Spend(ctx context.Context, spend *Spend) error
	// DeleteMailbox removes a mailbox, its messages and its idempotency
	// keys; ErrNotFound if it does not exist.
	DeleteMailbox(ctx context.Context, receiveID [MailboxIDSize]byte) error
	// PurgeExpired deletes messages received before now-ttl, idempotency
	// keys older than now-ttl and spends whose Until is before now,
	// returning how many messages were deleted.
	PurgeExpired(ctx context.Context, now time.Time, ttl time.Duration) (int, error)
	// PurgeIdle deletes every mailbox whose LastUsed day ended more than
	// idle before now, as DeleteMailbox does: its messages, their keys and
	// its idempotency keys go with it. A mailbox that keep (if non-nil)
	// reports true for is kept and counts as used now (the server keeps
	// the mailboxes with a live subscription). gone (if non-nil) is called
	// with each deleted mailbox's receive ID after its deletion is
	// durable. It returns how many mailboxes were deleted; idle <= 0
	// deletes none.
	PurgeIdle(ctx context.Context, now time.Time, idle time.Duration, keep func(receiveID [MailboxIDSize]byte) bool, gone func(receiveID [MailboxIDSize]byte)) (int, error)
	// Close flushes pending writes and releases the store.
	Close() error
}
