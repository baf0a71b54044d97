package protocol

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

const pinText = `qpc-kt-0123456789abcdef+01234567+AXjf1OP8oTq7vnf1M6Vd9XIcqzE7w0sj4YyzrfuOS1Ms
vrf-key 8d8b5e1bf3ef3a9e4b3f0c6a02d54c7c8c4bde2a6d4b5f2e1a3c5b7d9e0f1a2b
config 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
`

func TestParseKTPin(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "qpc-kt-test")
	if err != nil {
		t.Fatal(err)
	}
	vrfKey, _, _ := ed25519.GenerateKey(rand.Reader)
	want := KTPin{VKey: vkey, VRFKey: vrfKey, ConfigHash: [32]byte{1, 2, 3}}
	for _, text := range []string{want.String(), strings.ReplaceAll(want.String(), "\n", " ")} {
		got, err := ParseKTPin(text)
		if err != nil || got.VKey != want.VKey || string(got.VRFKey) != string(want.VRFKey) || got.ConfigHash != want.ConfigHash {
			t.Fatalf("parse %q: %+v %v", text, got, err)
		}
	}
	for name, text := range map[string]string{
		"empty":        "",
		"no vrf":       "qpc-kt-0123456789abcdef+01234567+AXjf1OP8oTq7vnf1M6Vd9XIcqzE7w0sj4YyzrfuOS1Ms\nconfig 00",
		"bad hex":      strings.Replace(pinText, "vrf-key 8d", "vrf-key zz", 1),
		"short config": strings.Replace(pinText, "config 0f1e", "config 0f", 1),
		"junk":         pinText + "extra",
	} {
		if _, err := ParseKTPin(text); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseKTPin(f *testing.F) {
	f.Add(pinText)
	f.Add(strings.ReplaceAll(pinText, "\n", " "))
	f.Add("vrf-key")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseKTPin(s)
		if err != nil {
			return
		}
		// What parses round-trips through String.
		q, err := ParseKTPin(p.String())
		if err != nil || q.VKey != p.VKey || string(q.VRFKey) != string(p.VRFKey) || q.ConfigHash != p.ConfigHash {
			t.Fatalf("round trip: %v", err)
		}
	})
}
