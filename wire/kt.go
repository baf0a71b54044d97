package wire

import "golang.org/x/crypto/cryptobyte"

// Key-transparency records (docs/protocol.md §4.11,
// docs/key-transparency.md §5). Proof bodies are owned and decoded by
// package kt; this package frames them. Publish and History carry an
// account session (the label is the account's own username); Lookup,
// Consistency and Checkpoint need none.
const (
	KindKTPublish     Kind = 0x40
	KindKTLookup      Kind = 0x41
	KindKTHistory     Kind = 0x42
	KindKTConsistency Kind = 0x43
	KindKTCheckpoint  Kind = 0x44
	KindKTTile        Kind = 0x45
	KindKTLookupBatch Kind = 0x46
	KindKTPublished   Kind = 0x48
	KindKTProof       Kind = 0x49
	KindKTTileData    Kind = 0x4a
)

// KT limits.
const (
	MaxKTLabel = 255
	MaxKTValue = 16 << 10
	MaxKTProof = 96 << 10
	MaxKTTile  = 64 << 10 // an entry bundle of 256 epoch records, with room
	// MaxKTBatch bounds the labels of one KTLookupBatch (kt.MaxBatchLabels).
	MaxKTBatch = 4
)

// KTPublish publishes Value as the next version of Label, the account's
// username, on a session (§4.11).
type KTPublish struct {
	Session [SessionSize]byte
	Label   string
	Value   []byte // a kt.Binding
}

// KTLookup asks for Label's current value with its proof. KnownSize is the
// size of the newest checkpoint the client accepted (0: none).
type KTLookup struct {
	Label     string
	KnownSize uint64
}

// KTLookupBatch asks for the current values of 1 to MaxKTBatch labels,
// answered with one KTProof holding a kt.BatchLookupProof: one epoch
// proof for all of them. Which labels may share a batch is the client's
// choice (docs/key-transparency.md §5): the server learns that one client
// wants them all.
type KTLookupBatch struct {
	Labels    []string
	KnownSize uint64
}

// KTHistory asks, on a session, for every version of the account's own
// label from version Since (the last one the owner verified; 0: from
// version 1).
type KTHistory struct {
	Session   [SessionSize]byte
	Label     string
	Since     uint32
	KnownSize uint64
}

// KTConsistency asks for a consistency proof from size Old to the served
// checkpoint.
type KTConsistency struct {
	Old uint64
}

// KTCheckpoint asks for the served checkpoint (answered with a KTProof
// holding a consistency proof from size 0: the checkpoint alone).
type KTCheckpoint struct{}

// KTTile asks for one resource of the log as C2SP tlog-tiles names it
// ("checkpoint", "tile/0/000.p/5", "tile/entries/000"): the same bytes the
// HTTP listener serves, for clients that reach only the QUIC listener.
type KTTile struct {
	Path string
}

// KTTileData answers KTTile.
type KTTileData struct {
	Data []byte
}

// KTPublished answers KTPublish: the version and the epoch it landed in.
type KTPublished struct {
	Version uint32
	Epoch   uint64
}

// KTProof carries a kt.LookupProof, kt.HistoryProof or kt.ConsistencyProof.
type KTProof struct {
	Proof []byte
}

func (*KTPublish) Kind() Kind     { return KindKTPublish }
func (*KTLookup) Kind() Kind      { return KindKTLookup }
func (*KTHistory) Kind() Kind     { return KindKTHistory }
func (*KTConsistency) Kind() Kind { return KindKTConsistency }
func (*KTCheckpoint) Kind() Kind  { return KindKTCheckpoint }
func (*KTTile) Kind() Kind        { return KindKTTile }
func (*KTLookupBatch) Kind() Kind { return KindKTLookupBatch }
func (*KTTileData) Kind() Kind    { return KindKTTileData }
func (*KTPublished) Kind() Kind   { return KindKTPublished }
func (*KTProof) Kind() Kind       { return KindKTProof }

func newKTMessage(kind Kind) Message {
	switch kind {
	case KindKTPublish:
		return new(KTPublish)
	case KindKTLookup:
		return new(KTLookup)
	case KindKTHistory:
		return new(KTHistory)
	case KindKTConsistency:
		return new(KTConsistency)
	case KindKTCheckpoint:
		return new(KTCheckpoint)
	case KindKTTile:
		return new(KTTile)
	case KindKTLookupBatch:
		return new(KTLookupBatch)
	case KindKTTileData:
		return new(KTTileData)
	case KindKTPublished:
		return new(KTPublished)
	case KindKTProof:
		return new(KTProof)
	}
	return nil
}

func isKTRequest(kind Kind) bool {
	switch kind {
	case KindKTPublish, KindKTLookup, KindKTHistory, KindKTConsistency, KindKTCheckpoint, KindKTTile, KindKTLookupBatch:
		return true
	}
	return false
}

func addLabel(b *cryptobyte.Builder, l string) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(l)) })
}

func readLabel(s *cryptobyte.String, l *string) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || len(v) == 0 {
		return false
	}
	*l = string(v)
	return true
}

func (m *KTPublish) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	addLabel(b, m.Label)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Value) })
}

func (m *KTPublish) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.CopyBytes(m.Session[:]) || !readLabel(s, &m.Label) || !s.ReadUint16LengthPrefixed(&v) || len(v) > MaxKTValue {
		return false
	}
	m.Value = append([]byte(nil), v...)
	return true
}

func (m *KTLookup) marshal(b *cryptobyte.Builder) {
	addLabel(b, m.Label)
	b.AddUint64(m.KnownSize)
}

func (m *KTLookup) unmarshal(s *cryptobyte.String) bool {
	return readLabel(s, &m.Label) && s.ReadUint64(&m.KnownSize)
}

func (m *KTLookupBatch) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(len(m.Labels)))
	for _, l := range m.Labels {
		addLabel(b, l)
	}
	b.AddUint64(m.KnownSize)
}

func (m *KTLookupBatch) unmarshal(s *cryptobyte.String) bool {
	var n uint8
	if !s.ReadUint8(&n) || n == 0 || n > MaxKTBatch {
		return false
	}
	m.Labels = make([]string, n)
	for i := range m.Labels {
		if !readLabel(s, &m.Labels[i]) {
			return false
		}
	}
	return s.ReadUint64(&m.KnownSize)
}

func (m *KTHistory) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	addLabel(b, m.Label)
	b.AddUint32(m.Since)
	b.AddUint64(m.KnownSize)
}

func (m *KTHistory) unmarshal(s *cryptobyte.String) bool {
	return s.CopyBytes(m.Session[:]) && readLabel(s, &m.Label) && s.ReadUint32(&m.Since) && s.ReadUint64(&m.KnownSize)
}

func (m *KTConsistency) marshal(b *cryptobyte.Builder)       { b.AddUint64(m.Old) }
func (m *KTConsistency) unmarshal(s *cryptobyte.String) bool { return s.ReadUint64(&m.Old) }

func (*KTCheckpoint) marshal(*cryptobyte.Builder)       {}
func (*KTCheckpoint) unmarshal(*cryptobyte.String) bool { return true }

func (m *KTPublished) marshal(b *cryptobyte.Builder) {
	b.AddUint32(m.Version)
	b.AddUint64(m.Epoch)
}

func (m *KTPublished) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint32(&m.Version) && s.ReadUint64(&m.Epoch)
}

func (m *KTProof) marshal(b *cryptobyte.Builder) {
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Proof) })
}

func (m *KTProof) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&v) || len(v) > MaxKTProof {
		return false
	}
	m.Proof = append([]byte(nil), v...)
	return true
}

func (m *KTTile) marshal(b *cryptobyte.Builder) { addLabel(b, m.Path) }
func (m *KTTile) unmarshal(s *cryptobyte.String) bool {
	return readLabel(s, &m.Path)
}

func (m *KTTileData) marshal(b *cryptobyte.Builder) {
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Data) })
}

func (m *KTTileData) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&v) || len(v) > MaxKTTile {
		return false
	}
	m.Data = append([]byte(nil), v...)
	return true
}
