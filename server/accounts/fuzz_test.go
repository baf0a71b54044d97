package accounts

import (
	"errors"
	"testing"

	"github.com/quicprochat/qpc/account"
)

// FuzzServerInputs feeds arbitrary client bytes to every entry point that
// takes them before authentication. None may panic, and every failure must
// be one of the documented sentinel errors, never an unclassified one.
// TakeKeyPackage (an anonymous fetch by handle) must not fail at all: any
// name answers a KeyPackage or nothing.
func FuzzServerInputs(f *testing.F) {
	e := newEnv(f, Options{MaxFailures: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30, RegisterRate: 1e9, RegisterBurst: 1 << 30})
	alice := e.mustRegister("alice", "pw", 1)
	if _, err := e.svc.UploadKeyPackages(bg, alice.Account, [][]byte{[]byte("kp")}, 10); err != nil {
		f.Fatal(err)
	}
	_, lsBody, _ := account.ClientLogin("alice", []byte("pw"), []byte(testIdentity), cheapKSF)
	ls, _ := account.UnmarshalLoginStart(lsBody)
	_, rsBody, _ := account.ClientRegister("bob", []byte("pw"), []byte(testIdentity), cheapKSF)
	rs, _ := account.UnmarshalRegisterStart(rsBody)
	f.Add("alice", ls.KE1)
	f.Add("bob", rs.Request)
	f.Add("ghost", make([]byte, account.RegistrationRecordSize))
	f.Add("x", []byte{})
	f.Add("alice", make([]byte, account.KE3Size))
	sentinel := func(err error) bool {
		for _, s := range []error{ErrMalformed, ErrInvalidUsername, ErrTaken, ErrAuth, ErrRateLimited} {
			if errors.Is(err, s) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, username string, in []byte) {
		if kp, err := e.svc.TakeKeyPackage(bg, username); err != nil || (kp != nil && username != "alice") {
			t.Fatalf("TakeKeyPackage(%q) = %q, %v", username, kp, err)
		}
		ke2, st, err := e.svc.LoginStart(bg, username, in)
		if err != nil && !sentinel(err) {
			t.Fatalf("LoginStart: %v", err)
		}
		if err == nil {
			if len(ke2) != account.KE2Size {
				t.Fatalf("KE2 of %d bytes", len(ke2))
			}
			if _, err := e.svc.LoginFinish(bg, st, in, dev(1), "d"); !sentinel(err) {
				t.Fatalf("LoginFinish with junk KE3: %v", err)
			}
		}
		if _, err := e.svc.RegisterStart(bg, username, in); err != nil && !sentinel(err) {
			t.Fatalf("RegisterStart: %v", err)
		}
		if username == "alice" {
			return // a valid record would re-register alice: not what this target is about
		}
		if _, err := e.svc.RegisterFinish(bg, username, in, dev(1), "d"); err != nil && !sentinel(err) {
			t.Fatalf("RegisterFinish: %v", err)
		}
	})
}
