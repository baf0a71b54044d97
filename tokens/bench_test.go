package tokens

import (
	"testing"
)

// BenchmarkTokenIssue is the server's cost per batch of MaxBatch tokens
// (ns/op) and per token (ns/token): one scalar multiplication per element plus one
// batched DLEQ proof per request (RFC 9497 §2.2.1).
func BenchmarkTokenIssue(b *testing.B) {
	iss := newIssuer(b, "bench", &clock{t0})
	pk, _ := iss.PublicKey(iss.Epoch())
	_, req, err := Blind(pk, MaxBatch)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := iss.Issue(req); err != nil {
			b.Fatal(err)
		}
	}
	perToken(b)
}

// perToken reports the time per token of a benchmark whose op is a batch.
func perToken(b *testing.B) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*MaxBatch), "ns/token")
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

// BenchmarkTokenFinalize is the client's cost per batch of MaxBatch and
// per token: proof verification amortised over the batch, plus unblinding.
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
	for b.Loop() {
		if _, err := bl.Finalize(resp); err != nil {
			b.Fatal(err)
		}
	}
	perToken(b)
}
