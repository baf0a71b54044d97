package mls

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// A stored group state in two parts (docs/adr/0044-ratchets-apart.md).
//
// Marshal's output changes with every message sent or read, but only in
// its secret tree (RFC 9420 §9: the per-leaf handshake and application
// ratchets and the tree's remaining node secrets); the rest (the group
// context, the ratchet tree, our HPKE and signature keys, the epoch
// secrets, the cached proposals) changes with the epoch. SplitState cuts
// a state into that rest, the base, and the secret tree, the ratchets, so
// that an application can rewrite only the small part per message.
//
// The base is Marshal's output with the secret tree left out and the
// version byte baseVersion, so that a base is never read as a full state.
// The ratchets are
//
//	ratchetsVersion u8 | epoch u64 | opaque SHA-256(base) | secret tree
//
// JoinState accepts ratchets only with the base they were cut from (the
// hash): ratchets of another epoch or another state of the same epoch
// are refused as ErrInvalidState, never combined.

const (
	baseVersion     = 0x81
	ratchetsVersion = 0x82
)

// stateParts cuts data, a state of the given version byte (stateVersion:
// Marshal's output; baseVersion: a base), into what precedes the secret
// tree, the tree itself (empty in a base) and what follows it.
func stateParts(data []byte, version uint8) (pre, tree, post []byte, epoch uint64, suite *CipherSuite, err error) {
	s := cryptobyte.String(data)
	var v uint8
	var suiteID uint16
	if !s.ReadUint8(&v) || v != version || !s.ReadUint16(&suiteID) {
		return nil, nil, nil, 0, nil, fmt.Errorf("%w: state version", ErrInvalidState)
	}
	suite, err = LookupCipherSuite(CipherSuiteID(suiteID))
	if err != nil {
		return nil, nil, nil, 0, nil, fmt.Errorf("%w: %w", ErrInvalidState, err)
	}
	var ctx GroupContext
	var rt RatchetTree
	var leaf uint32
	ok := ctx.unmarshal(&s) && rt.unmarshal(&s) && s.ReadUint32(&leaf) &&
		readList(&s, func(v *cryptobyte.String) bool {
			var k uint32
			var pub, priv []byte
			return v.ReadUint32(&k) && readOpaque(v, &pub) && readOpaque(v, &priv)
		})
	for i := 0; ok && i < 3+len(epochSecretFields(&EpochSecrets{})); i++ {
		var skip []byte
		ok = readOpaque(&s, &skip)
	}
	if !ok {
		return nil, nil, nil, 0, nil, fmt.Errorf("%w: %w", ErrInvalidState, ErrMalformed)
	}
	off := len(data) - len(s)
	end := off
	if version == stateVersion {
		var st SecretTree
		if !st.unmarshal(&s, suite) {
			return nil, nil, nil, 0, nil, fmt.Errorf("%w: secret tree: %w", ErrInvalidState, ErrMalformed)
		}
		end = len(data) - len(s)
	}
	return data[1:off], data[off:end], data[end:], ctx.Epoch, suite, nil
}

// SplitState cuts state, Marshal's output, into its base and its
// ratchets (see above). A base is equal for two states of one group
// whose only difference is their ratchets.
func SplitState(state []byte) (base, ratchets []byte, err error) {
	pre, tree, post, epoch, _, err := stateParts(state, stateVersion)
	if err != nil {
		return nil, nil, err
	}
	base = make([]byte, 0, 1+len(pre)+len(post))
	base = append(append(append(base, baseVersion), pre...), post...)
	h := sha256.Sum256(base)
	ratchets, err = encode("GroupRatchets", func(b *cryptobyte.Builder) {
		b.AddUint8(ratchetsVersion)
		b.AddUint64(epoch)
		addOpaque(b, h[:])
		b.AddBytes(tree)
	})
	return base, ratchets, err
}

// JoinState returns the state (Marshal's output, for UnmarshalGroup)
// that SplitState cut into base and ratchets. Ratchets cut from another
// state are refused.
func JoinState(base, ratchets []byte) ([]byte, error) {
	pre, _, post, epoch, suite, err := stateParts(base, baseVersion)
	if err != nil {
		return nil, err
	}
	s := cryptobyte.String(ratchets)
	var v uint8
	var rEpoch uint64
	var h []byte
	if !s.ReadUint8(&v) || v != ratchetsVersion || !s.ReadUint64(&rEpoch) || !readOpaque(&s, &h) {
		return nil, fmt.Errorf("%w: ratchets: %w", ErrInvalidState, ErrMalformed)
	}
	want := sha256.Sum256(base)
	if rEpoch != epoch || subtle.ConstantTimeCompare(h, want[:]) != 1 {
		return nil, fmt.Errorf("%w: ratchets of epoch %d do not belong to this state of epoch %d", ErrInvalidState, rEpoch, epoch)
	}
	tree := []byte(s)
	var st SecretTree
	if !st.unmarshal(&s, suite) || !s.Empty() {
		return nil, fmt.Errorf("%w: ratchets' secret tree: %w", ErrInvalidState, ErrMalformed)
	}
	var buf bytes.Buffer
	buf.Grow(1 + len(pre) + len(tree) + len(post))
	buf.WriteByte(stateVersion)
	buf.Write(pre)
	buf.Write(tree)
	buf.Write(post)
	return buf.Bytes(), nil
}

// SameBase reports whether ratchets a and b were cut from the same base
// (their bases' hashes are equal), without the bases. Malformed ratchets
// are never the same.
func SameBase(a, b []byte) bool {
	ha, ok1 := ratchetsBaseHash(a)
	hb, ok2 := ratchetsBaseHash(b)
	return ok1 && ok2 && bytes.Equal(ha, hb)
}

func ratchetsBaseHash(ratchets []byte) ([]byte, bool) {
	s := cryptobyte.String(ratchets)
	var v uint8
	var epoch uint64
	var h []byte
	if !s.ReadUint8(&v) || v != ratchetsVersion || !s.ReadUint64(&epoch) || !readOpaque(&s, &h) || len(h) != sha256.Size {
		return nil, false
	}
	return h, true
}
