package kt

import (
	"container/list"
	"crypto/sha256"
	"sync"

	"github.com/quicprochat/qpc/kt/vrf"
)

// DefaultProofCache is the number of VRF proofs a directory keeps in
// memory (DirectoryOptions.ProofCache): 16 MiB (proofCacheEntryBytes
// each), the absence sets of some 3,000 labels.
const DefaultProofCache = 65_536

// proofCacheEntryBytes is what one cached proof costs in memory: the
// 32-byte key, the index and the proof (144 bytes), the list element and
// the map slot, measured by TestProofCacheMemory (255 bytes on amd64).
const proofCacheEntryBytes = 256

// proofCache keeps the VRF proofs of (label, version) pairs, least
// recently used first out. The ECVRF proof of an input is a function of
// the key and the input alone (RFC 9381 §5.1: the nonce is derived from
// the key and the hashed input, §5.4.2.2), so a cached proof is the proof
// the directory would compute again: caching changes no answer. Keys are
// SHA-256 of the VRF input, so an entry's size does not depend on the
// label's length.
type proofCache struct {
	mu  sync.Mutex
	max int
	ll  list.List // of *cachedProof, most recently used at the front
	m   map[[32]byte]*list.Element
}

type cachedProof struct {
	key   [32]byte
	index Index
	proof [vrf.ProofSize]byte
}

func newProofCache(n int) *proofCache {
	return &proofCache{max: n, m: make(map[[32]byte]*list.Element, min(n, 4096))}
}

func proofKey(label string, version uint32) [32]byte {
	return sha256.Sum256(vrfInput(label, version))
}

// get returns the cached proof of key, marking it recently used.
func (c *proofCache) get(key [32]byte) (Index, [vrf.ProofSize]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return Index{}, [vrf.ProofSize]byte{}, false
	}
	c.ll.MoveToFront(e)
	p := e.Value.(*cachedProof)
	return p.index, p.proof, true
}

// has reports whether key is cached, without marking it used.
func (c *proofCache) has(key [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[key]
	return ok
}

// put caches a proof, evicting the least recently used one when full.
func (c *proofCache) put(key [32]byte, index Index, proof [vrf.ProofSize]byte) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok {
		c.ll.MoveToFront(e)
		return
	}
	if c.ll.Len() >= c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*cachedProof).key)
	}
	c.m[key] = c.ll.PushFront(&cachedProof{key: key, index: index, proof: proof})
}

// len is the number of cached proofs.
func (c *proofCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// prove returns the VRF proof of (label, version) and its index, from the
// cache or computed (and counted in ProofsComputed).
func (d *Directory) prove(label string, version uint32) (Index, [vrf.ProofSize]byte) {
	key := proofKey(label, version)
	if idx, pi, ok := d.proofs.get(key); ok {
		return idx, pi
	}
	beta, pi := d.opts.VRFKey.Prove(vrfInput(label, version))
	d.proofsComputed.Add(1)
	idx := IndexOf(beta)
	d.proofs.put(key, idx, pi)
	return idx, pi
}

// uncached counts the versions of label whose proofs are not cached.
func (d *Directory) uncached(label string, versions []uint32) int {
	n := 0
	for _, v := range versions {
		if !d.proofs.has(proofKey(label, v)) {
			n++
		}
	}
	return n
}

// ProofsComputed is the number of VRF proofs the directory has computed
// since it was opened (cache misses of lookups, histories and publishes;
// an epoch's proofs of new versions are counted too).
func (d *Directory) ProofsComputed() uint64 { return d.proofsComputed.Load() }
