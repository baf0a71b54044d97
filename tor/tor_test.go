package tor

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha3"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOnionKeyStable(t *testing.T) {
	path := filepath.Join(t.TempDir(), OnionKeyFile)
	if _, err := LoadOnionKey(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadOnionKey of a missing file: %v, want fs.ErrNotExist", err)
	}
	k1, err := LoadOrCreateOnionKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("onion key mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	k2, err := LoadOrCreateOnionKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("second load gave another key (%v): the address would change", err)
	}
	id := OnionID(k1.Public().(ed25519.PublicKey))
	if len(id) != OnionIDLen || !IsOnion(id+".onion") {
		t.Errorf("onion ID %q", id)
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := LoadOnionKey(path); err == nil {
		t.Error("a garbage key file loaded")
	}
}

// TestOnionIDFormula checks OnionID against rend-spec-v3 §6, computed
// here independently of bine: base32(PUBKEY | CHECKSUM | VERSION), with
// CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2] and
// VERSION = 3, in lower case.
func TestOnionIDFormula(t *testing.T) {
	for _, seed := range []byte{0, 1, 42} {
		key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, 32))
		pub := key.Public().(ed25519.PublicKey)
		h := sha3.New256()
		h.Write([]byte(".onion checksum"))
		h.Write(pub)
		h.Write([]byte{3})
		raw := append(append(append([]byte{}, pub...), h.Sum(nil)[:2]...), 3)
		want := strings.ToLower(base32.StdEncoding.EncodeToString(raw))
		if got := OnionID(pub); got != want {
			t.Errorf("seed %d: OnionID %s, want %s", seed, got, want)
		}
	}
}

func TestClientKeys(t *testing.T) {
	id := strings.Repeat("a", OnionIDLen)
	cred, err := NewClientCredential(id)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseClientCredential(cred.String())
	if err != nil || back != cred {
		t.Fatalf("credential round trip: %v, %v", back, err)
	}
	if _, err := ParseClientCredential(strings.ToUpper(id) + ".onion:descriptor:x25519:" + cred.String()[len(id)+len(":descriptor:x25519:"):]); err != nil {
		t.Errorf("credential with .onion and upper case: %v", err)
	}
	pub := cred.Public()
	if k, err := ParseClientKey(pub.String()); err != nil || k != pub {
		t.Fatalf("client key round trip: %v", err)
	}
	if k, err := ParseClientKey(strings.ToLower(strings.TrimPrefix(pub.String(), "descriptor:x25519:"))); err != nil || k != pub {
		t.Errorf("bare lower-case client key: %v", err)
	}
	for _, bad := range []string{"", "descriptor:x25519:AAAA", "x25519:" + pub.String(), "descriptor:x25519:" + strings.Repeat("1", 52)} {
		if _, err := ParseClientKey(bad); err == nil {
			t.Errorf("ParseClientKey(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", id, id + ":descriptor:x25519:AAAA", "short:descriptor:x25519:" + strings.Repeat("A", 52), id + ":descriptor:ed25519:" + strings.Repeat("A", 52)} {
		if _, err := ParseClientCredential(bad); err == nil {
			t.Errorf("ParseClientCredential(%q) accepted", bad)
		}
	}
}

func TestClientDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), OnionClientsDir)
	if list, err := Clients(dir); err != nil || len(list) != 0 {
		t.Fatalf("no directory: %v, %v", list, err)
	}
	var keys []ClientKey
	for _, name := range []string{"bob", "alice"} {
		c, _ := NewClientCredential(strings.Repeat("a", OnionIDLen))
		keys = append(keys, c.Public())
		if err := AddClient(dir, name, c.Public()); err != nil {
			t.Fatal(err)
		}
	}
	if err := AddClient(dir, "alice", keys[0]); err == nil {
		t.Error("alice added twice")
	}
	for _, bad := range []string{"", "../x", "a b", strings.Repeat("x", 65)} {
		if err := AddClient(dir, bad, keys[0]); err == nil {
			t.Errorf("client name %q accepted", bad)
		}
	}
	list, err := Clients(dir)
	if err != nil || len(list) != 2 || list[0].Name != "alice" || list[0].Key != keys[1] || list[1].Key != keys[0] {
		t.Fatalf("clients: %+v, %v", list, err)
	}
	// tor's own authorized_clients format is what is on disk.
	raw, _ := os.ReadFile(filepath.Join(dir, "bob.auth"))
	if string(raw) != keys[0].String()+"\n" {
		t.Errorf("bob.auth holds %q", raw)
	}
	if err := RemoveClient(dir, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := RemoveClient(dir, "bob"); err == nil {
		t.Error("bob removed twice")
	}
	os.WriteFile(filepath.Join(dir, "broken.auth"), []byte("nonsense"), 0o600)
	if _, err := Clients(dir); err == nil {
		t.Error("a broken key file went unnoticed")
	}
}

func TestIsOnion(t *testing.T) {
	id := strings.Repeat("b", OnionIDLen)
	for host, want := range map[string]bool{
		id + ".onion": true, strings.ToUpper(id) + ".ONION": true, id: false,
		id[:16] + ".onion": false, "example.org": false, id[:55] + "1.onion": false,
	} {
		if IsOnion(host) != want {
			t.Errorf("IsOnion(%q) = %v", host, !want)
		}
	}
}

func TestParseBootstrap(t *testing.T) {
	for in, want := range map[string]struct {
		pct     int
		summary string
	}{
		`NOTICE BOOTSTRAP PROGRESS=45 TAG=loading_descriptors SUMMARY="Loading relay descriptors"`: {45, "Loading relay descriptors"},
		`NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done"`:                                    {100, "Done"},
		`WARN BOOTSTRAP PROGRESS=x`: {-1, ""},
	} {
		pct, summary := parseBootstrap(in)
		if pct != want.pct || summary != want.summary {
			t.Errorf("parseBootstrap(%q) = %d, %q", in, pct, summary)
		}
	}
}

func TestExplainSOCKS(t *testing.T) {
	for code, auth := range map[int]bool{240: false, 243: false, 244: true, 245: true, 247: false} {
		err := explainSOCKS(fmt.Errorf("socks connect: unknown error unknown code: %d", code))
		if errors.Is(err, ErrClientAuth) != auth {
			t.Errorf("code %d: %v; client auth %v", code, err, auth)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	for target, ok := range map[string]bool{
		"127.0.0.1:4433": true, "[::1]:1": true, "unix:/run/qpc.sock": true,
		"0.0.0.0:1": false, "10.0.0.1:1": false, "localhost:1": false, "unix:rel.sock": false, "nope": false,
	} {
		if err := checkTarget(target); (err == nil) != ok {
			t.Errorf("checkTarget(%q) = %v", target, err)
		}
	}
}
