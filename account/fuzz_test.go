package account

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/bytemare/opaque"
)

// seed adds the valid encodings of every sample, which fuzzing mutates
// into near-misses of every message, plus a few degenerate inputs.
func seed(f *testing.F) {
	for _, m := range samples() {
		enc, err := encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add(bytes.Repeat([]byte{0xFF}, 400))
}

// fuzzDecoder checks the decoder contract: no panic; failure is exactly
// ErrMalformed; success re-encodes to the same bytes, and decodes again to
// an equal value.
func fuzzDecoder[T any, PT interface {
	*T
	body
}](f *testing.F, dec func([]byte) (*T, error)) {
	seed(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := dec(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || m != nil {
				t.Fatalf("failure %v with value %v", err, m)
			}
			return
		}
		enc, err := encode(PT(m))
		if err != nil {
			t.Fatalf("decoded value does not encode: %v", err)
		}
		if !bytes.Equal(enc, in) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", in, enc)
		}
		again, err := dec(enc)
		if err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("second decode: %+v, %v", again, err)
		}
	})
}

func FuzzRegisterStart(f *testing.F)    { fuzzDecoder(f, UnmarshalRegisterStart) }
func FuzzRegisterResponse(f *testing.F) { fuzzDecoder(f, UnmarshalRegisterResponse) }
func FuzzRegisterFinish(f *testing.F)   { fuzzDecoder(f, UnmarshalRegisterFinish) }
func FuzzLoginStart(f *testing.F)       { fuzzDecoder(f, UnmarshalLoginStart) }
func FuzzLoginResponse(f *testing.F)    { fuzzDecoder(f, UnmarshalLoginResponse) }
func FuzzLoginFinish(f *testing.F)      { fuzzDecoder(f, UnmarshalLoginFinish) }
func FuzzSessionIssued(f *testing.F)    { fuzzDecoder(f, UnmarshalSessionIssued) }
func FuzzListDevices(f *testing.F)      { fuzzDecoder(f, UnmarshalListDevices) }
func FuzzDeviceList(f *testing.F)       { fuzzDecoder(f, UnmarshalDeviceList) }
func FuzzRevokeDevice(f *testing.F)     { fuzzDecoder(f, UnmarshalRevokeDevice) }
func FuzzChangePasswordStart(f *testing.F) {
	fuzzDecoder(f, UnmarshalChangePasswordStart)
}
func FuzzChangePasswordFinish(f *testing.F) {
	fuzzDecoder(f, UnmarshalChangePasswordFinish)
}
func FuzzDeleteAccount(f *testing.F) { fuzzDecoder(f, UnmarshalDeleteAccount) }

// FuzzOPAQUEMessages feeds arbitrary bytes to the library's deserializers
// of the messages a server receives (RegistrationRequest,
// RegistrationRecord, KE1, KE3) and of those a client receives
// (RegistrationResponse, KE2). None may panic; each must either fail or
// return a message that serializes back to its input, which shows the
// server never acts on bytes other than those it was sent.
func FuzzOPAQUEMessages(f *testing.F) {
	s := newRawServer(f)
	rec := s.register(f, "alice", []byte("pw"), cheapKSF)
	_, lsBody, err := ClientLogin("alice", []byte("pw"), s.identity, cheapKSF)
	if err != nil {
		f.Fatal(err)
	}
	ls, _ := UnmarshalLoginStart(lsBody)
	lr, _ := s.ke2(f, "alice", ls, rec)
	ke2, _ := UnmarshalLoginResponse(lr)
	_, rsBody, _ := ClientRegister("alice", []byte("pw"), s.identity, cheapKSF)
	rs, _ := UnmarshalRegisterStart(rsBody)
	for _, b := range [][]byte{rec, ls.KE1, ke2.KE2, rs.Request, fill(KE3Size, 7), fill(KE3Size, 0), fill(RegistrationRecordSize, 0xFF), {}} {
		f.Add(b)
	}
	d, err := Configuration().Deserializer()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(name string, ser func() []byte, err error) {
			if err != nil {
				var oe *opaque.Error
				if !errors.As(err, &oe) {
					t.Fatalf("%s: error %v is not an *opaque.Error", name, err)
				}
				return
			}
			if out := ser(); !bytes.Equal(out, in) {
				t.Fatalf("%s: accepted %x, serializes to %x", name, in, out)
			}
		}
		rq, err := d.RegistrationRequest(in)
		check("RegistrationRequest", func() []byte { return rq.Serialize() }, err)
		rp, err := d.RegistrationResponse(in)
		check("RegistrationResponse", func() []byte { return rp.Serialize() }, err)
		rr, err := d.RegistrationRecord(in)
		check("RegistrationRecord", func() []byte { return rr.Serialize() }, err)
		ke1, err := d.KE1(in)
		check("KE1", func() []byte { return ke1.Serialize() }, err)
		ke2, err := d.KE2(in)
		check("KE2", func() []byte { return ke2.Serialize() }, err)
		ke3, err := d.KE3(in)
		check("KE3", func() []byte { return ke3.Serialize() }, err)
	})
}

// TestOPAQUEDeserializersRejectGarbage is the deterministic part of
// FuzzOPAQUEMessages: wrong lengths, all-zero and all-0xFF inputs of the
// right length (not valid ristretto255 encodings, or zero nonces/MACs) are
// refused by every server-side deserializer.
func TestOPAQUEDeserializersRejectGarbage(t *testing.T) {
	d, err := Configuration().Deserializer()
	if err != nil {
		t.Fatal(err)
	}
	type deser func([]byte) error
	for name, c := range map[string]struct {
		size int
		f    deser
	}{
		"RegistrationRequest": {RegistrationRequestSize, func(b []byte) error { _, err := d.RegistrationRequest(b); return err }},
		"RegistrationRecord":  {RegistrationRecordSize, func(b []byte) error { _, err := d.RegistrationRecord(b); return err }},
		"KE1":                 {KE1Size, func(b []byte) error { _, err := d.KE1(b); return err }},
		"KE3":                 {KE3Size, func(b []byte) error { _, err := d.KE3(b); return err }},
	} {
		for _, in := range [][]byte{nil, fill(c.size-1, 1), fill(c.size+1, 1), fill(c.size, 0)} {
			if c.f(in) == nil {
				t.Errorf("%s accepted %d bytes %x...", name, len(in), in[:min(len(in), 4)])
			}
		}
		if name != "KE3" { // any non-zero 64 bytes are a syntactically valid KE3 MAC
			if c.f(fill(c.size, 0xFF)) == nil {
				t.Errorf("%s accepted all-0xFF", name)
			}
		}
	}
}
