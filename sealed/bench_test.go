package sealed

import (
	"crypto/rand"
	"testing"

	"github.com/cloudflare/circl/hpke"
	"github.com/quicprochat/qpc/padding"
)

// The same envelope (1 KiB of content, 2 KiB bucket) under X-Wing and under
// DHKEM(X25519, HKDF-SHA256), to price the post-quantum half of the KEM.

func benchKey(b *testing.B, id hpke.KEM) *MailboxPrivateKey {
	k, err := deriveKey(id, seed("bench "+id.Scheme().Name()))
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func benchSeal(b *testing.B, id hpke.KEM) {
	rk := benchKey(b, id)
	s := testSender("alice", "alice")
	content := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := seal(rand.Reader, padding.V1, rk.Public(), testMailbox, s, ContentMLS, content, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func benchOpen(b *testing.B, id hpke.KEM) {
	rk := benchKey(b, id)
	env, err := seal(rand.Reader, padding.V1, rk.Public(), testMailbox, testSender("alice", "alice"), ContentMLS, make([]byte, 1024), testNow)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(rk, testMailbox, env, testNow, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSealXWing(b *testing.B)  { benchSeal(b, hpke.KEM_XWING) }
func BenchmarkOpenXWing(b *testing.B)  { benchOpen(b, hpke.KEM_XWING) }
func BenchmarkSealX25519(b *testing.B) { benchSeal(b, hpke.KEM_X25519_HKDF_SHA256) }
func BenchmarkOpenX25519(b *testing.B) { benchOpen(b, hpke.KEM_X25519_HKDF_SHA256) }
