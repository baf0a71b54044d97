package wire

import (
	"errors"

	"golang.org/x/crypto/cryptobyte"
)

// KeyPackage pool records (docs/protocol.md §4.12). An account keeps a
// pool of one-time MLS KeyPackages on the server: uploading needs its
// session (the pool belongs to the account), fetching one needs only a
// token and the handle, and takes the KeyPackage out of the pool, so that
// each is used for one Welcome at most (RFC 9420 §16.8). The server does
// not look inside them: the fetching client checks a KeyPackage against
// the handle's key-transparency record before it uses it.
const (
	KindUploadKeyPackages Kind = 0x50
	KindKeyPackagesStored Kind = 0x51
	KindFetchKeyPackage   Kind = 0x52
	KindKeyPackageReply   Kind = 0x53
)

// KeyPackage pool limits.
const (
	// MaxKeyPackage bounds one encoded KeyPackage (an X-Wing one is about
	// 2.6 KiB: two 1,216-byte public keys and a signature).
	MaxKeyPackage = 8 << 10
	// MaxKeyPackageUpload bounds the KeyPackages of one upload, so that a
	// full upload stays within the largest padding bucket.
	MaxKeyPackageUpload = 10
	// MaxHandle bounds a handle in a fetch (handles are 3-32 bytes; the
	// server answers an unknown or malformed one as an empty pool).
	MaxHandle = 64
)

// UploadKeyPackages adds KeyPackages to the session's account's pool.
type UploadKeyPackages struct {
	Session     [SessionSize]byte
	KeyPackages [][]byte // 1..MaxKeyPackageUpload, each 1..MaxKeyPackage bytes
}

// KeyPackagesStored answers UploadKeyPackages (and an upload of none, to
// ask): how many KeyPackages the pool holds now, and how many it can hold.
type KeyPackagesStored struct {
	Count uint16
	Limit uint16
}

// FetchKeyPackage takes one KeyPackage out of Handle's pool. Auth is a
// delivery token, as on Send: the request names no account.
type FetchKeyPackage struct {
	Handle string
	Auth   []byte
}

// KeyPackageReply answers FetchKeyPackage: one KeyPackage, or none when
// the pool is empty or the handle unknown (the two are not told apart).
type KeyPackageReply struct {
	KeyPackage []byte
}

var (
	errKeyPackageSize = errors.New("a KeyPackage must be 1 to MaxKeyPackage bytes")
	errHandleSize     = errors.New("a handle must be 1 to MaxHandle bytes")
)

func (*UploadKeyPackages) Kind() Kind { return KindUploadKeyPackages }
func (*KeyPackagesStored) Kind() Kind { return KindKeyPackagesStored }
func (*FetchKeyPackage) Kind() Kind   { return KindFetchKeyPackage }
func (*KeyPackageReply) Kind() Kind   { return KindKeyPackageReply }

func newKeyPackageMessage(kind Kind) Message {
	switch kind {
	case KindUploadKeyPackages:
		return new(UploadKeyPackages)
	case KindKeyPackagesStored:
		return new(KeyPackagesStored)
	case KindFetchKeyPackage:
		return new(FetchKeyPackage)
	case KindKeyPackageReply:
		return new(KeyPackageReply)
	}
	return nil
}

func isKeyPackageRequest(kind Kind) bool {
	return kind == KindUploadKeyPackages || kind == KindFetchKeyPackage
}

func (m *UploadKeyPackages) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	b.AddUint8(uint8(len(m.KeyPackages)))
	for _, kp := range m.KeyPackages {
		if len(kp) == 0 || len(kp) > MaxKeyPackage {
			b.SetError(errKeyPackageSize)
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(kp) })
	}
}

func (m *UploadKeyPackages) unmarshal(s *cryptobyte.String) bool {
	var n uint8
	if !s.CopyBytes(m.Session[:]) || !s.ReadUint8(&n) || n > MaxKeyPackageUpload {
		return false
	}
	m.KeyPackages = make([][]byte, 0, n)
	for range n {
		var v cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&v) || len(v) == 0 || len(v) > MaxKeyPackage {
			return false
		}
		m.KeyPackages = append(m.KeyPackages, append([]byte(nil), v...))
	}
	return true
}

func (m *KeyPackagesStored) marshal(b *cryptobyte.Builder) {
	b.AddUint16(m.Count)
	b.AddUint16(m.Limit)
}

func (m *KeyPackagesStored) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint16(&m.Count) && s.ReadUint16(&m.Limit)
}

func (m *FetchKeyPackage) marshal(b *cryptobyte.Builder) {
	if len(m.Handle) == 0 || len(m.Handle) > MaxHandle {
		b.SetError(errHandleSize)
		return
	}
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.Handle)) })
	addAuth(b, m.Auth)
}

func (m *FetchKeyPackage) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || len(v) == 0 || len(v) > MaxHandle {
		return false
	}
	m.Handle = string(v)
	return readAuth(s, &m.Auth)
}

func (m *KeyPackageReply) marshal(b *cryptobyte.Builder) {
	if len(m.KeyPackage) > MaxKeyPackage {
		b.SetError(errKeyPackageSize)
		return
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.KeyPackage) })
}

func (m *KeyPackageReply) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) || len(v) > MaxKeyPackage {
		return false
	}
	if len(v) > 0 {
		m.KeyPackage = append([]byte(nil), v...)
	}
	return true
}
