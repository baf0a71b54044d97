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
