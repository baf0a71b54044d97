package kt

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltTree is the embedded TreeStore: the buckets of one bbolt file
// (store.go has the layout).
type boltTree struct {
	db *bolt.DB
}

var _ TreeStore = (*boltTree)(nil)

// OpenBoltTree opens (or creates, or upgrades) the directory database
// DBFile in dir.
func OpenBoltTree(dir string) (TreeStore, error) {
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{
		Timeout: 5 * time.Second,
		// The freelist is rebuilt at open instead of written at every
		// commit, and kept as a map: commits stay fast as the file grows.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("kt: open database: %w", err)
	}
	if err := prepareBoltTree(db, bucketVersions, bucketEpochs, bucketUpdates); err != nil {
		db.Close()
		return nil, err
	}
	return &boltTree{db: db}, nil
}

func (b *boltTree) Close() error { return b.db.Close() }

func (b *boltTree) Snapshot(context.Context) (TreeSnapshot, error) {
	tx, err := b.db.Begin(false)
	if err != nil {
		return nil, err
	}
	return boltSnapshot{tx: tx}, nil
}

func (b *boltTree) CommitEpoch(_ context.Context, c EpochCommit) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		if next := boltEpochs(tx); next != c.Epoch {
			return fmt.Errorf("%w: the database's next epoch is %d, not the %d built", ErrEpochTaken, next, c.Epoch)
		}
		versions := tx.Bucket(bucketVersions)
		for _, v := range c.Versions {
			if err := versions.Put(versionKey(v.Label, v.Version), v.Record); err != nil {
				return err
			}
		}
		if err := boltPutNodes(tx, c.Nodes); err != nil {
			return err
		}
		// The list goes in before the record: in the same transaction,
		// so no record is ever logged without its list.
		if err := tx.Bucket(bucketUpdates).Put(epochKey(c.Epoch), c.UpdateList); err != nil {
			return err
		}
		return tx.Bucket(bucketEpochs).Put(epochKey(c.Epoch), c.Record)
	})
}

// backup copies the database to path (Directory.Backup).
func (b *boltTree) backup(path string) error {
	return b.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) })
}

// boltPutNodes writes nodes in tx, in the given (key) order, so bbolt
// fills pages front to back.
func boltPutNodes(tx *bolt.Tx, nodes []NodeWrite) error {
	b := tx.Bucket(bucketNodes)
	for _, n := range nodes {
		if err := b.Put(n.Key, n.Value); err != nil {
			return err
		}
	}
	return nil
}

func boltEpochs(tx *bolt.Tx) uint64 {
	if k, _ := tx.Bucket(bucketEpochs).Cursor().Last(); k != nil {
		return binary.BigEndian.Uint64(k) + 1
	}
	return 0
}

// boltSnapshot is a bbolt read transaction. Only the nodes bucket is
// required: a ReplayTree's database has no other.
type boltSnapshot struct{ tx *bolt.Tx }

func (s boltSnapshot) Release() { s.tx.Rollback() }

func (s boltSnapshot) Epochs() (uint64, error) { return boltEpochs(s.tx), nil }

func (s boltSnapshot) EpochRecord(e uint64) ([]byte, error) {
	return s.tx.Bucket(bucketEpochs).Get(epochKey(e)), nil
}

func (s boltSnapshot) UpdateList(e uint64) ([]byte, error) {
	return s.tx.Bucket(bucketUpdates).Get(epochKey(e)), nil
}

func (s boltSnapshot) Version(label string, v uint32) ([]byte, error) {
	return s.tx.Bucket(bucketVersions).Get(versionKey(label, v)), nil
}

func (s boltSnapshot) Node(k []byte) ([]byte, error) { return s.tx.Bucket(bucketNodes).Get(k), nil }

func (s boltSnapshot) ScanNodes(fn func(k, v []byte) (bool, error)) error {
	c := s.tx.Bucket(bucketNodes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

func (s boltSnapshot) LatestVersion(label string) (uint32, error) {
	return latestVersion(s.tx.Bucket(bucketVersions), label), nil
}
