package mls

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// NodeType says whether a ratchet tree node is a leaf or a parent
// (RFC 9420 §7.8). A closed enumeration: only 1..2 are valid.
type NodeType uint8

// Node types of RFC 9420 §7.8.
const (
	NodeTypeLeaf   NodeType = 1
	NodeTypeParent NodeType = 2
)

func (t NodeType) String() string {
	switch t {
	case NodeTypeLeaf:
		return "leaf"
	case NodeTypeParent:
		return "parent"
	}
	return fmt.Sprintf("NodeType(%d)", uint8(t))
}

// ParentNode is a non-blank interior node of the ratchet tree
// (RFC 9420 §7.1).
type ParentNode struct {
	EncryptionKey  []byte // HPKEPublicKey
	ParentHash     []byte
	UnmergedLeaves []uint32 // leaf indices
}

// Marshal encodes the parent node.
func (p *ParentNode) Marshal() ([]byte, error) { return encode("ParentNode", p.marshal) }

// Unmarshal decodes a parent node; trailing bytes are an error.
func (p *ParentNode) Unmarshal(data []byte) error { return decodeAll("ParentNode", data, p.unmarshal) }

func (p *ParentNode) marshal(b *cryptobyte.Builder) {
	addOpaque(b, p.EncryptionKey)
	addOpaque(b, p.ParentHash)
	addUint32List(b, p.UnmergedLeaves)
}

func (p *ParentNode) unmarshal(s *cryptobyte.String) bool {
	return readOpaque(s, &p.EncryptionKey) && readOpaque(s, &p.ParentHash) &&
		readUint32List(s, &p.UnmergedLeaves)
}

// Node is a non-blank ratchet tree node (RFC 9420 §7.8). Exactly the field
// selected by Type must be set.
type Node struct {
	Type       NodeType
	LeafNode   *LeafNode
	ParentNode *ParentNode
}

// Marshal encodes the node.
func (n *Node) Marshal() ([]byte, error) { return encode("Node", n.marshal) }

// Unmarshal decodes a node; trailing bytes are an error.
func (n *Node) Unmarshal(data []byte) error { return decodeAll("Node", data, n.unmarshal) }

func (n *Node) marshal(b *cryptobyte.Builder) {
	switch {
	case n.Type == NodeTypeLeaf && n.LeafNode != nil && n.ParentNode == nil:
		b.AddUint8(uint8(n.Type))
		n.LeafNode.marshal(b)
	case n.Type == NodeTypeParent && n.ParentNode != nil && n.LeafNode == nil:
		b.AddUint8(uint8(n.Type))
		n.ParentNode.marshal(b)
	default:
		invalidf(b, "%v node needs exactly its own body", n.Type)
	}
}

func (n *Node) unmarshal(s *cryptobyte.String) bool {
	var t uint8
	if !s.ReadUint8(&t) {
		return false
	}
	*n = Node{Type: NodeType(t)}
	switch n.Type {
	case NodeTypeLeaf:
		n.LeafNode = new(LeafNode)
		return n.LeafNode.unmarshal(s)
	case NodeTypeParent:
		n.ParentNode = new(ParentNode)
		return n.ParentNode.unmarshal(s)
	}
	return false
}

// RatchetTree is the array representation of a ratchet tree as carried in
// the ratchet_tree extension (RFC 9420 §12.4.3.3): optional<Node> in node
// index order, a nil entry being a blank node.
//
// Two structural rules are enforced here because RFC 9420 §12.4.3.3 states
// them for the encoding itself: the vector is <1..2^32-1>, so it must not be
// empty, and the sender MUST NOT include blank nodes after the last
// non-blank node, which the receiver MUST check — so a blank final entry is
// malformed. That also keeps the encoding canonical (one tree, one
// encoding). Extending the array to a full tree and checking that leaves sit
// at even indices and parents at odd ones is tree validation (§7.1,
// §12.4.3.1), left to the tree code.
type RatchetTree []*Node

// Marshal encodes the tree.
func (t RatchetTree) Marshal() ([]byte, error) { return encode("RatchetTree", t.marshal) }

// Unmarshal decodes a tree; trailing bytes are an error.
func (t *RatchetTree) Unmarshal(data []byte) error {
	return decodeAll("RatchetTree", data, t.unmarshal)
}

func (t RatchetTree) marshal(b *cryptobyte.Builder) {
	if len(t) == 0 || t[len(t)-1] == nil {
		invalidf(b, "ratchet tree must be non-empty and end in a non-blank node")
		return
	}
	addVector(b, func(b *cryptobyte.Builder) {
		for _, n := range t {
			addOptional(b, n != nil)
			if n != nil {
				n.marshal(b)
			}
		}
	})
}

func (t *RatchetTree) unmarshal(s *cryptobyte.String) bool {
	var nodes RatchetTree
	if !readList(s, func(v *cryptobyte.String) bool {
		var present bool
		if !readOptional(v, &present) {
			return false
		}
		if !present {
			nodes = append(nodes, nil)
			return true
		}
		n := new(Node)
		if !n.unmarshal(v) {
			return false
		}
		nodes = append(nodes, n)
		return true
	}) {
		return false
	}
	if len(nodes) == 0 || nodes[len(nodes)-1] == nil {
		return false
	}
	*t = nodes
	return true
}
