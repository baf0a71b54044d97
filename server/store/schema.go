package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Opening, creating and upgrading the two files of a store.

// compactTxSize bounds the transactions of the upgrade's compaction, so
// that copying a large store does not hold all of it in memory at once.
const compactTxSize = 64 << 20

// errCompact tells Open that an upgrade's compaction is still due.
var errCompact = errors.New("compaction due")

// openBolt opens the bbolt file with the store's options.
func openBolt(path string, o Options) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: o.OpenTimeout,
		MaxSize: o.MaxSize,
		// NoSync stays false: an acknowledged send must survive a crash.
	})
}

// storageErr marks err as a storage failure, once.
func storageErr(err error) error {
	if err == nil || errors.Is(err, ErrStorageFailed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrStorageFailed, err)
}

// openSchema brings the bbolt file to schema 4 and opens its key-slot
// file. A new file is created at schema 4; a schema 1 or 2 file is
// upgraded in one transaction (its envelopes sealed, a fresh key-slot file
// holding their keys, its mailboxes given a last-use day), with the
// compaction that must follow marked due; a schema 3 file only has its
// mailboxes given a last-use day (upgradeMailboxes), in one transaction.
// Any other version is refused: a newer server's file included, since this
// one would not know what it must keep consistent. It also returns how
// many stored messages were found without a key (openKeys).
func openSchema(db *bolt.DB, path string, now time.Time, log *slog.Logger) (*keyFile, int, error) {
	var version byte
	if err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return nil // a new file
		}
		switch v := meta.Get(keySchema); {
		case v == nil:
			return nil
		case len(v) == 1 && v[0] >= 1 && v[0] <= schemaVersion:
			version = v[0]
			return nil
		default:
			return fmt.Errorf("%w: unsupported schema version %v", ErrCorrupt, v)
		}
	}); err != nil {
		return nil, 0, storageErr(err)
	}
	keysPath := path + KeyFileSuffix
	today := dayOf(now.Unix())
	switch version {
	case schemaVersion:
		return openKeys(db, keysPath, log)
	case 3:
		keys, missing, err := openKeys(db, keysPath, log)
		if err != nil {
			return nil, 0, err
		}
		n := 0
		if err := db.Update(func(tx *bolt.Tx) error {
			var err error
			if n, err = upgradeMailboxes(tx, today); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keySchema, []byte{schemaVersion})
		}); err != nil {
			keys.abandon()
			return nil, 0, storageErr(err)
		}
		log.Info(fmt.Sprintf("store: upgraded the file from schema 3 to %d (idle mailboxes expire; each starts its idle time today)", schemaVersion), "mailboxes", n)
		return keys, missing, nil
	}
	// A new store, or one whose envelopes are in the clear: whatever key
	// file lies beside it is a leftover, and createKeyFile clears it.
	keys, err := createKeyFile(keysPath)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
	}
	sealed := 0
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if sealed, err = initSchema(tx, version, keys, today); err != nil {
			return err
		}
		return keys.prepare()
	})
	if err != nil {
		keys.abandon()
		return nil, 0, storageErr(err)
	}
	if err := keys.commit(); err != nil {
		keys.abandon()
		return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
	}
	if version != 0 {
		log.Info(fmt.Sprintf("store: upgraded the file from schema %d to %d (envelopes sealed under per-message keys kept in %s)",
			version, schemaVersion, filepath.Base(keysPath)), "messages", sealed)
	}
	return keys, 0, nil
}

// initSchema creates the buckets of a new file or upgrades a schema 1 or 2
// file (version 0 is a new one), in the caller's transaction: it happens
// whole or not at all. It returns how many envelopes it sealed.
func initSchema(tx *bolt.Tx, version byte, keys *keyFile, today int64) (int, error) {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return 0, err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if version == 1 {
		// Everything schema 1 had beyond schema 2 was derived from the
		// arrivals, which it kept the same way: dropping it is that
		// part of the upgrade.
		for _, name := range schema1Dropped {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return 0, err
			}
		}
	}
	sealed := 0
	if version != 0 {
		var err error
		if sealed, err = upgradeMessages(tx, keys); err != nil {
			return 0, err
		}
		if _, err := upgradeMailboxes(tx, today); err != nil {
			return 0, err
		}
		// The old file still holds every envelope it ever stored in the
		// clear, in freed pages and now in the pages this transaction
		// freed: Open copies it afresh before using it.
		if err := meta.Put(keyCompact, []byte{1}); err != nil {
			return 0, err
		}
	}
	if err := meta.Put(keyKeyFileID, keys.id[:]); err != nil {
		return 0, err
	}
	return sealed, meta.Put(keySchema, []byte{schemaVersion})
}

// upgradeMailboxes rewrites every version 1 mailbox record (schemas 1 to
// 3) as version 2, with today as its last-use day, and enters it in the
// idle index. The old server recorded no use, so every mailbox gets the
// whole idle TTL from the upgrade: none is deleted for an idleness that
// was never measured. It returns how many it rewrote.
func upgradeMailboxes(tx *bolt.Tx, today int64) (int, error) {
	idle, err := tx.CreateBucketIfNotExists(bucketIdle)
	if err != nil {
		return 0, err
	}
	b := tx.Bucket(bucketMailboxes)
	type entry struct {
		rid [MailboxIDSize]byte
		rec mailboxRecord
	}
	var all []entry
	if err := b.ForEach(func(k, v []byte) error {
		if len(k) != MailboxIDSize {
			return fmt.Errorf("%w: mailbox key length %d", ErrCorrupt, len(k))
		}
		rec, err := decodeMailboxV1(v)
		if err != nil {
			return err
		}
		e := entry{rec: rec}
		copy(e.rid[:], k)
		all = append(all, e)
		return nil
	}); err != nil {
		return 0, err
	}
	for _, e := range all {
		e.rec.lastUsed = today
		if err := b.Put(e.rid[:], e.rec.encode()); err != nil {
			return 0, err
		}
		if err := idle.Put(idleKey(today, e.rid), nil); err != nil {
			return 0, err
		}
	}
	return len(all), nil
}

// upgradeMessages seals every version 1 message record under a new key.
func upgradeMessages(tx *bolt.Tx, keys *keyFile) (int, error) {
	b := tx.Bucket(bucketMessages)
	var names [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		names = append(names, bytes.Clone(k))
		return nil
	}); err != nil {
		return 0, err
	}
	for _, k := range names {
		if len(k) != messageKeySize {
			return 0, fmt.Errorf("%w: message key length %d", ErrCorrupt, len(k))
		}
		id, received, env, err := decodeMessageV1(b.Get(k))
		if err != nil {
			return 0, err
		}
		key := newMessageKey()
		rec, err := sealMessage(&key, id, received, env)
		if err != nil {
			return 0, err
		}
		slot, err := keys.alloc(&key)
		if err != nil {
			return 0, err
		}
		clear(key[:])
		encodeSlot(rec[messageADSize:], slot)
		if err := b.Put(k, rec); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// openKeys opens the key-slot file of a schema 3 store. The file must
// carry the ID the store recorded. If it is missing, the store is refused
// while it holds messages (they cannot be opened without it: the operator
// must restore it, not lose them unawares); an empty store gets a new one.
// If the last run did not close the store, every key no stored message
// names is zeroed (a crash between a key's write and its transaction's
// commit, or between a message's deletion and its key's zeroing), and the
// messages whose key is gone are counted and logged.
func openKeys(db *bolt.DB, path string, log *slog.Logger) (*keyFile, int, error) {
	var (
		id     []byte
		gen    uint64
		stored bool
	)
	if err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		id = bytes.Clone(meta.Get(keyKeyFileID))
		if v := meta.Get(keyKeyGen); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("%w: key generation of %d bytes", ErrCorrupt, len(v))
			}
			gen = binary.BigEndian.Uint64(v)
		}
		if b := tx.Bucket(bucketMessages); b != nil {
			k, _ := b.Cursor().First()
			stored = k != nil
		}
		return nil
	}); err != nil {
		return nil, 0, storageErr(err)
	}
	keys, clean, err := openKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if stored {
			return nil, 0, fmt.Errorf("%w: the key-slot file %s is missing, and the store's envelopes are sealed under keys only it held: restore it from the same backup as the store (or move the store away to start empty)", ErrStorageFailed, path)
		}
		if keys, err = createKeyFile(path); err != nil {
			return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyKeyFileID, keys.id[:]) }); err != nil {
			keys.abandon()
			return nil, 0, storageErr(err)
		}
		log.Warn("store: the key-slot file was missing; the store holds no message, so a new one was made", "file", filepath.Base(path))
		return keys, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
	}
	if !bytes.Equal(id, keys.id[:]) {
		keys.abandon()
		return nil, 0, fmt.Errorf("%w: the key-slot file %s belongs to another store", ErrCorrupt, path)
	}
	if err := keys.markInUse(); err != nil {
		keys.abandon()
		return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
	}
	missing := 0
	if clean && keys.gen == gen {
		keys.rebuild(nil)
	} else {
		named, n, err := namedSlots(db, keys)
		if err != nil {
			keys.abandon()
			return nil, 0, storageErr(err)
		}
		missing = n
		zeroed := keys.rebuild(named)
		why := "the last run did not close the store"
		if clean {
			why = "the key-slot file is not of the store's generation (one of the two restored from another time?)"
		}
		keys.gen = gen
		log.Warn("store: "+why+"; its key-slot file was checked against the stored messages", "keys_zeroed", zeroed)
		if missing > 0 {
			log.Error("store: stored messages have no key: they cannot be delivered and go at expiry (was the key-slot file replaced or damaged?)", "messages", missing)
		}
	}
	if err := keys.sync(); err != nil {
		keys.abandon()
		return nil, 0, fmt.Errorf("%w: key-slot file: %w", ErrStorageFailed, err)
	}
	return keys, missing, nil
}

// namedSlots reads every message record and returns which slots they
// name (a bit set) and how many name a slot that holds no key.
func namedSlots(db *bolt.DB, keys *keyFile) (func(uint32) bool, int, error) {
	bits := make([]uint64, (keys.slotCount()+63)/64)
	missing := 0
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMessages).ForEach(func(_, v []byte) error {
			_, _, slot, _, err := decodeMessage(v)
			if err != nil {
				return err
			}
			if _, ok := keys.key(slot); !ok {
				missing++
			}
			if int(slot/64) < len(bits) {
				bits[slot/64] |= 1 << (slot % 64)
			}
			return nil
		})
	})
	named := func(s uint32) bool { return int(s/64) < len(bits) && bits[s/64]&(1<<(s%64)) != 0 }
	return named, missing, err
}

// compactStore copies the store into a new file (bbolt.Compact: only what
// is live, into fresh pages), puts it in the old one's place and
// overwrites the old one with zeros. It runs once after an upgrade, while
// the "compact" mark is set, and is safe to repeat: until the rename the
// old file (still marked) is the store, and the mark is removed from the
// copy before the rename.
//
// Between closing the old file and opening the new one the store is not
// locked: a second server started on the same data directory in that
// instant could open it. The upgrade is a one-time step at start.
func compactStore(db *bolt.DB, path string, o Options) (*bolt.DB, error) {
	tmp := path + ".compact"
	if err := shredPath(tmp); err != nil {
		return db, err
	}
	dst, err := openBolt(tmp, o)
	if err != nil {
		return db, err
	}
	if err := bolt.Compact(dst, db, compactTxSize); err != nil {
		dst.Close()
		return db, errors.Join(err, shredPath(tmp))
	}
	if err := dst.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyCompact) }); err != nil {
		dst.Close()
		return db, errors.Join(err, shredPath(tmp))
	}
	if err := dst.Close(); err != nil {
		return db, errors.Join(err, shredPath(tmp))
	}
	// Hold the old file open across the rename, to overwrite what it
	// held once it is no longer the store.
	old, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return db, err
	}
	defer old.Close()
	if err := db.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := shred(old); err != nil {
		return nil, err
	}
	return openBolt(path, o)
}
