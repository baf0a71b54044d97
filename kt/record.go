package kt

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/quicprochat/qpc/kt/vrf"
	"golang.org/x/crypto/cryptobyte"
)

// Limits.
const (
	MaxLabelLen = 255
	MaxValueLen = 16 << 10
	// MaxVersion bounds the versions of one label. Owners prove the
	// absence of one version per zero bit below it (see absentSet), so it
	// also bounds a history proof.
	MaxVersion      = 1<<20 - 1
	maxVersionBits  = 20
	epochRecordSize = 1 + 8 + 8 + 32 + 32 + 32
	epochRecordV1   = 1
)

// EpochRecord is one leaf of the epoch log (docs/key-transparency.md §3.3).
type EpochRecord struct {
	Epoch         uint64
	Timestamp     uint64 // Unix milliseconds
	Root          [32]byte
	UpdatesDigest [32]byte // SHA-256 of the leaf hashes inserted in this epoch, in order
	ConfigHash    [32]byte
}

// Marshal encodes the record: u8 version (1) || u64 epoch || u64 timestamp
// || root || updates digest || config hash.
func (r *EpochRecord) Marshal() []byte {
	b := make([]byte, 0, epochRecordSize)
	b = append(b, epochRecordV1)
	b = binary.BigEndian.AppendUint64(b, r.Epoch)
	b = binary.BigEndian.AppendUint64(b, r.Timestamp)
	b = append(b, r.Root[:]...)
	b = append(b, r.UpdatesDigest[:]...)
	return append(b, r.ConfigHash[:]...)
}

// ParseEpochRecord decodes a record encoded by Marshal.
func ParseEpochRecord(b []byte) (*EpochRecord, error) {
	if len(b) != epochRecordSize || b[0] != epochRecordV1 {
		return nil, errors.New("kt: malformed epoch record")
	}
	r := &EpochRecord{Epoch: binary.BigEndian.Uint64(b[1:]), Timestamp: binary.BigEndian.Uint64(b[9:])}
	copy(r.Root[:], b[17:])
	copy(r.UpdatesDigest[:], b[49:])
	copy(r.ConfigHash[:], b[81:])
	return r, nil
}

// Time returns the record's timestamp.
func (r *EpochRecord) Time() time.Time { return time.UnixMilli(int64(r.Timestamp)) }

// Config is the directory configuration a verifier pins; its hash is in
// every epoch record.
type Config struct {
	Origin        string // the log's checkpoint origin line
	VRFPublicKey  []byte
	EpochInterval time.Duration
	MinUpdates    uint32 // each epoch is padded to at least this many inserts
}

// Marshal encodes the configuration for hashing.
func (c *Config) Marshal() []byte {
	var b cryptobyte.Builder
	b.AddBytes([]byte("qpc-kt config v1"))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(c.Origin)) })
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(c.VRFPublicKey) })
	b.AddUint64(uint64(c.EpochInterval / time.Millisecond))
	b.AddUint32(c.MinUpdates)
	return b.BytesOrPanic()
}

// Hash is SHA-256 of Marshal.
func (c *Config) Hash() [32]byte { return sha256.Sum256(c.Marshal()) }

// vrfInput is the VRF input for (label, version): u8 len || label || u32 version.
func vrfInput(label string, version uint32) []byte {
	b := make([]byte, 0, 1+len(label)+4)
	b = append(b, byte(len(label)))
	b = append(b, label...)
	return binary.BigEndian.AppendUint32(b, version)
}

// IndexOf is the tree index of a VRF output: its first 32 bytes.
func IndexOf(beta [vrf.OutputSize]byte) Index {
	var i Index
	copy(i[:], beta[:IndexSize])
	return i
}

// Commit returns the commitment of a leaf: HMAC-SHA256 keyed with the
// leaf's random opening over (label, version, epoch added, value). Without
// the opening it reveals nothing about the value; with it, it binds the
// value (HMAC as a commitment, as in CONIKS and the IETF KT drafts).
func Commit(opening [32]byte, label string, version uint32, added uint64, value []byte) [32]byte {
	m := hmac.New(sha256.New, opening[:])
	m.Write([]byte("qpc-kt commitment v1"))
	m.Write(vrfInput(label, version))
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], added)
	m.Write(e[:])
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(value)))
	m.Write(n[:])
	m.Write(value)
	var c [32]byte
	m.Sum(c[:0])
	return c
}

// versionRecord is what the directory stores per (label, version).
type versionRecord struct {
	added   uint64
	index   Index
	proof   [vrf.ProofSize]byte
	opening [32]byte
	value   []byte
}

func (v *versionRecord) marshal() []byte {
	b := make([]byte, 0, 8+32+80+32+len(v.value))
	b = binary.BigEndian.AppendUint64(b, v.added)
	b = append(b, v.index[:]...)
	b = append(b, v.proof[:]...)
	b = append(b, v.opening[:]...)
	return append(b, v.value...)
}

func parseVersionRecord(b []byte) (*versionRecord, error) {
	if len(b) < 8+32+80+32 {
		return nil, fmt.Errorf("kt: short version record")
	}
	v := &versionRecord{added: binary.BigEndian.Uint64(b)}
	copy(v.index[:], b[8:])
	copy(v.proof[:], b[40:])
	copy(v.opening[:], b[120:])
	v.value = append([]byte(nil), b[152:]...)
	return v, nil
}

func versionKey(label string, version uint32) []byte {
	return vrfInput(label, version)
}

// ladder returns the versions a lookup of version k proves present: k with
// its low bits cleared below each set bit (13 = 0b1101: 8, 12, 13).
func ladder(k uint32) []uint32 {
	var out []uint32
	var acc uint32
	for i := maxVersionBits - 1; i >= 0; i-- {
		if k&(1<<i) != 0 {
			acc |= 1 << i
			out = append(out, acc)
		}
	}
	return out
}

// absentSet returns the versions an owner whose latest version is k proves
// absent: for each zero bit i of k, k's bits above i with bit i set and the
// rest cleared. For every k' > k, ladder(k') meets absentSet(k) (at the
// highest bit where k' and k differ), so a server that shows anyone a
// version the owner has not seen must contradict the owner's history proof.
// This is the binary-ladder idea of the IETF keytrans drafts.
func absentSet(k uint32) []uint32 {
	var out []uint32
	for i := range maxVersionBits {
		if k&(1<<i) == 0 {
			v := (k>>(i+1))<<(i+1) | 1<<i
			out = append(out, v)
		}
	}
	return out
}
