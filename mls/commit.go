package mls

import "golang.org/x/crypto/cryptobyte"

// Commit applies a set of proposals and, usually, refreshes the committer's
// path through the tree (RFC 9420 §12.4). Path is optional<UpdatePath>.
type Commit struct {
	Proposals []ProposalOrRef
	Path      *UpdatePath
}

// Marshal encodes the commit.
func (c *Commit) Marshal() ([]byte, error) { return encode("Commit", c.marshal) }

// Unmarshal decodes a commit; trailing bytes are an error.
func (c *Commit) Unmarshal(data []byte) error { return decodeAll("Commit", data, c.unmarshal) }

func (c *Commit) marshal(b *cryptobyte.Builder) {
	addVector(b, func(b *cryptobyte.Builder) {
		for i := range c.Proposals {
			c.Proposals[i].marshal(b)
		}
	})
	addOptional(b, c.Path != nil)
	if c.Path != nil {
		c.Path.marshal(b)
	}
}

func (c *Commit) unmarshal(s *cryptobyte.String) bool {
	*c = Commit{}
	if !readList(s, func(v *cryptobyte.String) bool {
		var p ProposalOrRef
		if !p.unmarshal(v) {
			return false
		}
		c.Proposals = append(c.Proposals, p)
		return true
	}) {
		return false
	}
	var present bool
	if !readOptional(s, &present) {
		return false
	}
	if present {
		c.Path = new(UpdatePath)
		return c.Path.unmarshal(s)
	}
	return true
}

// HPKECiphertext is an HPKE-sealed message: the encapsulated key and the
// AEAD ciphertext (RFC 9420 §12.4.1; used by UpdatePathNode and Welcome).
type HPKECiphertext struct {
	KEMOutput  []byte
	Ciphertext []byte
}

// Marshal encodes the ciphertext.
func (h *HPKECiphertext) Marshal() ([]byte, error) { return encode("HPKECiphertext", h.marshal) }

// Unmarshal decodes an HPKE ciphertext; trailing bytes are an error.
func (h *HPKECiphertext) Unmarshal(data []byte) error {
	return decodeAll("HPKECiphertext", data, h.unmarshal)
}

func (h *HPKECiphertext) marshal(b *cryptobyte.Builder) {
	addOpaque(b, h.KEMOutput)
	addOpaque(b, h.Ciphertext)
}

func (h *HPKECiphertext) unmarshal(s *cryptobyte.String) bool {
	return readOpaque(s, &h.KEMOutput) && readOpaque(s, &h.Ciphertext)
}

// UpdatePathNode is one parent node on the committer's filtered direct
// path: its new public key and the path secret encrypted to each node of
// the copath's resolution (RFC 9420 §7.6).
type UpdatePathNode struct {
	EncryptionKey       []byte // HPKEPublicKey
	EncryptedPathSecret []HPKECiphertext
}

// Marshal encodes the node.
func (n *UpdatePathNode) Marshal() ([]byte, error) { return encode("UpdatePathNode", n.marshal) }

// Unmarshal decodes a node; trailing bytes are an error.
func (n *UpdatePathNode) Unmarshal(data []byte) error {
	return decodeAll("UpdatePathNode", data, n.unmarshal)
}

func (n *UpdatePathNode) marshal(b *cryptobyte.Builder) {
	addOpaque(b, n.EncryptionKey)
	addVector(b, func(b *cryptobyte.Builder) {
		for i := range n.EncryptedPathSecret {
			n.EncryptedPathSecret[i].marshal(b)
		}
	})
}

func (n *UpdatePathNode) unmarshal(s *cryptobyte.String) bool {
	n.EncryptedPathSecret = nil
	return readOpaque(s, &n.EncryptionKey) && readList(s, func(v *cryptobyte.String) bool {
		var h HPKECiphertext
		if !h.unmarshal(v) {
			return false
		}
		n.EncryptedPathSecret = append(n.EncryptedPathSecret, h)
		return true
	})
}

// UpdatePath is the committer's new leaf and the new keys along its
// filtered direct path (RFC 9420 §7.6).
type UpdatePath struct {
	LeafNode LeafNode
	Nodes    []UpdatePathNode
}

// Marshal encodes the path.
func (p *UpdatePath) Marshal() ([]byte, error) { return encode("UpdatePath", p.marshal) }

// Unmarshal decodes a path; trailing bytes are an error.
func (p *UpdatePath) Unmarshal(data []byte) error { return decodeAll("UpdatePath", data, p.unmarshal) }

func (p *UpdatePath) marshal(b *cryptobyte.Builder) {
	p.LeafNode.marshal(b)
	addVector(b, func(b *cryptobyte.Builder) {
		for i := range p.Nodes {
			p.Nodes[i].marshal(b)
		}
	})
}

func (p *UpdatePath) unmarshal(s *cryptobyte.String) bool {
	p.Nodes = nil
	return p.LeafNode.unmarshal(s) && readList(s, func(v *cryptobyte.String) bool {
		var n UpdatePathNode
		if !n.unmarshal(v) {
			return false
		}
		p.Nodes = append(p.Nodes, n)
		return true
	})
}
