package tokens

import (
	"testing"
)

// BenchmarkTokenIssue is the server's cost per token when clients ask in
// batches of MaxBatch: one scalar multiplication per element plus one
// batched DLEQ proof per request (RFC 9497 §2.2.1).
func BenchmarkTokenIssue(b *testing.B) {
	iss := newIssuer(b, "bench", &clock{t0})
	pk, _ := iss.PublicKey(iss.Epoch())
	_, req, err := Blind(pk, MaxBatch)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += MaxBatch {
		if _, err := iss.Issue(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenRedeem is the server's cost per redeemed token: parse,
// hash-to-group, one scalar multiplication, SHA-512, constant-time compare.
func BenchmarkTokenRedeem(b *testing.B) {
	iss := newIssuer(b, "bench", &clock{t0})
	toks, err := issue(b, iss, publicKey(b, iss, iss.Epoch()), 1)
	if err != nil {
		b.Fatal(err)
	}
	enc, _ := toks[0].MarshalBinary()
	b.ReportAllocs()
	for b.Loop() {
		tok, err := ParseToken(enc)
		if err != nil {
			b.Fatal(err)
		}
		if err := iss.Redeem(tok); err != nil {
			b.Fatal(err)
		}
		_ = SpendKey(tok)
	}
}

// BenchmarkTokenFinalize is the client's cost per token (batch of
// MaxBatch): proof verification amortised over the batch, plus unblinding.
func BenchmarkTokenFinalize(b *testing.B) {
	iss := newIssuer(b, "bench", &clock{t0})
	pk, _ := iss.PublicKey(iss.Epoch())
	bl, req, err := Blind(pk, MaxBatch)
	if err != nil {
		b.Fatal(err)
	}
	resp, err := iss.Issue(req)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += MaxBatch {
		if _, err := bl.Finalize(resp); err != nil {
			b.Fatal(err)
		}
	}
}
