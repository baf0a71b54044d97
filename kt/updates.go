package kt

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxEpochLeaves bounds the leaves one epoch inserts, real and padding:
// an epoch takes at most this many queued updates, and
// DirectoryOptions.MinUpdates may not exceed it.
const MaxEpochLeaves = 10_000

const (
	updateListV1     = 1
	updateListHeader = 1 + 8 + 4
	updateLeafSize   = IndexSize + 32
	// MaxUpdateListSize is the largest encoded update list.
	MaxUpdateListSize = updateListHeader + MaxEpochLeaves*updateLeafSize
)

// Leaf is one leaf of the prefix tree: where it sits and what it commits to.
type Leaf struct {
	Index      Index
	Commitment [32]byte
}

// Hash is the leaf hash (§1.2).
func (l *Leaf) Hash() [32]byte { return LeafHash(&l.Index, &l.Commitment) }

// UpdateList is the ordered list of leaves an epoch inserted into the
// prefix tree, padding included (docs/key-transparency.md §1.5): what an
// auditor replays onto the previous epoch's tree. It holds VRF-derived
// indices and hiding commitments only, never a label or a value.
type UpdateList struct {
	Epoch  uint64
	Leaves []Leaf
}

// ErrUpdateList reports an update list that does not parse.
var ErrUpdateList = errors.New("kt: malformed update list")

// Marshal encodes the list: u8 version (1) || u64 epoch || u32 count ||
// count × (index (32) || commitment (32)).
func (u *UpdateList) Marshal() []byte {
	b := make([]byte, 0, updateListHeader+len(u.Leaves)*updateLeafSize)
	b = append(b, updateListV1)
	b = binary.BigEndian.AppendUint64(b, u.Epoch)
	b = binary.BigEndian.AppendUint32(b, uint32(len(u.Leaves)))
	for i := range u.Leaves {
		b = append(b, u.Leaves[i].Index[:]...)
		b = append(b, u.Leaves[i].Commitment[:]...)
	}
	return b
}

// ParseUpdateList decodes a list encoded by Marshal. At most
// MaxEpochLeaves leaves; the count must match the length exactly.
func ParseUpdateList(b []byte) (*UpdateList, error) {
	if len(b) < updateListHeader || b[0] != updateListV1 {
		return nil, fmt.Errorf("%w: bad header", ErrUpdateList)
	}
	n := binary.BigEndian.Uint32(b[9:])
	if n > MaxEpochLeaves {
		return nil, fmt.Errorf("%w: %d leaves, at most %d", ErrUpdateList, n, MaxEpochLeaves)
	}
	if uint64(len(b)-updateListHeader) != uint64(n)*updateLeafSize {
		return nil, fmt.Errorf("%w: %d leaves in %d bytes", ErrUpdateList, n, len(b))
	}
	u := &UpdateList{Epoch: binary.BigEndian.Uint64(b[1:]), Leaves: make([]Leaf, n)}
	p := b[updateListHeader:]
	for i := range u.Leaves {
		copy(u.Leaves[i].Index[:], p)
		copy(u.Leaves[i].Commitment[:], p[IndexSize:])
		p = p[updateLeafSize:]
	}
	return u, nil
}

// Digest is SHA-256 of the leaf hashes in order: the epoch record's
// UpdatesDigest for the epoch that inserted them.
func (u *UpdateList) Digest() [32]byte {
	h := sha256.New()
	for i := range u.Leaves {
		lh := u.Leaves[i].Hash()
		h.Write(lh[:])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}
