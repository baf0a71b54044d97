package wire

import "golang.org/x/crypto/cryptobyte"

// Account and token records (docs/protocol.md §4.9, §4.10).
//
// Account exchanges (registration, login, devices, password change,
// deletion) travel as AccountRequest/AccountReply records whose bodies are
// owned and decoded by package account: this package only frames them,
// so the wire layer stays free of OPAQUE. A registration, login or
// password change is several records on one stream; the server keeps no
// state between streams.
//
// Nothing here is ever sent on the anonymous path: Send and CreateMailbox
// carry only a token in their Auth field, never a session.
const (
	KindAccountRequest   Kind = 0x30
	KindAccountReply     Kind = 0x31
	KindTokenKeys        Kind = 0x32
	KindTokenKeyList     Kind = 0x33
	KindIssueTokens      Kind = 0x34
	KindTokensIssued     Kind = 0x35
	KindTokenQuota       Kind = 0x38
	KindTokenQuotaStatus Kind = 0x39
)

// Account operations carried in AccountRequest/AccountReply.
const (
	AccountRegisterStart        uint8 = 1
	AccountRegisterResponse     uint8 = 2
	AccountRegisterFinish       uint8 = 3
	AccountLoginStart           uint8 = 4
	AccountLoginResponse        uint8 = 5
	AccountLoginFinish          uint8 = 6
	AccountSessionIssued        uint8 = 7
	AccountListDevices          uint8 = 8
	AccountDeviceList           uint8 = 9
	AccountRevokeDevice         uint8 = 10
	AccountChangePasswordStart  uint8 = 11
	AccountChangePasswordFinish uint8 = 12
	AccountDeleteAccount        uint8 = 13
	AccountDone                 uint8 = 14
	maxAccountOp                      = AccountDone
)

// MaxAccountBody bounds an account body; OPAQUE messages are a few hundred
// bytes, the device list a few KiB.
const MaxAccountBody = 16 << 10

// SessionSize is the size of an account session token.
const SessionSize = 32

// AccountRequest is one client step of an account exchange (§4.9).
type AccountRequest struct {
	Op   uint8
	Body []byte
}

// AccountReply is one server step of an account exchange (§4.9).
type AccountReply struct {
	Op   uint8
	Body []byte
}

// TokenKeys asks for the token public keys; it needs no session (§4.10).
type TokenKeys struct{}

// EpochKey is one epoch's token public key.
type EpochKey struct {
	Epoch uint32
	Key   []byte
}

// TokenKeyList answers TokenKeys (§4.10).
type TokenKeyList struct {
	Current      uint32 // the epoch tokens are issued for now
	EpochSeconds uint32
	Keys         []EpochKey
}

// IssueTokens asks for a batch of blinded tokens on a session (§4.10).
type IssueTokens struct {
	Session [SessionSize]byte
	Request []byte // a tokens.TokenRequest
}

// TokensIssued returns the evaluations and their proof (§4.10).
type TokensIssued struct {
	Response []byte // a tokens.TokenResponse
}

// TokenQuota asks how many tokens the session's account may take per
// epoch and how many it took in the current one (§4.10). It changes
// nothing, so a client may ask again after a lost reply.
type TokenQuota struct {
	Session [SessionSize]byte
}

// TokenQuotaStatus answers TokenQuota (§4.10).
type TokenQuotaStatus struct {
	Epoch        uint32 // the current epoch
	EpochSeconds uint32 // its length
	Quota        uint32 // tokens per account per epoch
	Issued       uint32 // tokens issued to this account in Epoch
}

// Token limits.
const (
	MaxTokenRequest = 8 << 10
	MaxEpochKeys    = 8
	MaxEpochKey     = 255
)

func (*AccountRequest) Kind() Kind   { return KindAccountRequest }
func (*AccountReply) Kind() Kind     { return KindAccountReply }
func (*TokenKeys) Kind() Kind        { return KindTokenKeys }
func (*TokenKeyList) Kind() Kind     { return KindTokenKeyList }
func (*IssueTokens) Kind() Kind      { return KindIssueTokens }
func (*TokensIssued) Kind() Kind     { return KindTokensIssued }
func (*TokenQuota) Kind() Kind       { return KindTokenQuota }
func (*TokenQuotaStatus) Kind() Kind { return KindTokenQuotaStatus }

func marshalOpBody(b *cryptobyte.Builder, op uint8, body []byte) {
	b.AddUint8(op)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(body) })
}

func unmarshalOpBody(s *cryptobyte.String, op *uint8, body *[]byte) bool {
	var v cryptobyte.String
	if !s.ReadUint8(op) || *op == 0 || *op > maxAccountOp ||
		!s.ReadUint24LengthPrefixed(&v) || len(v) > MaxAccountBody {
		return false
	}
	*body = append([]byte(nil), v...)
	return true
}

func (m *AccountRequest) marshal(b *cryptobyte.Builder) { marshalOpBody(b, m.Op, m.Body) }
func (m *AccountRequest) unmarshal(s *cryptobyte.String) bool {
	return unmarshalOpBody(s, &m.Op, &m.Body)
}
func (m *AccountReply) marshal(b *cryptobyte.Builder) { marshalOpBody(b, m.Op, m.Body) }
func (m *AccountReply) unmarshal(s *cryptobyte.String) bool {
	return unmarshalOpBody(s, &m.Op, &m.Body)
}

func (*TokenKeys) marshal(*cryptobyte.Builder)       {}
func (*TokenKeys) unmarshal(*cryptobyte.String) bool { return true }

func (m *TokenKeyList) marshal(b *cryptobyte.Builder) {
	b.AddUint32(m.Current)
	b.AddUint32(m.EpochSeconds)
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, k := range m.Keys {
			b.AddUint32(k.Epoch)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(k.Key) })
		}
	})
}

func (m *TokenKeyList) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint32(&m.Current) || !s.ReadUint32(&m.EpochSeconds) || !s.ReadUint8LengthPrefixed(&v) {
		return false
	}
	m.Keys = nil
	for !v.Empty() {
		var k EpochKey
		var key cryptobyte.String
		if !v.ReadUint32(&k.Epoch) || !v.ReadUint8LengthPrefixed(&key) || len(m.Keys) == MaxEpochKeys {
			return false
		}
		k.Key = append([]byte(nil), key...)
		m.Keys = append(m.Keys, k)
	}
	return true
}

func (m *IssueTokens) marshal(b *cryptobyte.Builder) {
	b.AddBytes(m.Session[:])
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Request) })
}

func (m *IssueTokens) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.CopyBytes(m.Session[:]) || !s.ReadUint16LengthPrefixed(&v) || len(v) > MaxTokenRequest {
		return false
	}
	m.Request = append([]byte(nil), v...)
	return true
}

func (m *TokensIssued) marshal(b *cryptobyte.Builder) {
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(m.Response) })
}

func (m *TokensIssued) unmarshal(s *cryptobyte.String) bool {
	var v cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&v) || len(v) > MaxTokenRequest {
		return false
	}
	m.Response = append([]byte(nil), v...)
	return true
}

func (m *TokenQuota) marshal(b *cryptobyte.Builder)       { b.AddBytes(m.Session[:]) }
func (m *TokenQuota) unmarshal(s *cryptobyte.String) bool { return s.CopyBytes(m.Session[:]) }

func (m *TokenQuotaStatus) marshal(b *cryptobyte.Builder) {
	b.AddUint32(m.Epoch)
	b.AddUint32(m.EpochSeconds)
	b.AddUint32(m.Quota)
	b.AddUint32(m.Issued)
}

func (m *TokenQuotaStatus) unmarshal(s *cryptobyte.String) bool {
	return s.ReadUint32(&m.Epoch) && s.ReadUint32(&m.EpochSeconds) && s.ReadUint32(&m.Quota) && s.ReadUint32(&m.Issued)
}
