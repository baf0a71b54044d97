package kt

import (
	"errors"

	"github.com/quicprochat/qpc/kt/vrf"
	"golang.org/x/crypto/cryptobyte"
)

// EpochProof ties an epoch record to a signed checkpoint: the record (a log
// leaf), its RFC 6962 inclusion proof in the checkpoint's tree, and a
// consistency proof from the tree size the requester already knows.
type EpochProof struct {
	Record      []byte // EpochRecord.Marshal
	Checkpoint  []byte // signed note
	Inclusion   [][]byte
	Consistency [][]byte // empty when the requester knew no size, or the same size
	KnownSize   uint64   // the size the consistency proof starts from
}

// VersionProof shows (label, version) present or absent in an epoch's
// tree: the VRF proof of its index and the map proof of that index.
type VersionProof struct {
	Version uint32
	VRF     [vrf.ProofSize]byte
	Map     MapProof
}

// LookupProof answers "what is label's current value" (§3.2 of
// docs/key-transparency.md): Version is the greatest version in the
// epoch's map, proved by the presence of ladder(Version) and the absence
// of every version in absentSet(Version).
type LookupProof struct {
	Epoch   EpochProof
	Version uint32 // 0: the label has never been published
	Added   uint64 // epoch the version was added in
	Opening [32]byte
	Value   []byte
	Ladder  []VersionProof // presence of ladder(Version), ending with Version itself
	Absent  []VersionProof // absence of absentSet(Version), in its order
}

// HistoryEntry is one version in a history proof, fully opened.
type HistoryEntry struct {
	Added   uint64
	Opening [32]byte
	Value   []byte
	Proof   VersionProof
}

// HistoryProof answers "every version of my label from version Since"
// (§3.2): contiguous versions starting at Since (version 1 when Since is
// 0). A complete history ends at the greatest version and proves the
// absence of absentSet(greatest); a page (More) ends below it and proves
// the version after its last entry present, so the owner asks again from
// there. A greatest version below Since is answered with that version
// alone (the owner then knows the log lost versions it verified).
type HistoryProof struct {
	Epoch   EpochProof
	Since   uint32
	Entries []HistoryEntry
	More    bool           // a page: Next proves the version after the last entry present
	Absent  []VersionProof // !More: absence of absentSet(last entry's version)
	Next    VersionProof   // More: presence of the last entry's version + 1
}

// Limits on decoded proofs.
const (
	maxProofHashes    = 64
	maxHistoryEntries = 4096
)

var errDecode = errors.New("kt: malformed proof encoding")

func addHashes(b *cryptobyte.Builder, hs [][]byte) {
	b.AddUint8(uint8(len(hs)))
	for _, h := range hs {
		b.AddBytes(h)
	}
}

func readHashes(s *cryptobyte.String, out *[][]byte) bool {
	var n uint8
	if !s.ReadUint8(&n) || n > maxProofHashes {
		return false
	}
	*out = make([][]byte, n)
	for i := range *out {
		if !s.ReadBytes(&(*out)[i], 32) {
			return false
		}
	}
	return true
}

func (p *EpochProof) marshal(b *cryptobyte.Builder) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.Record) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.Checkpoint) })
	addHashes(b, p.Inclusion)
	b.AddUint64(p.KnownSize)
	addHashes(b, p.Consistency)
}

func (p *EpochProof) read(s *cryptobyte.String) bool {
	var rec, cp cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&rec) || !s.ReadUint16LengthPrefixed(&cp) ||
		!readHashes(s, &p.Inclusion) || !s.ReadUint64(&p.KnownSize) || !readHashes(s, &p.Consistency) {
		return false
	}
	p.Record, p.Checkpoint = append([]byte(nil), rec...), append([]byte(nil), cp...)
	return true
}

func (p *VersionProof) marshal(b *cryptobyte.Builder) {
	b.AddUint32(p.Version)
	b.AddBytes(p.VRF[:])
	p.Map.Marshal(b)
}

func (p *VersionProof) read(s *cryptobyte.String) bool {
	return s.ReadUint32(&p.Version) && s.CopyBytes(p.VRF[:]) && readMapProof(s, &p.Map)
}

// Marshal encodes the lookup proof.
func (p *LookupProof) Marshal() []byte {
	var b cryptobyte.Builder
	p.Epoch.marshal(&b)
	p.marshalBody(&b)
	return b.BytesOrPanic()
}

// marshalBody encodes the proof without its epoch proof.
func (p *LookupProof) marshalBody(b *cryptobyte.Builder) {
	b.AddUint32(p.Version)
	b.AddUint64(p.Added)
	b.AddBytes(p.Opening[:])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.Value) })
	b.AddUint8(uint8(len(p.Ladder)))
	for i := range p.Ladder {
		p.Ladder[i].marshal(b)
	}
	b.AddUint8(uint8(len(p.Absent)))
	for i := range p.Absent {
		p.Absent[i].marshal(b)
	}
}

// ParseLookupProof decodes a lookup proof.
func ParseLookupProof(raw []byte) (*LookupProof, error) {
	s := cryptobyte.String(raw)
	p := new(LookupProof)
	if !p.Epoch.read(&s) || !p.readBody(&s) || !s.Empty() {
		return nil, errDecode
	}
	return p, nil
}

// readBody decodes what marshalBody encodes.
func (p *LookupProof) readBody(s *cryptobyte.String) bool {
	var val cryptobyte.String
	var n uint8
	if !s.ReadUint32(&p.Version) || !s.ReadUint64(&p.Added) ||
		!s.CopyBytes(p.Opening[:]) || !s.ReadUint16LengthPrefixed(&val) || !s.ReadUint8(&n) || n > maxVersionBits {
		return false
	}
	p.Value = append([]byte(nil), val...)
	p.Ladder = make([]VersionProof, n)
	for i := range p.Ladder {
		if !p.Ladder[i].read(s) {
			return false
		}
	}
	return readVersionProofs(s, &p.Absent)
}

// MaxBatchLabels bounds the labels of one batched lookup: a lookup proof
// at a million labels is up to about 20 KB (§6), and a batch's proof must
// fit one record (wire.MaxKTProof, 96 KiB).
const MaxBatchLabels = 4

// BatchLookupProof answers a lookup of several labels at once (§5): one
// epoch proof, which every label's proof shares, and for each label, in
// the order asked, what a LookupProof holds besides its epoch proof.
type BatchLookupProof struct {
	Epoch   EpochProof
	Lookups []LookupProof // Epoch unset
}

// Marshal encodes the batch proof.
func (p *BatchLookupProof) Marshal() []byte {
	var b cryptobyte.Builder
	p.Epoch.marshal(&b)
	b.AddUint8(uint8(len(p.Lookups)))
	for i := range p.Lookups {
		p.Lookups[i].marshalBody(&b)
	}
	return b.BytesOrPanic()
}

// ParseBatchLookupProof decodes a batch proof of 1 to MaxBatchLabels labels.
func ParseBatchLookupProof(raw []byte) (*BatchLookupProof, error) {
	s := cryptobyte.String(raw)
	p := new(BatchLookupProof)
	var n uint8
	if !p.Epoch.read(&s) || !s.ReadUint8(&n) || n == 0 || n > MaxBatchLabels {
		return nil, errDecode
	}
	p.Lookups = make([]LookupProof, n)
	for i := range p.Lookups {
		if !p.Lookups[i].readBody(&s) {
			return nil, errDecode
		}
	}
	if !s.Empty() {
		return nil, errDecode
	}
	return p, nil
}

// Marshal encodes the history proof.
func (p *HistoryProof) Marshal() []byte {
	var b cryptobyte.Builder
	p.Epoch.marshal(&b)
	b.AddUint32(p.Since)
	b.AddUint16(uint16(len(p.Entries)))
	for i := range p.Entries {
		e := &p.Entries[i]
		b.AddUint64(e.Added)
		b.AddBytes(e.Opening[:])
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(e.Value) })
		e.Proof.marshal(&b)
	}
	if p.More {
		b.AddUint8(1)
		p.Next.marshal(&b)
		return b.BytesOrPanic()
	}
	b.AddUint8(0)
	b.AddUint8(uint8(len(p.Absent)))
	for i := range p.Absent {
		p.Absent[i].marshal(&b)
	}
	return b.BytesOrPanic()
}

// ParseHistoryProof decodes a history proof.
func ParseHistoryProof(raw []byte) (*HistoryProof, error) {
	s := cryptobyte.String(raw)
	p := new(HistoryProof)
	var n uint16
	if !p.Epoch.read(&s) || !s.ReadUint32(&p.Since) || !s.ReadUint16(&n) || n > maxHistoryEntries {
		return nil, errDecode
	}
	p.Entries = make([]HistoryEntry, n)
	for i := range p.Entries {
		e := &p.Entries[i]
		var val cryptobyte.String
		if !s.ReadUint64(&e.Added) || !s.CopyBytes(e.Opening[:]) || !s.ReadUint16LengthPrefixed(&val) || !e.Proof.read(&s) {
			return nil, errDecode
		}
		e.Value = append([]byte(nil), val...)
	}
	var more uint8
	if !s.ReadUint8(&more) || more > 1 {
		return nil, errDecode
	}
	p.More = more == 1
	if p.More {
		if !p.Next.read(&s) {
			return nil, errDecode
		}
	} else if !readVersionProofs(&s, &p.Absent) {
		return nil, errDecode
	}
	if !s.Empty() {
		return nil, errDecode
	}
	return p, nil
}

// readVersionProofs reads u8 n || n version proofs (n ≤ maxVersionBits).
func readVersionProofs(s *cryptobyte.String, out *[]VersionProof) bool {
	var m uint8
	if !s.ReadUint8(&m) || m > maxVersionBits {
		return false
	}
	*out = make([]VersionProof, m)
	for i := range *out {
		if !(*out)[i].read(s) {
			return false
		}
	}
	return true
}

// ConsistencyProof proves the log of size Old is a prefix of the log
// committed to by Checkpoint.
type ConsistencyProof struct {
	Checkpoint []byte
	Old        uint64
	Hashes     [][]byte
}

// Marshal encodes the consistency proof.
func (p *ConsistencyProof) Marshal() []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.Checkpoint) })
	b.AddUint64(p.Old)
	addHashes(&b, p.Hashes)
	return b.BytesOrPanic()
}

// ParseConsistencyProof decodes a consistency proof.
func ParseConsistencyProof(raw []byte) (*ConsistencyProof, error) {
	s := cryptobyte.String(raw)
	p := new(ConsistencyProof)
	var cp cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&cp) || !s.ReadUint64(&p.Old) || !readHashes(&s, &p.Hashes) || !s.Empty() {
		return nil, errDecode
	}
	p.Checkpoint = append([]byte(nil), cp...)
	return p, nil
}
