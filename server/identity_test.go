package server

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/quicprochat/qpc/wire"
)

func TestIdentityCreateLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	id, err := CreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{dir: 0o700, filepath.Join(dir, KeyFile): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	if _, err := CreateIdentity(dir); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("second CreateIdentity: %v, want ErrKeyExists", err)
	}
	again, err := LoadIdentity(dir)
	if err != nil || again.Pin() != id.Pin() {
		t.Fatalf("LoadIdentity: pin changed or %v", err)
	}
	addr := id.Address("127.0.0.1:4433").String()
	parsed, err := wire.ParseAddress(addr)
	if err != nil || parsed.Pin != id.Pin() {
		t.Fatalf("address %q does not carry the pin: %v", addr, err)
	}
	// The pin is over the certificate's SPKI, and a fresh certificate at
	// each start keeps it.
	for range 2 {
		conf, err := again.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(conf.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if wire.PinSPKI(cert.RawSubjectPublicKeyInfo) != id.Pin() {
			t.Fatal("certificate SPKI does not match the pin")
		}
		if conf.NextProtos[0] != wire.ALPN {
			t.Fatalf("ALPN %v", conf.NextProtos)
		}
	}
}

func TestLoadIdentityMissingOrBad(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadIdentity(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v, want fs.ErrNotExist", err)
	}
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("not a key"), 0o600)
	if _, err := LoadIdentity(dir); err == nil {
		t.Fatal("garbage key file accepted")
	}
}

func TestHubWakesAndMerges(t *testing.T) {
	h := newHub(DefaultMaxSubsPerMailbox, nil)
	id := [32]byte{1}
	s, stop := h.subscribe(id)
	h.notify(id)
	h.notify(id) // merges into the pending wake
	select {
	case <-s.wake:
	default:
		t.Fatal("no wake")
	}
	select {
	case <-s.wake:
		t.Fatal("two wakes did not merge")
	default:
	}
	h.notify([32]byte{2}) // another mailbox
	select {
	case <-s.wake:
		t.Fatal("woken by another mailbox")
	default:
	}
	h.closeMailbox(id)
	select {
	case <-s.gone:
	default:
		t.Fatal("deleting the mailbox did not end the subscription")
	}
	stop()
	if h.count() != 0 {
		t.Fatalf("%d subscriptions left", h.count())
	}
}
