package mls

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Group state storage. The encoding is this package's own (there is no
// standard one): TLS presentation language with MLS varints like the rest
// of the package, with every map written in key order so that equal states
// encode to equal bytes. It holds private keys and epoch secrets: store it
// encrypted at rest.

// ErrInvalidState: stored state does not decode or is inconsistent.
var ErrInvalidState = errors.New("mls: invalid stored group state")

const stateVersion = 1

// clone deep-copies the secret tree: its ratchets zero secrets in place
// as they advance, so a copy must not share byte slices with the original.
func (t *SecretTree) clone() *SecretTree {
	c := *t
	c.nodes = make(map[uint32][]byte, len(t.nodes))
	for k, v := range t.nodes {
		c.nodes[k] = slices.Clone(v)
	}
	c.handshake = cloneRatchets(t.handshake)
	c.application = cloneRatchets(t.application)
	return &c
}

func cloneRatchets(m map[uint32]*ratchet) map[uint32]*ratchet {
	out := make(map[uint32]*ratchet, len(m))
	for k, r := range m {
		nr := *r
		nr.secret = slices.Clone(r.secret)
		if r.skipped != nil {
			nr.skipped = make(map[uint32]RatchetKey, len(r.skipped))
			for g, key := range r.skipped {
				nr.skipped[g] = RatchetKey{Generation: key.Generation, Key: slices.Clone(key.Key), Nonce: slices.Clone(key.Nonce)}
			}
		}
		out[k] = &nr
	}
	return out
}

func (t *SecretTree) marshal(b *cryptobyte.Builder) {
	b.AddUint32(t.nLeaves)
	b.AddUint32(uint32(t.opts.OutOfOrderWindow))
	b.AddUint32(t.opts.MaxForwardDistance)
	addVector(b, func(b *cryptobyte.Builder) {
		for _, k := range slices.Sorted(maps.Keys(t.nodes)) {
			b.AddUint32(k)
			addOpaque(b, t.nodes[k])
		}
	})
	for _, m := range []map[uint32]*ratchet{t.handshake, t.application} {
		addVector(b, func(b *cryptobyte.Builder) {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				r := m[k]
				b.AddUint32(k)
				addOpaque(b, r.secret)
				b.AddUint32(r.next)
				addOptional(b, r.exhausted)
				addVector(b, func(b *cryptobyte.Builder) {
					for _, g := range slices.Sorted(maps.Keys(r.skipped)) {
						key := r.skipped[g]
						b.AddUint32(g)
						addOpaque(b, key.Key)
						addOpaque(b, key.Nonce)
					}
				})
			}
		})
	}
}

func (t *SecretTree) unmarshal(s *cryptobyte.String, suite *CipherSuite) bool {
	var window uint32
	*t = SecretTree{suite: suite, nodes: map[uint32][]byte{}, handshake: map[uint32]*ratchet{}, application: map[uint32]*ratchet{}}
	if !s.ReadUint32(&t.nLeaves) || !s.ReadUint32(&window) || !s.ReadUint32(&t.opts.MaxForwardDistance) ||
		t.nLeaves == 0 || t.nLeaves > maxLeaves || window > 1<<20 {
		return false
	}
	t.opts.OutOfOrderWindow = int(window)
	if !readList(s, func(v *cryptobyte.String) bool {
		var k uint32
		var sec []byte
		if !v.ReadUint32(&k) || !readOpaque(v, &sec) {
			return false
		}
		t.nodes[k] = sec
		return true
	}) {
		return false
	}
	for _, m := range []map[uint32]*ratchet{t.handshake, t.application} {
		if !readList(s, func(v *cryptobyte.String) bool {
			var k uint32
			r := &ratchet{}
			if !v.ReadUint32(&k) || !readOpaque(v, &r.secret) || !v.ReadUint32(&r.next) || !readOptional(v, &r.exhausted) {
				return false
			}
			if k >= t.nLeaves {
				return false
			}
			m[k] = r
			return readList(v, func(w *cryptobyte.String) bool {
				var key RatchetKey
				if !w.ReadUint32(&key.Generation) || !readOpaque(w, &key.Key) || !readOpaque(w, &key.Nonce) {
					return false
				}
				if r.skipped == nil {
					r.skipped = map[uint32]RatchetKey{}
				}
				r.skipped[key.Generation] = key
				return true
			})
		}) {
			return false
		}
	}
	return true
}

// epochSecretFields lists the epoch secrets a member keeps, in storage
// order.
func epochSecretFields(e *EpochSecrets) []*[]byte {
	return []*[]byte{&e.SenderDataSecret, &e.ExporterSecret, &e.ExternalSecret, &e.ConfirmationKey,
		&e.MembershipKey, &e.ResumptionPSK, &e.EpochAuthenticator, &e.InitSecret}
}

// Marshal encodes the full group state — private keys included — for
// storage. Equal states encode identically.
func (g *Group) Marshal() ([]byte, error) {
	return encode("GroupState", func(b *cryptobyte.Builder) {
		b.AddUint8(stateVersion)
		b.AddUint16(uint16(g.suite.ID))
		g.ctx.marshal(b)
		g.tree.export().marshal(b)
		b.AddUint32(g.priv.leaf)
		addVector(b, func(b *cryptobyte.Builder) {
			for _, k := range slices.Sorted(maps.Keys(g.priv.keys)) {
				b.AddUint32(k)
				addOpaque(b, g.priv.keys[k].pub)
				addOpaque(b, g.priv.keys[k].priv)
			}
		})
		addOpaque(b, g.sigPriv)
		addOpaque(b, g.interim)
		addOpaque(b, g.confTag)
		for _, f := range epochSecretFields(g.secrets) {
			addOpaque(b, *f)
		}
		g.secretTree.marshal(b)
		addVector(b, func(b *cryptobyte.Builder) {
			for _, c := range g.proposals {
				addOpaque(b, c.ref)
				c.sender.marshal(b)
				c.proposal.marshal(b)
			}
		})
		addVector(b, func(b *cryptobyte.Builder) {
			for _, r := range g.resumption {
				b.AddUint64(r.epoch)
				addOpaque(b, r.psk)
			}
		})
		addOptional(b, g.inactive)
	})
}

// UnmarshalGroup restores a group from Marshal's output with the
// application's cfg (policy is not stored).
func UnmarshalGroup(data []byte, cfg *Config) (*Group, error) {
	g := &Group{priv: &treePrivate{keys: map[uint32]hpkeKeyPair{}}, secrets: &EpochSecrets{}, secretTree: &SecretTree{}}
	if cfg != nil {
		g.cfg = *cfg
	}
	var rt RatchetTree
	var suiteErr error
	err := decodeAll("GroupState", data, func(s *cryptobyte.String) bool {
		var version uint8
		var suite uint16
		if !s.ReadUint8(&version) || version != stateVersion || !s.ReadUint16(&suite) {
			return false
		}
		if g.suite, suiteErr = LookupCipherSuite(CipherSuiteID(suite)); suiteErr != nil {
			return false
		}
		if !g.ctx.unmarshal(s) || !rt.unmarshal(s) || !s.ReadUint32(&g.priv.leaf) {
			return false
		}
		if !readList(s, func(v *cryptobyte.String) bool {
			var k uint32
			var kp hpkeKeyPair
			if !v.ReadUint32(&k) || !readOpaque(v, &kp.pub) || !readOpaque(v, &kp.priv) {
				return false
			}
			g.priv.keys[k] = kp
			return true
		}) {
			return false
		}
		if !readOpaque(s, &g.sigPriv) || !readOpaque(s, &g.interim) || !readOpaque(s, &g.confTag) {
			return false
		}
		for _, f := range epochSecretFields(g.secrets) {
			if !readOpaque(s, f) {
				return false
			}
		}
		if !g.secretTree.unmarshal(s, g.suite) {
			return false
		}
		if !readList(s, func(v *cryptobyte.String) bool {
			var c cachedProposal
			c.proposal = new(Proposal)
			if !readOpaque(v, &c.ref) || !c.sender.unmarshal(v) || !c.proposal.unmarshal(v) {
				return false
			}
			g.proposals = append(g.proposals, c)
			return true
		}) {
			return false
		}
		if !readList(s, func(v *cryptobyte.String) bool {
			var r resumptionPSK
			if !v.ReadUint64(&r.epoch) || !readOpaque(v, &r.psk) {
				return false
			}
			g.resumption = append(g.resumption, r)
			return true
		}) {
			return false
		}
		return readOptional(s, &g.inactive)
	})
	if suiteErr != nil {
		return nil, suiteErr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	if g.tree, err = newTreeFromNodes(rt); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	if g.ctx.CipherSuite != g.suite.ID || g.tree.leaf(g.priv.leaf) == nil && !g.inactive ||
		g.secretTree.nLeaves != g.tree.numLeaves() {
		return nil, fmt.Errorf("inconsistent state: %w", ErrInvalidState)
	}
	return g, nil
}
