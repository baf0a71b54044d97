package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// vectorSuite returns the implementation of a vector case's suite, or nil
// after counting the case as skipped when the suite is one of the RFC 9420
// suites 4–7 this package does not implement. Any other unknown suite is
// a failure: the vectors only use 1–7.
func vectorSuite(t *testing.T, c *tally, id uint16) *CipherSuite {
	t.Helper()
	s, err := LookupCipherSuite(CipherSuiteID(id))
	if err == nil {
		return s
	}
	if errors.Is(err, ErrUnsupportedCipherSuite) && id >= 4 && id <= 7 {
		c.skip(fmt.Sprintf("suite %d not implemented", id))
		return nil
	}
	c.fail(t, "suite %d: %v", id, err)
	return nil
}

// allSuites lists every implemented suite, for round-trip tests.
var allSuites = []CipherSuiteID{
	SuiteX25519AES128GCMSHA256Ed25519,
	SuiteP256AES128GCMSHA256P256,
	SuiteX25519ChaCha20Poly1305SHA256Ed25519,
	SuiteXWingChaCha20Poly1305SHA256Ed25519,
}

func mustSuite(t testing.TB, id CipherSuiteID) *CipherSuite {
	t.Helper()
	s, err := LookupCipherSuite(id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type cryptoBasicsCase struct {
	CipherSuite uint16 `json:"cipher_suite"`
	RefHash     struct {
		Label string   `json:"label"`
		Value hexBytes `json:"value"`
		Out   hexBytes `json:"out"`
	} `json:"ref_hash"`
	ExpandWithLabel struct {
		Secret  hexBytes `json:"secret"`
		Label   string   `json:"label"`
		Context hexBytes `json:"context"`
		Length  int      `json:"length"`
		Out     hexBytes `json:"out"`
	} `json:"expand_with_label"`
	DeriveSecret struct {
		Secret hexBytes `json:"secret"`
		Label  string   `json:"label"`
		Out    hexBytes `json:"out"`
	} `json:"derive_secret"`
	DeriveTreeSecret struct {
		Secret     hexBytes `json:"secret"`
		Label      string   `json:"label"`
		Generation uint32   `json:"generation"`
		Length     int      `json:"length"`
		Out        hexBytes `json:"out"`
	} `json:"derive_tree_secret"`
	SignWithLabel struct {
		Priv      hexBytes `json:"priv"`
		Pub       hexBytes `json:"pub"`
		Content   hexBytes `json:"content"`
		Label     string   `json:"label"`
		Signature hexBytes `json:"signature"`
	} `json:"sign_with_label"`
	EncryptWithLabel struct {
		Priv       hexBytes `json:"priv"`
		Pub        hexBytes `json:"pub"`
		Label      string   `json:"label"`
		Context    hexBytes `json:"context"`
		Plaintext  hexBytes `json:"plaintext"`
		KEMOutput  hexBytes `json:"kem_output"`
		Ciphertext hexBytes `json:"ciphertext"`
	} `json:"encrypt_with_label"`
}

func TestVectorCryptoBasics(t *testing.T) {
	var cases []cryptoBasicsCase
	loadVectors(t, "crypto-basics.json", &cases)
	c := newTally("crypto-basics.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkCryptoBasics(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkCryptoBasics(s *CipherSuite, tc *cryptoBasicsCase) error {
	if got := s.RefHash(tc.RefHash.Label, tc.RefHash.Value); !bytes.Equal(got, tc.RefHash.Out) {
		return fmt.Errorf("ref_hash: got %x", got)
	}
	e := tc.ExpandWithLabel
	got, err := s.ExpandWithLabel(e.Secret, e.Label, e.Context, e.Length)
	if err != nil || !bytes.Equal(got, e.Out) {
		return fmt.Errorf("expand_with_label: got %x, %v", got, err)
	}
	if got := s.DeriveSecret(tc.DeriveSecret.Secret, tc.DeriveSecret.Label); !bytes.Equal(got, tc.DeriveSecret.Out) {
		return fmt.Errorf("derive_secret: got %x", got)
	}
	d := tc.DeriveTreeSecret
	got, err = s.DeriveTreeSecret(d.Secret, d.Label, d.Generation, d.Length)
	if err != nil || !bytes.Equal(got, d.Out) {
		return fmt.Errorf("derive_tree_secret: got %x, %v", got, err)
	}

	sg := tc.SignWithLabel
	if err := s.VerifyWithLabel(sg.Pub, sg.Label, sg.Content, sg.Signature); err != nil {
		return fmt.Errorf("sign_with_label: vector signature: %w", err)
	}
	pub, err := s.SignaturePublicKey(sg.Priv)
	if err != nil || !bytes.Equal(pub, sg.Pub) {
		return fmt.Errorf("sign_with_label: public key from private: %x, %v", pub, err)
	}
	sig, err := s.SignWithLabel(sg.Priv, sg.Label, sg.Content)
	if err != nil {
		return fmt.Errorf("sign_with_label: %w", err)
	}
	if err := s.VerifyWithLabel(sg.Pub, sg.Label, sg.Content, sig); err != nil {
		return fmt.Errorf("sign_with_label: own signature: %w", err)
	}
	// The label is part of what is signed: another label must not verify.
	if err := s.VerifyWithLabel(sg.Pub, sg.Label+"x", sg.Content, sig); !errors.Is(err, ErrVerifyFailed) {
		return fmt.Errorf("sign_with_label: wrong label verified: %v", err)
	}

	en := tc.EncryptWithLabel
	pt, err := s.DecryptWithLabel(en.Priv, en.Label, en.Context, en.KEMOutput, en.Ciphertext)
	if err != nil || !bytes.Equal(pt, en.Plaintext) {
		return fmt.Errorf("encrypt_with_label: decrypt vector: %x, %v", pt, err)
	}
	hpub, err := s.HPKEPublicKey(en.Priv)
	if err != nil || !bytes.Equal(hpub, en.Pub) {
		return fmt.Errorf("encrypt_with_label: public key from private: %x, %v", hpub, err)
	}
	kemOut, ct, err := s.EncryptWithLabel(en.Pub, en.Label, en.Context, en.Plaintext)
	if err != nil {
		return fmt.Errorf("encrypt_with_label: %w", err)
	}
	pt, err = s.DecryptWithLabel(en.Priv, en.Label, en.Context, kemOut, ct)
	if err != nil || !bytes.Equal(pt, en.Plaintext) {
		return fmt.Errorf("encrypt_with_label: round trip: %x, %v", pt, err)
	}
	if _, err := s.DecryptWithLabel(en.Priv, en.Label, append(en.Context, 0), kemOut, ct); !errors.Is(err, ErrDecryptFailed) {
		return fmt.Errorf("encrypt_with_label: wrong context decrypted: %v", err)
	}
	return nil
}

func TestUnsupportedSuite(t *testing.T) {
	for _, id := range []CipherSuiteID{0, 4, 5, 6, 7, 0x004C, 0xffff} {
		_, err := LookupCipherSuite(id)
		var u *UnsupportedCipherSuiteError
		if !errors.As(err, &u) || u.ID != id || !errors.Is(err, ErrUnsupportedCipherSuite) {
			t.Errorf("suite 0x%04x: got %v", id, err)
		}
	}
}

// TestXWingEncryptWithLabel round-trips EncryptWithLabel for the X-Wing
// suite, which has no official vectors, and checks that tampering with
// any input is detected.
func TestXWingEncryptWithLabel(t *testing.T) {
	s := mustSuite(t, SuiteXWingChaCha20Poly1305SHA256Ed25519)
	pub, priv, err := s.GenerateHPKEKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if len(pub) != 1216 || len(priv) != 32 {
		t.Fatalf("X-Wing key sizes: pub %d priv %d, want 1216 and 32", len(pub), len(priv))
	}
	ctx, msg := []byte("group context"), []byte("path secret for a new epoch")
	kemOut, ct, err := s.EncryptWithLabel(pub, "UpdatePathNode", ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(kemOut) != 1120 {
		t.Errorf("X-Wing encapsulation is %d bytes, want 1120", len(kemOut))
	}
	pt, err := s.DecryptWithLabel(priv, "UpdatePathNode", ctx, kemOut, ct)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Fatalf("round trip: %q, %v", pt, err)
	}
	_, otherPriv, _ := s.GenerateHPKEKeyPair()
	badKEM := append([]byte(nil), kemOut...)
	badKEM[7] ^= 1
	badCT := append([]byte(nil), ct...)
	badCT[0] ^= 1
	for name, f := range map[string]func() ([]byte, error){
		"label":   func() ([]byte, error) { return s.DecryptWithLabel(priv, "Welcome", ctx, kemOut, ct) },
		"context": func() ([]byte, error) { return s.DecryptWithLabel(priv, "UpdatePathNode", nil, kemOut, ct) },
		"key":     func() ([]byte, error) { return s.DecryptWithLabel(otherPriv, "UpdatePathNode", ctx, kemOut, ct) },
		"kem":     func() ([]byte, error) { return s.DecryptWithLabel(priv, "UpdatePathNode", ctx, badKEM, ct) },
		"ct":      func() ([]byte, error) { return s.DecryptWithLabel(priv, "UpdatePathNode", ctx, kemOut, badCT) },
	} {
		if _, err := f(); !errors.Is(err, ErrDecryptFailed) {
			t.Errorf("tampered %s: got %v, want ErrDecryptFailed", name, err)
		}
	}
}

// TestDeriveKeyPairDeterministic checks that DeriveKeyPair depends only on
// its secret for every suite, that distinct secrets give distinct keys,
// and that the derived pair works for HPKE.
func TestDeriveKeyPairDeterministic(t *testing.T) {
	for _, id := range allSuites {
		s := mustSuite(t, id)
		secret := bytes.Repeat([]byte{0x42}, s.Nh())
		pub1, priv1, err := s.DeriveKeyPair(secret)
		if err != nil {
			t.Fatalf("suite 0x%04x: %v", id, err)
		}
		pub2, priv2, _ := s.DeriveKeyPair(append([]byte(nil), secret...))
		if !bytes.Equal(pub1, pub2) || !bytes.Equal(priv1, priv2) {
			t.Errorf("suite 0x%04x: DeriveKeyPair not deterministic", id)
		}
		secret[0] ^= 1
		pub3, _, _ := s.DeriveKeyPair(secret)
		if bytes.Equal(pub1, pub3) {
			t.Errorf("suite 0x%04x: different secrets gave the same key", id)
		}
		if got, err := s.HPKEPublicKey(priv1); err != nil || !bytes.Equal(got, pub1) {
			t.Errorf("suite 0x%04x: public key from derived private key: %v", id, err)
		}
		kemOut, ct, err := s.EncryptWithLabel(pub1, "test", nil, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := s.DecryptWithLabel(priv1, "test", nil, kemOut, ct); err != nil || string(pt) != "x" {
			t.Errorf("suite 0x%04x: derived pair does not round-trip: %v", id, err)
		}
		if _, _, err := s.DeriveKeyPair(secret[:5]); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("suite 0x%04x: short secret: got %v", id, err)
		}
	}
}

// TestSignatureRoundTrip exercises fresh signature keys for every suite.
func TestSignatureRoundTrip(t *testing.T) {
	for _, id := range allSuites {
		s := mustSuite(t, id)
		pub, priv, err := s.GenerateSignatureKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.SignaturePublicKey(priv); err != nil || !bytes.Equal(got, pub) {
			t.Errorf("suite 0x%04x: public key mismatch: %v", id, err)
		}
		sig, err := s.SignWithLabel(priv, "LeafNodeTBS", []byte("content"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.VerifyWithLabel(pub, "LeafNodeTBS", []byte("content"), sig); err != nil {
			t.Errorf("suite 0x%04x: %v", id, err)
		}
		if err := s.VerifyWithLabel(pub, "LeafNodeTBS", []byte("contenu"), sig); !errors.Is(err, ErrVerifyFailed) {
			t.Errorf("suite 0x%04x: altered content: got %v", id, err)
		}
	}
}

// TestAEADRoundTrip checks the suite AEADs and their key-size checks.
func TestAEADRoundTrip(t *testing.T) {
	for _, id := range allSuites {
		s := mustSuite(t, id)
		key, nonce := make([]byte, s.Nk()), make([]byte, s.Nn())
		ct, err := s.Seal(key, nonce, []byte("aad"), []byte("hello"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := s.Open(key, nonce, []byte("aad"), ct); err != nil || string(pt) != "hello" {
			t.Errorf("suite 0x%04x: %q %v", id, pt, err)
		}
		if _, err := s.Open(key, nonce, []byte("aae"), ct); !errors.Is(err, ErrDecryptFailed) {
			t.Errorf("suite 0x%04x: wrong aad: %v", id, err)
		}
		if _, err := s.Seal(key[:5], nonce, nil, nil); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("suite 0x%04x: short key: %v", id, err)
		}
	}
}
