package e2e

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"net"
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

func base64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func listenLocal() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }
