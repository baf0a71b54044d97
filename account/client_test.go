package account

import (
	"bytes"
	"errors"
	"testing"

	"github.com/bytemare/opaque"
	"golang.org/x/crypto/cryptobyte"
)

type bytesBuilder struct{ cryptobyte.Builder }

// rawServer is a bare OPAQUE server from the library, so that this package
// tests its client flows without importing the server.
type rawServer struct {
	conf     *opaque.Configuration
	skm      *opaque.ServerKeyMaterial
	identity []byte
}

func newRawServer(t testing.TB) *rawServer {
	conf := Configuration()
	sk, pk := conf.KeyGen()
	id := []byte("test-server-pin")
	return &rawServer{conf: conf, identity: id, skm: &opaque.ServerKeyMaterial{
		PrivateKey: sk, PublicKeyBytes: pk.Encode(), OPRFGlobalSeed: conf.GenerateOPRFSeed(), Identity: id,
	}}
}

func (s *rawServer) server(t testing.TB) *opaque.Server {
	srv, err := s.conf.Server()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetKeyMaterial(s.skm); err != nil {
		t.Fatal(err)
	}
	return srv
}

// registrationResponse returns a RegisterResponse body for start.
func (s *rawServer) registrationResponse(t testing.TB, start *RegisterStart) []byte {
	srv := s.server(t)
	req, err := srv.Deserialize.RegistrationRequest(start.Request)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.RegistrationResponse(req, []byte(start.Username), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := (&RegisterResponse{Response: resp.Serialize()}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// ke2 answers ls with record (nil: a fake record) and returns the
// LoginResponse body and a function checking a LoginFinish body.
func (s *rawServer) ke2(t testing.TB, username string, ls *LoginStart, record []byte) ([]byte, func(lf []byte) error) {
	srv := s.server(t)
	ke1, err := srv.Deserialize.KE1(ls.KE1)
	if err != nil {
		t.Fatal(err)
	}
	var rec *opaque.ClientRecord
	if record == nil {
		rec, err = s.conf.GetFakeRecord([]byte(username))
		if err != nil {
			t.Fatal(err)
		}
	} else {
		rr, err := srv.Deserialize.RegistrationRecord(record)
		if err != nil {
			t.Fatal(err)
		}
		rec = &opaque.ClientRecord{RegistrationRecord: rr, CredentialIdentifier: []byte(username)}
	}
	rec.ClientIdentity = []byte(username)
	ke2, out, err := srv.GenerateKE2(ke1, rec)
	if err != nil {
		t.Fatal(err)
	}
	body, err := (&LoginResponse{KE2: ke2.Serialize()}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return body, func(lfBody []byte) error {
		lf, err := UnmarshalLoginFinish(lfBody)
		if err != nil {
			return err
		}
		ke3, err := srv.Deserialize.KE3(lf.KE3)
		if err != nil {
			return err
		}
		return srv.LoginFinish(ke3, out.ClientMAC)
	}
}

// register runs a whole registration and returns the stored record.
func (s *rawServer) register(t testing.TB, username string, password []byte, opts ...ClientOption) []byte {
	reg, startBody, err := ClientRegister(username, password, s.identity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	start, err := UnmarshalRegisterStart(startBody)
	if err != nil {
		t.Fatal(err)
	}
	finBody, exportKey, err := reg.Finish(s.registrationResponse(t, start), DeviceID{1}, "phone")
	if err != nil {
		t.Fatal(err)
	}
	if len(exportKey) != 64 {
		t.Fatalf("export key of %d bytes", len(exportKey))
	}
	fin, err := UnmarshalRegisterFinish(finBody)
	if err != nil {
		t.Fatal(err)
	}
	if fin.Device != (DeviceID{1}) || fin.DeviceName != "phone" {
		t.Fatalf("RegisterFinish = %+v", fin)
	}
	return fin.Record
}

// login runs a whole login against record; it returns the client's error.
func (s *rawServer) login(t testing.TB, username string, password []byte, record []byte, opts ...ClientOption) error {
	l, lsBody, err := ClientLogin(username, password, s.identity, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := UnmarshalLoginStart(lsBody)
	if err != nil {
		t.Fatal(err)
	}
	lr, check := s.ke2(t, ls.Username, ls, record)
	lfBody, sessionKey, _, err := l.Finish(lr, DeviceID{2}, "laptop")
	if err != nil {
		return err
	}
	if len(sessionKey) != 64 {
		t.Fatalf("session key of %d bytes", len(sessionKey))
	}
	if err := check(lfBody); err != nil {
		t.Fatalf("server rejected a KE3 the client produced: %v", err)
	}
	return nil
}

func TestClientFlows(t *testing.T) {
	s := newRawServer(t)
	rec := s.register(t, "Alice", []byte("correct horse"), cheapKSF) // folded to "alice"
	if err := s.login(t, "alice", []byte("correct horse"), rec, cheapKSF); err != nil {
		t.Fatalf("login: %v", err)
	}
	if err := s.login(t, "ALICE", []byte("correct horse"), rec, cheapKSF); err != nil {
		t.Fatalf("login with folded case: %v", err)
	}
	if err := s.login(t, "alice", []byte("wrong"), rec, cheapKSF); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if err := s.login(t, "nobody", []byte("x"), nil, cheapKSF); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("unknown user: %v", err)
	}
	// Different KSF parameters are a different password.
	other := WithKSF(KSFParams{Time: 2, MemoryKiB: 64, Threads: 1})
	if err := s.login(t, "alice", []byte("correct horse"), rec, other); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("other KSF parameters: %v", err)
	}
	// The server identity is bound into the envelope (RFC 9807 §10.3).
	s2 := *s
	s2.identity = []byte("another-pin")
	if err := s2.login(t, "alice", []byte("correct horse"), rec, cheapKSF); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("other server identity: %v", err)
	}
}

func TestClientMisuse(t *testing.T) {
	s := newRawServer(t)
	if _, _, err := ClientRegister("a b", []byte("pw"), s.identity); !errors.Is(err, ErrInvalidUsername) {
		t.Fatalf("bad username: %v", err)
	}
	if _, _, err := ClientLogin("alice", nil, s.identity); err == nil {
		t.Fatal("empty password accepted")
	}
	if _, _, err := ClientLogin("alice", []byte("pw"), nil); err == nil {
		t.Fatal("empty server identity accepted")
	}
	reg, startBody, err := ClientRegister("alice", []byte("pw"), s.identity, cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Finish([]byte{1, 2, 3}, DeviceID{1}, ""); !errors.Is(err, ErrMalformed) {
		t.Fatalf("garbage response: %v", err)
	}
	start, _ := UnmarshalRegisterStart(startBody)
	if _, _, err := reg.Finish(s.registrationResponse(t, start), DeviceID{1}, ""); err == nil {
		t.Fatal("second Finish accepted")
	}
	// A RegisterResponse of the right size whose elements do not decode.
	reg2, _, _ := ClientRegister("alice", []byte("pw"), s.identity, cheapKSF)
	junk, _ := (&RegisterResponse{Response: fill(RegistrationResponseSize, 0xFF)}).Marshal()
	if _, _, err := reg2.Finish(junk, DeviceID{1}, ""); !errors.Is(err, ErrMalformed) {
		t.Fatalf("undecodable response: %v", err)
	}
	l, _, _ := ClientLogin("alice", []byte("pw"), s.identity, cheapKSF)
	junk, _ = (&LoginResponse{KE2: fill(KE2Size, 0xFF)}).Marshal()
	if _, _, _, err := l.Finish(junk, DeviceID{1}, ""); !errors.Is(err, ErrMalformed) {
		t.Fatalf("undecodable KE2: %v", err)
	}
}

func TestClientChangePassword(t *testing.T) {
	s := newRawServer(t)
	tok := Token(fill(TokenSize, 9))
	pc, body, err := ClientChangePassword(tok, "alice", []byte("new"), s.identity, cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := UnmarshalChangePasswordStart(body)
	if err != nil || cps.Session != tok {
		t.Fatalf("ChangePasswordStart: %+v, %v", cps, err)
	}
	resp := s.registrationResponse(t, &RegisterStart{Username: "alice", Request: cps.Request})
	finBody, _, err := pc.Finish(resp)
	if err != nil {
		t.Fatal(err)
	}
	fin, err := UnmarshalChangePasswordFinish(finBody)
	if err != nil || fin.Session != tok {
		t.Fatalf("ChangePasswordFinish: %+v, %v", fin, err)
	}
	if err := s.login(t, "alice", []byte("new"), fin.Record, cheapKSF); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
}

// TestProductionKSF runs one registration and login with DefaultKSF
// (Argon2id, 64 MiB), the path every real client takes.
func TestProductionKSF(t *testing.T) {
	if DefaultKSF != (KSFParams{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}) {
		t.Fatalf("DefaultKSF = %+v", DefaultKSF)
	}
	s := newRawServer(t)
	rec := s.register(t, "alice", []byte("pw"))
	if err := s.login(t, "alice", []byte("pw"), rec); err != nil {
		t.Fatalf("login: %v", err)
	}
	// A record made with DefaultKSF does not open with the test parameters,
	// which shows the option really changes the stretching.
	if err := s.login(t, "alice", []byte("pw"), rec, cheapKSF); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("cheap KSF on a default record: %v", err)
	}
	if bytes.Equal(rec, s.register(t, "alice", []byte("pw"))) {
		t.Fatal("two registrations produced the same record")
	}
}
