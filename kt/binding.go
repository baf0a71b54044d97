package kt

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Binding is the value an account publishes under its username: its
// identity keys, device keys, intro mailbox, and the token-key commitments
// it was shown, signed by its first identity key. A new binding is a new
// version; deleting the account publishes a tombstone.
type Binding struct {
	Label        string
	IdentityKeys []ed25519.PublicKey // IdentityKeys[0] signs
	DeviceKeys   [][]byte
	IntroSendID  [32]byte
	IntroKey     []byte // the intro mailbox's sealing public key
	TokenKeys    []TokenKeyCommitment
	// KeyPackages are last-resort MLS KeyPackages (RFC 9420 §10, with the
	// last_resort extension), one per device: a first contact adds the
	// account to a new group with one of them.
	KeyPackages [][]byte
	Tombstone   bool
	Signature   []byte
}

// TokenKeyCommitment is SHA-256 of the token public key the server showed
// this account for one token epoch: every account publishes the keys it was
// shown, so a server that gives one user a key of its own is visible to all.
type TokenKeyCommitment struct {
	Epoch uint32
	Hash  [32]byte
}

// Binding limits.
const (
	maxBindingKeys    = 16
	maxBindingKeySize = 2048
	maxTokenKeys      = 8
	maxKeyPackages    = 4
	maxKeyPackageSize = 8 << 10
)

// ErrBinding reports a binding that does not parse or verify.
var ErrBinding = errors.New("kt: bad binding")

const bindingContext = "qpc-kt binding v2"

func (b *Binding) body() *cryptobyte.Builder {
	var w cryptobyte.Builder
	w.AddUint8LengthPrefixed(func(w *cryptobyte.Builder) { w.AddBytes([]byte(b.Label)) })
	w.AddUint8(uint8(len(b.IdentityKeys)))
	for _, k := range b.IdentityKeys {
		w.AddBytes(k)
	}
	w.AddUint8(uint8(len(b.DeviceKeys)))
	for _, k := range b.DeviceKeys {
		w.AddUint16LengthPrefixed(func(w *cryptobyte.Builder) { w.AddBytes(k) })
	}
	w.AddBytes(b.IntroSendID[:])
	w.AddUint16LengthPrefixed(func(w *cryptobyte.Builder) { w.AddBytes(b.IntroKey) })
	w.AddUint8(uint8(len(b.TokenKeys)))
	for _, t := range b.TokenKeys {
		w.AddUint32(t.Epoch)
		w.AddBytes(t.Hash[:])
	}
	w.AddUint8(uint8(len(b.KeyPackages)))
	for _, kp := range b.KeyPackages {
		w.AddUint16LengthPrefixed(func(w *cryptobyte.Builder) { w.AddBytes(kp) })
	}
	if b.Tombstone {
		w.AddUint8(1)
	} else {
		w.AddUint8(0)
	}
	return &w
}

func (b *Binding) signed() ([]byte, error) {
	body, err := b.body().Bytes()
	if err != nil {
		return nil, err
	}
	return append([]byte(bindingContext), body...), nil
}

// Sign fills Signature with key, which must be IdentityKeys[0]'s.
func (b *Binding) Sign(key ed25519.PrivateKey) error {
	if len(b.IdentityKeys) == 0 || !key.Public().(ed25519.PublicKey).Equal(b.IdentityKeys[0]) {
		return fmt.Errorf("%w: the signing key is not the first identity key", ErrBinding)
	}
	if err := b.check(); err != nil {
		return err
	}
	m, err := b.signed()
	if err != nil {
		return err
	}
	b.Signature = ed25519.Sign(key, m)
	return nil
}

func (b *Binding) check() error {
	switch {
	case len(b.Label) == 0 || len(b.Label) > MaxLabelLen:
		return fmt.Errorf("%w: label", ErrBinding)
	case len(b.IdentityKeys) == 0 || len(b.IdentityKeys) > maxBindingKeys || len(b.DeviceKeys) > maxBindingKeys:
		return fmt.Errorf("%w: key count", ErrBinding)
	case len(b.IntroKey) > maxBindingKeySize || len(b.TokenKeys) > maxTokenKeys:
		return fmt.Errorf("%w: field too large", ErrBinding)
	}
	for _, k := range b.IdentityKeys {
		if len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: identity key size", ErrBinding)
		}
	}
	for _, k := range b.DeviceKeys {
		if len(k) == 0 || len(k) > maxBindingKeySize {
			return fmt.Errorf("%w: device key size", ErrBinding)
		}
	}
	if len(b.KeyPackages) > maxKeyPackages {
		return fmt.Errorf("%w: key package count", ErrBinding)
	}
	for _, kp := range b.KeyPackages {
		if len(kp) == 0 || len(kp) > maxKeyPackageSize {
			return fmt.Errorf("%w: key package size", ErrBinding)
		}
	}
	return nil
}

// Verify checks the signature and that the binding names label.
func (b *Binding) Verify(label string) error {
	if err := b.check(); err != nil {
		return err
	}
	if b.Label != label {
		return fmt.Errorf("%w: binding is for another label", ErrBinding)
	}
	m, err := b.signed()
	if err != nil {
		return err
	}
	if len(b.Signature) != ed25519.SignatureSize || !ed25519.Verify(b.IdentityKeys[0], m, b.Signature) {
		return fmt.Errorf("%w: signature does not verify", ErrBinding)
	}
	return nil
}

// Marshal encodes the binding with its signature.
func (b *Binding) Marshal() []byte {
	w := b.body()
	w.AddBytes(b.Signature)
	return w.BytesOrPanic()
}

// ParseBinding decodes a binding; call Verify before trusting it.
func ParseBinding(raw []byte) (*Binding, error) {
	s := cryptobyte.String(raw)
	b := new(Binding)
	var label cryptobyte.String
	var n uint8
	if !s.ReadUint8LengthPrefixed(&label) || !s.ReadUint8(&n) || n > maxBindingKeys {
		return nil, ErrBinding
	}
	b.Label = string(label)
	for range n {
		var k []byte
		if !s.ReadBytes(&k, ed25519.PublicKeySize) {
			return nil, ErrBinding
		}
		b.IdentityKeys = append(b.IdentityKeys, append(ed25519.PublicKey(nil), k...))
	}
	if !s.ReadUint8(&n) || n > maxBindingKeys {
		return nil, ErrBinding
	}
	for range n {
		var k cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&k) {
			return nil, ErrBinding
		}
		b.DeviceKeys = append(b.DeviceKeys, append([]byte(nil), k...))
	}
	var intro cryptobyte.String
	if !s.CopyBytes(b.IntroSendID[:]) || !s.ReadUint16LengthPrefixed(&intro) || !s.ReadUint8(&n) || n > maxTokenKeys {
		return nil, ErrBinding
	}
	b.IntroKey = append([]byte(nil), intro...)
	for range n {
		var t TokenKeyCommitment
		if !s.ReadUint32(&t.Epoch) || !s.CopyBytes(t.Hash[:]) {
			return nil, ErrBinding
		}
		b.TokenKeys = append(b.TokenKeys, t)
	}
	if !s.ReadUint8(&n) || n > maxKeyPackages {
		return nil, ErrBinding
	}
	for range n {
		var kp cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&kp) || len(kp) == 0 || len(kp) > maxKeyPackageSize {
			return nil, ErrBinding
		}
		b.KeyPackages = append(b.KeyPackages, append([]byte(nil), kp...))
	}
	var tomb uint8
	if !s.ReadUint8(&tomb) || tomb > 1 {
		return nil, ErrBinding
	}
	b.Tombstone = tomb == 1
	var sig []byte
	if !s.ReadBytes(&sig, ed25519.SignatureSize) || !s.Empty() {
		return nil, ErrBinding
	}
	b.Signature = append([]byte(nil), sig...)
	return b, nil
}

// TokenKeyLabel is the label under which the server commits the token
// public key of one token epoch (version 1, never changed). Usernames are
// [a-z0-9._-], so no account can hold such a label.
func TokenKeyLabel(epoch uint32) string { return fmt.Sprintf("qpc:token-key:%d", epoch) }

// TokenEpochLabel is the label under which the server commits its token
// epoch length, once (version 1, never changed): clients check the length
// a server announces against it before they use any token key, so that
// no user is given epochs numbered apart from everyone else's. The value
// is TokenEpochValue.
const TokenEpochLabel = "qpc:token-epoch"

// TokenEpochValue encodes a token epoch length for TokenEpochLabel: u32
// seconds, big-endian (as wire.TokenKeyList.EpochSeconds).
func TokenEpochValue(length time.Duration) []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(length/time.Second))
}

// ParseTokenEpochValue decodes a TokenEpochValue: exactly four bytes,
// a length of at least one second.
func ParseTokenEpochValue(v []byte) (time.Duration, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: a token epoch length of %d bytes, want 4", ErrInvalid, len(v))
	}
	s := binary.BigEndian.Uint32(v)
	if s == 0 {
		return 0, fmt.Errorf("%w: a token epoch length of 0 s", ErrInvalid)
	}
	return time.Duration(s) * time.Second, nil
}
