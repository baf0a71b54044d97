package accounts

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/account"
)

func TestKeysCreateAndReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // created on demand
	k1, err := LoadOrCreateKeys(dir, []byte("pin-1"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFileName)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	before, _ := os.ReadFile(path)
	k2, err := LoadOrCreateKeys(dir, []byte("pin-1"))
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("loading rewrote the key file")
	}
	if !bytes.Equal(k1.PublicKey(), k2.PublicKey()) || !bytes.Equal(k1.Identity(), []byte("pin-1")) ||
		!bytes.Equal(k1.skm.OPRFGlobalSeed, k2.skm.OPRFGlobalSeed) || !k1.skm.PrivateKey.Equal(k2.skm.PrivateKey) {
		t.Fatal("reloaded keys differ")
	}
	if len(k1.skm.OPRFGlobalSeed) != 64 || len(k1.PublicKey()) != 32 {
		t.Fatalf("seed %d bytes, public key %d bytes", len(k1.skm.OPRFGlobalSeed), len(k1.PublicKey()))
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("data dir holds %d entries", len(entries))
	}
	// Another directory gets other keys.
	k3, err := LoadOrCreateKeys(t.TempDir(), []byte("pin-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(k1.PublicKey(), k3.PublicKey()) {
		t.Fatal("two data dirs share keys")
	}
}

func TestKeysRefuse(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateKeys(dir, []byte("pin-1")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFileName)
	good, _ := os.ReadFile(path)

	_, err := LoadOrCreateKeys(dir, []byte("pin-2"))
	is(t, err, ErrKeyFile)
	if now, _ := os.ReadFile(path); !bytes.Equal(now, good) {
		t.Fatal("a refused load changed the key file")
	}
	_, err = LoadOrCreateKeys(dir, nil)
	is(t, err, ErrKeyFile)

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadOrCreateKeys(dir, []byte("pin-1"))
	is(t, err, ErrKeyFile)
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}

	for name, data := range map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
		"version":   flip(good, len(keyFileMagic)),
		"magic":     append([]byte("XXX"), good[3:]...),
		"flipped":   flip(good, len(good)-80), // inside the key material
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateKeys(dir, []byte("pin-1")); err == nil {
			t.Errorf("%s key file accepted", name)
		} else if !strings.Contains(err.Error(), "key file") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x55
	return c
}

// TestKeyFileFixture loads testdata/opaque.key, written by an earlier
// build, and logs in to a record registered against it then. It fails if
// the key file format, the OPAQUE configuration, the credential
// identifier or the client's key stretching change: each would lock every
// existing user out.
func TestKeyFileFixture(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	recHex, err := os.ReadFile(filepath.Join("testdata", "fixture.record.hex"))
	if err != nil {
		t.Fatal(err)
	}
	record, err := hex.DecodeString(strings.TrimSpace(string(recHex)))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), clock: &clock{}}
	e.clock.t = fixedStart
	e.opts = Options{Now: e.clock.Now}
	// git does not keep 0600; the copy gets it back.
	if err := os.WriteFile(filepath.Join(e.dir, KeyFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadOrCreateKeys(e.dir, []byte(fixtureIdentity))
	if err != nil {
		t.Fatal(err)
	}
	e.keys = keys
	e.svc, err = Open(e.dir, keys, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.svc.Close()
	if _, err := e.svc.RegisterFinish(bg, fixtureUser, record, dev(1), "fixture"); err != nil {
		t.Fatal(err)
	}
	l, lsBody, err := account.ClientLogin(fixtureUser, []byte(fixturePassword), []byte(fixtureIdentity), cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := account.UnmarshalLoginStart(lsBody)
	ke2, st, err := e.svc.LoginStart(bg, ls.Username, ls.KE1)
	if err != nil {
		t.Fatal(err)
	}
	lr, _ := (&account.LoginResponse{KE2: ke2}).Marshal()
	lfBody, _, _, err := l.Finish(lr, dev(2), "d")
	if err != nil {
		t.Fatalf("client cannot log in with the fixture: %v", err)
	}
	lf, _ := account.UnmarshalLoginFinish(lfBody)
	if _, err := e.svc.LoginFinish(bg, st, lf.KE3, lf.Device, lf.DeviceName); err != nil {
		t.Fatal(err)
	}
}

const (
	fixtureIdentity = "qpc-fixture-pin"
	fixtureUser     = "fixture.user"
	fixturePassword = "fixture password"
)
