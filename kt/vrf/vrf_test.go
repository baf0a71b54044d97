package vrf

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"filippo.io/edwards25519"
)

// RFC 9381 Appendix B.3, Examples 16-18 (ECVRF-EDWARDS25519-SHA512-TAI).
var rfcVectors = []struct{ sk, pk, alpha, pi, beta string }{
	{
		"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
		"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
		"",
		"8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab1268a1b0db10836d9826a528ca76567805",
		"90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
	},
	{
		"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
		"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
		"72",
		"f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed5933bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926da3ef39226bbc355bdc9850112c8f4b02",
		"eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
	},
	{
		"c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
		"fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
		"af82",
		"9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf8096bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a2d41b00b05081ed0f58ee5e31b3a970e",
		"645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c452118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
	},
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRFC9381Vectors(t *testing.T) {
	for i, v := range rfcVectors {
		sk, err := NewPrivateKey(unhex(t, v.sk))
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(sk.PublicKey()); got != v.pk {
			t.Errorf("vector %d: pk %s, want %s", i, got, v.pk)
		}
		alpha := unhex(t, v.alpha)
		beta, pi := sk.Prove(alpha)
		if got := hex.EncodeToString(pi[:]); got != v.pi {
			t.Errorf("vector %d: pi %s, want %s", i, got, v.pi)
		}
		if got := hex.EncodeToString(beta[:]); got != v.beta {
			t.Errorf("vector %d: beta %s, want %s", i, got, v.beta)
		}
		vb, err := Verify(unhex(t, v.pk), alpha, unhex(t, v.pi))
		if err != nil {
			t.Fatalf("vector %d: verify: %v", i, err)
		}
		if !bytes.Equal(vb[:], unhex(t, v.beta)) {
			t.Errorf("vector %d: verified beta differs", i)
		}
		hb, err := ProofToHash(unhex(t, v.pi))
		if err != nil || hb != vb {
			t.Errorf("vector %d: ProofToHash differs", i)
		}
		// The VRF key is the Ed25519 key of the same seed.
		if !bytes.Equal(PublicKeyFromEd25519(ed25519.NewKeyFromSeed(unhex(t, v.sk))), sk.PublicKey()) {
			t.Errorf("vector %d: Ed25519 public key differs", i)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	v := rfcVectors[1]
	pk, alpha, pi := unhex(t, v.pk), unhex(t, v.alpha), unhex(t, v.pi)
	other := unhex(t, rfcVectors[2].pk)
	// A flipped bit anywhere in the proof must fail.
	for i := 0; i < ProofSize*8; i++ {
		bad := bytes.Clone(pi)
		bad[i/8] ^= 1 << (i % 8)
		if _, err := Verify(pk, alpha, bad); err == nil {
			t.Fatalf("proof with bit %d flipped verified", i)
		}
	}
	if _, err := Verify(pk, []byte("73"), pi); err == nil {
		t.Error("proof verified for another input")
	}
	if _, err := Verify(other, alpha, pi); err == nil {
		t.Error("proof verified under another key")
	}
	if _, err := Verify(pk, alpha, pi[:79]); err == nil {
		t.Error("short proof verified")
	}
	// s >= q must be rejected (§5.4.4): s = q.
	q := unhex(t, "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	bad := bytes.Clone(pi)
	copy(bad[48:], q)
	if _, err := Verify(pk, alpha, bad); err == nil {
		t.Error("proof with s = q verified")
	}
	// Small-order public keys are invalid (§5.4.5): the identity point.
	ident := make([]byte, 32)
	ident[0] = 1
	if _, err := Verify(ident, alpha, pi); err != ErrInvalidKey {
		t.Errorf("identity public key: %v, want ErrInvalidKey", err)
	}
	// Non-canonical encodings are not points: y = p (0 written
	// non-canonically), and x = 0 with the sign bit set.
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000080",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		if _, err := decodePoint(unhex(t, h)); err == nil {
			t.Errorf("non-canonical %s decoded", h)
		}
	}
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000000",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		if _, err := decodePoint(unhex(t, h)); err != nil {
			t.Errorf("canonical %s refused: %v", h, err)
		}
	}
	nonCanon := unhex(t, "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	if _, err := Verify(nonCanon, alpha, pi); err != ErrInvalidKey {
		t.Errorf("non-canonical public key: %v, want ErrInvalidKey", err)
	}
}

func TestProveVerifyRandom(t *testing.T) {
	seen := map[[OutputSize]byte]bool{}
	for i := range 20 {
		seed := make([]byte, 32)
		seed[0], seed[1] = byte(i), 0x5a
		sk, _ := NewPrivateKey(seed)
		for j := range 5 {
			alpha := []byte{byte(j), byte(i)}
			beta, pi := sk.Prove(alpha)
			got, err := Verify(sk.PublicKey(), alpha, pi[:])
			if err != nil || got != beta {
				t.Fatalf("key %d input %d: %v", i, j, err)
			}
			if seen[beta] {
				t.Fatal("two inputs gave one output")
			}
			seen[beta] = true
		}
	}
}

func FuzzVerify(f *testing.F) {
	for _, v := range rfcVectors {
		f.Add(unhex(f, v.pk), unhex(f, v.alpha), unhex(f, v.pi))
	}
	f.Fuzz(func(t *testing.T, pk, alpha, pi []byte) {
		beta, err := Verify(pk, alpha, pi)
		if err != nil {
			return
		}
		if h, err := ProofToHash(pi); err != nil || h != beta {
			t.Fatal("verified proof hashes differently")
		}
	})
}

func BenchmarkProve(b *testing.B) {
	sk, _ := NewPrivateKey(make([]byte, 32))
	for b.Loop() {
		sk.Prove([]byte("alice"))
	}
}

func BenchmarkVerify(b *testing.B) {
	sk, _ := NewPrivateKey(make([]byte, 32))
	_, pi := sk.Prove([]byte("alice"))
	pk := sk.PublicKey()
	for b.Loop() {
		Verify(pk, []byte("alice"), pi[:])
	}
}

// TestDecodePointStrict: decodePoint accepts exactly the encodings that
// SetBytes accepts and re-encodes to themselves (RFC 8032 §5.1.3).
func TestDecodePointStrict(t *testing.T) {
	check := func(b []byte) {
		p, err := decodePoint(b)
		q, qerr := new(edwards25519.Point).SetBytes(b)
		want := qerr == nil && bytes.Equal(q.Bytes(), b)
		if (err == nil) != want {
			t.Fatalf("%x: decodePoint err %v, strict decoding %v", b, err, want)
		}
		if err == nil && p.Equal(q) != 1 {
			t.Fatalf("%x: decoded another point", b)
		}
	}
	b := make([]byte, 32)
	for i := range 20000 {
		rand.Read(b)
		if i%4 == 0 { // near p, where the non-canonical encodings are
			for j := 1; j < 31; j++ {
				b[j] = 0xff
			}
			b[31] |= 0x7f
		}
		check(b)
	}
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000080",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"0000000000000000000000000000000000000000000000000000000000000080",
	} {
		check(unhex(t, h))
	}
}
