package kt

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// A MapProof shows, against one tree root, what sits at the end of the
// search path of an index: the leaf at that index (membership), or an
// empty subtree, another leaf, or an internal node whose prefix leaves the
// path (non-membership).
//
// Steps are the internal nodes on the path, deepest first: each gives its
// depth and the hash of its child on the other side of the path. The
// verifier derives every node's prefix from the index itself, so a proof
// for one index says nothing about other leaves except the hashes and, in a
// non-membership proof, the one neighbouring leaf's index and commitment
// (a VRF output and an HMAC commitment: neither reveals a label or a value).
type MapProof struct {
	Steps    []MapStep
	Terminal Terminal
}

// MapStep is one internal node on a search path.
type MapStep struct {
	Depth   uint8
	Sibling [32]byte
}

// TerminalKind says what a search path ends in.
type TerminalKind uint8

const (
	TerminalEmpty TerminalKind = 0 // an empty child of the root
	TerminalLeaf  TerminalKind = 1 // a leaf: Index, Commitment
	TerminalNode  TerminalKind = 2 // an internal node: Depth, Index (its prefix), Left, Right
)

// Terminal is the node a search path ends in.
type Terminal struct {
	Kind        TerminalKind
	Depth       uint8 // TerminalNode
	Index       Index // leaf index, or node prefix
	Commitment  [32]byte
	Left, Right [32]byte
}

// Errors of proof verification.
var (
	ErrProofMalformed = errors.New("kt: malformed proof")
	ErrRootMismatch   = errors.New("kt: proof does not lead to the root")
)

// maxSteps bounds a path: 256 internal depths at most.
const maxSteps = 256

// proveIndex walks the tree at epoch e from the root along index.
func proveIndex(src nodeSource, e uint64, index Index) (MapProof, error) {
	var p MapProof
	id := rootID
	var steps []MapStep
	for {
		r, err := src.node(id)
		if err != nil {
			return p, err
		}
		var st *nodeState
		if r == nil && id == rootID {
			st = &nodeState{hash: emptyRoot()}
		} else if r == nil {
			return p, fmt.Errorf("kt: tree node missing")
		} else if st, _ = r.at(e); st == nil {
			return p, fmt.Errorf("%w %d", errNoState, e)
		}
		d := int(id.depth)
		if d != 0 && commonPrefix(&index, &id.prefix) < d {
			// An internal node off the path: non-membership.
			var hs [2][32]byte
			for i := range 2 {
				if st.present[i] {
					hs[i] = st.child[i].hash
				}
			}
			p.Terminal = Terminal{Kind: TerminalNode, Depth: uint8(d), Index: id.prefix, Left: hs[0], Right: hs[1]}
			break
		}
		b := index.bit(d)
		var sib [32]byte
		if st.present[1-b] {
			sib = st.child[1-b].hash
		}
		steps = append(steps, MapStep{Depth: uint8(d), Sibling: sib})
		if !st.present[b] {
			p.Terminal = Terminal{Kind: TerminalEmpty}
			break
		}
		c := &st.child[b]
		if c.leaf() {
			p.Terminal = Terminal{Kind: TerminalLeaf, Index: c.id.prefix, Commitment: c.commitment}
			break
		}
		id = c.id
	}
	for i, j := 0, len(steps)-1; i < j; i, j = i+1, j-1 {
		steps[i], steps[j] = steps[j], steps[i]
	}
	p.Steps = steps
	return p, nil
}

// Evaluate checks the shape of the proof for index and returns the root it
// leads to and what it proves: present (with the leaf's commitment) or
// absent. It does not compare with a root; Verify* do.
func (p *MapProof) Evaluate(index Index) (root [32]byte, present bool, commitment [32]byte, err error) {
	if len(p.Steps) == 0 || len(p.Steps) > maxSteps {
		return root, false, commitment, ErrProofMalformed
	}
	var h [32]byte
	below := leafDepth // the depth of the node whose hash h is
	switch t := &p.Terminal; t.Kind {
	case TerminalEmpty:
		// Only the root may have an empty child.
		if len(p.Steps) != 1 {
			return root, false, commitment, ErrProofMalformed
		}
	case TerminalLeaf:
		h = LeafHash(&t.Index, &t.Commitment)
		if t.Index == index {
			present, commitment = true, t.Commitment
		}
	case TerminalNode:
		d := int(t.Depth)
		if d == 0 || t.Index != t.Index.prefix(d) || commonPrefix(&t.Index, &index) >= d {
			return root, false, commitment, ErrProofMalformed
		}
		h = nodeHash(d, &t.Index, &t.Left, &t.Right)
		below = d
	default:
		return root, false, commitment, ErrProofMalformed
	}
	// The terminal must hang on the index's path below the deepest step.
	if t := &p.Terminal; t.Kind != TerminalEmpty {
		if last := int(p.Steps[0].Depth); commonPrefix(&t.Index, &index) < last+1 {
			return root, false, commitment, ErrProofMalformed
		}
	}
	for _, s := range p.Steps {
		d := int(s.Depth)
		if d >= below {
			return root, false, commitment, ErrProofMalformed
		}
		pre := index.prefix(d)
		if index.bit(d) == 0 {
			h = nodeHash(d, &pre, &h, &s.Sibling)
		} else {
			h = nodeHash(d, &pre, &s.Sibling, &h)
		}
		below = d
	}
	if below != 0 {
		return root, false, commitment, ErrProofMalformed
	}
	return h, present, commitment, nil
}

// VerifyMembership checks that the tree with root holds commitment at index.
func (p *MapProof) VerifyMembership(root [32]byte, index Index, commitment [32]byte) error {
	got, present, c, err := p.Evaluate(index)
	if err != nil {
		return err
	}
	if got != root {
		return ErrRootMismatch
	}
	if !present || c != commitment {
		return fmt.Errorf("kt: proof does not show the leaf")
	}
	return nil
}

// VerifyPresence checks that the tree with root holds some leaf at index
// and returns its commitment.
func (p *MapProof) VerifyPresence(root [32]byte, index Index) ([32]byte, error) {
	got, present, c, err := p.Evaluate(index)
	if err != nil {
		return c, err
	}
	if got != root {
		return c, ErrRootMismatch
	}
	if !present {
		return c, fmt.Errorf("kt: proof shows the index absent")
	}
	return c, nil
}

// VerifyAbsence checks that the tree with root has no leaf at index.
func (p *MapProof) VerifyAbsence(root [32]byte, index Index) error {
	got, present, _, err := p.Evaluate(index)
	if err != nil {
		return err
	}
	if got != root {
		return ErrRootMismatch
	}
	if present {
		return fmt.Errorf("kt: proof shows the index present")
	}
	return nil
}

// Marshal encodes the proof (docs/key-transparency.md §3.2):
//
//	u8 steps; steps × (u8 depth, 32 sibling); u8 kind;
//	leaf: 32 index, 32 commitment; node: u8 depth, 32 prefix, 32 left, 32 right
func (p *MapProof) Marshal(b *cryptobyte.Builder) {
	b.AddUint16(uint16(len(p.Steps)))
	for _, s := range p.Steps {
		b.AddUint8(s.Depth)
		b.AddBytes(s.Sibling[:])
	}
	b.AddUint8(uint8(p.Terminal.Kind))
	switch t := p.Terminal; t.Kind {
	case TerminalLeaf:
		b.AddBytes(t.Index[:])
		b.AddBytes(t.Commitment[:])
	case TerminalNode:
		b.AddUint8(t.Depth)
		b.AddBytes(t.Index[:])
		b.AddBytes(t.Left[:])
		b.AddBytes(t.Right[:])
	}
}

func readMapProof(s *cryptobyte.String, p *MapProof) bool {
	var n uint16
	if !s.ReadUint16(&n) || n == 0 || n > maxSteps {
		return false
	}
	p.Steps = make([]MapStep, n)
	for i := range p.Steps {
		if !s.ReadUint8(&p.Steps[i].Depth) || !s.CopyBytes(p.Steps[i].Sibling[:]) {
			return false
		}
	}
	var k uint8
	if !s.ReadUint8(&k) {
		return false
	}
	p.Terminal = Terminal{Kind: TerminalKind(k)}
	t := &p.Terminal
	switch t.Kind {
	case TerminalEmpty:
		return true
	case TerminalLeaf:
		return s.CopyBytes(t.Index[:]) && s.CopyBytes(t.Commitment[:])
	case TerminalNode:
		return s.ReadUint8(&t.Depth) && s.CopyBytes(t.Index[:]) && s.CopyBytes(t.Left[:]) && s.CopyBytes(t.Right[:])
	}
	return false
}

// ParseMapProof decodes a proof encoded by Marshal.
func ParseMapProof(b []byte) (*MapProof, error) {
	s := cryptobyte.String(b)
	p := new(MapProof)
	if !readMapProof(&s, p) || !s.Empty() {
		return nil, ErrProofMalformed
	}
	return p, nil
}
