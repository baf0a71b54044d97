package accounts

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
)

// cheapKSF: the tests cannot afford 64 MiB of Argon2id per login. Key
// stretching runs only on the client (RFC 9807 §10.8), so the server code
// under test is the production code; account.TestProductionKSF covers the
// default parameters.
var cheapKSF = account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 64, Threads: 1})

const testIdentity = "qpc-test-server-pin"

// fixedStart is the injected clock's start: not on an hour boundary, so
// that coarse times are visibly rounded.
var fixedStart = time.Date(2026, 11, 26, 10, 17, 42, 0, time.UTC)

var bg = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t     testing.TB
	dir   string
	keys  *Keys
	svc   *Service
	clock *clock
	opts  Options
}

func newEnv(t testing.TB, opts Options) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &clock{t: fixedStart}}
	if opts.Now == nil {
		opts.Now = e.clock.Now
	}
	e.opts = opts
	e.open()
	t.Cleanup(func() { e.svc.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	keys, err := LoadOrCreateKeys(e.dir, []byte(testIdentity))
	if err != nil {
		e.t.Fatal(err)
	}
	svc, err := Open(e.dir, keys, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.keys, e.svc = keys, svc
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.svc.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// dev returns device ID number b; dev(0) is the zero ID, which the
// server refuses.
func dev(b byte) account.DeviceID {
	if b == 0 {
		return account.DeviceID{}
	}
	return account.DeviceID{b, 0xD0}
}

// register runs a registration as a real client would, through the
// bodies of package account.
func (e *env) register(username, password string, d byte) (Session, error) {
	e.t.Helper()
	reg, startBody, err := account.ClientRegister(username, []byte(password), []byte(testIdentity), cheapKSF)
	if err != nil {
		e.t.Fatal(err)
	}
	start, err := account.UnmarshalRegisterStart(startBody)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := e.svc.RegisterStart(bg, start.Username, start.Request)
	if err != nil {
		return Session{}, err
	}
	respBody, err := (&account.RegisterResponse{Response: resp}).Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	finBody, _, err := reg.Finish(respBody, dev(d), "device")
	if err != nil {
		e.t.Fatal(err)
	}
	fin, err := account.UnmarshalRegisterFinish(finBody)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.svc.RegisterFinish(bg, start.Username, fin.Record, fin.Device, fin.DeviceName)
}

func (e *env) mustRegister(username, password string, d byte) Session {
	e.t.Helper()
	s, err := e.register(username, password, d)
	if err != nil {
		e.t.Fatalf("register %s: %v", username, err)
	}
	return s
}

// login runs a login as a client would. When the client cannot
// authenticate the server (wrong password, unknown user) it sends what an
// attacker would, a random KE3, and the server's verdict is returned.
func (e *env) login(username, password string, d byte) (Session, error) {
	e.t.Helper()
	return e.loginFrom(Source{}, username, password, d)
}

// loginFrom is login from src: LoginStartFrom, then LoginFinish with the
// client's KE3, or a random one if the password is wrong.
func (e *env) loginFrom(src Source, username, password string, d byte) (Session, error) {
	e.t.Helper()
	l, lsBody, err := account.ClientLogin(username, []byte(password), []byte(testIdentity), cheapKSF)
	if err != nil {
		e.t.Fatal(err)
	}
	ls, err := account.UnmarshalLoginStart(lsBody)
	if err != nil {
		e.t.Fatal(err)
	}
	ke2, st, err := e.svc.LoginStartFrom(bg, src, ls.Username, ls.KE1)
	if err != nil {
		return Session{}, err
	}
	if len(ke2) != account.KE2Size {
		e.t.Fatalf("KE2 of %d bytes", len(ke2))
	}
	lrBody, err := (&account.LoginResponse{KE2: ke2}).Marshal()
	if err != nil {
		e.t.Fatal(err)
	}
	lfBody, _, _, err := l.Finish(lrBody, dev(d), "device")
	if err != nil {
		if !errors.Is(err, account.ErrLoginFailed) {
			e.t.Fatalf("client: %v", err)
		}
		ke3 := make([]byte, account.KE3Size)
		rand.Read(ke3)
		return e.svc.LoginFinish(bg, st, ke3, dev(d), "device")
	}
	lf, err := account.UnmarshalLoginFinish(lfBody)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.svc.LoginFinish(bg, st, lf.KE3, lf.Device, lf.DeviceName)
}

func (e *env) mustLogin(username, password string, d byte) Session {
	e.t.Helper()
	s, err := e.login(username, password, d)
	if err != nil {
		e.t.Fatalf("login %s: %v", username, err)
	}
	return s
}

func (e *env) mustLoginFrom(src Source, username, password string, d byte) Session {
	e.t.Helper()
	s, err := e.loginFrom(src, username, password, d)
	if err != nil {
		e.t.Fatalf("login %s: %v", username, err)
	}
	return s
}

func (e *env) mustAuth(s Session) {
	e.t.Helper()
	a, d, err := e.svc.Authenticate(bg, s.Token)
	if err != nil || a != s.Account || d != s.Device {
		e.t.Fatalf("Authenticate = %x, %x, %v; want %x, %x", a, d, err, s.Account, s.Device)
	}
}

func (e *env) mustNotAuth(s Session) {
	e.t.Helper()
	if _, _, err := e.svc.Authenticate(bg, s.Token); !errors.Is(err, ErrAuth) {
		e.t.Fatalf("Authenticate of a dead session: %v", err)
	}
}

func is(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
}
