package accounts

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/quicprochat/qpc/wire"
	bolt "go.etcd.io/bbolt"
)

// kps returns n distinct KeyPackages named after tag.
func kps(tag string, from, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "%s-kp-%04d", tag, from+i)
	}
	return out
}

func mustUpload(t *testing.T, e *env, acct AccountRef, in [][]byte, limit, want int) {
	t.Helper()
	n, err := e.svc.UploadKeyPackages(bg, acct, in, limit)
	if err != nil || n != want {
		t.Fatalf("UploadKeyPackages = %d, %v; want %d", n, err, want)
	}
}

func mustTake(t *testing.T, e *env, username string, want []byte) {
	t.Helper()
	kp, err := e.svc.TakeKeyPackage(bg, username)
	if err != nil || !bytes.Equal(kp, want) {
		t.Fatalf("TakeKeyPackage(%q) = %q, %v; want %q", username, kp, err, want)
	}
}

// TestKeyPackagePoolUpload: uploads add up, a query (no KeyPackages)
// counts, and an upload past the limit is refused whole.
func TestKeyPackagePoolUpload(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.mustRegister("alice", "pw", 1)
	mustUpload(t, e, a.Account, nil, 5, 0)
	mustUpload(t, e, a.Account, kps("a", 0, 3), 5, 3)
	mustUpload(t, e, a.Account, nil, 5, 3)

	n, err := e.svc.UploadKeyPackages(bg, a.Account, kps("a", 3, 3), 5)
	is(t, err, ErrPoolFull)
	if n != 3 {
		t.Fatalf("refused upload reports %d, want the 3 held", n)
	}
	mustUpload(t, e, a.Account, nil, 5, 3) // nothing of the refused upload stayed
	mustUpload(t, e, a.Account, kps("a", 3, 2), 5, 5)
	// A lower limit refuses more but keeps what is there.
	_, err = e.svc.UploadKeyPackages(bg, a.Account, kps("a", 5, 1), 2)
	is(t, err, ErrPoolFull)
	mustUpload(t, e, a.Account, nil, 2, 5)

	for _, bad := range [][]byte{{}, make([]byte, wire.MaxKeyPackage+1)} {
		_, err := e.svc.UploadKeyPackages(bg, a.Account, [][]byte{[]byte("ok"), bad}, 100)
		is(t, err, ErrMalformed)
	}
	mustUpload(t, e, a.Account, [][]byte{make([]byte, wire.MaxKeyPackage)}, 100, 6)
	_, err = e.svc.UploadKeyPackages(bg, AccountRef{1}, kps("x", 0, 1), 5)
	is(t, err, ErrNotFound)
	if _, err := e.svc.UploadKeyPackages(bg, a.Account, nil, 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
	// The pool survives a restart.
	e.reopen()
	mustUpload(t, e, a.Account, nil, 100, 6)
}

// TestKeyPackagePoolFIFO: takes return the oldest first, across uploads,
// and each pool is the account's own; an emptied pool refills in order.
func TestKeyPackagePoolFIFO(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.mustRegister("alice", "pw", 1)
	b := e.mustRegister("bob", "pw", 1)
	first, second := kps("alice", 0, 3), kps("alice", 3, 2)
	mustUpload(t, e, a.Account, first, 10, 3)
	mustUpload(t, e, b.Account, kps("bob", 0, 1), 10, 1)
	mustUpload(t, e, a.Account, second, 10, 5)
	for _, want := range append(first, second...) {
		mustTake(t, e, "alice", want)
	}
	mustTake(t, e, "alice", nil)
	mustUpload(t, e, a.Account, nil, 10, 0)
	mustTake(t, e, "bob", kps("bob", 0, 1)[0])
	mustTake(t, e, "bob", nil)

	refill := kps("alice", 10, 2)
	mustUpload(t, e, a.Account, refill, 10, 2)
	mustTake(t, e, "alice", refill[0])
	mustTake(t, e, "alice", refill[1])
}

// TestKeyPackageTakeNothing: an empty pool, an unknown username and a
// malformed one all answer nil, nil; a name that is not in normal form
// does not reach the normalised account's pool.
func TestKeyPackageTakeNothing(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.mustRegister("alice", "pw", 1)
	mustTake(t, e, "alice", nil)
	mustUpload(t, e, a.Account, kps("a", 0, 1), 10, 1)
	for _, name := range []string{"mallory", "Alice", " alice", "", "x", "no spaces allowed", string(make([]byte, 200))} {
		mustTake(t, e, name, nil)
	}
	mustUpload(t, e, a.Account, nil, 10, 1)
}

// TestKeyPackagePoolDeletedWithAccount: deleting the account deletes its
// pool; the username registered again starts with an empty one.
func TestKeyPackagePoolDeletedWithAccount(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.mustRegister("alice", "pw", 1)
	b := e.mustRegister("bob", "pw", 1)
	mustUpload(t, e, a.Account, kps("alice", 0, 4), 10, 4)
	mustUpload(t, e, b.Account, kps("bob", 0, 2), 10, 2)
	if err := e.svc.DeleteAccount(bg, a.Token); err != nil {
		t.Fatal(err)
	}
	mustTake(t, e, "alice", nil)
	_, err := e.svc.UploadKeyPackages(bg, a.Account, nil, 10)
	is(t, err, ErrNotFound)
	mustUpload(t, e, b.Account, nil, 10, 2) // bob's pool is untouched

	e.svc.Close()
	db, err := bolt.Open(filepath.Join(e.dir, DBFileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeyPackages).ForEach(func(k, v []byte) error {
			if bytes.HasPrefix(k, a.Account[:]) || bytes.Contains(v, []byte("alice")) {
				t.Errorf("a KeyPackage of the deleted account is left: %x", k)
			}
			return nil
		})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.open()
	again := e.mustRegister("alice", "pw", 1)
	mustUpload(t, e, again.Account, nil, 10, 0)
	mustTake(t, e, "alice", nil)
}

// TestKeyPackageConcurrentTakes: takes racing each other never hand out
// one KeyPackage twice, and together hand out every one.
func TestKeyPackageConcurrentTakes(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.mustRegister("alice", "pw", 1)
	const total = 200
	for i := 0; i < total; i += wire.MaxKeyPackageUpload {
		mustUpload(t, e, a.Account, kps("a", i, wire.MaxKeyPackageUpload), total, i+wire.MaxKeyPackageUpload)
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for g := range 2 {
		wg.Go(func() {
			for range total/2 + 5 { // more takes than there are KeyPackages
				kp, err := e.svc.TakeKeyPackage(bg, "alice")
				if err != nil {
					t.Error(err)
					return
				}
				if kp == nil {
					continue
				}
				mu.Lock()
				seen[string(kp)]++
				if seen[string(kp)] > 1 {
					t.Errorf("goroutine %d: %q handed out twice", g, kp)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != total {
		t.Fatalf("%d distinct KeyPackages taken, want %d", len(seen), total)
	}
}

// TestKeyPackageCorruptRecords: a damaged record or key is ErrCorrupt,
// never a panic or a wrong KeyPackage.
func TestKeyPackageCorruptRecords(t *testing.T) {
	for _, v := range [][]byte{nil, {recordV1}, {2, 'k'}, append([]byte{recordV1}, make([]byte, wire.MaxKeyPackage+1)...)} {
		if _, err := decodeKeyPackage(v); err != ErrCorrupt {
			t.Errorf("decodeKeyPackage(%d bytes) = %v", len(v), err)
		}
	}
	for name, damage := range map[string]func(b *bolt.Bucket, a AccountRef) error{
		"version": func(b *bolt.Bucket, a AccountRef) error { return b.Put(keyPackageKey(a, 1), []byte{9, 'x'}) },
		"empty":   func(b *bolt.Bucket, a AccountRef) error { return b.Put(keyPackageKey(a, 1), []byte{recordV1}) },
		"short key": func(b *bolt.Bucket, a AccountRef) error {
			if err := b.Delete(keyPackageKey(a, 1)); err != nil {
				return err
			}
			return b.Put(append(a[:], 0), encodeKeyPackage([]byte("x"))) // sorts first
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, Options{})
			a := e.mustRegister("alice", "pw", 1)
			mustUpload(t, e, a.Account, kps("a", 0, 2), 10, 2)
			err := e.svc.store.(*Bolt).db.Update(func(tx *bolt.Tx) error { return damage(tx.Bucket(bucketKeyPackages), a.Account) })
			if err != nil {
				t.Fatal(err)
			}
			_, err = e.svc.TakeKeyPackage(bg, "alice")
			is(t, err, ErrCorrupt)
			if name == "short key" {
				_, err = e.svc.UploadKeyPackages(bg, a.Account, nil, 10)
				is(t, err, ErrCorrupt)
			}
		})
	}
}
