package state

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// formatVersion is the on-disk format this package writes and reads.
const formatVersion = 1

// Limits on the KDF parameters. A file carrying parameters outside them is
// rejected as corrupt before anything is allocated.
const (
	maxTime      = 64
	maxThreads   = 64
	maxMemoryKiB = 4 << 20 // 4 GiB
	minMemoryKiB = 8
	saltLen      = 16
	keyLen       = 32
)

// Defaults from RFC 9106 §4, second recommended option.
const (
	DefaultTime      = 3
	DefaultMemoryKiB = 64 * 1024
	DefaultThreads   = 4
)

var (
	metaBucket = []byte("meta")
	metaParams = []byte("params")
	metaCheck  = []byte("check")

	// headerKey is the slot inside every data bucket that holds its sealed
	// header (kind and logical name). Entry keys are 32 (keyed) or 8
	// (sequenced) bytes long, so a 1-byte key never collides with them.
	headerKey = []byte{0}

	aadPrefix   = []byte("qpc-state v1")
	checkAAD    = []byte("qpc-state v1 key check")
	checkText   = []byte("qpc-state key check: the passphrase is right")
	infoEncrypt = "qpc-state v1 encryption key"
	infoMAC     = "qpc-state v1 mac key"
)

const (
	kindKeyed     byte = 'k'
	kindSequenced byte = 's'
)

// params is the clear-text content of the meta "params" entry.
type params struct {
	version   uint16
	time      uint32
	memoryKiB uint32
	threads   uint8
	salt      [saltLen]byte
}

// paramsLen is the exact encoded size of params:
// version u16 | time u32 | memoryKiB u32 | threads u8 | salt length u8 | salt.
const paramsLen = 2 + 4 + 4 + 1 + 1 + saltLen

func (p *params) encode() []byte {
	b := make([]byte, 0, paramsLen)
	b = binary.BigEndian.AppendUint16(b, p.version)
	b = binary.BigEndian.AppendUint32(b, p.time)
	b = binary.BigEndian.AppendUint32(b, p.memoryKiB)
	b = append(b, p.threads, saltLen)
	return append(b, p.salt[:]...)
}

// checkKDF reports whether the cost parameters are within the accepted limits.
func checkKDF(time, memoryKiB uint32, threads uint8) error {
	switch {
	case time < 1 || time > maxTime:
		return fmt.Errorf("argon2 time %d outside 1..%d", time, maxTime)
	case threads < 1 || threads > maxThreads:
		return fmt.Errorf("argon2 threads %d outside 1..%d", threads, maxThreads)
	case memoryKiB < minMemoryKiB || memoryKiB > maxMemoryKiB:
		return fmt.Errorf("argon2 memory %d KiB outside %d..%d", memoryKiB, minMemoryKiB, maxMemoryKiB)
	}
	return nil
}

// decodeParams parses and validates the meta "params" entry. Every failure
// is reported as ErrCorrupt; it never allocates according to the input.
func decodeParams(b []byte) (params, error) {
	var p params
	if len(b) < 2 {
		return p, fmt.Errorf("state: format header too short: %w", ErrCorrupt)
	}
	p.version = binary.BigEndian.Uint16(b)
	if p.version != formatVersion {
		return p, fmt.Errorf("state: format version %d is not supported by this qpc (it reads version %d): %w", p.version, formatVersion, ErrCorrupt)
	}
	if len(b) != paramsLen || b[11] != saltLen {
		return p, fmt.Errorf("state: format header has a bad length: %w", ErrCorrupt)
	}
	p.time = binary.BigEndian.Uint32(b[2:])
	p.memoryKiB = binary.BigEndian.Uint32(b[6:])
	p.threads = b[10]
	copy(p.salt[:], b[12:])
	if err := checkKDF(p.time, p.memoryKiB, p.threads); err != nil {
		return p, fmt.Errorf("state: %v: %w", err, ErrCorrupt)
	}
	return p, nil
}

// keys are the two secrets derived from the passphrase.
type keys struct {
	enc [keyLen]byte // XChaCha20-Poly1305
	mac [keyLen]byte // HMAC-SHA256 for hidden bucket names and keys
}

func deriveKeys(passphrase []byte, p *params) *keys {
	master := argon2.IDKey(passphrase, p.salt[:], p.time, p.memoryKiB, p.threads, keyLen)
	defer clear(master)
	k := new(keys)
	mustExpand(master, infoEncrypt, k.enc[:])
	mustExpand(master, infoMAC, k.mac[:])
	return k
}

func mustExpand(secret []byte, info string, out []byte) {
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte(info)), out); err != nil {
		panic("state: hkdf: " + err.Error()) // cannot happen for 32 bytes
	}
}

func (k *keys) wipe() {
	clear(k.enc[:])
	clear(k.mac[:])
}

func (k *keys) hmacSum(parts ...[]byte) []byte {
	h := hmac.New(sha256.New, k.mac[:])
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// bucketName is the on-disk name of logical bucket name.
func (k *keys) bucketName(name string) []byte {
	return k.hmacSum([]byte("bucket"), []byte(name))[:16]
}

// entryKey is the on-disk key of logical key key in the bucket stored as diskBucket.
func (k *keys) entryKey(diskBucket, key []byte) []byte {
	return k.hmacSum(diskBucket, key)
}

func (k *keys) aead() cipherAEAD {
	a, err := chacha20poly1305.NewX(k.enc[:])
	if err != nil {
		panic("state: " + err.Error()) // key length is fixed
	}
	return a
}

type cipherAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
	NonceSize() int
	Overhead() int
}

func entryAAD(diskBucket, diskKey []byte) []byte {
	aad := make([]byte, 0, len(aadPrefix)+len(diskBucket)+len(diskKey))
	aad = append(aad, aadPrefix...)
	aad = append(aad, diskBucket...)
	return append(aad, diskKey...)
}

// seal returns nonce || XChaCha20-Poly1305(plaintext, aad).
func (k *keys) seal(plaintext, aad []byte) []byte {
	a := k.aead()
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(plaintext)+a.Overhead())
	if _, err := rand.Read(out); err != nil {
		panic("state: crypto/rand: " + err.Error())
	}
	return a.Seal(out, out, plaintext, aad)
}

// open reverses seal; any failure is ErrCorrupt. The result never aliases stored.
func (k *keys) open(stored, aad []byte) ([]byte, error) {
	a := k.aead()
	if len(stored) < a.NonceSize()+a.Overhead() {
		return nil, fmt.Errorf("state: sealed value too short: %w", ErrCorrupt)
	}
	pt, err := a.Open(nil, stored[:a.NonceSize()], stored[a.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("state: a stored value does not authenticate: %w", ErrCorrupt)
	}
	return pt, nil
}

// encodeKeyed is the plaintext of a keyed entry: u16 len(key) | key | value.
func encodeKeyed(key, value []byte) []byte {
	b := make([]byte, 0, 2+len(key)+len(value))
	b = binary.BigEndian.AppendUint16(b, uint16(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func decodeKeyed(pt []byte) (key, value []byte, err error) {
	if len(pt) < 2 {
		return nil, nil, fmt.Errorf("state: entry plaintext too short: %w", ErrCorrupt)
	}
	n := int(binary.BigEndian.Uint16(pt))
	if len(pt) < 2+n {
		return nil, nil, fmt.Errorf("state: entry key length exceeds the entry: %w", ErrCorrupt)
	}
	return pt[2 : 2+n : 2+n], pt[2+n:], nil
}

// openKeyed decrypts a keyed entry stored under diskKey and checks that the
// logical key inside really maps to diskKey.
func (k *keys) openKeyed(diskBucket, diskKey, stored []byte) (key, value []byte, err error) {
	pt, err := k.open(stored, entryAAD(diskBucket, diskKey))
	if err != nil {
		return nil, nil, err
	}
	key, value, err = decodeKeyed(pt)
	if err != nil {
		return nil, nil, err
	}
	if subtle.ConstantTimeCompare(k.entryKey(diskBucket, key), diskKey) != 1 {
		return nil, nil, fmt.Errorf("state: entry key does not match its slot: %w", ErrCorrupt)
	}
	return key, value, nil
}

// seqKey is the on-disk key of sequence number seq.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// header is the sealed content of a bucket's headerKey slot: kind | name.
func (k *keys) sealHeader(diskBucket []byte, kind byte, name string) []byte {
	pt := append([]byte{kind}, name...)
	return k.seal(pt, entryAAD(diskBucket, headerKey))
}

func (k *keys) openHeader(diskBucket, stored []byte) (kind byte, name string, err error) {
	pt, err := k.open(stored, entryAAD(diskBucket, headerKey))
	if err != nil {
		return 0, "", err
	}
	if len(pt) < 1 || (pt[0] != kindKeyed && pt[0] != kindSequenced) {
		return 0, "", fmt.Errorf("state: bad bucket header: %w", ErrCorrupt)
	}
	name = string(pt[1:])
	if subtle.ConstantTimeCompare(k.bucketName(name), diskBucket) != 1 {
		return 0, "", fmt.Errorf("state: bucket header does not match its bucket: %w", ErrCorrupt)
	}
	return pt[0], name, nil
}

// sealCheck and verifyCheck handle the key-check value in meta.
func (k *keys) sealCheck(encodedParams []byte) []byte {
	return k.seal(checkText, append(append([]byte{}, checkAAD...), encodedParams...))
}

func (k *keys) verifyCheck(encodedParams, stored []byte) bool {
	pt, err := k.open(stored, append(append([]byte{}, checkAAD...), encodedParams...))
	return err == nil && subtle.ConstantTimeCompare(pt, checkText) == 1
}
