package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// On-disk layout, schema 4.
//
// Two files: the bbolt file (the path given to Open, qpc.db) and the
// key-slot file next to it (path + KeyFileSuffix, qpc.db.keys; keys.go).
// Every envelope is sealed under a key of its own that only the key-slot
// file holds (seal.go): when a message goes, its slot is overwritten, and
// what bbolt's freed pages still hold of it is ciphertext without a key.
//
// Buckets and keys (IDs are raw bytes, integers big-endian so that byte
// order is numeric order and a cursor can range-scan):
//
//	meta                "schema" -> u8 schema version (4)
//	                    "envelope_limit" -> u32 MaxEnvelope of the last Open
//	                    "key_file" -> the key-slot file's ID (16)
//	                    "key_generation" -> u64 clean closes (keys.go)
//	                    "compact" -> 1 while an upgrade's compaction is due
//	mailboxes           receiveID(32) -> mailbox record
//	mailbox_idle        lastUsed(8) | receiveID(32) -> empty
//	send_ids            sendID(32) -> send index record
//	messages            receiveID(32) | seq(u64) -> message record
//	idempotency_expiry  time(8) | receiveID(32) | seq(u64) -> messageID(16)
//	spent               spendKey(32) -> spent record
//	spent_expiry        time(8) | spendKey(32) -> empty
//
// idempotency_expiry (the arrivals bucket in the code; its name is from
// schema 1) has one entry for every message accepted within the TTL,
// acknowledged or not. Put appends it in time order in the message's
// transaction. It is three indexes in one: PurgeExpired walks it to find
// what has expired, in time order, without scanning every message; its
// time and seq name the message's key; and it holds the idempotency keys,
// which Open loads into memory (idem.go) so that a send never writes a
// page keyed by its random message ID.
//
// mailbox_idle (schema 4, idle.go) has one entry per mailbox, keyed by
// the day its owner last used it (lastUsed in its record): PurgeIdle
// walks it in time order to find the mailboxes idle for longer than the
// idle TTL without reading the others, and the owner's first Fetch of a
// day moves the mailbox's entry to that day. A time in a key is the Unix second
// with its sign bit flipped, so that negative times (the zero time.Time
// included) still sort before positive ones.
//
// Schema 1 also had an "idempotency" bucket (receiveID | messageID ->
// seq, time) and a "message_expiry" bucket (the same keys as
// idempotency_expiry, for unacknowledged messages only); both were
// derived from what schema 2 keeps, and Open drops them when it upgrades
// a schema 1 file. Schemas 1 and 2 stored envelopes in the clear (message
// record version 1); the upgrade to schema 3 seals each one, then copies
// the file to a new one (bbolt.Compact) and overwrites the old one with
// zeros, so that no envelope the old file ever held, acknowledged ones
// included, survives in a freed page (upgradeMessages, compactStore).
//
// Every value starts with a format version byte; a reader refuses any
// other version or length with ErrCorrupt instead of guessing. Times are
// int64 Unix seconds, already coarse:
//
//	mailbox record      2 | ownerKey(32) | sendID(32) | created(i64) | nextSeq(u64) | count(u64) | bytes(u64) | lastUsed(i64)
//	send index record   1 | receiveID(32) | (nothing else)
//	message record      2 | messageID(16) | received(i64) | slot(u32) | sealed envelope (envelope + 16-byte tag)
//	spent record        1 | until(i64)
//
// lastUsed is the start (00:00 UTC) of the day the owner last fetched
// from the mailbox (or created it): a day, not a time, so the file says
// little about when its owner is online. Schemas 1 to 3 had mailbox
// record version 1, the same without lastUsed; the upgrade to schema 4
// gives every mailbox the day of the upgrade.
//
// (An arrival's value is a bare message ID: its length is its format.
// Version 1 message records, 1 | messageID | received | envelope, are
// read only by the upgrade.)
//
// The spent set holds only token spend keys and when they may go; no key
// names the mailbox or message (or, for Spend, the KeyPackage fetch) its
// token paid for.
//
// count and bytes are the mailbox's stored messages and the sum of their
// envelope lengths (before sealing); they are updated in the same
// transaction as the messages, so quota checks never scan.
var (
	bucketMeta      = []byte("meta")
	bucketMailboxes = []byte("mailboxes")
	bucketIdle      = []byte("mailbox_idle")
	bucketSendIDs   = []byte("send_ids")
	bucketMessages  = []byte("messages")
	bucketArrivals  = []byte("idempotency_expiry")
	bucketSpent     = []byte("spent")
	bucketSpentExp  = []byte("spent_expiry")

	allBuckets = [][]byte{bucketMeta, bucketMailboxes, bucketIdle, bucketSendIDs, bucketMessages, bucketArrivals, bucketSpent, bucketSpentExp}

	// Schema 1's derived buckets, dropped by the upgrade to schema 2.
	schema1Dropped = [][]byte{[]byte("idempotency"), []byte("message_expiry")}

	keySchema        = []byte("schema")
	keyEnvelopeLimit = []byte("envelope_limit")
	keyKeyFileID     = []byte("key_file")
	keyKeyGen        = []byte("key_generation")
	keyCompact       = []byte("compact")
)

const (
	schemaVersion = 4
	recordV1      = 1
	// recordV2 is the message record of schemas 3 and 4 (sealed, with a
	// slot) and the mailbox record of schema 4 (with lastUsed).
	recordV2 = 2

	mailboxRecordV1Size = 1 + OwnerKeySize + MailboxIDSize + 8 + 8 + 8 + 8
	mailboxRecordSize   = mailboxRecordV1Size + 8
	idleKeySize         = 8 + MailboxIDSize
	sendRecordSize      = 1 + MailboxIDSize
	// A message record's header: what the seal's additional data covers
	// (messageADSize), then the key slot.
	messageADSize     = 1 + MessageIDSize + 8
	messageHeaderSize = messageADSize + 4
	// The version 1 record of schemas 1 and 2: no slot, the envelope in
	// the clear.
	messageV1HeaderSize = 1 + MessageIDSize + 8

	messageKeySize = MailboxIDSize + 8
	// An arrival is keyed by time and seq, not by message ID: the keys
	// then grow in order and an insert appends to the last page instead
	// of dirtying a random one (message IDs are random).
	arrivalKeySize = 8 + messageKeySize
)

// ErrCorrupt reports a stored value or key that does not decode. It wraps
// ErrStorageFailed: to a caller it is a storage failure, never a panic.
var ErrCorrupt = fmt.Errorf("%w: corrupt record", ErrStorageFailed)

// Bolt is the embedded Store: one bbolt file, one writer goroutine.
//
// Writes are queued and the writer commits everything queued (up to
// Options.MaxBatch operations) in one fsynced transaction, acknowledging
// each operation only after that commit. Reads use their own read-only
// transactions and run concurrently with the writer.
type Bolt struct {
	db       *bolt.DB
	pageSize int // db.Info().PageSize, which panics once db is closed
	gran     time.Duration
	maxBatch int
	maxEnv   int
	log      *slog.Logger
	onCommit func(CommitInfo)
	// idem is the idempotency index (idem.go): Open builds it, then only
	// the writer touches it. idemKeys is its size, for Stats.
	idem     *idemIndex
	idemKeys atomic.Int64
	// keys is the key-slot file (keys.go); the writer alone changes it,
	// Fetch reads keys from it.
	keys     *keyFile
	keySlots atomic.Int64
	// keysUnsynced: the key-slot file has writes not yet synced (the
	// writer syncs them when idle).
	keysUnsynced atomic.Bool
	unreadable   atomic.Uint64
	updateMu     sync.Mutex
	// totals are the store-wide sums (totals.go): loaded at Open, then
	// changed by the writer as its transactions commit.
	totMu  sync.Mutex
	totals Totals

	queue chan *op
	// mu orders submissions against Close: a submitter holds it shared
	// while it sends on queue, so Close (exclusive) can close queue without
	// racing a send. The writer never takes it, so it keeps draining.
	mu         sync.RWMutex
	closed     bool
	shut       atomic.Bool // lock-free copy of closed for readers
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	commits       atomic.Uint64
	failedCommits atomic.Uint64
	ops           atomic.Uint64
	failedOps     atomic.Uint64
	commitNanos   atomic.Int64
	largestBatch  atomic.Int64
	// Where committed operations spent their time (see Stats).
	queuedNanos atomic.Int64
	txnNanos    atomic.Int64
	wakeNanos   atomic.Int64
}

var _ Store = (*Bolt)(nil)

// Stats are cumulative counters of the group-commit writer, for metrics.
// Mean batch size is Ops/Commits; mean commit latency CommitTime/Commits.
type Stats struct {
	Commits       uint64        // write transactions committed
	FailedCommits uint64        // write transactions rolled back by a storage failure
	Ops           uint64        // operations in committed transactions
	FailedOps     uint64        // operations in failed transactions
	CommitTime    time.Duration // total time in committed transactions, fsync included
	LargestBatch  int           // most operations seen in one transaction
	Queued        int           // operations waiting for the writer now

	// The life of a committed operation, summed over Ops: OpQueued from
	// submission until the writer took it (it waits for the transaction
	// before its own), OpTxn from then until its transaction committed,
	// and OpWake from the commit until the submitter's goroutine ran
	// again (scheduling delay). Divide by Ops for the means.
	OpQueued, OpTxn, OpWake time.Duration
	// PagesWritten counts the database pages write transactions wrote
	// (bbolt copies every page it changes, so this is the commits' I/O in
	// pages of the file's page size); PageSize is that size.
	PagesWritten int64
	PageSize     int
	// IdempotencyKeys is the number of message IDs the in-memory
	// idempotency index holds (one per message accepted within the TTL).
	IdempotencyKeys int
	// KeySlots is the size of the key-slot file, in slots (one per stored
	// message at its fullest, 32 bytes each).
	KeySlots int
	// Unreadable counts the times a stored message was found without a
	// usable key: at Open after a crash, and at each Fetch that met one
	// (it is skipped, and deleted at expiry). Nonzero means the key-slot
	// file was lost, replaced or damaged; the log says more.
	Unreadable uint64
}

// Open opens or creates the store file at path (mode 0600, its directory
// 0700 if it must be created) and starts the writer.
func Open(path string, opts Options) (*Bolt, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	// The file holds every queued envelope and the mailbox graph; nobody
	// but the server's user has any business reading it.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w: %w", ErrStorageFailed, err)
	}
	db, err := openBolt(path, o)
	if err != nil {
		return nil, fmt.Errorf("store: open: %w: %w", ErrStorageFailed, err)
	}
	keys, unreadable, err := openSchema(db, path, time.Now(), o.Logger)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store: open: %w", err)
	}
	fail := func(err error) (*Bolt, error) {
		keys.abandon()
		if db != nil {
			_ = db.Close()
		}
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyCompact) != nil {
			return errCompact
		}
		return nil
	}); errors.Is(err, errCompact) {
		if db, err = compactStore(db, path, o); err != nil {
			return fail(fmt.Errorf("%w: compacting after the upgrade: %w", ErrStorageFailed, err))
		}
		o.Logger.Info("store: the upgraded file was copied afresh and the old one overwritten with zeros")
	} else if err != nil {
		return fail(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return checkEnvelopeLimit(tx, o.MaxEnvelope) }); err != nil {
		return fail(err)
	}
	idem := newIdemIndex()
	var totals Totals
	if err := db.View(func(tx *bolt.Tx) error {
		if err := loadIdem(tx, idem); err != nil {
			return err
		}
		var err error
		totals, err = sumTotals(tx)
		return err
	}); err != nil {
		return fail(err)
	}
	s := &Bolt{
		db:         db,
		pageSize:   db.Info().PageSize,
		gran:       o.TimeGranularity,
		maxBatch:   o.MaxBatch,
		maxEnv:     o.MaxEnvelope,
		log:        o.Logger,
		onCommit:   o.OnCommit,
		idem:       idem,
		keys:       keys,
		totals:     totals,
		queue:      make(chan *op, 4*o.MaxBatch),
		writerDone: make(chan struct{}),
	}
	s.idemKeys.Store(int64(idem.keys))
	s.keySlots.Store(int64(keys.slotCount()))
	s.unreadable.Store(uint64(unreadable))
	go s.writer()
	return s, nil
}

// loadIdem fills the idempotency index from the arrivals.
func loadIdem(tx *bolt.Tx, idem *idemIndex) error {
	return tx.Bucket(bucketArrivals).ForEach(func(k, v []byte) error {
		a, err := decodeArrival(k, v)
		if err != nil {
			return err
		}
		// The same message ID twice in one mailbox cannot be written (Put
		// looks it up first); should a file hold it anyway, the later
		// arrival is the one a retry refers to.
		if prev, ok := idem.get(a.rid, a.id); !ok || prev.seq < a.seq {
			idem.set(a.rid, a.id, idemEntry{seq: a.seq, received: a.received})
		}
		return nil
	})
}

// OversizeError is Open's refusal of a store that holds envelopes longer
// than Options.MaxEnvelope: the limit shrank (a smaller padding policy)
// while they waited. Opened anyway, they could never be delivered, and the
// first of them would block every later message of its mailbox. It
// matches ErrOversize.
type OversizeError struct {
	Count   int       // envelopes over the limit
	Largest int       // the longest of them, in bytes
	Limit   int       // Options.MaxEnvelope
	Newest  time.Time // when the newest of them arrived (coarse)
}

// ErrOversize is what OversizeError matches with errors.Is.
var ErrOversize = errors.New("stored envelopes exceed the envelope limit")

func (e *OversizeError) Error() string {
	return fmt.Sprintf("%d stored envelopes are longer than the limit of %d bytes (the longest %d bytes, the newest received %s)",
		e.Count, e.Limit, e.Largest, e.Newest.UTC().Format(time.DateOnly))
}

func (e *OversizeError) Is(target error) bool { return target == ErrOversize }

// checkEnvelopeLimit refuses a limit below an envelope still stored, and
// records the limit. It scans the messages only when the limit is smaller
// than the one recorded at the last Open (or none was recorded, by a
// store older than the record), so a normal start reads one key.
func checkEnvelopeLimit(tx *bolt.Tx, limit int) error {
	meta := tx.Bucket(bucketMeta)
	recorded, known := int64(0), false
	if v := meta.Get(keyEnvelopeLimit); v != nil {
		n, err := decodeEnvelopeLimit(v)
		if err != nil {
			return err
		}
		recorded, known = int64(n), true
	}
	if !known || recorded > int64(limit) {
		over := OversizeError{Limit: limit}
		err := tx.Bucket(bucketMessages).ForEach(func(_, v []byte) error {
			_, received, _, sealed, err := decodeMessage(v)
			if err != nil {
				return err
			}
			if n := len(sealed) - sealOverhead; n > limit {
				over.Count++
				over.Largest = max(over.Largest, n)
				if t := fromUnix(received); t.After(over.Newest) {
					over.Newest = t
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if over.Count > 0 {
			return &over
		}
	}
	if err := meta.Put(keyEnvelopeLimit, encodeEnvelopeLimit(limit)); err != nil {
		return fmt.Errorf("%w: %w", ErrStorageFailed, err)
	}
	return nil
}

// encodeEnvelopeLimit is the meta record of the envelope limit: u32.
func encodeEnvelopeLimit(limit int) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(min(int64(limit), math.MaxUint32)))
}

func decodeEnvelopeLimit(v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: envelope limit of %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

// Stats returns the writer's counters so far.
func (s *Bolt) Stats() Stats {
	db := s.db.Stats()
	return Stats{
		Commits:       s.commits.Load(),
		FailedCommits: s.failedCommits.Load(),
		Ops:           s.ops.Load(),
		FailedOps:     s.failedOps.Load(),
		CommitTime:    time.Duration(s.commitNanos.Load()),
		LargestBatch:  int(s.largestBatch.Load()),
		Queued:        len(s.queue),
		OpQueued:      time.Duration(s.queuedNanos.Load()),
		OpTxn:         time.Duration(s.txnNanos.Load()),
		OpWake:        time.Duration(s.wakeNanos.Load()),
		PagesWritten:  db.TxStats.GetPageCount(),
		PageSize:      s.pageSize,

		IdempotencyKeys: int(s.idemKeys.Load()),
		KeySlots:        int(s.keySlots.Load()),
		Unreadable:      s.unreadable.Load(),
	}
}

// Close stops accepting operations (they fail with ErrClosed), commits
// everything already queued, and closes the file. It is idempotent.
func (s *Bolt) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.shut.Store(true)
		close(s.queue)
		s.mu.Unlock()
		<-s.writerDone
		s.updateMu.Lock()
		defer s.updateMu.Unlock()
		// The next generation goes into the bbolt file first; the key
		// file is marked clean at it only after, so a crash between the
		// two leaves files that do not match, and the next Open checks.
		gen := s.keys.gen + 1
		if err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketMeta).Put(keyKeyGen, binary.BigEndian.AppendUint64(nil, gen))
		}); err != nil {
			s.closeErr = fmt.Errorf("store: close: %w: %w", ErrStorageFailed, err)
		}
		if err := s.db.Close(); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("store: close: %w: %w", ErrStorageFailed, err)
		}
		clean := &gen
		if s.closeErr != nil {
			clean = nil
		}
		if err := s.keys.close(clean); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("store: close: %w: key-slot file: %w", ErrStorageFailed, err)
		}
	})
	return s.closeErr
}

// ---- records ----

func (s *Bolt) coarse(t time.Time) int64 { return t.Truncate(s.gran).Unix() }

func fromUnix(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

type mailboxRecord struct {
	owner    [OwnerKeySize]byte
	sendID   [MailboxIDSize]byte
	created  int64
	nextSeq  uint64
	count    uint64
	bytes    uint64
	lastUsed int64 // a day's start (dayOf)
}

func (r *mailboxRecord) encode() []byte {
	b := make([]byte, 0, mailboxRecordSize)
	b = append(b, recordV2)
	b = append(b, r.owner[:]...)
	b = append(b, r.sendID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created))
	b = binary.BigEndian.AppendUint64(b, r.nextSeq)
	b = binary.BigEndian.AppendUint64(b, r.count)
	b = binary.BigEndian.AppendUint64(b, r.bytes)
	return binary.BigEndian.AppendUint64(b, uint64(r.lastUsed))
}

func decodeMailbox(v []byte) (mailboxRecord, error) {
	if len(v) != mailboxRecordSize || v[0] != recordV2 {
		return mailboxRecord{}, fmt.Errorf("%w: mailbox record", ErrCorrupt)
	}
	r, err := decodeMailboxFields(v[:mailboxRecordV1Size])
	if err != nil {
		return r, err
	}
	r.lastUsed = int64(binary.BigEndian.Uint64(v[mailboxRecordV1Size:]))
	if r.lastUsed != dayOf(r.lastUsed) {
		return r, fmt.Errorf("%w: mailbox last use is not a day", ErrCorrupt)
	}
	return r, nil
}

// decodeMailboxV1 reads the mailbox record of schemas 1 to 3, which only
// the upgrade reads: lastUsed is left zero.
func decodeMailboxV1(v []byte) (mailboxRecord, error) {
	if len(v) != mailboxRecordV1Size || v[0] != recordV1 {
		return mailboxRecord{}, fmt.Errorf("%w: version 1 mailbox record", ErrCorrupt)
	}
	return decodeMailboxFields(v)
}

// decodeMailboxFields decodes the fields both record versions share.
func decodeMailboxFields(v []byte) (mailboxRecord, error) {
	var r mailboxRecord
	v = v[1:]
	v = v[copy(r.owner[:], v):]
	v = v[copy(r.sendID[:], v):]
	r.created = int64(binary.BigEndian.Uint64(v))
	r.nextSeq = binary.BigEndian.Uint64(v[8:])
	r.count = binary.BigEndian.Uint64(v[16:])
	r.bytes = binary.BigEndian.Uint64(v[24:])
	if r.nextSeq == 0 || r.count >= r.nextSeq {
		// Seqs start at 1 and each stored message used one.
		return r, fmt.Errorf("%w: mailbox record counters", ErrCorrupt)
	}
	return r, nil
}

func getMailbox(tx *bolt.Tx, rid [MailboxIDSize]byte) (mailboxRecord, error) {
	v := tx.Bucket(bucketMailboxes).Get(rid[:])
	if v == nil {
		return mailboxRecord{}, ErrNotFound
	}
	return decodeMailbox(v)
}

func encodeSendRecord(rid [MailboxIDSize]byte) []byte {
	return append([]byte{recordV1}, rid[:]...)
}

func decodeSendRecord(v []byte) ([MailboxIDSize]byte, error) {
	var rid [MailboxIDSize]byte
	if len(v) != sendRecordSize || v[0] != recordV1 {
		return rid, fmt.Errorf("%w: send index record", ErrCorrupt)
	}
	copy(rid[:], v[1:])
	return rid, nil
}

func lookupSendID(tx *bolt.Tx, sendID [MailboxIDSize]byte) ([MailboxIDSize]byte, error) {
	v := tx.Bucket(bucketSendIDs).Get(sendID[:])
	if v == nil {
		return [MailboxIDSize]byte{}, ErrNotFound
	}
	return decodeSendRecord(v)
}

// encodeMessage is a message record with its envelope already sealed.
func encodeMessage(id [MessageIDSize]byte, received int64, slot uint32, sealed []byte) []byte {
	b := make([]byte, messageHeaderSize, messageHeaderSize+len(sealed))
	putMessageHeader(b, id, received, slot)
	return append(b, sealed...)
}

func putMessageHeader(b []byte, id [MessageIDSize]byte, received int64, slot uint32) {
	b[0] = recordV2
	copy(b[1:], id[:])
	binary.BigEndian.PutUint64(b[1+MessageIDSize:], uint64(received))
	encodeSlot(b[messageADSize:], slot)
}

// sealMessage is the message record of envelope sealed under key, with
// slot 0: the writer writes the slot it picks into the record
// (encodeSlot at messageADSize), which the seal does not cover.
func sealMessage(key *[keySize]byte, id [MessageIDSize]byte, received int64, envelope []byte) ([]byte, error) {
	b := make([]byte, messageHeaderSize, messageHeaderSize+len(envelope)+sealOverhead)
	putMessageHeader(b, id, received, 0)
	return seal(b, key, b[:messageADSize], envelope)
}

// decodeMessage returns the sealed envelope as a slice of v, valid as
// long as v.
func decodeMessage(v []byte) (id [MessageIDSize]byte, received int64, slot uint32, sealed []byte, err error) {
	if len(v) < messageHeaderSize+sealOverhead || v[0] != recordV2 {
		return id, 0, 0, nil, fmt.Errorf("%w: message record", ErrCorrupt)
	}
	copy(id[:], v[1:])
	received = int64(binary.BigEndian.Uint64(v[1+MessageIDSize:]))
	return id, received, decodeSlot(v[messageADSize:]), v[messageHeaderSize:], nil
}

// encodeMessageV1 and decodeMessageV1 are the plaintext record of schemas
// 1 and 2, which only the upgrade reads (and tests write).
func encodeMessageV1(id [MessageIDSize]byte, received int64, envelope []byte) []byte {
	b := make([]byte, 0, messageV1HeaderSize+len(envelope))
	b = append(b, recordV1)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(received))
	return append(b, envelope...)
}

func decodeMessageV1(v []byte) (id [MessageIDSize]byte, received int64, envelope []byte, err error) {
	if len(v) < messageV1HeaderSize || v[0] != recordV1 {
		return id, 0, nil, fmt.Errorf("%w: version 1 message record", ErrCorrupt)
	}
	copy(id[:], v[1:])
	received = int64(binary.BigEndian.Uint64(v[1+MessageIDSize:]))
	return id, received, v[messageV1HeaderSize:], nil
}

// arrival is one entry of the arrivals bucket: message id arrived in
// mailbox rid at (coarse) time received and was stored under seq.
type arrival struct {
	rid      [MailboxIDSize]byte
	seq      uint64
	received int64
	id       [MessageIDSize]byte
}

func (a arrival) key() []byte { return expiryKey(a.received, messageKey(a.rid, a.seq)) }

func decodeArrival(k, v []byte) (arrival, error) {
	var a arrival
	if len(k) != arrivalKeySize || len(v) != MessageIDSize {
		return a, fmt.Errorf("%w: arrival of %d+%d bytes", ErrCorrupt, len(k), len(v))
	}
	a.received = decodeTimeKey(k)
	copy(a.rid[:], k[8:])
	a.seq = binary.BigEndian.Uint64(k[8+MailboxIDSize:])
	if a.seq == 0 {
		return a, fmt.Errorf("%w: arrival seq 0", ErrCorrupt)
	}
	copy(a.id[:], v)
	return a, nil
}

func messageKey(rid [MailboxIDSize]byte, seq uint64) []byte {
	k := make([]byte, 0, messageKeySize)
	k = append(k, rid[:]...)
	return binary.BigEndian.AppendUint64(k, seq)
}

// expiryKey prefixes key with the sortable time.
func expiryKey(t int64, key []byte) []byte {
	k := make([]byte, 0, 8+len(key))
	k = binary.BigEndian.AppendUint64(k, uint64(t)^(1<<63))
	return append(k, key...)
}

func decodeTimeKey(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
}
