package witness

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"filippo.io/torchwood"
	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	"github.com/quicprochat/qpc/internal/secretfile"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/mod/sumdb/note"
)

// KeyFile is the name of the witness key file in the data directory.
const KeyFile = "witness.key"

// Signature type bytes of c2sp.org/signed-note, as assigned for witness
// cosignatures by c2sp.org/tlog-cosignature (§ Format).
const (
	algCosignatureV1 = 0x04 // timestamped Ed25519, "cosignature/v1"
	algMLDSA44       = 0x06 // timestamped ML-DSA-44, "subtree/v1"
)

// keyFileHeader starts the key file; the format is line based:
//
//	qpc-witness-key v1
//	name <cosigner name>
//	ed25519 <base64 32-byte seed>
//	ml-dsa-44 <base64 32-byte seed>
const keyFileHeader = "qpc-witness-key v1"

// keys are the witness's two cosigning keys under one name.
type keys struct {
	name  string
	ed    ed25519.PrivateKey
	mlPub *mldsa44.PublicKey
	mlKey *mldsa44.PrivateKey
	edSig *torchwood.CosignatureSigner
	mlSig *mldsaSigner
}

// ValidName reports whether name can name a cosigner: non-empty valid
// UTF-8 without Unicode spaces or '+' (c2sp.org/signed-note § Format), and
// at most 255 bytes (the subtree/v1 message length-prefixes it in a byte).
func ValidName(name string) bool {
	return name != "" && len(name) <= 255 && utf8.ValidString(name) &&
		strings.IndexFunc(name, unicode.IsSpace) < 0 && !strings.Contains(name, "+")
}

// loadOrCreateKeys reads the key file in dir, or creates it (0600) with
// fresh keys under name (or a generated name when name is empty). A name
// given for an existing key must match the one stored.
func loadOrCreateKeys(dir, name string) (*keys, error) {
	path := dir + string(os.PathSeparator) + KeyFile
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKeys(path, name)
	}
	if err != nil {
		return nil, fmt.Errorf("witness: key: %w", err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("witness: key file %s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	k, err := parseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("witness: key file %s: %w", path, err)
	}
	if name != "" && name != k.name {
		return nil, fmt.Errorf("witness: the key in %s is named %q, not %q (a witness keeps its name)", path, k.name, name)
	}
	return k, nil
}

func createKeys(path, name string) (*keys, error) {
	var edSeed, mlSeed [32]byte
	rand.Read(edSeed[:])
	rand.Read(mlSeed[:])
	if name == "" {
		pub := ed25519.NewKeyFromSeed(edSeed[:]).Public().(ed25519.PublicKey)
		name = "qpc-witness-" + hex.EncodeToString(pub[:8])
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("witness: invalid name %q: no spaces or '+', at most 255 bytes", name)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nname %s\ned25519 %s\nml-dsa-44 %s\n", keyFileHeader, name,
		base64.StdEncoding.EncodeToString(edSeed[:]), base64.StdEncoding.EncodeToString(mlSeed[:]))
	if err := secretfile.Create(path, []byte(b.String())); err != nil {
		return nil, fmt.Errorf("witness: create key: %w", err)
	}
	return newKeys(name, edSeed, mlSeed)
}

func parseKeyFile(data []byte) (*keys, error) {
	lines := strings.Split(string(data), "\n")
	if len(lines) != 5 || lines[0] != keyFileHeader || lines[4] != "" {
		return nil, errors.New("not a qpc witness key file")
	}
	name, ok := strings.CutPrefix(lines[1], "name ")
	if !ok {
		return nil, errors.New("no name line")
	}
	var seeds [2][32]byte
	for i, tag := range []string{"ed25519 ", "ml-dsa-44 "} {
		b64, ok := strings.CutPrefix(lines[2+i], tag)
		if !ok {
			return nil, fmt.Errorf("no %sline", tag)
		}
		s, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(s) != 32 {
			return nil, fmt.Errorf("bad %sseed", tag)
		}
		copy(seeds[i][:], s)
	}
	if !ValidName(name) {
		return nil, fmt.Errorf("invalid name %q", name)
	}
	return newKeys(name, seeds[0], seeds[1])
}

func newKeys(name string, edSeed, mlSeed [32]byte) (*keys, error) {
	k := &keys{name: name, ed: ed25519.NewKeyFromSeed(edSeed[:])}
	k.mlPub, k.mlKey = mldsa44.NewKeyFromSeed(&mlSeed)
	var err error
	if k.edSig, err = torchwood.NewCosignatureSigner(name, k.ed); err != nil {
		return nil, fmt.Errorf("witness: %w", err)
	}
	pub := k.mlPub.Bytes()
	k.mlSig = &mldsaSigner{name: name, hash: keyID(name, algMLDSA44, pub), key: k.mlKey, now: time.Now}
	return k, nil
}

// keyID is SHA-256(name || "\n" || alg || public key)[:4], big-endian
// (c2sp.org/signed-note § Signatures; c2sp.org/tlog-cosignature § Format).
func keyID(name string, alg byte, pub []byte) uint32 {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', alg})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// vkey encodes a verifier key: <name>+<hex key ID>+<base64(alg || key)>
// (c2sp.org/signed-note § Verifier keys).
func vkey(name string, alg byte, pub []byte) string {
	return fmt.Sprintf("%s+%08x+%s", name, keyID(name, alg, pub),
		base64.StdEncoding.EncodeToString(append([]byte{alg}, pub...)))
}

// mldsaSigner makes ML-DSA-44 subtree/v1 cosignatures of checkpoints
// (c2sp.org/tlog-cosignature § ML-DSA-44 signed message). It is a
// note.Signer: Sign takes the checkpoint's note text.
type mldsaSigner struct {
	name string
	hash uint32
	key  *mldsa44.PrivateKey
	now  func() time.Time
}

func (s *mldsaSigner) Name() string    { return s.name }
func (s *mldsaSigner) KeyHash() uint32 { return s.hash }

// Sign returns the timestamped_signature: u64 timestamp || ML-DSA-44
// signature (FIPS 204, pure ML-DSA, empty context, hedged) over the
// cosigned_message.
func (s *mldsaSigner) Sign(text []byte) ([]byte, error) {
	cp, err := torchwood.ParseCheckpoint(string(text))
	if err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	ts := uint64(s.now().Unix())
	msg, err := subtreeMessage(s.name, ts, cp.Origin, uint64(cp.N), cp.Hash)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 8+mldsa44.SignatureSize)
	binary.BigEndian.PutUint64(out, ts)
	if err := mldsa44.SignTo(s.key, msg, nil, true, out[8:]); err != nil {
		return nil, fmt.Errorf("witness: cosign: %w", err)
	}
	return out, nil
}

// subtreeMessage is the cosigned_message of c2sp.org/tlog-cosignature for
// a checkpoint (start 0, end = size):
//
//	uint8 label[12] = "subtree/v1\n\0"; opaque cosigner_name<1..2^8-1>;
//	uint64 timestamp; opaque log_origin<1..2^8-1>; uint64 start;
//	uint64 end; uint8 hash[32];
func subtreeMessage(name string, ts uint64, origin string, size uint64, root [32]byte) ([]byte, error) {
	if len(name) == 0 || len(name) > 255 || len(origin) == 0 || len(origin) > 255 {
		return nil, errors.New("witness: cosigner name and log origin must be 1 to 255 bytes for subtree/v1")
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte("subtree/v1\n\x00"))
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(name)) })
	b.AddUint64(ts)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(origin)) })
	b.AddUint64(0)
	b.AddUint64(size)
	b.AddBytes(root[:])
	return b.Bytes()
}

// mldsaVerifier checks ML-DSA-44 subtree/v1 cosignatures of checkpoints.
type mldsaVerifier struct {
	name string
	hash uint32
	pub  *mldsa44.PublicKey
}

func (v *mldsaVerifier) Name() string    { return v.name }
func (v *mldsaVerifier) KeyHash() uint32 { return v.hash }

func (v *mldsaVerifier) Verify(text, sig []byte) bool {
	if len(sig) != 8+mldsa44.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > 1<<63-1 {
		return false
	}
	cp, err := torchwood.ParseCheckpoint(string(text))
	if err != nil {
		return false
	}
	msg, err := subtreeMessage(v.name, ts, cp.Origin, uint64(cp.N), cp.Hash)
	if err != nil {
		return false
	}
	return mldsa44.Verify(v.pub, msg, nil, sig[8:])
}

// ErrVKey reports a verifier key that does not parse.
var ErrVKey = errors.New("witness: bad verifier key")

// NewCosignatureVerifier parses a witness's vkey — type 0x04 (Ed25519
// cosignature/v1) or 0x06 (ML-DSA-44 subtree/v1) — into a note.Verifier
// of its cosignatures on checkpoints.
func NewCosignatureVerifier(vk string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vk, "+")
	hexID, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || !ValidName(name) || len(hexID) != 8 {
		return nil, fmt.Errorf("%w: want <name>+<key ID>+<key>", ErrVKey)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) < 1 {
		return nil, fmt.Errorf("%w: key is not base64", ErrVKey)
	}
	alg, pub := raw[0], raw[1:]
	id, err := hex.DecodeString(hexID)
	if err != nil || binary.BigEndian.Uint32(id) != keyID(name, alg, pub) {
		return nil, fmt.Errorf("%w: key ID does not match the key", ErrVKey)
	}
	switch alg {
	case algCosignatureV1:
		if len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: Ed25519 key of %d bytes", ErrVKey, len(pub))
		}
		return &edVerifier{name: name, hash: keyID(name, alg, pub), pub: bytes.Clone(pub)}, nil
	case algMLDSA44:
		if len(pub) != mldsa44.PublicKeySize {
			return nil, fmt.Errorf("%w: ML-DSA-44 key of %d bytes", ErrVKey, len(pub))
		}
		var pk mldsa44.PublicKey
		if err := pk.UnmarshalBinary(pub); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrVKey, err)
		}
		return &mldsaVerifier{name: name, hash: keyID(name, alg, pub), pub: &pk}, nil
	default:
		return nil, fmt.Errorf("%w: signature type 0x%02x is not a cosignature", ErrVKey, alg)
	}
}

// edVerifier checks Ed25519 cosignature/v1 signatures: u64 timestamp ||
// Ed25519 signature over "cosignature/v1\ntime <t>\n" || note text
// (c2sp.org/tlog-cosignature § Ed25519 signed message).
type edVerifier struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
}

func (v *edVerifier) Name() string    { return v.name }
func (v *edVerifier) KeyHash() uint32 { return v.hash }

func (v *edVerifier) Verify(text, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > 1<<63-1 {
		return false
	}
	if _, err := torchwood.ParseCheckpoint(string(text)); err != nil {
		return false
	}
	msg := fmt.Appendf(nil, "cosignature/v1\ntime %d\n%s", ts, text)
	return ed25519.Verify(v.pub, msg, sig[8:])
}

// VerifierKeys returns the vkeys of the witness key in dir (Ed25519
// cosignature/v1, then ML-DSA-44), creating the key as Open would; it does
// not open the database, so it works while the witness runs.
func VerifierKeys(dir, name string) (ed, mldsa string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("witness: %w", err)
	}
	k, err := loadOrCreateKeys(dir, name)
	if err != nil {
		return "", "", err
	}
	return k.edSig.Verifier().String(), vkey(k.name, algMLDSA44, k.mlPub.Bytes()), nil
}
