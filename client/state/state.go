package state

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the state file inside the state directory.
const FileName = "state.db"

// Errors returned by this package, always wrapped once with context; test
// them with errors.Is.
var (
	ErrExists     = errors.New("a qpc state already exists here")
	ErrNotFound   = errors.New("no qpc state here (run `qpc init` first)")
	ErrPassphrase = errors.New("wrong passphrase")
	ErrLocked     = errors.New("the state file is locked")
	ErrCorrupt    = errors.New("the state file is damaged or was tampered with")
	ErrNoEntry    = errors.New("no such entry")
)

// errKind is returned when a bucket is used as the other kind (keyed versus
// sequenced) than it was created as.
var errKind = errors.New("bucket used as the wrong kind")

// Options tune Create and Open. The zero value (or nil) means the defaults.
type Options struct {
	// Argon2id cost, used only by Create (Open reads them from the file).
	// Zero fields take the defaults of RFC 9106 §4, second recommended
	// option: Time 3, MemoryKiB 65536 (64 MiB), Threads 4.
	Time      uint32
	MemoryKiB uint32
	Threads   uint8

	// LockTimeout is how long Create and Open wait for the file lock held
	// by another process before failing with ErrLocked. Zero means 1s.
	LockTimeout time.Duration
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Time == 0 {
		r.Time = DefaultTime
	}
	if r.MemoryKiB == 0 {
		r.MemoryKiB = DefaultMemoryKiB
	}
	if r.Threads == 0 {
		r.Threads = DefaultThreads
	}
	if r.LockTimeout <= 0 {
		r.LockTimeout = time.Second
	}
	return r
}

// Store is an open, unlocked state file. Its methods are safe for concurrent
// use; bbolt allows one writing transaction at a time and many readers.
type Store struct {
	dir string
	db  *bolt.DB

	mu     sync.RWMutex // write-locked by ChangePassphrase and Close
	k      *keys
	closed bool
}

// Create makes dir (mode 0700, if it does not exist) and a new state file
// dir/state.db (mode 0600) protected by passphrase. It fails with ErrExists
// if the state file is already there.
func Create(dir string, passphrase []byte, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	if err := checkKDF(o.Time, o.MemoryKiB, o.Threads); err != nil {
		return nil, fmt.Errorf("state: create: %v", err)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("state: create: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil { // umask may have narrowed or the dir raced
			return nil, fmt.Errorf("state: create: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("state: create: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("state: create %s: %w", path, ErrExists)
	}
	if err != nil {
		return nil, fmt.Errorf("state: create: %w", err)
	}
	err = f.Chmod(0o600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("state: create: %w", err)
	}
	s, err := create(dir, path, passphrase, &o)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return s, nil
}

func create(dir, path string, passphrase []byte, o *Options) (*Store, error) {
	db, err := openBolt(dir, path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	p := params{version: formatVersion, time: o.Time, memoryKiB: o.MemoryKiB, threads: o.Threads}
	if _, err := rand.Read(p.salt[:]); err != nil {
		db.Close()
		return nil, fmt.Errorf("state: create: %w", err)
	}
	k := deriveKeys(passphrase, &p)
	err = db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(metaBucket) != nil {
			return fmt.Errorf("state: create %s: %w", path, ErrExists)
		}
		m, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return err
		}
		return writeMeta(m, k, &p)
	})
	if err != nil {
		k.wipe()
		db.Close()
		return nil, fmt.Errorf("state: create: %w", err)
	}
	return &Store{dir: dir, db: db, k: k}, nil
}

func writeMeta(m *bolt.Bucket, k *keys, p *params) error {
	enc := p.encode()
	if err := m.Put(metaParams, enc); err != nil {
		return err
	}
	return m.Put(metaCheck, k.sealCheck(enc))
}

// Open unlocks the existing state file in dir. It fails with ErrNotFound if
// there is none, ErrLocked if another process has it open, ErrPassphrase if
// passphrase is wrong and ErrCorrupt if the file's header is unusable.
func Open(dir string, passphrase []byte, opts *Options) (*Store, error) {
	o := opts.withDefaults()
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state: %s: %w", dir, ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("state: open: %w", err)
	}
	db, err := openBolt(dir, path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	var p params
	var enc, check []byte
	err = db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(metaBucket)
		if m == nil {
			return fmt.Errorf("state: %s has no header: %w", path, ErrCorrupt)
		}
		enc = append([]byte(nil), m.Get(metaParams)...)
		check = append([]byte(nil), m.Get(metaCheck)...)
		var err error
		p, err = decodeParams(enc)
		return err
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	k := deriveKeys(passphrase, &p)
	if !k.verifyCheck(enc, check) {
		k.wipe()
		db.Close()
		return nil, fmt.Errorf("state: %s: %w", dir, ErrPassphrase)
	}
	return &Store{dir: dir, db: db, k: k}, nil
}

func openBolt(dir, path string, timeout time.Duration) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("state: another qpc process is using %s: %w", dir, ErrLocked)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrChecksum):
		return nil, fmt.Errorf("state: %s: %v: %w", path, err, ErrCorrupt)
	case err != nil:
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	return db, nil
}

// Dir returns the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

// Update runs fn in one read-write transaction: either everything fn wrote
// is committed durably, or (fn returned an error or panicked) nothing is.
// fn's error is returned unchanged. Do not call ChangePassphrase, Close
// or start another transaction from inside fn.
func (s *Store) Update(fn func(*Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return s.db.Update(func(btx *bolt.Tx) error {
		return fn(&Tx{k: s.k, btx: btx})
	})
}

// View runs fn in a read-only transaction that sees one consistent snapshot.
func (s *Store) View(fn func(*Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return s.db.View(func(btx *bolt.Tx) error {
		return fn(&Tx{k: s.k, btx: btx})
	})
}

var errClosed = errors.New("state: the store is closed")

// Close closes the file (releasing its lock) and zeroes the derived keys.
// It waits for running transactions. Closing twice is harmless.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.db.Close()
	s.k.wipe()
	if err != nil {
		return fmt.Errorf("state: close: %w", err)
	}
	return nil
}

// ChangePassphrase re-derives the keys from newPass with a fresh salt (and
// the file's current Argon2id cost) and re-encrypts every bucket name, key
// and value in one transaction; afterwards oldPass no longer opens the file.
// It fails with ErrPassphrase if oldPass is wrong.
func (s *Store) ChangePassphrase(oldPass, newPass []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	var nk *keys
	err := s.db.Update(func(btx *bolt.Tx) error {
		m := btx.Bucket(metaBucket)
		if m == nil {
			return fmt.Errorf("state: header missing: %w", ErrCorrupt)
		}
		enc := m.Get(metaParams)
		p, err := decodeParams(enc)
		if err != nil {
			return err
		}
		ok := deriveKeys(oldPass, &p)
		defer ok.wipe()
		if !ok.verifyCheck(enc, m.Get(metaCheck)) {
			return fmt.Errorf("state: change passphrase: old passphrase: %w", ErrPassphrase)
		}
		if _, err := rand.Read(p.salt[:]); err != nil {
			return err
		}
		nk = deriveKeys(newPass, &p)
		if err := rekey(btx, s.k, nk); err != nil {
			return err
		}
		return writeMeta(m, nk, &p)
	})
	if err != nil {
		if nk != nil {
			nk.wipe()
		}
		if errors.Is(err, ErrPassphrase) || errors.Is(err, ErrCorrupt) {
			return err
		}
		return fmt.Errorf("state: change passphrase: %w", err)
	}
	s.k.wipe()
	s.k = nk
	return nil
}

// rekey moves every data bucket from the names, keys and ciphertexts of ok
// to those of nk.
func rekey(btx *bolt.Tx, ok, nk *keys) error {
	var old [][]byte
	err := btx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if string(name) != string(metaBucket) {
			old = append(old, append([]byte(nil), name...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ob := range old {
		b := btx.Bucket(ob)
		if b == nil {
			return fmt.Errorf("state: a bucket is not a bucket: %w", ErrCorrupt)
		}
		kind, name, err := ok.openHeader(ob, b.Get(headerKey))
		if err != nil {
			return err
		}
		nbName := nk.bucketName(name)
		nb, err := btx.CreateBucket(nbName)
		if err != nil {
			return err
		}
		if err := nb.Put(headerKey, nk.sealHeader(nbName, kind, name)); err != nil {
			return err
		}
		if err := nb.SetSequence(b.Sequence()); err != nil {
			return err
		}
		err = b.ForEach(func(dk, v []byte) error {
			if len(dk) == len(headerKey) && dk[0] == headerKey[0] {
				return nil
			}
			switch {
			case kind == kindKeyed && len(dk) == 32:
				key, value, err := ok.openKeyed(ob, dk, v)
				if err != nil {
					return err
				}
				ndk := nk.entryKey(nbName, key)
				return nb.Put(ndk, nk.seal(encodeKeyed(key, value), entryAAD(nbName, ndk)))
			case kind == kindSequenced && len(dk) == 8:
				pt, err := ok.open(v, entryAAD(ob, dk))
				if err != nil {
					return err
				}
				return nb.Put(dk, nk.seal(pt, entryAAD(nbName, dk)))
			}
			return fmt.Errorf("state: unexpected entry in bucket %q: %w", name, ErrCorrupt)
		})
		if err != nil {
			return err
		}
	}
	for _, ob := range old {
		if err := btx.DeleteBucket(ob); err != nil {
			return err
		}
	}
	return nil
}
