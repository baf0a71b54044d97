package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"net"
	"strings"
	"testing"
)

func otherKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type ed25519PublicKey = ed25519.PublicKey

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// stopAndScanLog stops ts and fails the test for every non-empty string
// of secrets its log contains (after checking that the log was captured
// at all: the start and the shutdown are in it).
func stopAndScanLog(t *testing.T, ts *testServer, secrets []string) {
	t.Helper()
	ts.stop()
	logs := ts.logs.String()
	if !strings.Contains(logs, "listening") || !strings.Contains(logs, "shut down") {
		t.Fatalf("log capture is not working:\n%s", logs)
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("server log contains %q", s)
		}
	}
}

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func listenLocal() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }
