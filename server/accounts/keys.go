package accounts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/bytemare/opaque"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/internal/secretfile"
	"golang.org/x/crypto/cryptobyte"
)

// KeyFileName is the file in the data directory that holds the OPAQUE
// server key material.
const KeyFileName = "opaque.key"

// keyFileMagic starts the key file; the byte after it is the format
// version. Version 1:
//
//	magic | 0x01 | opaque<1..2^16-1> configuration | opaque<1..2^16-1> key_material
//
// configuration is opaque.Configuration.Serialize() of
// account.Configuration(), so a binary built with another configuration
// refuses the file instead of failing every login; key_material is
// opaque.ServerKeyMaterial.Encode(): the AKE key pair, the OPRF seed and
// the server identity (RFC 9807 §3.1 Setup).
var keyFileMagic = []byte("qpc opaque key\n")

const keyFileV1 = 1

// Keys is the server's long-term OPAQUE key material (RFC 9807 §3.1): the
// AKE key pair (server_private_key, server_public_key), the oprf_seed from
// which every client's OPRF key is derived, and server_identity.
//
// Every registration record depends on all of it: losing or replacing the
// file makes every account unusable (RFC 9807 §8, "Configuration and
// envelope updates": a change needs every user to re-register). Hence the
// file is created once and never overwritten.
type Keys struct {
	skm *opaque.ServerKeyMaterial
}

// Identity returns server_identity.
func (k *Keys) Identity() []byte { return bytes.Clone(k.skm.Identity) }

// PublicKey returns the encoded server_public_key.
func (k *Keys) PublicKey() []byte { return bytes.Clone(k.skm.PublicKeyBytes) }

// ErrKeyFile reports a key file that cannot be used: unreadable, corrupt,
// of another configuration, readable by others, or holding another
// server identity than the one asked for.
var ErrKeyFile = errors.New("accounts: unusable OPAQUE key file")

// LoadOrCreateKeys loads <dataDir>/opaque.key, or creates it (mode 0600)
// with fresh key material if it does not exist.
//
// serverIdentity becomes the RFC 9807 server_identity that clients bind
// into their envelopes (§10.3); it must be stable for the life of the
// accounts, and the same bytes clients are given (for example the
// server's pin). Loading a file created with another identity fails with
// ErrKeyFile rather than silently breaking every login: if the pin ever
// changes, pass the old identity, or let users re-register.
func LoadOrCreateKeys(dataDir string, serverIdentity []byte) (*Keys, error) {
	if len(serverIdentity) == 0 || len(serverIdentity) > 1024 {
		return nil, fmt.Errorf("%w: server identity must be 1..1024 bytes", ErrKeyFile)
	}
	path := filepath.Join(dataDir, KeyFileName)
	k, err := loadKeys(path, serverIdentity)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("accounts: create key file: %w", err)
	}
	if err := createKeys(path, serverIdentity); err != nil {
		return nil, err
	}
	// Read back what is on disk: if another process won the race to create
	// the file, its keys are the ones in use.
	return loadKeys(path, serverIdentity)
}

func loadKeys(path string, serverIdentity []byte) (*Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	// The oprf_seed and the private key let whoever reads them mount an
	// offline dictionary attack on every stolen record (RFC 9807 §10.11).
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is accessible by other users (mode %v)", ErrKeyFile, path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	conf := account.Configuration()
	s := cryptobyte.String(data)
	var version uint8
	var confBytes, skmBytes cryptobyte.String
	if !bytes.HasPrefix(data, keyFileMagic) || !s.Skip(len(keyFileMagic)) ||
		!s.ReadUint8(&version) || version != keyFileV1 ||
		!s.ReadUint16LengthPrefixed(&confBytes) || !s.ReadUint16LengthPrefixed(&skmBytes) || !s.Empty() {
		return nil, fmt.Errorf("%w: %s: bad format", ErrKeyFile, path)
	}
	if !bytes.Equal(confBytes, conf.Serialize()) {
		return nil, fmt.Errorf("%w: %s was made for another OPAQUE configuration", ErrKeyFile, path)
	}
	skm, err := conf.DecodeServerKeyMaterial(skmBytes)
	if err != nil || len(skm.OPRFGlobalSeed) == 0 {
		return nil, fmt.Errorf("%w: %s: bad key material", ErrKeyFile, path)
	}
	if !bytes.Equal(skm.Identity, serverIdentity) {
		return nil, fmt.Errorf("%w: %s belongs to another server identity", ErrKeyFile, path)
	}
	// Validate exactly as every login will.
	srv, err := conf.Server()
	if err != nil {
		return nil, fmt.Errorf("accounts: opaque server: %w", err)
	}
	if err := srv.SetKeyMaterial(skm); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	return &Keys{skm: skm}, nil
}

// createKeys writes fresh key material to path (secretfile.Create), which
// never replaces an existing file, so a concurrent start that won the race
// keeps its key and this one reads it.
func createKeys(path string, serverIdentity []byte) error {
	conf := account.Configuration()
	sk, pk := conf.KeyGen()
	skm := &opaque.ServerKeyMaterial{
		PrivateKey:     sk,
		PublicKeyBytes: pk.Encode(),
		OPRFGlobalSeed: conf.GenerateOPRFSeed(),
		Identity:       bytes.Clone(serverIdentity),
	}
	var b cryptobyte.Builder
	b.AddBytes(keyFileMagic)
	b.AddUint8(keyFileV1)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(conf.Serialize()) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(skm.Encode()) })
	data, err := b.Bytes()
	if err != nil {
		return fmt.Errorf("accounts: encode key file: %w", err)
	}
	err = secretfile.Create(path, data)
	if errors.Is(err, fs.ErrExist) {
		return nil // someone else created it: loadKeys reads theirs
	}
	if err != nil {
		return fmt.Errorf("accounts: create key file: %w", err)
	}
	return nil
}

// serverKeyMaterial returns a private copy of the key material for one
// opaque.Server, so that nothing one login does to its server (the library
// clears scalars it considers per-session) can reach the next login.
func (k *Keys) serverKeyMaterial() *opaque.ServerKeyMaterial {
	return &opaque.ServerKeyMaterial{
		PrivateKey:     k.skm.PrivateKey.Copy(),
		PublicKeyBytes: bytes.Clone(k.skm.PublicKeyBytes),
		OPRFGlobalSeed: bytes.Clone(k.skm.OPRFGlobalSeed),
		Identity:       bytes.Clone(k.skm.Identity),
	}
}
