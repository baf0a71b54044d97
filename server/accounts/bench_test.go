package accounts

import (
	"fmt"
	"testing"

	"github.com/quicprochat/qpc/account"
)

func benchEnv(b *testing.B) *env {
	e := newEnv(b, Options{MaxFailures: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30, RegisterRate: 1e9, RegisterBurst: 1 << 30})
	e.mustRegister("alice", "pw", 1)
	return e
}

// BenchmarkServerLogin is the server's cost of one login: LoginStart and
// LoginFinish, including the fsynced session write. The client's work
// (its key stretching above all) runs with the timer stopped.
func BenchmarkServerLogin(b *testing.B) {
	e := benchEnv(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		l, lsBody, _ := account.ClientLogin("alice", []byte("pw"), []byte(testIdentity), cheapKSF)
		ls, _ := account.UnmarshalLoginStart(lsBody)
		b.StartTimer()
		ke2, st, err := e.svc.LoginStart(bg, ls.Username, ls.KE1)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		lr, _ := (&account.LoginResponse{KE2: ke2}).Marshal()
		lfBody, _, _, err := l.Finish(lr, dev(2), "d")
		if err != nil {
			b.Fatal(err)
		}
		lf, _ := account.UnmarshalLoginFinish(lfBody)
		b.StartTimer()
		if _, err := e.svc.LoginFinish(bg, st, lf.KE3, lf.Device, lf.DeviceName); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoginStart is LoginStart alone (the OPAQUE work and one read),
// the part an unauthenticated client can make the server do.
func BenchmarkLoginStart(b *testing.B) {
	e := benchEnv(b)
	_, lsBody, _ := account.ClientLogin("alice", []byte("pw"), []byte(testIdentity), cheapKSF)
	ls, _ := account.UnmarshalLoginStart(lsBody)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := e.svc.LoginStart(bg, ls.Username, ls.KE1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegister is the server's cost of one registration:
// RegisterStart and RegisterFinish (fsynced account, device and session).
func BenchmarkRegister(b *testing.B) {
	e := benchEnv(b)
	b.ReportAllocs()
	i := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		name := fmt.Sprintf("bench%08d", i)
		i++
		reg, body, _ := account.ClientRegister(name, []byte("pw"), []byte(testIdentity), cheapKSF)
		rs, _ := account.UnmarshalRegisterStart(body)
		b.StartTimer()
		resp, err := e.svc.RegisterStart(bg, rs.Username, rs.Request)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		rb, _ := (&account.RegisterResponse{Response: resp}).Marshal()
		fin, _, err := reg.Finish(rb, dev(1), "d")
		if err != nil {
			b.Fatal(err)
		}
		f, _ := account.UnmarshalRegisterFinish(fin)
		b.StartTimer()
		if _, err := e.svc.RegisterFinish(bg, rs.Username, f.Record, f.Device, f.DeviceName); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticate is the per-request cost of a session check (a read
// transaction; the hourly last-used write is amortised away).
func BenchmarkAuthenticate(b *testing.B) {
	e := benchEnv(b)
	s := e.mustLogin("alice", "pw", 2)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := e.svc.Authenticate(bg, s.Token); err != nil {
			b.Fatal(err)
		}
	}
}
