package mls

import (
	"bytes"
	"testing"
)

// FuzzWelcomeFor: cutting a Welcome down to one member (WelcomeFor)
// never panics, and whatever it returns is a Welcome with exactly that
// member's entry and the same encrypted GroupInfo, which the member can
// still join from when the input was genuine.
func FuzzWelcomeFor(f *testing.F) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	creator, err := Create(newIdentity(f, suite, "creator"), nil, nil)
	if err != nil {
		f.Fatal(err)
	}
	a, b := newKP(f, newIdentity(f, suite, "a")), newKP(f, newIdentity(f, suite, "b"))
	res, err := creator.Add(&a.KeyPackage, &b.KeyPackage)
	if err != nil {
		f.Fatal(err)
	}
	refA, err := a.KeyPackage.Ref()
	if err != nil {
		f.Fatal(err)
	}
	refB, err := b.KeyPackage.Ref()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(res.Welcome, refA)
	f.Add(res.Welcome, refB)
	f.Add(res.Welcome[:len(res.Welcome)/2], refA)
	f.Fuzz(func(t *testing.T, welcome, ref []byte) {
		out, err := WelcomeFor(welcome, ref)
		if err != nil {
			return
		}
		var in, m MLSMessage
		if err := in.Unmarshal(welcome); err != nil {
			t.Fatalf("cut a Welcome that does not parse: %v", err)
		}
		if err := m.Unmarshal(out); err != nil || m.Welcome == nil {
			t.Fatalf("the cut Welcome does not parse: %v", err)
		}
		if len(m.Welcome.Secrets) != 1 || !bytes.Equal(m.Welcome.Secrets[0].NewMember, ref) ||
			!bytes.Equal(m.Welcome.EncryptedGroupInfo, in.Welcome.EncryptedGroupInfo) || m.Welcome.CipherSuite != in.Welcome.CipherSuite {
			t.Fatal("the cut Welcome is not the input's entry for ref and its GroupInfo")
		}
		if bytes.Equal(welcome, res.Welcome) {
			kp := a
			if bytes.Equal(ref, refB) {
				kp = b
			}
			if _, err := Join(out, kp, nil, nil); err != nil {
				t.Fatalf("the genuine Welcome cut for its member does not join: %v", err)
			}
		}
	})
}
