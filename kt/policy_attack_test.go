package kt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/kt/witness"
	"golang.org/x/mod/sumdb/note"
)

// oneWitnessCosigned returns a checkpoint of a fresh log cosigned by one
// real witness (kt/witness), and that witness.
func oneWitnessCosigned(t *testing.T) ([]byte, *witness.Witness) {
	t.Helper()
	s, v, _, _ := newKeys(t, "kt.test/policy-attack")
	w, err := witness.Open(witness.Options{
		Dir: t.TempDir(), Name: "witness.test/only",
		Logs:   []witness.Log{{Origin: s.Name(), Verifier: v}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	root := sha256.Sum256([]byte("some tree"))
	signed, err := note.Sign(&note.Note{Text: fmt.Sprintf("%s\n5\n%s\n", s.Name(), base64.StdEncoding.EncodeToString(root[:]))}, s)
	if err != nil {
		t.Fatal(err)
	}
	cosigs, err := w.AddCheckpoint(context.Background(), append([]byte("old 0\n\n"), signed...))
	if err != nil {
		t.Fatal(err)
	}
	return append(signed, cosigs...), w
}

// aliasVKey re-encodes a cosigner vkey: another name, signature type or
// key ID in front of the same Ed25519 public key. id < 0 computes the
// right key ID for name and alg.
func aliasVKey(t *testing.T, vkey, name string, alg byte, id int64) string {
	t.Helper()
	parts := strings.SplitN(vkey, "+", 3)
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 33 {
		t.Fatalf("vkey %q", vkey)
	}
	pub := raw[1:]
	if id < 0 {
		h := sha256.Sum256(append(append([]byte(name+"\n"), alg), pub...))
		id = int64(binary.BigEndian.Uint32(h[:4]))
	}
	return fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{alg}, pub...)))
}

// TestAttackWitnessPolicyOneWitnessTwice plays the lying operator who
// writes the witness policy its users pin (`qpc-server kt-vkey` prints
// it, `qpc init --kt` takes it): a policy that reads as "2 of these
// witnesses" (or as requiring some cosignature at all) but that one
// witness, or none, satisfies. With such a pin the promise "a split view
// needs a quorum of witnesses to collude" is void: the operator runs the
// one witness, or needs none. Every such policy must be refused when
// parsed (or, failing that, must not be satisfied by one witness's
// cosignature). Before: all were accepted — the signed-note key ID in a
// witness vkey was not checked against the key (two vkeys differing only
// in their ID field are one witness), a type 0x01 key was taken as a
// cosigner key, a group could list a member twice or two members sharing
// a witness, and a threshold of 0 (or "all" of no member) made the pinned
// policy require nothing while ParseKTPin silently dropped it.
func TestAttackWitnessPolicyOneWitnessTwice(t *testing.T) {
	cosigned, w := oneWitnessCosigned(t)
	vk := w.VerifierKey()
	name := w.Name()
	other := "witness.test/other" // the same key under another name
	for _, tc := range []struct {
		name, policy string
	}{
		{"key ID forged", fmt.Sprintf("witness a %s\nwitness b %s\ngroup g 2 a b\nquorum g\n", vk, aliasVKey(t, vk, name, 0x04, 0x01020304))},
		{"type 0x01 alias", fmt.Sprintf("witness a %s\nwitness b %s\ngroup g 2 a b\nquorum g\n", vk, aliasVKey(t, vk, name, 0x01, -1))},
		{"same key, another name", fmt.Sprintf("witness a %s\nwitness b %s\ngroup g 2 a b\nquorum g\n", vk, aliasVKey(t, vk, other, 0x04, -1))},
		{"member listed twice", fmt.Sprintf("witness a %s\ngroup g 2 a a\nquorum g\n", vk)},
		{"overlapping groups", fmt.Sprintf("witness a %s\nwitness b %s\ngroup x any a b\ngroup g 2 x a\nquorum g\n", vk, aliasVKey(t, vk, other, 0x04, -1))},
		{"overlapping groups, distinct keys", fmt.Sprintf("witness a %s\nwitness b %s\ngroup x any a b\ngroup y any a\ngroup g 2 x y\nquorum g\n", vk, "witness.test/b+c1ac0e4f+BFa7uSGLlM2d2crdBB2Of5T0uJ2GWpyfkkbxnUgdzUJr")},
		{"threshold 0", fmt.Sprintf("witness a %s\ngroup g 0 a\nquorum g\n", vk)},
		{"all of nothing", "group g all\nquorum g\n"},
		{"nested threshold 0", fmt.Sprintf("witness a %s\ngroup z 0 a\ngroup g all z\nquorum g\n", vk)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseWitnessPolicy(tc.policy)
			if err != nil {
				return // refused: the user learns the pin is unusable
			}
			switch {
			case !p.Required():
				t.Errorf("policy accepted but requires no cosignature:\n%s", tc.policy)
			case p.Satisfied(cosigned):
				t.Errorf("policy accepted and satisfied by the cosignature of one witness:\n%s", tc.policy)
			}
		})
	}
	// The honest forms still parse and need what they say.
	good, err := ParseWitnessPolicy(fmt.Sprintf("witness a %s\nquorum a\n", vk))
	if err != nil || !good.Required() || !good.Satisfied(cosigned) {
		t.Fatalf("a 1-of-1 policy over the witness: %v", err)
	}
	two, err := ParseWitnessPolicy(fmt.Sprintf("witness a %s\nwitness b %s\ngroup g 2 a b\nquorum g\n", vk, "witness.test/b+c1ac0e4f+BFa7uSGLlM2d2crdBB2Of5T0uJ2GWpyfkkbxnUgdzUJr"))
	if err != nil || two.Satisfied(cosigned) {
		t.Fatalf("a 2-of-2 policy with one cosignature: err %v, satisfied %v", err, err == nil && two.Satisfied(cosigned))
	}
}
