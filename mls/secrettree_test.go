package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

type secretTreeCase struct {
	CipherSuite      uint16   `json:"cipher_suite"`
	EncryptionSecret hexBytes `json:"encryption_secret"`
	SenderData       struct {
		SenderDataSecret hexBytes `json:"sender_data_secret"`
		Ciphertext       hexBytes `json:"ciphertext"`
		Key              hexBytes `json:"key"`
		Nonce            hexBytes `json:"nonce"`
	} `json:"sender_data"`
	Leaves [][]struct {
		Generation       uint32   `json:"generation"`
		ApplicationKey   hexBytes `json:"application_key"`
		ApplicationNonce hexBytes `json:"application_nonce"`
		HandshakeKey     hexBytes `json:"handshake_key"`
		HandshakeNonce   hexBytes `json:"handshake_nonce"`
	} `json:"leaves"`
}

func TestVectorSecretTree(t *testing.T) {
	var cases []secretTreeCase
	loadVectors(t, "secret-tree.json", &cases)
	c := newTally("secret-tree.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkSecretTree(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d, %d leaves): %v", i, tc.CipherSuite, len(tc.Leaves), err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

func checkSecretTree(s *CipherSuite, tc *secretTreeCase) error {
	sd := tc.SenderData
	key, nonce := s.SenderDataKeyNonce(sd.SenderDataSecret, sd.Ciphertext)
	if !bytes.Equal(key, sd.Key) || !bytes.Equal(nonce, sd.Nonce) {
		return fmt.Errorf("sender data key %x nonce %x", key, nonce)
	}
	tree, err := NewSecretTree(s, tc.EncryptionSecret, uint32(len(tc.Leaves)), nil)
	if err != nil {
		return err
	}
	// Leaves are visited in reverse so that node secrets are consumed in
	// an order other than the natural one.
	for leaf := len(tc.Leaves) - 1; leaf >= 0; leaf-- {
		for _, g := range tc.Leaves[leaf] {
			hs, err := tree.Key(uint32(leaf), HandshakeRatchet, g.Generation)
			if err != nil {
				return err
			}
			app, err := tree.Key(uint32(leaf), ApplicationRatchet, g.Generation)
			if err != nil {
				return err
			}
			if !bytes.Equal(hs.Key, g.HandshakeKey) || !bytes.Equal(hs.Nonce, g.HandshakeNonce) ||
				!bytes.Equal(app.Key, g.ApplicationKey) || !bytes.Equal(app.Nonce, g.ApplicationNonce) {
				return fmt.Errorf("leaf %d generation %d: keys differ", leaf, g.Generation)
			}
		}
	}
	return nil
}

func newTestTree(t *testing.T, id CipherSuiteID, n uint32, opts *SecretTreeOptions) *SecretTree {
	t.Helper()
	s := mustSuite(t, id)
	tree, err := NewSecretTree(s, bytes.Repeat([]byte{7}, s.Nh()), n, opts)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestSecretTreeOutOfOrder checks the receive window: late keys within
// the window are available once, replays and evicted keys are refused,
// and jumps past the forward limit are refused without consuming state.
func TestSecretTreeOutOfOrder(t *testing.T) {
	opts := &SecretTreeOptions{OutOfOrderWindow: 4, MaxForwardDistance: 10}
	sender := newTestTree(t, SuiteX25519AES128GCMSHA256Ed25519, 4, opts)
	recv := newTestTree(t, SuiteX25519AES128GCMSHA256Ed25519, 4, opts)
	var sent []RatchetKey
	for i := 0; i < 12; i++ {
		k, err := sender.NextKey(2, ApplicationRatchet)
		if err != nil || k.Generation != uint32(i) {
			t.Fatalf("send %d: %v %v", i, k.Generation, err)
		}
		sent = append(sent, k)
	}
	get := func(g uint32) (RatchetKey, error) { return recv.Key(2, ApplicationRatchet, g) }
	// Generation 9 first: 0..8 are skipped, only 5..8 fit the window.
	if k, err := get(9); err != nil || !bytes.Equal(k.Key, sent[9].Key) {
		t.Fatalf("generation 9: %v", err)
	}
	if _, err := get(9); !errors.Is(err, ErrKeyConsumed) {
		t.Errorf("replayed generation 9: %v", err)
	}
	for _, g := range []uint32{7, 5, 8, 6} {
		k, err := get(g)
		if err != nil || !bytes.Equal(k.Key, sent[g].Key) || !bytes.Equal(k.Nonce, sent[g].Nonce) {
			t.Errorf("late generation %d: %v", g, err)
		}
	}
	for _, g := range []uint32{0, 4, 5, 7} {
		if _, err := get(g); !errors.Is(err, ErrKeyConsumed) {
			t.Errorf("evicted or used generation %d: %v", g, err)
		}
	}
	if _, err := get(10 + 11); !errors.Is(err, ErrGenerationTooFar) {
		t.Errorf("far generation: %v", err)
	}
	if k, err := get(11); err != nil || !bytes.Equal(k.Key, sent[11].Key) {
		t.Errorf("generation 11 after refused jump: %v", err)
	}
	// The handshake ratchet of the same leaf is independent.
	hs, err := recv.Key(2, HandshakeRatchet, 0)
	if err != nil || bytes.Equal(hs.Key, sent[0].Key) {
		t.Errorf("handshake generation 0: %v", err)
	}
	if _, err := recv.Key(4, HandshakeRatchet, 0); !errors.Is(err, ErrLeafIndex) {
		t.Errorf("leaf out of range: %v", err)
	}
}

// TestSecretTreeZeroWindow: with no window, skipped keys are dropped.
func TestSecretTreeZeroWindow(t *testing.T) {
	tree := newTestTree(t, SuiteX25519ChaCha20Poly1305SHA256Ed25519, 2, &SecretTreeOptions{MaxForwardDistance: 5})
	if _, err := tree.Key(1, HandshakeRatchet, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := tree.Key(1, HandshakeRatchet, 2); !errors.Is(err, ErrKeyConsumed) {
		t.Errorf("skipped key kept with zero window: %v", err)
	}
}

// TestSecretTreeExhaustion drives a ratchet to the last generation.
func TestSecretTreeExhaustion(t *testing.T) {
	tree := newTestTree(t, SuiteX25519AES128GCMSHA256Ed25519, 1, &SecretTreeOptions{MaxForwardDistance: ^uint32(0)})
	r, err := tree.leafRatchet(0, ApplicationRatchet)
	if err != nil {
		t.Fatal(err)
	}
	// Jump the ratchet near the end directly: stepping 2^32 times would
	// take hours, and the limit logic only depends on the counter.
	r.next = ^uint32(0) - 1
	if k, err := tree.NextKey(0, ApplicationRatchet); err != nil || k.Generation != ^uint32(0)-1 {
		t.Fatalf("penultimate: %v %v", k.Generation, err)
	}
	if k, err := tree.NextKey(0, ApplicationRatchet); err != nil || k.Generation != ^uint32(0) {
		t.Fatalf("last: %v %v", k.Generation, err)
	}
	if _, err := tree.NextKey(0, ApplicationRatchet); !errors.Is(err, ErrRatchetExhausted) {
		t.Errorf("past the last generation: %v", err)
	}
}

// TestXWingSecretTreeConsistent checks, for the X-Wing suite, that two
// independent instances — a sender walking generations in order and a
// receiver accessing them out of order across all leaves — agree on every
// key and nonce, and that distinct leaves, ratchets and generations never
// share a key.
func TestXWingSecretTreeConsistent(t *testing.T) {
	const n, gens = 8, 6
	sender := newTestTree(t, SuiteXWingChaCha20Poly1305SHA256Ed25519, n, nil)
	recv := newTestTree(t, SuiteXWingChaCha20Poly1305SHA256Ed25519, n, nil)
	type slot struct {
		leaf uint32
		typ  RatchetType
		gen  uint32
	}
	want := map[slot]RatchetKey{}
	seen := map[string]bool{}
	for leaf := uint32(0); leaf < n; leaf++ {
		for _, typ := range []RatchetType{HandshakeRatchet, ApplicationRatchet} {
			for g := uint32(0); g < gens; g++ {
				k, err := sender.NextKey(leaf, typ)
				if err != nil || k.Generation != g {
					t.Fatalf("leaf %d %v gen %d: %v", leaf, typ, g, err)
				}
				if len(k.Key) != 32 || len(k.Nonce) != 12 || seen[string(k.Key)] || seen[string(k.Nonce)] {
					t.Fatalf("leaf %d %v gen %d: bad or repeated key/nonce", leaf, typ, g)
				}
				seen[string(k.Key)], seen[string(k.Nonce)] = true, true
				want[slot{leaf, typ, g}] = k
			}
		}
	}
	// The receiver walks leaves in reverse and generations out of order,
	// so its tree is consumed along different paths than the sender's.
	for leaf := int(n) - 1; leaf >= 0; leaf-- {
		for _, typ := range []RatchetType{ApplicationRatchet, HandshakeRatchet} {
			for _, g := range []uint32{3, 0, 5, 1, 4, 2} {
				k, err := recv.Key(uint32(leaf), typ, g)
				w := want[slot{uint32(leaf), typ, g}]
				if err != nil || !bytes.Equal(k.Key, w.Key) || !bytes.Equal(k.Nonce, w.Nonce) {
					t.Fatalf("leaf %d %v generation %d: receiver disagrees: %v", leaf, typ, g, err)
				}
			}
		}
	}
}
