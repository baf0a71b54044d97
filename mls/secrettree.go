package mls

import (
	"errors"
	"fmt"
)

// The secret tree (RFC 9420 §9) derives, from the epoch's
// encryption_secret, one secret per leaf, and from it two hash ratchets per
// sender: one for handshake messages and one for application messages.
// Each ratchet step yields a key/nonce pair for one generation.
//
// Forward secrecy (§9.2) requires deleting secrets as soon as they are no
// longer needed: a tree node once both children are derived, a leaf secret
// once its two ratchets exist, a ratchet secret once the next one exists,
// and a key/nonce pair once a message has been decrypted with it. Keys for
// skipped generations are retained only within a bounded window so that
// out-of-order delivery works without letting an attacker force unbounded
// state or unbounded work.

// RatchetType selects one of a sender's two hash ratchets (RFC 9420 §9.1).
type RatchetType uint8

const (
	// HandshakeRatchet protects proposals and commits sent as PrivateMessage.
	HandshakeRatchet RatchetType = iota + 1
	// ApplicationRatchet protects application messages.
	ApplicationRatchet
)

func (r RatchetType) String() string {
	switch r {
	case HandshakeRatchet:
		return "handshake"
	case ApplicationRatchet:
		return "application"
	}
	return fmt.Sprintf("RatchetType(%d)", uint8(r))
}

// Errors of the secret tree, each wrapped once with the leaf and generation.
var (
	// ErrKeyConsumed: the key for this generation was already used and
	// deleted (a replay), or was skipped so long ago that it was evicted.
	ErrKeyConsumed = errors.New("mls: ratchet key already consumed or expired")
	// ErrGenerationTooFar: the generation lies further ahead than the
	// configured maximum forward distance.
	ErrGenerationTooFar = errors.New("mls: ratchet generation too far ahead")
	// ErrRatchetExhausted: the ratchet reached the last uint32 generation;
	// the sender must move to a new epoch (§9.1).
	ErrRatchetExhausted = errors.New("mls: ratchet generations exhausted")
	// ErrLeafIndex: the leaf is not in the tree.
	ErrLeafIndex = errors.New("mls: leaf index out of range")
)

// SecretTreeOptions bounds the out-of-order tolerance of a secret tree.
type SecretTreeOptions struct {
	// OutOfOrderWindow is how many skipped key/nonce pairs each ratchet
	// keeps for late messages; older ones are deleted first.
	OutOfOrderWindow int
	// MaxForwardDistance is how far past the next expected generation a
	// received generation may lie; each step costs three KDF calls.
	MaxForwardDistance uint32
}

// DefaultSecretTreeOptions are used when NewSecretTree gets nil options.
var DefaultSecretTreeOptions = SecretTreeOptions{OutOfOrderWindow: 128, MaxForwardDistance: 1024}

// RatchetKey is the AEAD key and nonce for one generation of a ratchet.
type RatchetKey struct {
	Generation uint32
	Key        []byte
	Nonce      []byte
}

// ratchet is one hash ratchet (§9.1) with its retained skipped keys.
type ratchet struct {
	secret    []byte // ratchet_secret_[next]
	next      uint32 // generation of secret
	exhausted bool   // secret for generation 2^32 would be needed
	skipped   map[uint32]RatchetKey
}

// SecretTree is the secret tree of one epoch for a group of nLeaves leaves.
// It is not safe for concurrent use.
type SecretTree struct {
	suite   *CipherSuite
	nLeaves uint32
	opts    SecretTreeOptions
	// nodes holds the secrets not yet consumed, by node index.
	nodes       map[uint32][]byte
	handshake   map[uint32]*ratchet
	application map[uint32]*ratchet
}

// NewSecretTree builds the tree rooted at encryption_secret for a group of
// nLeaves leaves (RFC 9420 §9). nLeaves must be positive.
func NewSecretTree(suite *CipherSuite, encryptionSecret []byte, nLeaves uint32, opts *SecretTreeOptions) (*SecretTree, error) {
	if nLeaves == 0 || nLeaves > 1<<31 {
		return nil, fmt.Errorf("secret tree of %d leaves: %w", nLeaves, ErrLeafIndex)
	}
	if len(encryptionSecret) != suite.nh {
		return nil, fmt.Errorf("secret tree: encryption secret of %d bytes: %w", len(encryptionSecret), ErrInvalidKey)
	}
	o := DefaultSecretTreeOptions
	if opts != nil {
		o = *opts
	}
	if o.OutOfOrderWindow < 0 {
		o.OutOfOrderWindow = 0
	}
	t := &SecretTree{
		suite:       suite,
		nLeaves:     nLeaves,
		opts:        o,
		nodes:       map[uint32][]byte{treeRoot(nLeaves): append([]byte(nil), encryptionSecret...)},
		handshake:   map[uint32]*ratchet{},
		application: map[uint32]*ratchet{},
	}
	return t, nil
}

// leafRatchet returns the ratchet of the given type for a leaf, deriving
// the path from the nearest retained ancestor down to the leaf on first
// use and deleting each consumed node secret (§9, §9.2).
func (t *SecretTree) leafRatchet(leaf uint32, typ RatchetType) (*ratchet, error) {
	if leaf >= t.nLeaves {
		return nil, fmt.Errorf("leaf %d of %d: %w", leaf, t.nLeaves, ErrLeafIndex)
	}
	var m map[uint32]*ratchet
	switch typ {
	case HandshakeRatchet:
		m = t.handshake
	case ApplicationRatchet:
		m = t.application
	default:
		return nil, fmt.Errorf("ratchet type %v: %w", typ, ErrLeafIndex)
	}
	if r, ok := m[leaf]; ok {
		return r, nil
	}
	if err := t.deriveLeaf(leaf); err != nil {
		return nil, err
	}
	return m[leaf], nil
}

// deriveLeaf computes both ratchets of a leaf. Each node secret on the way
// down is split into its children (ExpandWithLabel(secret, "tree", "left" |
// "right", Nh)) and then deleted.
func (t *SecretTree) deriveLeaf(leaf uint32) error {
	x := 2 * leaf
	// Walk up to the lowest ancestor whose secret is still held.
	path := []uint32{x}
	for {
		if _, ok := t.nodes[path[len(path)-1]]; ok {
			break
		}
		p, err := nodeParent(path[len(path)-1], t.nLeaves)
		if err != nil {
			// Reached the root without a secret: this leaf's ratchets were
			// already derived and the state was discarded.
			return fmt.Errorf("leaf %d: %w", leaf, ErrKeyConsumed)
		}
		path = append(path, p)
	}
	for i := len(path) - 1; i > 0; i-- {
		n := path[i]
		secret := t.nodes[n]
		l, _ := nodeLeft(n)
		r, _ := nodeRight(n)
		t.nodes[l] = t.suite.mustExpandWithLabel(secret, "tree", []byte("left"), t.suite.nh)
		t.nodes[r] = t.suite.mustExpandWithLabel(secret, "tree", []byte("right"), t.suite.nh)
		zero(secret)
		delete(t.nodes, n)
	}
	secret := t.nodes[x]
	t.handshake[leaf] = &ratchet{secret: t.suite.mustExpandWithLabel(secret, "handshake", nil, t.suite.nh)}
	t.application[leaf] = &ratchet{secret: t.suite.mustExpandWithLabel(secret, "application", nil, t.suite.nh)}
	zero(secret)
	delete(t.nodes, x)
	return nil
}

// step derives the key and nonce of the ratchet's current generation and
// advances the ratchet secret, deleting the old one (§9.1):
//
//	key    = DeriveTreeSecret(secret, "key", generation, Nk)
//	nonce  = DeriveTreeSecret(secret, "nonce", generation, Nn)
//	secret = DeriveTreeSecret(secret, "secret", generation, Nh)
func (t *SecretTree) step(r *ratchet) (RatchetKey, error) {
	if r.exhausted {
		return RatchetKey{}, ErrRatchetExhausted
	}
	s := t.suite
	g := r.next
	key, err := s.DeriveTreeSecret(r.secret, "key", g, s.nk)
	if err != nil {
		return RatchetKey{}, err
	}
	nonce, err := s.DeriveTreeSecret(r.secret, "nonce", g, s.nn)
	if err != nil {
		return RatchetKey{}, err
	}
	next, err := s.DeriveTreeSecret(r.secret, "secret", g, s.nh)
	if err != nil {
		return RatchetKey{}, err
	}
	zero(r.secret)
	r.secret = next
	if g == ^uint32(0) {
		r.exhausted = true
	} else {
		r.next = g + 1
	}
	return RatchetKey{Generation: g, Key: key, Nonce: nonce}, nil
}

// NextKey returns the key and nonce for the sender's next message on the
// leaf's ratchet and advances it, so that no generation is used twice.
func (t *SecretTree) NextKey(leaf uint32, typ RatchetType) (RatchetKey, error) {
	r, err := t.leafRatchet(leaf, typ)
	if err != nil {
		return RatchetKey{}, fmt.Errorf("secret tree next %v key: %w", typ, err)
	}
	k, err := t.step(r)
	if err != nil {
		return RatchetKey{}, fmt.Errorf("secret tree next %v key of leaf %d: %w", typ, leaf, err)
	}
	return k, nil
}

// Key returns the key and nonce for a received message of the given
// generation and deletes them from the tree: a second request for the same
// generation fails with ErrKeyConsumed, which rejects replays (§9.2).
// Generations ahead of the ratchet are reached by stepping forward and
// keeping the skipped keys (at most OutOfOrderWindow of them) for late
// messages.
func (t *SecretTree) Key(leaf uint32, typ RatchetType, generation uint32) (RatchetKey, error) {
	r, err := t.leafRatchet(leaf, typ)
	if err != nil {
		return RatchetKey{}, fmt.Errorf("secret tree %v key: %w", typ, err)
	}
	k, err := t.consume(r, generation)
	if err != nil {
		return RatchetKey{}, fmt.Errorf("secret tree %v key of leaf %d generation %d: %w", typ, leaf, generation, err)
	}
	return k, nil
}

func (t *SecretTree) consume(r *ratchet, generation uint32) (RatchetKey, error) {
	if r.exhausted || generation < r.next {
		if k, ok := r.skipped[generation]; ok {
			delete(r.skipped, generation)
			return k, nil
		}
		if r.exhausted && generation == ^uint32(0) {
			return RatchetKey{}, ErrRatchetExhausted
		}
		return RatchetKey{}, ErrKeyConsumed
	}
	if generation-r.next > t.opts.MaxForwardDistance {
		return RatchetKey{}, ErrGenerationTooFar
	}
	for r.next < generation {
		k, err := t.step(r)
		if err != nil {
			return RatchetKey{}, err
		}
		t.keep(r, k)
	}
	return t.step(r)
}

// restore puts back a key that Key handed out for a message that then
// failed to decrypt, so that a forgery cannot burn a generation of another
// member's ratchet. The key goes into the skipped set, subject to the
// window like any other.
func (t *SecretTree) restore(leaf uint32, typ RatchetType, k RatchetKey) {
	r, err := t.leafRatchet(leaf, typ)
	if err != nil {
		return
	}
	t.keep(r, k)
}

// keep retains a skipped key, evicting the oldest generations beyond the
// window so that state stays bounded.
func (t *SecretTree) keep(r *ratchet, k RatchetKey) {
	if t.opts.OutOfOrderWindow == 0 {
		zeroKey(k)
		return
	}
	if r.skipped == nil {
		r.skipped = map[uint32]RatchetKey{}
	}
	r.skipped[k.Generation] = k
	if len(r.skipped) <= t.opts.OutOfOrderWindow {
		return
	}
	// One key was added, so at most one is over the window: drop the
	// oldest generation, the one least likely to still arrive.
	oldest := k.Generation
	for g := range r.skipped {
		if g < oldest {
			oldest = g
		}
	}
	zeroKey(r.skipped[oldest])
	delete(r.skipped, oldest)
}

// SenderDataKeyNonce derives the key and nonce that protect a
// PrivateMessage's sender data (RFC 9420 §6.3.2). They depend on a sample
// of the content ciphertext — its first Nh bytes, or all of it if shorter —
// so each message gets a fresh pair without a per-message counter.
func (s *CipherSuite) SenderDataKeyNonce(senderDataSecret, ciphertext []byte) (key, nonce []byte) {
	sample := ciphertext
	if len(sample) > s.nh {
		sample = sample[:s.nh]
	}
	key = s.mustExpandWithLabel(senderDataSecret, "key", sample, s.nk)
	nonce = s.mustExpandWithLabel(senderDataSecret, "nonce", sample, s.nn)
	return key, nonce
}

func zero(b []byte) {
	clear(b)
}

func zeroKey(k RatchetKey) {
	zero(k.Key)
	zero(k.Nonce)
}

// NextGeneration is the generation the leaf's ratchet of type typ hands
// out next (NextKey).
func (t *SecretTree) NextGeneration(leaf uint32, typ RatchetType) (uint32, error) {
	r, err := t.leafRatchet(leaf, typ)
	if err != nil {
		return 0, fmt.Errorf("secret tree %v generation: %w", typ, err)
	}
	if r.exhausted {
		return 0, ErrRatchetExhausted
	}
	return r.next, nil
}

// SkipTo advances the leaf's ratchet of type typ until the next
// generation it hands out is at least generation, deleting the keys it
// steps over (none is kept: they are this sender's own, never to be
// received). A ratchet already there is left as it is. A sender uses it
// to never reuse a generation whose use may not have been recorded before
// a crash (§9.1 requires each key and nonce to be used once).
func (t *SecretTree) SkipTo(leaf uint32, typ RatchetType, generation uint32) error {
	r, err := t.leafRatchet(leaf, typ)
	if err != nil {
		return fmt.Errorf("secret tree %v skip: %w", typ, err)
	}
	if !r.exhausted && generation > r.next && generation-r.next > t.opts.MaxForwardDistance {
		return fmt.Errorf("secret tree %v skip of leaf %d to %d: %w", typ, leaf, generation, ErrGenerationTooFar)
	}
	for !r.exhausted && r.next < generation {
		k, err := t.step(r)
		if err != nil {
			return err
		}
		zeroKey(k)
	}
	return nil
}
