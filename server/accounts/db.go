package accounts

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/wire"
	bolt "go.etcd.io/bbolt"
)

// DBFileName is the accounts database in the data directory. It is a file
// of its own, not buckets in the mailbox store, on purpose: no key or
// value here has anything in common with mailbox data, so that neither
// file can be joined with the other, and either can be wiped alone.
const DBFileName = "accounts.db"

// On-disk layout, schema 1 (IDs raw, integers big-endian so byte order is
// numeric order and prefixes range-scan):
//
//	meta              "schema" -> u8 (1)
//	accounts          credID(32) -> account record
//	account_ids       accountID(16) -> v | credID(32)
//	devices           accountID(16) | deviceID(16) -> device record
//	sessions          SHA-256(token)(32) -> session record
//	account_sessions  accountID(16) | deviceID(16) | SHA-256(token)(32) -> empty
//	quota             accountID(16) | epoch(u32) -> v | used(u32)
//	key_packages      accountID(16) | seq(u64) -> KeyPackage record
//
// credID is SHA-256("qpc/1 account\0" || username): the raw username is
// never stored. (A dictionary of likely usernames still reverses it; the
// hash keeps usernames out of plain sight, it does not make them secret.)
// accountID is 16 random bytes chosen at registration; it links the
// records of one account and nothing else. Session tokens are stored only
// as their SHA-256, so a copy of the file cannot be replayed as a login.
//
// Every value starts with a version byte (recordV1); a reader refuses
// anything else with ErrCorrupt. Times are Unix seconds, coarse (hours).
//
//	account record  v | accountID(16) | created(i64) | registration record(192)
//	device record   v | created(i64) | lastUsed(i64) | name<u8>
//	session record  v | accountID(16) | deviceID(16) | expiry(i64) | lastUsed(i64)
//	KeyPackage record  v | KeyPackage (1..wire.MaxKeyPackage bytes, opaque)
//
// key_packages is the account's pool of one-time KeyPackages (keypackages.go),
// in upload order: seq counts up from 1 within an account, so the first key
// under the account's prefix is the oldest. It came after the other
// buckets; openDB creates it in an existing file, which needs no new schema
// version (nothing else changed, and an older server just ignores it).
var (
	bucketMeta        = []byte("meta")
	bucketAccounts    = []byte("accounts")
	bucketAccountIDs  = []byte("account_ids")
	bucketDevices     = []byte("devices")
	bucketSessions    = []byte("sessions")
	bucketAcctSession = []byte("account_sessions")
	bucketQuota       = []byte("quota")
	bucketKeyPackages = []byte("key_packages")

	allBuckets = [][]byte{bucketMeta, bucketAccounts, bucketAccountIDs, bucketDevices, bucketSessions, bucketAcctSession, bucketQuota, bucketKeyPackages}
	keySchema  = []byte("schema")
)

const (
	schemaVersion = 1
	recordV1      = 1

	accountIDSize     = 16
	credIDSize        = 32
	tokenHashSize     = 32
	accountRecordSize = 1 + accountIDSize + 8 + account.RegistrationRecordSize
	accountIDRecSize  = 1 + credIDSize
	sessionRecordSize = 1 + accountIDSize + account.DeviceIDSize + 8 + 8
	quotaRecordSize   = 1 + 4
	keyPackageKeySize = accountIDSize + 8
)

// ErrCorrupt reports a stored record that does not decode; it wraps
// ErrStorage.
var ErrCorrupt = fmt.Errorf("%w: corrupt record", ErrStorage)

func openDB(dataDir string) (*bolt.DB, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dataDir, DBFileName), 0o600, &bolt.Options{
		Timeout: 5 * time.Second,
		// NoSync stays false: a session or a quota count must survive a
		// crash once the caller was told it exists.
	})
	if err != nil {
		return nil, err
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

func initSchema(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch v := meta.Get(keySchema); {
	case v == nil:
		return meta.Put(keySchema, []byte{schemaVersion})
	case len(v) != 1 || v[0] != schemaVersion:
		return fmt.Errorf("%w: unsupported schema version %v", ErrCorrupt, v)
	}
	return nil
}

// ---- records ----

type accountRecord struct {
	id      AccountRef
	created int64
	record  [account.RegistrationRecordSize]byte
}

func (r *accountRecord) encode() []byte {
	b := make([]byte, 0, accountRecordSize)
	b = append(b, recordV1)
	b = append(b, r.id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created))
	return append(b, r.record[:]...)
}

func decodeAccount(v []byte) (accountRecord, error) {
	var r accountRecord
	if len(v) != accountRecordSize || v[0] != recordV1 {
		return r, ErrCorrupt
	}
	copy(r.id[:], v[1:])
	r.created = int64(binary.BigEndian.Uint64(v[1+accountIDSize:]))
	copy(r.record[:], v[1+accountIDSize+8:])
	return r, nil
}

type deviceRecord struct {
	created, lastUsed int64
	name              string
}

func (r *deviceRecord) encode() []byte {
	b := make([]byte, 0, 1+8+8+1+len(r.name))
	b = append(b, recordV1)
	b = binary.BigEndian.AppendUint64(b, uint64(r.created))
	b = binary.BigEndian.AppendUint64(b, uint64(r.lastUsed))
	b = append(b, byte(len(r.name)))
	return append(b, r.name...)
}

func decodeDevice(v []byte) (deviceRecord, error) {
	var r deviceRecord
	if len(v) < 1+8+8+1 || v[0] != recordV1 || int(v[17]) != len(v)-18 || int(v[17]) > account.MaxDeviceNameLen {
		return r, ErrCorrupt
	}
	r.created = int64(binary.BigEndian.Uint64(v[1:]))
	r.lastUsed = int64(binary.BigEndian.Uint64(v[9:]))
	r.name = string(v[18:])
	return r, nil
}

type sessionRecord struct {
	account  AccountRef
	device   account.DeviceID
	expiry   int64
	lastUsed int64
}

func (r *sessionRecord) encode() []byte {
	b := make([]byte, 0, sessionRecordSize)
	b = append(b, recordV1)
	b = append(b, r.account[:]...)
	b = append(b, r.device[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.expiry))
	return binary.BigEndian.AppendUint64(b, uint64(r.lastUsed))
}

func decodeSession(v []byte) (sessionRecord, error) {
	var r sessionRecord
	if len(v) != sessionRecordSize || v[0] != recordV1 {
		return r, ErrCorrupt
	}
	copy(r.account[:], v[1:])
	copy(r.device[:], v[1+accountIDSize:])
	o := 1 + accountIDSize + account.DeviceIDSize
	r.expiry = int64(binary.BigEndian.Uint64(v[o:]))
	r.lastUsed = int64(binary.BigEndian.Uint64(v[o+8:]))
	return r, nil
}

func encodeAccountID(cred [credIDSize]byte) []byte {
	return append([]byte{recordV1}, cred[:]...)
}

func decodeAccountID(v []byte) ([credIDSize]byte, error) {
	var c [credIDSize]byte
	if len(v) != accountIDRecSize || v[0] != recordV1 {
		return c, ErrCorrupt
	}
	copy(c[:], v[1:])
	return c, nil
}

func encodeQuota(used uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{recordV1}, used)
}

func decodeQuota(v []byte) (uint32, error) {
	if len(v) != quotaRecordSize || v[0] != recordV1 {
		return 0, ErrCorrupt
	}
	return binary.BigEndian.Uint32(v[1:]), nil
}

func encodeKeyPackage(kp []byte) []byte {
	return append(append(make([]byte, 0, 1+len(kp)), recordV1), kp...)
}

// decodeKeyPackage returns a copy of the KeyPackage in a record: the
// caller keeps it after the transaction, when bbolt's memory is gone.
func decodeKeyPackage(v []byte) ([]byte, error) {
	if len(v) < 2 || len(v)-1 > wire.MaxKeyPackage || v[0] != recordV1 {
		return nil, ErrCorrupt
	}
	return append([]byte(nil), v[1:]...), nil
}

// ---- keys ----

func deviceKey(a AccountRef, d account.DeviceID) []byte {
	return append(append(make([]byte, 0, accountIDSize+account.DeviceIDSize), a[:]...), d[:]...)
}

func acctSessionKey(a AccountRef, d account.DeviceID, h [tokenHashSize]byte) []byte {
	return append(deviceKey(a, d), h[:]...)
}

func quotaKey(a AccountRef, epoch uint32) []byte {
	return binary.BigEndian.AppendUint32(append(make([]byte, 0, accountIDSize+4), a[:]...), epoch)
}

func keyPackageKey(a AccountRef, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, keyPackageKeySize), a[:]...), seq)
}

// ---- transaction helpers ----

// deleteSessionsWithPrefix deletes every session indexed under prefix
// (an account, or an account and device) except keep, if not nil.
func deleteSessionsWithPrefix(tx *bolt.Tx, prefix []byte, keep *[tokenHashSize]byte) error {
	idx, sessions := tx.Bucket(bucketAcctSession), tx.Bucket(bucketSessions)
	var doomed [][]byte
	c := idx.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		if len(k) != accountIDSize+account.DeviceIDSize+tokenHashSize {
			return ErrCorrupt
		}
		h := k[accountIDSize+account.DeviceIDSize:]
		if keep != nil && string(h) == string(keep[:]) {
			continue
		}
		doomed = append(doomed, append([]byte(nil), k...))
	}
	// Deleting while iterating skips keys in bbolt; delete afterwards.
	for _, k := range doomed {
		if err := sessions.Delete(k[accountIDSize+account.DeviceIDSize:]); err != nil {
			return err
		}
		if err := idx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// deletePrefix deletes every key of bucket b that starts with prefix.
func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	var doomed [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
		doomed = append(doomed, append([]byte(nil), k...))
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func hasPrefix(k, prefix []byte) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix)
}

// coarse rounds t down to the hour: stored times say roughly when, never
// exactly when, a login or a request happened.
func coarse(t time.Time) int64 {
	return t.Unix() - t.Unix()%3600
}

// coarseUp rounds t up to the hour (expiries: never earlier than promised).
func coarseUp(t time.Time) int64 {
	u := t.Unix()
	if r := u % 3600; r != 0 {
		if u > math.MaxInt64-3600 {
			return math.MaxInt64
		}
		u += 3600 - r
	}
	return u
}
