package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// MaxKeyLen is the longest logical key Put accepts.
const MaxKeyLen = math.MaxUint16

// Tx is a transaction of a Store, valid only inside the function given to
// Update or View. Its methods take logical bucket names and keys; what they
// return is a fresh copy the caller may keep and modify.
//
// A bucket is created by its first Put (keyed) or Append (sequenced) and is
// of that kind for good; using it as the other kind is an error.
type Tx struct {
	k     *keys
	btx   *bolt.Tx
	kinds map[string]byte // headers already verified in this transaction
}

// bucket returns the on-disk bucket for name, checking its header against
// kind. With create it is made if missing; without, a missing bucket is
// returned as nil with no error.
func (t *Tx) bucket(name string, kind byte, create bool) (*bolt.Bucket, []byte, error) {
	if name == "" {
		return nil, nil, errors.New("state: empty bucket name")
	}
	dn := t.k.bucketName(name)
	b := t.btx.Bucket(dn)
	if b == nil {
		if !create {
			return nil, dn, nil
		}
		var err error
		if b, err = t.btx.CreateBucket(dn); err != nil {
			return nil, nil, fmt.Errorf("state: create bucket %q: %w", name, err)
		}
		if err := b.Put(headerKey, t.k.sealHeader(dn, kind, name)); err != nil {
			return nil, nil, fmt.Errorf("state: create bucket %q: %w", name, err)
		}
		t.remember(name, kind)
		return b, dn, nil
	}
	got, ok := t.kinds[name]
	if !ok {
		var err error
		if got, _, err = t.k.openHeader(dn, b.Get(headerKey)); err != nil {
			return nil, nil, err
		}
		t.remember(name, got)
	}
	if got != kind {
		want, have := "keyed", "sequenced"
		if kind == kindSequenced {
			want, have = have, want
		}
		return nil, nil, fmt.Errorf("state: bucket %q is %s, not %s: %w", name, have, want, errKind)
	}
	return b, dn, nil
}

func (t *Tx) remember(name string, kind byte) {
	if t.kinds == nil {
		t.kinds = make(map[string]byte)
	}
	t.kinds[name] = kind
}

func isHeader(k []byte) bool { return len(k) == 1 && k[0] == headerKey[0] }

// Put stores value under key in the keyed bucket, replacing any old value.
func (t *Tx) Put(bucket string, key, value []byte) error {
	if len(key) > MaxKeyLen {
		return fmt.Errorf("state: put into %q: key longer than %d bytes", bucket, MaxKeyLen)
	}
	b, dn, err := t.bucket(bucket, kindKeyed, true)
	if err != nil {
		return err
	}
	dk := t.k.entryKey(dn, key)
	if err := b.Put(dk, t.k.seal(encodeKeyed(key, value), entryAAD(dn, dk))); err != nil {
		return fmt.Errorf("state: put into %q: %w", bucket, err)
	}
	return nil
}

// Get returns the value stored under key, or ErrNoEntry.
func (t *Tx) Get(bucket string, key []byte) ([]byte, error) {
	b, dn, err := t.bucket(bucket, kindKeyed, false)
	if err != nil {
		return nil, err
	}
	if b != nil {
		dk := t.k.entryKey(dn, key)
		if v := b.Get(dk); v != nil {
			_, value, err := t.k.openKeyed(dn, dk, v)
			return value, err
		}
	}
	return nil, fmt.Errorf("state: get from %q: %w", bucket, ErrNoEntry)
}

// Delete removes key from the keyed bucket; a missing key is not an error.
func (t *Tx) Delete(bucket string, key []byte) error {
	b, dn, err := t.bucket(bucket, kindKeyed, false)
	if err != nil || b == nil {
		return err
	}
	if err := b.Delete(t.k.entryKey(dn, key)); err != nil {
		return fmt.Errorf("state: delete from %q: %w", bucket, err)
	}
	return nil
}

// ForEach calls fn for every entry of the keyed bucket, in an order that
// depends on the keys' hidden on-disk names (not on the keys themselves),
// and stops at fn's first error, which it returns. fn must not modify the
// bucket.
func (t *Tx) ForEach(bucket string, fn func(key, value []byte) error) error {
	b, dn, err := t.bucket(bucket, kindKeyed, false)
	if err != nil || b == nil {
		return err
	}
	return b.ForEach(func(dk, v []byte) error {
		if isHeader(dk) {
			return nil
		}
		if len(dk) != 32 || v == nil {
			return fmt.Errorf("state: unexpected entry in %q: %w", bucket, ErrCorrupt)
		}
		key, value, err := t.k.openKeyed(dn, dk, v)
		if err != nil {
			return err
		}
		return fn(key, value)
	})
}

// Append adds value at the end of the sequenced bucket and returns its
// sequence number. Numbers start at 1, increase and are never reused.
func (t *Tx) Append(bucket string, value []byte) (uint64, error) {
	b, dn, err := t.bucket(bucket, kindSequenced, true)
	if err != nil {
		return 0, err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("state: append to %q: %w", bucket, err)
	}
	dk := seqKey(seq)
	if err := b.Put(dk, t.k.seal(value, entryAAD(dn, dk))); err != nil {
		return 0, fmt.Errorf("state: append to %q: %w", bucket, err)
	}
	return seq, nil
}

// GetSeq returns the value appended as seq, or ErrNoEntry.
func (t *Tx) GetSeq(bucket string, seq uint64) ([]byte, error) {
	b, dn, err := t.bucket(bucket, kindSequenced, false)
	if err != nil {
		return nil, err
	}
	if b != nil {
		dk := seqKey(seq)
		if v := b.Get(dk); v != nil {
			return t.k.open(v, entryAAD(dn, dk))
		}
	}
	return nil, fmt.Errorf("state: get #%d from %q: %w", seq, bucket, ErrNoEntry)
}

// DeleteSeq removes entry seq; a missing entry is not an error.
func (t *Tx) DeleteSeq(bucket string, seq uint64) error {
	b, _, err := t.bucket(bucket, kindSequenced, false)
	if err != nil || b == nil {
		return err
	}
	if err := b.Delete(seqKey(seq)); err != nil {
		return fmt.Errorf("state: delete #%d from %q: %w", seq, bucket, err)
	}
	return nil
}

// ForEachSeq calls fn for every entry of the sequenced bucket with a
// sequence number greater than after, in ascending order, and stops at fn's
// first error, which it returns. fn must not modify the bucket.
func (t *Tx) ForEachSeq(bucket string, after uint64, fn func(seq uint64, value []byte) error) error {
	b, dn, err := t.bucket(bucket, kindSequenced, false)
	if err != nil || b == nil || after == math.MaxUint64 {
		return err
	}
	c := b.Cursor()
	start := seqKey(after + 1)
	for dk, v := c.Seek(start); dk != nil; dk, v = c.Next() {
		if len(dk) != 8 || v == nil || bytes.Compare(dk, start) < 0 {
			return fmt.Errorf("state: unexpected entry in %q: %w", bucket, ErrCorrupt)
		}
		value, err := t.k.open(v, entryAAD(dn, dk))
		if err != nil {
			return err
		}
		if err := fn(binary.BigEndian.Uint64(dk), value); err != nil {
			return err
		}
	}
	return nil
}
