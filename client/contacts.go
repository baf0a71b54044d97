package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/wire"
)

// Contact is a user as the key-transparency directory proved them.
type Contact struct {
	Handle      string
	IdentityKey ed25519.PublicKey
	DeviceKeys  [][]byte // MLS signature keys of the account's devices
	KeyPackages [][]byte
	IntroSendID wire.ID
	IntroKey    []byte
	Version     uint32    // the KT version these keys came from
	ValueHash   [32]byte  // SHA-256 of that version's binding (zero in contacts stored before it was kept)
	Added       bool      // the user added this contact (not just met in a group)
	Checked     time.Time // when the keys were last looked up
	// SafetyNumber is 60 digits both sides compute alike from both
	// identity keys; compare it out of band (docs/user-guide.md).
	SafetyNumber string
}

// SafetyNumber returns the safety number of two users: for each, the first
// 30 bytes of SHA-512("qpc safety number v1" || 0 || u8 len || handle ||
// identity key) as six 5-digit groups (big-endian 40-bit chunks mod
// 100000), the two halves ordered by handle. Both sides get the same 60
// digits; a different key on either side changes them.
func SafetyNumber(handleA string, keyA ed25519.PublicKey, handleB string, keyB ed25519.PublicKey) string {
	half := func(h string, k ed25519.PublicKey) string {
		d := sha512.New()
		d.Write([]byte("qpc safety number v1\x00"))
		d.Write([]byte{byte(len(h))})
		d.Write([]byte(h))
		d.Write(k)
		sum := d.Sum(nil)
		var b strings.Builder
		for i := 0; i < 30; i += 5 {
			var chunk [8]byte
			copy(chunk[3:], sum[i:i+5])
			fmt.Fprintf(&b, "%05d", binary.BigEndian.Uint64(chunk[:])%100000)
		}
		return b.String()
	}
	a, b := half(handleA, keyA), half(handleB, keyB)
	if handleB < handleA {
		a, b = b, a
	}
	return a + b
}

// FormatSafetyNumber groups a safety number in fives for reading aloud.
func FormatSafetyNumber(sn string) string {
	var parts []string
	for i := 0; i+5 <= len(sn); i += 5 {
		parts = append(parts, sn[i:i+5])
	}
	return strings.Join(parts, " ")
}

// AddContact looks handle up in key transparency, verifies the proof and
// the binding's signature, and keeps the contact.
func (c *Client) AddContact(ctx context.Context, handle string) (*Contact, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return nil, ErrNotRegistered
	}
	if handle == c.prof.Handle {
		return nil, fmt.Errorf("that is you")
	}
	ct, err := c.lookup(ctx, handle, true)
	if err != nil {
		return nil, err
	}
	return ct, nil
}

// Contacts lists the contacts the user added, by handle.
func (c *Client) Contacts() ([]Contact, error) {
	c.op.Lock()
	defer c.op.Unlock()
	var out []Contact
	err := c.store.View(func(tx *state.Tx) error {
		return tx.ForEach(bucketContacts, func(_, v []byte) error {
			var ct Contact
			if err := jsonUnmarshal(v, &ct); err != nil {
				return err
			}
			if ct.Added {
				out = append(out, ct)
			}
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Contact) int { return strings.Compare(a.Handle, b.Handle) })
	return out, err
}

// contact returns a stored contact, or nil.
func (c *Client) contact(handle string) (*Contact, error) {
	var ct *Contact
	err := c.store.View(func(tx *state.Tx) error {
		var v Contact
		err := getJSON(tx, bucketContacts, []byte(handle), &v)
		if errors.Is(err, state.ErrNoEntry) {
			return nil
		}
		ct = &v
		return err
	})
	return ct, err
}

// lookup fetches handle's binding from key transparency (on a connection
// of its own, see lookupLabel), verifies it and stores the contact; added marks a contact
// the user asked for. A changed identity key raises an alarm.
func (c *Client) lookup(ctx context.Context, handle string, added bool) (*Contact, error) {
	if err := content.ValidHandle(handle); err != nil {
		return nil, fmt.Errorf("%q is not a valid handle", handle)
	}
	res, b, err := c.lookupLabel(ctx, handle)
	if err != nil {
		c.raiseLookupError(err)
		return nil, err
	}
	return c.acceptLookup(ctx, handle, res, b, added)
}

// raiseLookupError raises the alarms a failed lookup calls for.
func (c *Client) raiseLookupError(err error) {
	if errors.Is(err, kt.ErrInconsistent) {
		c.raise(Alarm{Kind: AlarmKT, Detail: "the server's key-transparency log is inconsistent with the one it showed before: " + err.Error()})
	}
	c.raiseUncosigned(err)
}

// acceptLookup checks a verified lookup of handle against the stored
// contact and stores it (lookup).
func (c *Client) acceptLookup(ctx context.Context, handle string, res *kt.LookupResult, b *kt.Binding, added bool) (*Contact, error) {
	prev, err := c.contact(handle)
	if err != nil {
		return nil, err
	}
	valueHash := sha256.Sum256(res.Value)
	if err := c.checkContactVersion(handle, prev, res, valueHash); err != nil {
		return nil, err
	}
	if res.Version == 0 {
		return nil, fmt.Errorf("%s: %w", handle, ErrNoSuchUser)
	}
	if b.Tombstone {
		return nil, fmt.Errorf("%s: %w", handle, ErrUserDeleted)
	}
	c.checkTokenCommitments(ctx, handle, b) // tokenkeys.go
	ct := &Contact{
		Handle: handle, IdentityKey: b.IdentityKeys[0], DeviceKeys: b.DeviceKeys, KeyPackages: b.KeyPackages,
		IntroSendID: b.IntroSendID, IntroKey: b.IntroKey, Version: res.Version, ValueHash: valueHash, Added: added, Checked: c.opts.Now(),
		SafetyNumber: SafetyNumber(c.prof.Handle, c.prof.IdentityKey.Public().(ed25519.PublicKey), handle, b.IdentityKeys[0]),
	}
	if prev != nil {
		ct.Added = ct.Added || prev.Added
		if !prev.IdentityKey.Equal(ct.IdentityKey) {
			c.raise(Alarm{Kind: AlarmKeyChange, Detail: fmt.Sprintf("%s has a new identity key (KT version %d); compare the new safety number", handle, res.Version)})
		}
	}
	err = c.store.Update(func(tx *state.Tx) error {
		if err := c.putProfile(tx); err != nil {
			return err
		}
		return putJSON(tx, bucketContacts, []byte(handle), ct)
	})
	return ct, err
}

// raiseUncosigned raises the alarm for a checkpoint that lacks the
// cosignatures of the pinned witness policy (kt.ErrCosignature), with the
// checkpoint as evidence: the server answered with a view of its log no
// quorum of witnesses vouched for, possibly a history shown to this
// client alone. It reports whether err was one.
func (c *Client) raiseUncosigned(err error) bool {
	var ce *kt.CosignatureError
	if !errors.As(err, &ce) {
		return false
	}
	c.raise(Alarm{Kind: AlarmKT, Evidence: [][]byte{ce.Checkpoint},
		Detail: "the server answered with a key-transparency checkpoint its witnesses did not cosign (" + ce.Error() + "): it may be showing you a history of its own"})
	return true
}

// ErrKTVersionRollback reports a lookup that shows a contact at an older
// key-transparency version than one seen before, or the same version with
// another binding: versions only grow, so the server shows this client a
// different directory than before (an alarm, like a split view). The
// answer is not used.
var ErrKTVersionRollback = errors.New("the key-transparency directory went back on a contact's version")

// checkContactVersion compares a verified lookup of handle with the stored
// contact: the version never goes back, and one version has one value.
// Each lookup proves the greatest version at the newest epoch of a log
// consistent with every earlier one, so an honest directory cannot show
// less.
func (c *Client) checkContactVersion(handle string, prev *Contact, res *kt.LookupResult, valueHash [32]byte) error {
	if prev == nil || prev.Version == 0 {
		return nil
	}
	var detail string
	switch {
	case res.Version < prev.Version:
		detail = fmt.Sprintf("the key-transparency log shows %s at version %d after version %d", handle, res.Version, prev.Version)
	case res.Version == prev.Version && prev.ValueHash != [32]byte{} && subtle.ConstantTimeCompare(valueHash[:], prev.ValueHash[:]) != 1:
		detail = fmt.Sprintf("the key-transparency log shows another binding for %s at version %d than before", handle, res.Version)
	default:
		return nil
	}
	c.raise(Alarm{Kind: AlarmKT, Detail: detail + ": the server shows this device a different directory than before", Evidence: [][]byte{res.Checkpoint.Raw}})
	return fmt.Errorf("%s: %w (version %d after %d)", handle, ErrKTVersionRollback, res.Version, prev.Version)
}

// ensureContact returns a contact whose keys were checked within maxAge,
// looking it up otherwise.
func (c *Client) ensureContact(ctx context.Context, handle string, maxAge time.Duration) (*Contact, error) {
	ct, err := c.contact(handle)
	if err != nil {
		return nil, err
	}
	if ct != nil && c.opts.Now().Sub(ct.Checked) < maxAge {
		return ct, nil
	}
	return c.lookup(ctx, handle, false)
}

// verifyMember is the MLS MemberVerifier: a member's credential must name
// a handle whose key-transparency binding lists the member's signature key.
func (c *Client) verifyMember(ctx context.Context) mls.MemberVerifier {
	return func(cred mls.Credential, sigKey []byte) error {
		if cred.Type != mls.CredentialTypeBasic {
			return fmt.Errorf("member credential is not a handle")
		}
		handle := string(cred.Identity)
		if handle == c.prof.Handle {
			if bytes.Equal(sigKey, c.prof.MLSSigPub) {
				return nil
			}
			return fmt.Errorf("a member claims to be you with another key")
		}
		ct, err := c.ensureContact(ctx, handle, time.Hour)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(ct.DeviceKeys, func(k []byte) bool { return bytes.Equal(k, sigKey) }) {
			return nil
		}
		// Perhaps a new device since the last lookup.
		if ct, err = c.lookup(ctx, handle, ct.Added); err != nil {
			return err
		}
		if slices.ContainsFunc(ct.DeviceKeys, func(k []byte) bool { return bytes.Equal(k, sigKey) }) {
			return nil
		}
		return fmt.Errorf("member %s: signature key not in key transparency", handle)
	}
}
