package store

import (
	"encoding/binary"
	"fmt"
	"math"
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
