package server

import (
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestKTKeys(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKTKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The derived verifier key checks the signer's notes.
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(k.Verifier)); err != nil {
		t.Fatalf("verifier key does not verify the signer's note: %v", err)
	}
	again, err := LoadOrCreateKTKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.VKey != k.VKey || string(again.VRF.PublicKey()) != string(k.VRF.PublicKey()) {
		t.Fatal("keys changed on reload")
	}
	other, _ := LoadOrCreateKTKeys(t.TempDir())
	if other.Signer.Name() == k.Signer.Name() {
		t.Fatal("two servers share a log origin")
	}
}

func TestKTListenConfig(t *testing.T) {
	for _, tc := range []struct {
		listen    string
		onionOnly bool
		ok        bool
	}{
		{"127.0.0.1:4480", false, true},
		{"off", false, true},
		{"0.0.0.0:4480", false, true},
		{"127.0.0.1", false, false},
		{"0.0.0.0:4480", true, false},
		{"127.0.0.1:0", true, true},
	} {
		c := DefaultConfig()
		c.KTListen, c.OnionOnly = tc.listen, tc.onionOnly
		err := fieldByKey("kt_listen").check(&c)
		if (err == nil) != tc.ok {
			t.Errorf("kt_listen %q onion-only %v: %v", tc.listen, tc.onionOnly, err)
		}
	}
}
