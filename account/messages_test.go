package account

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/bytemare/opaque"
)

// cheapKSF keeps the tests fast; TestProductionKSF covers DefaultKSF.
var cheapKSF = WithKSF(KSFParams{Time: 1, MemoryKiB: 64, Threads: 1})

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// samples returns one valid value of every message.
func samples() []body {
	dev := DeviceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	tok := Token(fill(TokenSize, 0xAA))
	return []body{
		&RegisterStart{Username: "alice", Request: fill(RegistrationRequestSize, 1)},
		&RegisterResponse{Response: fill(RegistrationResponseSize, 2)},
		&RegisterFinish{Record: fill(RegistrationRecordSize, 3), Device: dev, DeviceName: "Alice's phone ☎"},
		&LoginStart{Username: "bob.b-c_d", KE1: fill(KE1Size, 4)},
		&LoginResponse{KE2: fill(KE2Size, 5)},
		&LoginFinish{KE3: fill(KE3Size, 6), Device: dev, DeviceName: ""},
		&SessionIssued{Token: tok, Expiry: 1_800_000_000},
		&ListDevices{Session: tok},
		&DeviceList{Devices: []DeviceInfo{{ID: dev, Name: "laptop", Created: 1, LastUsed: 2}, {ID: DeviceID{9}, Name: strings.Repeat("x", MaxDeviceNameLen), Created: 3, LastUsed: 4}}},
		&DeviceList{},
		&RevokeDevice{Session: tok, Device: dev},
		&ChangePasswordStart{Session: tok, Request: fill(RegistrationRequestSize, 7)},
		&ChangePasswordFinish{Session: tok, Record: fill(RegistrationRecordSize, 8)},
		&DeleteAccount{Session: tok},
	}
}

// decoders maps each message type to its exported decoder.
var decoders = map[string]func([]byte) (any, error){
	"*account.RegisterStart":        func(b []byte) (any, error) { return UnmarshalRegisterStart(b) },
	"*account.RegisterResponse":     func(b []byte) (any, error) { return UnmarshalRegisterResponse(b) },
	"*account.RegisterFinish":       func(b []byte) (any, error) { return UnmarshalRegisterFinish(b) },
	"*account.LoginStart":           func(b []byte) (any, error) { return UnmarshalLoginStart(b) },
	"*account.LoginResponse":        func(b []byte) (any, error) { return UnmarshalLoginResponse(b) },
	"*account.LoginFinish":          func(b []byte) (any, error) { return UnmarshalLoginFinish(b) },
	"*account.SessionIssued":        func(b []byte) (any, error) { return UnmarshalSessionIssued(b) },
	"*account.ListDevices":          func(b []byte) (any, error) { return UnmarshalListDevices(b) },
	"*account.DeviceList":           func(b []byte) (any, error) { return UnmarshalDeviceList(b) },
	"*account.RevokeDevice":         func(b []byte) (any, error) { return UnmarshalRevokeDevice(b) },
	"*account.ChangePasswordStart":  func(b []byte) (any, error) { return UnmarshalChangePasswordStart(b) },
	"*account.ChangePasswordFinish": func(b []byte) (any, error) { return UnmarshalChangePasswordFinish(b) },
	"*account.DeleteAccount":        func(b []byte) (any, error) { return UnmarshalDeleteAccount(b) },
}

func TestRoundTrip(t *testing.T) {
	for _, m := range samples() {
		name := reflect.TypeOf(m).String()
		enc, err := encode(m)
		if err != nil {
			t.Fatalf("%s: encode: %v", name, err)
		}
		got, err := decoders[name](enc)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		want := any(m)
		if dl, ok := m.(*DeviceList); ok && len(dl.Devices) == 0 {
			want = &DeviceList{} // nil and empty lists are the same message
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", name, got, want)
		}
		// Every strict prefix and every extension must be refused.
		for i := range len(enc) {
			if _, err := decoders[name](enc[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s: prefix of %d/%d bytes: err = %v", name, i, len(enc), err)
			}
		}
		if _, err := decoders[name](append(bytes.Clone(enc), 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: trailing byte accepted: %v", name, err)
		}
	}
	if len(decoders) != 13 {
		t.Fatalf("decoders = %d", len(decoders))
	}
}

func TestDecodedBytesDoNotAlias(t *testing.T) {
	enc, _ := (&LoginStart{Username: "alice", KE1: fill(KE1Size, 4)}).Marshal()
	m, err := UnmarshalLoginStart(enc)
	if err != nil {
		t.Fatal(err)
	}
	clear(enc)
	if !bytes.Equal(m.KE1, fill(KE1Size, 4)) {
		t.Fatal("decoded KE1 aliases the input buffer")
	}
}

func TestRejects(t *testing.T) {
	bad := []body{
		&RegisterStart{Username: "Alice", Request: fill(RegistrationRequestSize, 1)}, // not normalised
		&RegisterStart{Username: "al", Request: fill(RegistrationRequestSize, 1)},
		&RegisterStart{Username: strings.Repeat("a", 33), Request: fill(RegistrationRequestSize, 1)},
		&RegisterStart{Username: "al ice", Request: fill(RegistrationRequestSize, 1)},
		&RegisterStart{Username: "alice", Request: fill(RegistrationRequestSize+1, 1)},
		&RegisterResponse{Response: fill(RegistrationResponseSize-1, 2)},
		&RegisterFinish{Record: fill(RegistrationRecordSize, 3), DeviceName: "evil\x1b[2J"},
		&RegisterFinish{Record: fill(RegistrationRecordSize, 3), DeviceName: "\xff\xfe"},
		&RegisterFinish{Record: fill(RegistrationRecordSize, 3), DeviceName: strings.Repeat("x", MaxDeviceNameLen+1)},
		&LoginStart{Username: "alice", KE1: nil},
		&LoginResponse{KE2: fill(KE2Size+1, 5)},
		&LoginFinish{KE3: fill(KE3Size-1, 6)},
		&DeviceList{Devices: make([]DeviceInfo, MaxDevices+1)},
		&ChangePasswordStart{Request: fill(3, 7)},
		&ChangePasswordFinish{Record: fill(RegistrationRecordSize-1, 8)},
	}
	for _, m := range bad {
		if _, err := encode(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("encode %T %+v: err = %v", m, m, err)
		}
		// The same value forced onto the wire must be refused on decode.
		var b bytesBuilder
		m.marshal(&b.Builder)
		enc, err := b.Bytes()
		if err != nil {
			continue
		}
		if _, err := decoders[reflect.TypeOf(m).String()](enc); !errors.Is(err, ErrMalformed) {
			t.Errorf("decode %T %+v: err = %v", m, m, err)
		}
	}
}

func TestNormalizeUsername(t *testing.T) {
	for in, want := range map[string]string{"Alice": "alice", "a.b_c-9": "a.b_c-9", "ABC": "abc", strings.Repeat("z", 32): strings.Repeat("z", 32)} {
		if got, err := NormalizeUsername(in); err != nil || got != want {
			t.Errorf("NormalizeUsername(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "ab", strings.Repeat("z", 33), "al ice", "ålice", "alice\x00", "a/b", "a@b.c"} {
		if _, err := NormalizeUsername(in); !errors.Is(err, ErrInvalidUsername) {
			t.Errorf("NormalizeUsername(%q): err = %v", in, err)
		}
	}
}

// TestSizesMatchLibrary checks the size constants against the messages the
// library really produces in Configuration().
func TestSizesMatchLibrary(t *testing.T) {
	conf := Configuration()
	if err := conf.Equals(Configuration()); err != nil {
		t.Fatal(err)
	}
	def := opaque.DefaultConfiguration()
	if conf.OPRF != def.OPRF || conf.AKE != def.AKE || conf.KSF != def.KSF || conf.Hash != def.Hash || conf.KDF != def.KDF || conf.MAC != def.MAC {
		t.Fatal("Configuration() is not the default suite")
	}
	// Mutating one returned value must not affect the next.
	conf.Context[0] ^= 1
	if Configuration().Context[0] == conf.Context[0] {
		t.Fatal("Configuration() shares its context")
	}
	srv := newRawServer(t)
	reg, startBody, err := ClientRegister("alice", []byte("pw"), srv.identity, cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	start, _ := UnmarshalRegisterStart(startBody)
	resp := srv.registrationResponse(t, start)
	finBody, _, err := reg.Finish(resp, DeviceID{1}, "d")
	if err != nil {
		t.Fatal(err)
	}
	fin, _ := UnmarshalRegisterFinish(finBody)
	login, lsBody, err := ClientLogin("alice", []byte("pw"), srv.identity, cheapKSF)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := UnmarshalLoginStart(lsBody)
	ke2, _ := srv.ke2(t, "alice", ls, fin.Record)
	lfBody, _, _, err := login.Finish(ke2, DeviceID{1}, "d")
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := UnmarshalLoginFinish(lfBody)
	lr, _ := UnmarshalLoginResponse(ke2)
	for name, got := range map[string][2]int{
		"RegistrationRequest":  {len(start.Request), RegistrationRequestSize},
		"RegistrationResponse": {len(resp) - 2, RegistrationResponseSize},
		"RegistrationRecord":   {len(fin.Record), RegistrationRecordSize},
		"KE1":                  {len(ls.KE1), KE1Size},
		"KE2":                  {len(lr.KE2), KE2Size},
		"KE3":                  {len(lf.KE3), KE3Size},
	} {
		if got[0] != got[1] {
			t.Errorf("%s: library %d bytes, constant %d", name, got[0], got[1])
		}
	}
}
