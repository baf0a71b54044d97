package store

// The key-slot file: where the per-message keys of schema 3 live.
//
// Every envelope is stored in bbolt encrypted under a key of its own
// (seal.go); the key is written only here, never to bbolt, because bbolt
// copies a page on every write and never clears the page it freed, so
// anything it ever held may stay readable in the file. This file is
// overwritten in place instead: a message's key has a fixed slot, and
// when the message is acknowledged, deleted with its mailbox or purged at
// expiry, its slot is overwritten with zeros. What bbolt's freed pages
// then still hold of the message is ciphertext under a key that no longer
// exists (docs/storage.md, "Envelopes at rest"; ADR 0002).
//
// Layout (all of it, nothing else):
//
//	header   magic "QPCKEYS\x00" | version u8 (1) | state u8 | file ID (16) | generation u64 | zeros to 4096 bytes
//	slot i   at 4096 + 32*i: the key of the message whose record names slot i, or 32 zero bytes if free
//
// The file ID is also in qpc.db's meta bucket, so that a key file and a
// store that do not belong together are refused, not silently mixed.
// state is stateInUse while a store has the file open and stateClean
// once Close has written every zeroed slot and synced. The generation
// counts clean closes; Close records it in qpc.db's meta bucket too,
// before it marks this file clean. Open trusts the file (a filled slot
// is a stored message's, a zero slot is free) only if it is clean and of
// the store's generation; otherwise (a crash, or one of the two files
// restored from another time) it reads every stored message, zeroes
// every slot none names and keeps free none that one names (openKeys).
//
// Ordering, which is what makes a crash lose and leak nothing:
//
//   - A new message's key is written and fdatasynced before the bbolt
//     transaction that stores the message commits (prepare), once per
//     group commit, not per message. A crash before the commit leaves a
//     key no message names: the next Open zeroes it.
//   - A freed slot is zeroed after the transaction that deleted its
//     message committed (commit), never before: zeroing first and then
//     failing the commit would lose a stored message. The zeros are
//     written at once (a copy of the data directory taken after Ack
//     returns no longer holds the key) and synced with the next group
//     commit's sync, or when the writer goes idle, or at Close; a crash
//     before that sync leaves a key no message names, zeroed at Open.
//   - A freed slot is reused only after that commit, so no two stored
//     messages ever name one slot.
//
// The writer goroutine alone changes the file and its in-memory copy;
// readers (Fetch) copy a key out under mu.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

const (
	keyFileMagic   = "QPCKEYS\x00"
	keyFileVersion = 1
	keyFileIDSize  = 16
	// keyPage is the unit of the file's writes: the header, and the slots
	// in pages of 128.
	keyPage      = 4096
	keySize      = 32
	slotsPerPage = keyPage / keySize

	stateInUse = 1
	stateClean = 2
)

// KeyFileSuffix is appended to the store's path to name its key-slot file
// (qpc.db.keys next to qpc.db). The two belong together: a backup must
// hold both, taken while the server is stopped.
const KeyFileSuffix = ".keys"

// keyFile is the open key-slot file and its in-memory copy.
type keyFile struct {
	f    *os.File
	path string
	id   [keyFileIDSize]byte
	gen  uint64

	// mu guards the content and length of slots against readers; only
	// the writer changes them.
	mu    sync.RWMutex
	slots []byte // the slot area, a whole number of pages

	// The writer's alone (under Bolt.updateMu).
	free     []uint32         // free slots, the lowest last
	isFree   []uint64         // the same as a bit set, against freeing twice
	dirty    map[int]struct{} // pages changed in slots and not yet written
	unsynced bool             // written since the last fdatasync
	txAlloc  []uint32         // slots the current transaction filled
	txFree   []uint32         // slots to free when it commits
}

// keyFileHeader encodes the header page.
func keyFileHeader(id [keyFileIDSize]byte, state byte, gen uint64) []byte {
	h := make([]byte, keyPage)
	copy(h, keyFileMagic)
	h[len(keyFileMagic)] = keyFileVersion
	h[len(keyFileMagic)+1] = state
	copy(h[len(keyFileMagic)+2:], id[:])
	binary.BigEndian.PutUint64(h[len(keyFileMagic)+2+keyFileIDSize:], gen)
	return h
}

// decodeKeyFileHeader checks a header page and returns its ID, state and
// generation.
func decodeKeyFileHeader(h []byte) (id [keyFileIDSize]byte, state byte, gen uint64, err error) {
	const at = len(keyFileMagic) + 2 + keyFileIDSize
	if len(h) != keyPage || string(h[:len(keyFileMagic)]) != keyFileMagic {
		return id, 0, 0, fmt.Errorf("%w: not a key-slot file", ErrCorrupt)
	}
	if v := h[len(keyFileMagic)]; v != keyFileVersion {
		return id, 0, 0, fmt.Errorf("%w: key-slot file version %d", ErrCorrupt, v)
	}
	state = h[len(keyFileMagic)+1]
	if state != stateInUse && state != stateClean {
		return id, 0, 0, fmt.Errorf("%w: key-slot file state %d", ErrCorrupt, state)
	}
	copy(id[:], h[len(keyFileMagic)+2:])
	gen = binary.BigEndian.Uint64(h[at:])
	if !allZero(h[at+8:]) {
		return id, 0, 0, fmt.Errorf("%w: key-slot file header padding", ErrCorrupt)
	}
	return id, state, gen, nil
}

// createKeyFile makes a new, empty key-slot file with a fresh ID, in use.
// Whatever was at path is a leftover (an upgrade that did not finish, the
// key file of a store since deleted): its content is overwritten with
// zeros before the file is cut, so its keys do not survive in the blocks
// the file system frees.
func createKeyFile(path string) (*keyFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	k := &keyFile{f: f, path: path, dirty: map[int]struct{}{}}
	if err := shred(f); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, err
	}
	rand.Read(k.id[:])
	if err := k.writeHeader(stateInUse); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, err
	}
	return k, nil
}

// openKeyFile reads an existing key-slot file whole and reports whether
// it was closed cleanly (then k.gen is the generation it was closed at).
// A missing file is an error matching fs.ErrNotExist. The file is not yet
// marked in use (markInUse).
func openKeyFile(path string) (*keyFile, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, false, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, false, err
	}
	if len(data) < keyPage {
		f.Close()
		return nil, false, fmt.Errorf("%w: key-slot file of %d bytes", ErrCorrupt, len(data))
	}
	id, state, gen, err := decodeKeyFileHeader(data[:keyPage])
	if err != nil {
		f.Close()
		return nil, false, err
	}
	// Slots are written a page at a time; a shorter tail (a file cut by
	// hand) is zeros as far as anyone could know.
	n := (len(data) - keyPage) / keySize
	pages := (n + slotsPerPage - 1) / slotsPerPage
	slots := make([]byte, pages*keyPage)
	copy(slots, data[keyPage:keyPage+n*keySize])
	clear(data)
	k := &keyFile{f: f, path: path, id: id, gen: gen, slots: slots, dirty: map[int]struct{}{}}
	return k, state == stateClean, nil
}

func (k *keyFile) writeHeader(state byte) error {
	if _, err := k.f.WriteAt(keyFileHeader(k.id, state, k.gen), 0); err != nil {
		return err
	}
	return fdatasync(k.f)
}

// markInUse records that a store has the file open: a crash from now on
// makes the next Open scrub it.
func (k *keyFile) markInUse() error { return k.writeHeader(stateInUse) }

// slotCount is how many slots the file has room for.
func (k *keyFile) slotCount() int { return len(k.slots) / keySize }

// rebuild collects the free slots: those named reports as named by no
// stored message, zeroed if they are not already. A named slot stays
// taken even if it is zero (its message lost its key): it is freed when
// that message goes, never given to another before. named == nil trusts
// the file (it was closed cleanly: the filled slots are the named ones).
// It returns how many slots it zeroed.
func (k *keyFile) rebuild(named func(slot uint32) bool) int {
	zeroed := 0
	k.free = k.free[:0]
	k.isFree = make([]uint64, (k.slotCount()+63)/64)
	for i := k.slotCount() - 1; i >= 0; i-- {
		key := k.slots[i*keySize : (i+1)*keySize]
		if named == nil && !allZero(key) || named != nil && named(uint32(i)) {
			continue
		}
		if !allZero(key) {
			clear(key)
			k.dirty[i/slotsPerPage] = struct{}{}
			zeroed++
		}
		k.pushFree(uint32(i))
	}
	return zeroed
}

func (k *keyFile) pushFree(slot uint32) {
	k.free = append(k.free, slot)
	k.isFree[slot/64] |= 1 << (slot % 64)
}

// key returns a copy of slot's key; ok is false for a free or
// nonexistent slot.
func (k *keyFile) key(slot uint32) (key [keySize]byte, ok bool) {
	k.mu.RLock()
	if int64(slot) < int64(k.slotCount()) {
		copy(key[:], k.slots[int(slot)*keySize:])
	}
	k.mu.RUnlock()
	return key, key != [keySize]byte{}
}

// alloc puts key into a free slot for the current transaction.
func (k *keyFile) alloc(key *[keySize]byte) (uint32, error) {
	if len(k.free) == 0 {
		if err := k.grow(); err != nil {
			return 0, err
		}
	}
	slot := k.free[len(k.free)-1]
	k.free = k.free[:len(k.free)-1]
	k.isFree[slot/64] &^= 1 << (slot % 64)
	k.mu.Lock()
	copy(k.slots[int(slot)*keySize:], key[:])
	k.mu.Unlock()
	k.dirty[int(slot)/slotsPerPage] = struct{}{}
	k.txAlloc = append(k.txAlloc, slot)
	return slot, nil
}

// release frees slot when the current transaction commits.
func (k *keyFile) release(slot uint32) { k.txFree = append(k.txFree, slot) }

// maxSlots is the most slots the file may hold: slot numbers are uint32,
// and the slot area (32 bytes a slot) must fit an int, as on 32-bit
// routers; whole pages.
var maxSlots = min(uint64(math.MaxUint32), uint64(math.MaxInt)/keySize) / slotsPerPage * slotsPerPage

// grow doubles the slot area (at least one page) and frees the new slots.
func (k *keyFile) grow() error {
	old := k.slotCount()
	n := max(old*2, slotsPerPage)
	if uint64(n) > maxSlots {
		n = int(maxSlots)
		if n <= old {
			return errors.New("key-slot file full")
		}
	}
	grown := make([]byte, n*keySize)
	k.mu.Lock()
	copy(grown, k.slots)
	clear(k.slots)
	k.slots = grown
	k.mu.Unlock()
	k.isFree = append(k.isFree, make([]uint64, (n+63)/64-len(k.isFree))...)
	for i := n - 1; i >= old; i-- {
		k.pushFree(uint32(i))
	}
	return nil
}

// prepare makes the current transaction's new keys durable: it runs
// inside the bbolt transaction, after its operations and before its
// commit. A transaction that stores no new message needs no sync.
func (k *keyFile) prepare() error {
	if len(k.txAlloc) == 0 {
		return nil
	}
	if err := k.writeDirty(); err != nil {
		return fmt.Errorf("key-slot file: %w", err)
	}
	if err := fdatasync(k.f); err != nil {
		return fmt.Errorf("key-slot file: %w", err)
	}
	k.unsynced = false
	return nil
}

// commit runs after the transaction committed: the slots of the messages
// it deleted are zeroed, written (not synced) and free again. An error is
// a write that failed; the pages stay dirty and are written again later.
func (k *keyFile) commit() error {
	k.txAlloc = k.txAlloc[:0]
	k.zero(k.txFree)
	k.txFree = k.txFree[:0]
	return k.writeDirty()
}

// rollback runs after the transaction failed: the keys it wrote (which
// prepare may have synced) name no message, and are zeroed.
func (k *keyFile) rollback() error {
	k.zero(k.txAlloc)
	k.txAlloc = k.txAlloc[:0]
	k.txFree = k.txFree[:0]
	return k.writeDirty()
}

// zero zeroes slots and frees them. A slot out of range or already free
// (two records naming one slot: only a damaged file has them) is left
// alone: zeroing it could destroy another message's key.
func (k *keyFile) zero(slots []uint32) {
	if len(slots) == 0 {
		return
	}
	k.mu.Lock()
	for _, s := range slots {
		if k.freeable(s) {
			clear(k.slots[int(s)*keySize : (int(s)+1)*keySize])
		}
	}
	k.mu.Unlock()
	for _, s := range slots {
		if k.freeable(s) {
			k.dirty[int(s)/slotsPerPage] = struct{}{}
			k.pushFree(s)
		}
	}
}

func (k *keyFile) freeable(slot uint32) bool {
	return int64(slot) < int64(k.slotCount()) && k.isFree[slot/64]&(1<<(slot%64)) == 0
}

// writeDirty writes the changed pages, runs of adjacent pages in one
// write each.
func (k *keyFile) writeDirty() error {
	if len(k.dirty) == 0 {
		return nil
	}
	pages := make([]int, 0, len(k.dirty))
	for p := range k.dirty {
		pages = append(pages, p)
	}
	slices.Sort(pages)
	for i := 0; i < len(pages); {
		j := i + 1
		for j < len(pages) && pages[j] == pages[j-1]+1 {
			j++
		}
		// Only the writer changes slots, so it may read them unlocked.
		run := k.slots[pages[i]*keyPage : (pages[j-1]+1)*keyPage]
		if _, err := k.f.WriteAt(run, int64(keyPage+pages[i]*keyPage)); err != nil {
			return err
		}
		for _, p := range pages[i:j] {
			delete(k.dirty, p)
		}
		k.unsynced = true
		i = j
	}
	return nil
}

// sync makes the zeros written since the last sync durable.
func (k *keyFile) sync() error {
	if err := k.writeDirty(); err != nil {
		return err
	}
	if !k.unsynced {
		return nil
	}
	if err := fdatasync(k.f); err != nil {
		return err
	}
	k.unsynced = false
	return nil
}

// close writes and syncs everything, marks the file clean at generation
// gen (already recorded in the store) and closes it. A nil gen, or any
// failure, leaves the file marked in use, so the next Open checks it.
func (k *keyFile) close(gen *uint64) error {
	err := k.sync()
	if err == nil && gen != nil {
		k.gen = *gen
		err = k.writeHeader(stateClean)
	}
	k.mu.Lock()
	clear(k.slots)
	k.mu.Unlock()
	if cerr := k.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// abandon closes the file without marking it clean (a failed Open).
func (k *keyFile) abandon() {
	k.mu.Lock()
	clear(k.slots)
	k.mu.Unlock()
	k.f.Close()
}

// shred overwrites a file's content with zeros and syncs it, so that
// what it held does not outlive it in blocks the file system frees when
// the file is cut or removed. (It reaches the device only where the file
// system overwrites in place; docs/storage.md says where it does not.)
func shred(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < fi.Size(); off += int64(len(zeros)) {
		n := min(int64(len(zeros)), fi.Size()-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
	}
	if fi.Size() == 0 {
		return nil
	}
	return fdatasync(f)
}

// shredPath shreds and removes the file at path, if there is one.
func shredPath(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = shred(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Remove(path)
}

// syncDir makes a directory's entries (a file created or renamed in it)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func allZero(b []byte) bool {
	return len(b) == 0 || (b[0] == 0 && bytes.Equal(b[:len(b)-1], b[1:]))
}

// encodeSlot and decodeSlot are a slot number in a message record.
func encodeSlot(b []byte, slot uint32) { binary.BigEndian.PutUint32(b, slot) }
func decodeSlot(b []byte) uint32       { return binary.BigEndian.Uint32(b) }
