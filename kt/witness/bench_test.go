package witness_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"

	"github.com/quicprochat/qpc/kt/witness"
)

// BenchmarkWitnessAddCheckpoint is the witness's cost per add-checkpoint:
// "grow" a checkpoint one leaf larger each time (parse, the log's Ed25519
// signature, the consistency proof, the bbolt commit with its fsync, an
// Ed25519 and an ML-DSA-44 cosignature); "same" the same checkpoint again
// (no commit: the checks and the two cosignatures). Compare with
// BenchmarkEd25519Verify in the same run.
func BenchmarkWitnessAddCheckpoint(b *testing.B) {
	for _, mode := range []string{"grow", "same"} {
		b.Run(mode, func(b *testing.B) {
			m, l := newMemLog(b)
			w, err := witness.Open(witness.Options{Dir: b.TempDir(), Name: "witness.test/bench", Logs: []witness.Log{l}, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			ctx := context.Background()
			for i := range 1000 {
				m.append(b, []byte{byte(i), byte(i >> 8)})
			}
			if _, err := w.AddCheckpoint(ctx, m.request(b, 0)); err != nil {
				b.Fatal(err)
			}
			same := m.request(b, m.n)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				body := same
				if mode == "grow" {
					b.StopTimer()
					old := m.n
					m.append(b, []byte{byte(i), byte(i >> 8), byte(i >> 16), 1})
					body = m.request(b, old)
					b.StartTimer()
				}
				if _, err := w.AddCheckpoint(ctx, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEd25519Verify is one Ed25519 verification of a checkpoint-sized
// message: the unit the witness's cost is measured in.
func BenchmarkEd25519Verify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("witness.test/fuzzlog\n1001\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
	sig := ed25519.Sign(priv, msg)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
	}
}
