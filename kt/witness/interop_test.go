package witness_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/circl/sign/mldsa/mldsa44"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// TestCosignInterop: a checkpoint cosigned by our witness verifies with
// verifiers that share no code with it: golang.org/x/mod/sumdb/note plus
// transparency-dev/formats' cosignature/v1 verifier for the Ed25519
// cosignature; the ML-DSA-44 cosignature checked against the
// tlog-cosignature subtree/v1 message built here from the spec with circl.
func TestCosignInterop(t *testing.T) {
	l := newKTLog(t, "witness.test/log")
	w := newWitness(t, l)
	l.tick(t)
	body := l.request(t, 0)
	start := time.Now().Unix()
	cosigs := w.mustCosign(t, l, body)
	cp, err := l.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	cosigned := append(bytes.Clone(cp.Raw), cosigs...)

	// Ed25519 cosignature/v1 with x/mod note + formats.
	v, err := fnote.NewVerifierForCosignatureV1(w.VerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cosigned, note.VerifierList(v))
	if err != nil {
		t.Fatalf("formats/note cannot verify our cosignature: %v", err)
	}
	if len(n.Sigs) != 1 || n.Sigs[0].Name != "witness.test/w1" {
		t.Fatalf("verified %v", n.Sigs)
	}
	ts, err := fnote.CoSigV1Timestamp(n.Sigs[0])
	if err != nil || ts.Unix() < start || ts.Unix() > time.Now().Unix() {
		t.Fatalf("cosignature time %v (%v), want between %d and now", ts, err, start)
	}
	// The vkey's type byte and key ID are what the spec says.
	parts := strings.SplitN(w.VerifierKey(), "+", 3)
	key, _ := base64.StdEncoding.DecodeString(parts[2])
	if len(key) != 33 || key[0] != 0x04 {
		t.Fatalf("Ed25519 cosigner vkey type %x, len %d", key[0], len(key))
	}

	// ML-DSA-44 subtree/v1, by hand from c2sp.org/tlog-cosignature.
	parts = strings.SplitN(w.MLDSAVerifierKey(), "+", 3)
	key, _ = base64.StdEncoding.DecodeString(parts[2])
	if len(key) != 1+mldsa44.PublicKeySize || key[0] != 0x06 {
		t.Fatalf("ML-DSA-44 vkey type %x, len %d", key[0], len(key))
	}
	var pk mldsa44.PublicKey
	if err := pk.UnmarshalBinary(key[1:]); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSuffix(string(cosigs), "\n"), "\n") {
		f := strings.Fields(strings.TrimPrefix(line, "— "))
		sig, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil || len(sig) != 4+8+mldsa44.SignatureSize {
			continue
		}
		msg := []byte("subtree/v1\n\x00")
		msg = append(msg, byte(len(f[0])))
		msg = append(msg, f[0]...)
		msg = append(msg, sig[4:12]...) // timestamp
		msg = append(msg, byte(len(cp.Origin)))
		msg = append(msg, cp.Origin...)
		msg = binary.BigEndian.AppendUint64(msg, 0)
		msg = binary.BigEndian.AppendUint64(msg, cp.Size)
		msg = append(msg, cp.Root[:]...)
		if !mldsa44.Verify(&pk, msg, nil, sig[12:]) {
			t.Fatal("ML-DSA-44 cosignature does not verify over the subtree/v1 message")
		}
		if ts := int64(binary.BigEndian.Uint64(sig[4:12])); ts < start || ts > time.Now().Unix() {
			t.Fatalf("ML-DSA-44 cosignature time %d", ts)
		}
		found = true
	}
	if !found {
		t.Fatal("no ML-DSA-44 cosignature in the response")
	}
}
