package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/quicprochat/qpc/internal/secretfile"
	"github.com/quicprochat/qpc/wire"
)

// KeyFile is the server's TLS private key inside the data directory.
const KeyFile = "tls.key"

// ErrKeyExists is returned by CreateIdentity when a key is already there:
// replacing it would change the server's pin and strand every client.
var ErrKeyExists = errors.New("server key already exists")

// Identity is the server's long-term TLS key. Clients pin the SHA-256 of
// its SubjectPublicKeyInfo; the certificate around it is self-signed and
// regenerated at every start, which does not change the pin.
type Identity struct {
	key  ed25519.PrivateKey
	spki []byte
}

// CreateIdentity generates a key and writes it to dir/tls.key with mode
// 0600, creating dir with mode 0700. It refuses to overwrite a key.
func CreateIdentity(dir string) (*Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	path := filepath.Join(dir, KeyFile)
	err = secretfile.Create(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("create identity: %w: %s", ErrKeyExists, path)
	}
	if err != nil {
		return nil, fmt.Errorf("create identity: %w", err)
	}
	return newIdentity(key)
}

// LoadIdentity reads dir/tls.key. The error wraps fs.ErrNotExist when
// there is no key yet.
func LoadIdentity(dir string) (*Identity, error) {
	raw, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("load identity: %s holds no PEM private key", KeyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("load identity: %w", err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load identity: %s is not an Ed25519 key", KeyFile)
	}
	return newIdentity(key)
}

func newIdentity(key ed25519.PrivateKey) (*Identity, error) {
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Identity{key: key, spki: spki}, nil
}

// Pin is the SHA-256 of the key's SubjectPublicKeyInfo.
func (id *Identity) Pin() [wire.PinSize]byte { return wire.PinSPKI(id.spki) }

// Address is the qpc:// address clients use for host (host:port).
func (id *Identity) Address(host string) wire.Address {
	return wire.Address{Pin: id.Pin(), Host: host}
}

// TLSConfig returns the server's TLS 1.3 configuration: a fresh
// self-signed certificate for the key, ALPN qpc/1, and the hybrid
// post-quantum key exchange X25519MLKEM768 only.
func (id *Identity) TLSConfig() (*tls.Config, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tls config: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "quicprochat"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.key.Public(), id.key)
	if err != nil {
		return nil, fmt.Errorf("tls config: %w", err)
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: id.key}},
		NextProtos:       []string{wire.ALPN},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768},
	}, nil
}
