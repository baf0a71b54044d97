package pgaccounts_test

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/server/accounts"
)

// BenchmarkStore measures the account operations of a day of use on
// both stores in one run (run it several times, alternating, and compare
// the ratios): a registration, a token issue (ConsumeQuota) and a
// KeyPackage take, each a committed transaction. The PostgreSQL cluster
// of pgtest syncs its commits when benchmarks run.
func BenchmarkStore(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) accounts.Store
	}{
		{"bolt", func(b *testing.B) accounts.Store {
			s, err := accounts.OpenBolt(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"postgres", func(b *testing.B) accounts.Store { return open(b, pgtest.DB(b)) }},
	}
	for _, op := range []string{"Register", "ConsumeQuota", "TakeKeyPackage"} {
		for _, st := range stores {
			b.Run(fmt.Sprintf("%s/%s", op, st.name), func(b *testing.B) {
				s := st.open(b)
				t0 := time.Unix(1_800_000_000, 0)
				reg := func() (accounts.CredID, accounts.AccountRef) {
					var cred accounts.CredID
					var a accounts.StoredAccount
					ns := accounts.NewSession{Now: t0, Expiry: t0.Add(time.Hour), DeviceName: "d"}
					rand.Read(cred[:])
					rand.Read(a.Ref[:])
					rand.Read(ns.Hash[:])
					rand.Read(ns.Device[:])
					a.Created = t0
					if err := s.Register(bg, cred, a, ns); err != nil {
						b.Fatal(err)
					}
					return cred, a.Ref
				}
				cred, ref := reg()
				if op == "TakeKeyPackage" {
					kps := make([][]byte, b.N)
					for i := range kps {
						kps[i] = make([]byte, 300)
					}
					if _, err := s.AddKeyPackages(bg, ref, kps, b.N); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for range b.N {
					switch op {
					case "Register":
						reg()
					case "ConsumeQuota":
						if err := s.ConsumeQuota(bg, ref, 1, 1, 1<<30); err != nil {
							b.Fatal(err)
						}
					case "TakeKeyPackage":
						if kp, err := s.TakeKeyPackage(bg, cred); err != nil || kp == nil {
							b.Fatal(kp, err)
						}
					}
				}
			})
		}
	}
}
