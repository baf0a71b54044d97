package account

import (
	"bytes"
	"slices"

	"golang.org/x/crypto/cryptobyte"
)

// Wire grammar (TLS presentation language, as in RFC 8446 §3):
//
//	opaque Username<3..32>;          /* u8 length, normalised */
//	opaque DeviceName<0..64>;        /* u8 length, UTF-8, no controls */
//	opaque DeviceID[16];
//	opaque Token[32];
//
//	struct { Username username; opaque request<32>; }      RegisterStart;
//	struct { opaque response<64>; }                        RegisterResponse;
//	struct { opaque record<192>; DeviceID device;
//	         DeviceName name; }                            RegisterFinish;
//	struct { Username username; opaque ke1<96>; }          LoginStart;
//	struct { opaque ke2<320>; }                            LoginResponse;
//	struct { opaque ke3<64>; DeviceID device;
//	         DeviceName name; }                            LoginFinish;
//	struct { Token token; uint64 expiry; }                 SessionIssued;
//	struct { Token session; }                              ListDevices;
//	struct { DeviceID id; DeviceName name;
//	         uint64 created; uint64 last_used; }           DeviceInfo;
//	struct { DeviceInfo devices<0..2^16-1>; }              DeviceList;  /* ≤ MaxDevices entries */
//	struct { Token session; DeviceID device; }             RevokeDevice;
//	struct { Token session; opaque request<32>; }          ChangePasswordStart;
//	struct { Token session; opaque record<192>; }          ChangePasswordFinish;
//	struct { Token session; }                              DeleteAccount;
//
// An OPAQUE message travels as a u16-length vector whose length must be
// exactly the size RFC 9807 fixes for the configuration (the <N> above),
// so that a future configuration can change sizes under a new protocol
// version without a new framing. Times are Unix seconds.

// RegisterStart opens a registration (RFC 9807 §5.2.1 output).
type RegisterStart struct {
	Username string
	Request  []byte // serialized RegistrationRequest
}

// RegisterResponse answers RegisterStart and ChangePasswordStart
// (RFC 9807 §5.2.2 output).
type RegisterResponse struct {
	Response []byte // serialized RegistrationResponse
}

// RegisterFinish completes a registration (RFC 9807 §5.2.3 output) and
// names the device that receives the first session.
type RegisterFinish struct {
	Record     []byte // serialized RegistrationRecord
	Device     DeviceID
	DeviceName string
}

// LoginStart opens a login (RFC 9807 §6.2.1, KE1).
type LoginStart struct {
	Username string
	KE1      []byte
}

// LoginResponse answers LoginStart (RFC 9807 §6.2.2, KE2).
type LoginResponse struct {
	KE2 []byte
}

// LoginFinish completes a login (RFC 9807 §6.2.3, KE3) for a device.
type LoginFinish struct {
	KE3        []byte
	Device     DeviceID
	DeviceName string
}

// SessionIssued answers RegisterFinish and LoginFinish.
type SessionIssued struct {
	Token  Token
	Expiry uint64 // Unix seconds
}

// ListDevices asks for the account's devices.
type ListDevices struct {
	Session Token
}

// DeviceInfo is one entry of a DeviceList. Times are coarse (the server
// keeps them to the hour).
type DeviceInfo struct {
	ID       DeviceID
	Name     string
	Created  uint64 // Unix seconds
	LastUsed uint64 // Unix seconds
}

// DeviceList answers ListDevices.
type DeviceList struct {
	Devices []DeviceInfo
}

// RevokeDevice deletes a device of the account and its sessions.
type RevokeDevice struct {
	Session Token
	Device  DeviceID
}

// ChangePasswordStart opens a password change: a fresh registration
// (RFC 9807 §8, "Handling password changes") under an existing session.
type ChangePasswordStart struct {
	Session Token
	Request []byte // serialized RegistrationRequest
}

// ChangePasswordFinish completes a password change.
type ChangePasswordFinish struct {
	Session Token
	Record  []byte // serialized RegistrationRecord
}

// DeleteAccount deletes the session's account.
type DeleteAccount struct {
	Session Token
}

// body is implemented by every message. unmarshal reads exactly the
// message from s; valid applies the limits the grammar alone does not.
type body interface {
	marshal(b *cryptobyte.Builder)
	unmarshal(s *cryptobyte.String) bool
	valid() bool
}

func encode(m body) ([]byte, error) {
	if !m.valid() {
		return nil, ErrMalformed
	}
	var b cryptobyte.Builder
	m.marshal(&b)
	out, err := b.Bytes()
	if err != nil {
		return nil, ErrMalformed
	}
	return out, nil
}

// decode parses body into a fresh T. It accepts only a body that parses
// completely, passes valid, and re-encodes to the same bytes, so that each
// message has exactly one encoding. Byte fields are copies: the caller may
// reuse its buffer.
func decode[T any, PT interface {
	*T
	body
}](in []byte) (*T, error) {
	m := PT(new(T))
	s := cryptobyte.String(in)
	if !m.unmarshal(&s) || !s.Empty() || !m.valid() {
		return nil, ErrMalformed
	}
	again, err := encode(m)
	if err != nil || !bytes.Equal(again, in) {
		return nil, ErrMalformed
	}
	return (*T)(m), nil
}

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *RegisterStart) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *RegisterResponse) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *RegisterFinish) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *LoginStart) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *LoginResponse) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *LoginFinish) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *SessionIssued) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *ListDevices) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *DeviceList) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *RevokeDevice) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *ChangePasswordStart) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *ChangePasswordFinish) Marshal() ([]byte, error) { return encode(m) }

// Marshal encodes m; ErrMalformed if a field is outside its limits.
func (m *DeleteAccount) Marshal() ([]byte, error) { return encode(m) }

// UnmarshalRegisterStart decodes a RegisterStart body.
func UnmarshalRegisterStart(b []byte) (*RegisterStart, error) { return decode[RegisterStart](b) }

// UnmarshalRegisterResponse decodes a RegisterResponse body.
func UnmarshalRegisterResponse(b []byte) (*RegisterResponse, error) {
	return decode[RegisterResponse](b)
}

// UnmarshalRegisterFinish decodes a RegisterFinish body.
func UnmarshalRegisterFinish(b []byte) (*RegisterFinish, error) { return decode[RegisterFinish](b) }

// UnmarshalLoginStart decodes a LoginStart body.
func UnmarshalLoginStart(b []byte) (*LoginStart, error) { return decode[LoginStart](b) }

// UnmarshalLoginResponse decodes a LoginResponse body.
func UnmarshalLoginResponse(b []byte) (*LoginResponse, error) { return decode[LoginResponse](b) }

// UnmarshalLoginFinish decodes a LoginFinish body.
func UnmarshalLoginFinish(b []byte) (*LoginFinish, error) { return decode[LoginFinish](b) }

// UnmarshalSessionIssued decodes a SessionIssued body.
func UnmarshalSessionIssued(b []byte) (*SessionIssued, error) { return decode[SessionIssued](b) }

// UnmarshalListDevices decodes a ListDevices body.
func UnmarshalListDevices(b []byte) (*ListDevices, error) { return decode[ListDevices](b) }

// UnmarshalDeviceList decodes a DeviceList body.
func UnmarshalDeviceList(b []byte) (*DeviceList, error) { return decode[DeviceList](b) }

// UnmarshalRevokeDevice decodes a RevokeDevice body.
func UnmarshalRevokeDevice(b []byte) (*RevokeDevice, error) { return decode[RevokeDevice](b) }

// UnmarshalChangePasswordStart decodes a ChangePasswordStart body.
func UnmarshalChangePasswordStart(b []byte) (*ChangePasswordStart, error) {
	return decode[ChangePasswordStart](b)
}

// UnmarshalChangePasswordFinish decodes a ChangePasswordFinish body.
func UnmarshalChangePasswordFinish(b []byte) (*ChangePasswordFinish, error) {
	return decode[ChangePasswordFinish](b)
}

// UnmarshalDeleteAccount decodes a DeleteAccount body.
func UnmarshalDeleteAccount(b []byte) (*DeleteAccount, error) { return decode[DeleteAccount](b) }

// ---- field helpers ----

func addU8Vec(b *cryptobyte.Builder, v []byte) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
}

func addU16Vec(b *cryptobyte.Builder, v []byte) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(v) })
}

// readString8 reads a u8-length string of at most limit bytes.
func readString8(s *cryptobyte.String, limit int, out *string) bool {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || len(v) > limit {
		return false
	}
	*out = string(v)
	return true
}

// readExact16 reads a u16-length vector that must be exactly n bytes.
func readExact16(s *cryptobyte.String, n int, out *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) || len(v) != n {
		return false
	}
	*out = slices.Clone([]byte(v))
	return true
}

func readArray(s *cryptobyte.String, out []byte) bool { return s.CopyBytes(out) }

// ---- RegisterStart ----

func (m *RegisterStart) marshal(b *cryptobyte.Builder) {
	addU8Vec(b, []byte(m.Username))
	addU16Vec(b, m.Request)
}

func (m *RegisterStart) unmarshal(s *cryptobyte.String) bool {
	return readString8(s, MaxUsernameLen, &m.Username) &&
		readExact16(s, RegistrationRequestSize, &m.Request)
}

func (m *RegisterStart) valid() bool {
	return validUsername(m.Username) && len(m.Request) == RegistrationRequestSize
}

// ---- RegisterResponse ----

func (m *RegisterResponse) marshal(b *cryptobyte.Builder) { addU16Vec(b, m.Response) }

func (m *RegisterResponse) unmarshal(s *cryptobyte.String) bool {
	return readExact16(s, RegistrationResponseSize, &m.Response)
}

func (m *RegisterResponse) valid() bool { return len(m.Response) == RegistrationResponseSize }

// ---- RegisterFinish ----

func (m *RegisterFinish) marshal(b *cryptobyte.Builder) {
	addU16Vec(b, m.Record)
	b.AddBytes(m.Device[:])
	addU8Vec(b, []byte(m.DeviceName))
}

func (m *RegisterFinish) unmarshal(s *cryptobyte.String) bool {
	return readExact16(s, RegistrationRecordSize, &m.Record) &&
		readArray(s, m.Device[:]) &&
		readString8(s, MaxDeviceNameLen, &m.DeviceName)
}

func (m *RegisterFinish) valid() bool {
	return len(m.Record) == RegistrationRecordSize && ValidDeviceName(m.DeviceName)
}

// ---- LoginStart ----

func (m *LoginStart) marshal(b *cryptobyte.Builder) {
	addU8Vec(b, []byte(m.Username))
	addU16Vec(b, m.KE1)
}

func (m *LoginStart) unmarshal(s *cryptobyte.String) bool {
	return readString8(s, MaxUsernameLen, &m.Username) && readExact16(s, KE1Size, &m.KE1)
}

func (m *LoginStart) valid() bool { return validUsername(m.Username) && len(m.KE1) == KE1Size }

// ---- LoginResponse ----

func (m *LoginResponse) marshal(b *cryptobyte.Builder) { addU16Vec(b, m.KE2) }

func (m *LoginResponse) unmarshal(s *cryptobyte.String) bool { return readExact16(s, KE2Size, &m.KE2) }

func (m *LoginResponse) valid() bool { return len(m.KE2) == KE2Size }

// ---- LoginFinish ----

func (m *LoginFinish) marshal(b *cryptobyte.Builder) {
	addU16Vec(b, m.KE3)
	b.AddBytes(m.Device[:])
	addU8Vec(b, []byte(m.DeviceName))
}

func (m *LoginFinish) unmarshal(s *cryptobyte.String) bool {
	return readExact16(s, KE3Size, &m.KE3) &&
		readArray(s, m.Device[:]) &&
		readString8(s, MaxDeviceNameLen, &m.DeviceName)
}

func (m *LoginFinish) valid() bool { return len(m.KE3) == KE3Size && ValidDeviceName(m.DeviceName) }

// ---- SessionIssued ----

func (m *SessionIssued) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Token[:])
	b.AddUint64(m.Expiry)
}

func (m *SessionIssued) unmarshal(s *cryptobyte.String) bool {
	return readArray(s, m.Token[:]) && s.ReadUint64(&m.Expiry)
}

func (m *SessionIssued) valid() bool { return true }

// ---- ListDevices ----

func (m *ListDevices) marshal(b *cryptobyte.Builder) { b.AddBytes(m.Session[:]) }

func (m *ListDevices) unmarshal(s *cryptobyte.String) bool { return readArray(s, m.Session[:]) }

func (m *ListDevices) valid() bool { return true }

// ---- DeviceList ----

func (m *DeviceList) marshal(b *cryptobyte.Builder) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, d := range m.Devices {
			b.AddBytes(d.ID[:])
			addU8Vec(b, []byte(d.Name))
			b.AddUint64(d.Created)
			b.AddUint64(d.LastUsed)
		}
	})
}

func (m *DeviceList) unmarshal(s *cryptobyte.String) bool {
	var list cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&list) {
		return false
	}
	for !list.Empty() {
		if len(m.Devices) == MaxDevices {
			return false
		}
		var d DeviceInfo
		if !readArray(&list, d.ID[:]) ||
			!readString8(&list, MaxDeviceNameLen, &d.Name) ||
			!list.ReadUint64(&d.Created) ||
			!list.ReadUint64(&d.LastUsed) {
			return false
		}
		m.Devices = append(m.Devices, d)
	}
	return true
}

func (m *DeviceList) valid() bool {
	if len(m.Devices) > MaxDevices {
		return false
	}
	for _, d := range m.Devices {
		if !ValidDeviceName(d.Name) {
			return false
		}
	}
	return true
}

// ---- RevokeDevice ----

func (m *RevokeDevice) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	b.AddBytes(m.Device[:])
}

func (m *RevokeDevice) unmarshal(s *cryptobyte.String) bool {
	return readArray(s, m.Session[:]) && readArray(s, m.Device[:])
}

func (m *RevokeDevice) valid() bool { return true }

// ---- ChangePasswordStart ----

func (m *ChangePasswordStart) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	addU16Vec(b, m.Request)
}

func (m *ChangePasswordStart) unmarshal(s *cryptobyte.String) bool {
	return readArray(s, m.Session[:]) && readExact16(s, RegistrationRequestSize, &m.Request)
}

func (m *ChangePasswordStart) valid() bool { return len(m.Request) == RegistrationRequestSize }

// ---- ChangePasswordFinish ----

func (m *ChangePasswordFinish) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	addU16Vec(b, m.Record)
}

func (m *ChangePasswordFinish) unmarshal(s *cryptobyte.String) bool {
	return readArray(s, m.Session[:]) && readExact16(s, RegistrationRecordSize, &m.Record)
}

func (m *ChangePasswordFinish) valid() bool { return len(m.Record) == RegistrationRecordSize }

// ---- DeleteAccount ----

func (m *DeleteAccount) marshal(b *cryptobyte.Builder) { b.AddBytes(m.Session[:]) }

func (m *DeleteAccount) unmarshal(s *cryptobyte.String) bool { return readArray(s, m.Session[:]) }

func (m *DeleteAccount) valid() bool { return true }
