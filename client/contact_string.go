package client

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/quicprochat/qpc/client/content"
)

// Contact strings. A contact string names a user and pins their identity
// key: "qpc:contact:<handle>#<fingerprint>", the fingerprint being the
// first 16 bytes of SHA-256 of the Ed25519 identity public key, in lower
// hex. Shown as a QR code and scanned (or copied) out of band, it lets
// AddContactString refuse a key-transparency answer with another key:
// the verification a safety-number comparison does, done in one step.

// ContactStringPrefix starts every contact string.
const ContactStringPrefix = "qpc:contact:"

// ErrFingerprint reports a key-transparency identity key that does not
// match the fingerprint of a contact string.
var ErrFingerprint = errors.New("the identity key in key transparency does not match the contact string's fingerprint")

// Fingerprint is the hex of the first 16 bytes of SHA-256(key).
func Fingerprint(key ed25519.PublicKey) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:16])
}

// FormatContactString returns "qpc:contact:<handle>#<Fingerprint(key)>".
func FormatContactString(handle string, key ed25519.PublicKey) string {
	return ContactStringPrefix + handle + "#" + Fingerprint(key)
}

// IsContactString reports whether s looks like a contact string (rather
// than a bare handle).
func IsContactString(s string) bool { return strings.HasPrefix(s, ContactStringPrefix) }

// ParseContactString splits a contact string into the handle and the
// fingerprint (32 lower-case hex digits).
func ParseContactString(s string) (handle, fingerprint string, err error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), ContactStringPrefix)
	if !ok {
		return "", "", fmt.Errorf("not a contact string (want %s<handle>#<fingerprint>)", ContactStringPrefix)
	}
	handle, fp, ok := strings.Cut(rest, "#")
	if !ok {
		return "", "", fmt.Errorf("contact string without a fingerprint (want %s<handle>#<fingerprint>)", ContactStringPrefix)
	}
	if err := content.ValidHandle(handle); err != nil {
		return "", "", fmt.Errorf("contact string: %q is not a valid handle", handle)
	}
	fp = strings.ToLower(fp)
	if b, err := hex.DecodeString(fp); err != nil || len(b) != 16 {
		return "", "", fmt.Errorf("contact string: the fingerprint must be 32 hex digits")
	}
	return handle, fp, nil
}

// ContactString returns the contact string of handle: the user's own for
// "" (or their own handle), else that of a stored contact.
func (c *Client) ContactString(handle string) (string, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return "", ErrNotRegistered
	}
	if handle == "" || handle == c.prof.Handle {
		return FormatContactString(c.prof.Handle, c.prof.IdentityKey.Public().(ed25519.PublicKey)), nil
	}
	ct, err := c.contact(handle)
	if err != nil {
		return "", err
	}
	if ct == nil {
		return "", fmt.Errorf("%s: %w", handle, ErrNoSuchConv)
	}
	return FormatContactString(ct.Handle, ct.IdentityKey), nil
}

// AddContactString adds the contact a contact string names, like
// AddContact, but first checks that the identity key key transparency
// proves for the handle has the string's fingerprint; if not it stores
// nothing and fails with ErrFingerprint.
func (c *Client) AddContactString(ctx context.Context, s string) (*Contact, error) {
	handle, fp, err := ParseContactString(s)
	if err != nil {
		return nil, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	if c.prof.Handle == "" {
		return nil, ErrNotRegistered
	}
	if handle == c.prof.Handle {
		return nil, fmt.Errorf("that is you")
	}
	res, b, err := c.lookupLabel(ctx, handle)
	if err != nil {
		return nil, err
	}
	if res.Version == 0 {
		return nil, fmt.Errorf("%s: %w", handle, ErrNoSuchUser)
	}
	if b.Tombstone || len(b.IdentityKeys) == 0 {
		return nil, fmt.Errorf("%s: %w", handle, ErrUserDeleted)
	}
	if Fingerprint(b.IdentityKeys[0]) != fp {
		return nil, fmt.Errorf("%s: %w: refusing to add (the key may have changed, or the string is wrong)", handle, ErrFingerprint)
	}
	ct, err := c.lookup(ctx, handle, true)
	if err != nil {
		return nil, err
	}
	if Fingerprint(ct.IdentityKey) != fp { // changed between the two lookups
		return nil, fmt.Errorf("%s: %w", handle, ErrFingerprint)
	}
	return ct, nil
}
