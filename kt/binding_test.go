package kt

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
)

func testBinding(t testing.TB, label string) *Binding {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	b := &Binding{Label: label, IdentityKeys: []ed25519.PublicKey{pub}, DeviceKeys: [][]byte{pub}, IntroKey: []byte("sealing key"),
		TokenKeys: []TokenKeyCommitment{{Epoch: 3}}}
	b.IntroSendID[0] = 7
	if err := b.Sign(priv); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBinding(t *testing.T) {
	b := testBinding(t, "alice")
	got, err := ParseBinding(b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify("alice"); err != nil {
		t.Fatal(err)
	}
	if err := got.Verify("bob"); !errors.Is(err, ErrBinding) {
		t.Fatalf("other label: %v", err)
	}
	got.IntroSendID[0] ^= 1
	if err := got.Verify("alice"); !errors.Is(err, ErrBinding) {
		t.Fatalf("tampered binding: %v", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if err := b.Sign(other); err == nil {
		t.Fatal("signed with a key that is not the identity key")
	}
}

func TestBindingKeyPackages(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	b := &Binding{Label: "alice", IdentityKeys: []ed25519.PublicKey{pub}, KeyPackages: [][]byte{[]byte("kp one"), make([]byte, maxKeyPackageSize)}}
	if err := b.Sign(priv); err != nil {
		t.Fatal(err)
	}
	got, err := ParseBinding(b.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify("alice"); err != nil || len(got.KeyPackages) != 2 || string(got.KeyPackages[0]) != "kp one" {
		t.Fatalf("round trip: %v %q", err, got.KeyPackages)
	}
	// The key packages are signed.
	got.KeyPackages[0][0] ^= 1
	if err := got.Verify("alice"); !errors.Is(err, ErrBinding) {
		t.Fatalf("tampered key package: %v", err)
	}
	for name, kps := range map[string][][]byte{
		"too many":  {{1}, {2}, {3}, {4}, {5}},
		"empty":     {{}},
		"too large": {make([]byte, maxKeyPackageSize+1)},
	} {
		bad := &Binding{Label: "alice", IdentityKeys: []ed25519.PublicKey{pub}, KeyPackages: kps}
		if err := bad.Sign(priv); !errors.Is(err, ErrBinding) {
			t.Errorf("%s: sign: %v", name, err)
		}
	}
}
