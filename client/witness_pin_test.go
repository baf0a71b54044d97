package client

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/quicprochat/qpc/client/protocol"
	"golang.org/x/mod/sumdb/note"
)

// TestWitnessPinParse: a pin with a witness policy (what `qpc-server
// kt-vkey` prints for a server with kt_witness_policy) parses, keeps the
// policy, formats back to itself and yields a verifier that requires the
// policy; today's forms (three lines, or one line) still parse, without a
// policy.
func TestWitnessPinParse(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	vrf, cfg := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	const w = "witness.test/a+0900e6d7+BFa7uSGLlM2d2crdBB2Of5T0uJ2GWpyfkkbxnUgdzUJr"
	base := vkey + "\nvrf-key " + vrf + "\nconfig " + cfg + "\n"
	for _, tc := range []struct {
		name, text string
		policy     bool
	}{
		{"three lines", base, false},
		{"one line", vkey + " vrf-key " + vrf + " config " + cfg, false},
		{"policy", base + "witness a " + w + " http://127.0.0.1:7380/\ngroup g any a\nquorum g\n", true},
		{"policy without URLs, comments", base + "# from the operator\nwitness a " + w + "\nquorum a\n", true},
		{"quorum none", base + "quorum none\n", false},
	} {
		p, err := protocol.ParseKTPin(tc.text)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if (p.WitnessPolicy != "") != tc.policy || hex.EncodeToString(p.VRFKey) != vrf {
			t.Errorf("%s: parsed %+v", tc.name, p)
		}
		again, err := protocol.ParseKTPin(p.String())
		if err != nil || again.String() != p.String() {
			t.Errorf("%s: String does not parse back: %v\n%s", tc.name, err, p.String())
		}
		v, err := p.Verifier()
		if err != nil || (v.WitnessPolicy() != nil) != tc.policy {
			t.Errorf("%s: verifier %v, policy pinned: %v", tc.name, err, v.WitnessPolicy() != nil)
		}
	}
	for _, bad := range []string{
		base + "witness a " + w + "\n",           // no quorum
		base + "witness a not-a-key\nquorum a\n", // bad key
		base + "group g 2 a\nquorum g\n",         // unknown member
	} {
		if _, err := protocol.ParseKTPin(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
