package client

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/safetext"
)

// How the user names a conversation (docs/user-guide.md, "Addressing
// conversations"). Groups and contacts live in separate namespaces, so
// that a group can never take over a name the user uses for a person:
//
//   - a conversation's hex ID names exactly that conversation, unless it
//     could be a handle (a short ID its creator chose to spell one);
//   - "#name" names the group called name, never a direct chat;
//   - a bare name that is a valid handle names the direct chat with that
//     user, existing or to be started, never a group: a group that Eve
//     called "bob" is reached as "#bob" only;
//   - a bare name that cannot be a handle (upper case, spaces, other
//     scripts...) names the group called so.
//
// Group names are unique among this client's groups: a received name that
// one of them has already gets its creator's handle appended (and a
// number if that is taken too). Names with control, format or bidi
// characters are refused at creation and neutralised on receipt.

// ErrAmbiguousName reports a bare name that could name a person and also
// names a group: it is taken as the person's, and this says how to reach
// the group.
var ErrAmbiguousName = errors.New("a bare name is a contact's handle")

// findConv resolves what the user typed (see above).
func (c *Client) findConv(target string) (*convRecord, error) {
	convs, err := c.allConvs()
	if err != nil {
		return nil, err
	}
	if r := convWithID(convs, target); r != nil {
		return r, nil
	}
	if name, ok := strings.CutPrefix(target, "#"); ok {
		if r := groupNamed(convs, name); r != nil {
			return r, nil
		}
		return nil, ErrNoSuchConv
	}
	var direct *convRecord
	for _, r := range convs {
		if r.Kind == content.ConvDirect && r.Peer == target && r.Active {
			// Both sides may have started one; the smaller group ID wins,
			// so both end up writing into the same one.
			if direct == nil || string(r.ID) < string(direct.ID) {
				direct = r
			}
		}
	}
	if direct != nil {
		return direct, nil
	}
	if content.ValidHandle(target) == nil {
		return nil, ErrNoSuchConv // a person's name: never a group's
	}
	if r := groupNamed(convs, target); r != nil {
		return r, nil
	}
	return nil, ErrNoSuchConv
}

// resolve is findConv for reading: a bare name that names no direct
// chat but one of our groups gets an error that says to write #name.
func (c *Client) resolve(target string) (*convRecord, error) {
	r, err := c.findConv(target)
	if errors.Is(err, ErrNoSuchConv) && !strings.HasPrefix(target, "#") {
		if hint := c.groupNameTaken(target); hint != nil {
			return nil, fmt.Errorf("%w (%w)", ErrNoSuchConv, hint)
		}
	}
	return r, err
}

// findGroup resolves a group for the group commands: by ID, "#name" or
// bare name (a group command means a group).
func (c *Client) findGroup(target string) (*convRecord, error) {
	if !strings.HasPrefix(target, "#") {
		convs, err := c.allConvs()
		if err != nil {
			return nil, err
		}
		if r := convWithID(convs, target); r != nil {
			return r, nil
		}
		target = "#" + target
	}
	return c.findConv(target)
}

// convWithID is the conversation whose hex ID is target, if target
// cannot be a handle: a group's ID is its creator's choice (RFC 9420
// §8.1), and one of two bytes 0xca 0xfe would otherwise take what the
// user sends to the user cafe. The IDs this client makes (32 bytes, 64
// hex digits) are longer than any handle.
func convWithID(convs []*convRecord, target string) *convRecord {
	if content.ValidHandle(target) == nil {
		return nil
	}
	for _, r := range convs {
		if hex.EncodeToString(r.ID) == target {
			return r
		}
	}
	return nil
}

// groupNamed is the group called name: the active one if there is one.
func groupNamed(convs []*convRecord, name string) *convRecord {
	var found *convRecord
	for _, r := range convs {
		if r.Kind == content.ConvGroup && r.Name == name && (found == nil || r.Active && !found.Active) {
			found = r
		}
	}
	return found
}

// groupNameTaken says why a bare name that failed to resolve could be
// meant for a group, for the error a send to it returns.
func (c *Client) groupNameTaken(name string) error {
	convs, err := c.allConvs()
	if err != nil || groupNamed(convs, name) == nil {
		return nil
	}
	return fmt.Errorf("%w: %q names a user, not your group; write #%s for the group", ErrAmbiguousName, name, name)
}

// checkGroupName is the rule for a group name chosen here: 1..MaxName
// bytes of UTF-8 with no spaces, no '#', and nothing package safetext
// would change (control, format, bidi or invisible characters).
func checkGroupName(name string) error {
	if name == "" || len(name) > content.MaxName || !utf8.ValidString(name) ||
		strings.ContainsAny(name, "#") || strings.IndexFunc(name, unicode.IsSpace) >= 0 || safetext.Line(name) != name {
		return fmt.Errorf("group name: 1-%d bytes, no spaces, no # and no control or invisible characters", content.MaxName)
	}
	return nil
}

// receivedGroupName is what a group a Welcome names is called here: the
// name as sent if it passes checkGroupName, otherwise with every
// offending character replaced (so it shows and is typed as what it is),
// then made unique among our groups.
func receivedGroupName(convs []*convRecord, name, creator string) string {
	if checkGroupName(name) != nil {
		name = strings.Map(func(r rune) rune {
			if r == '#' || unicode.IsSpace(r) {
				return '_'
			}
			return r
		}, safetext.Line(name))
		name = strings.Map(func(r rune) rune {
			if r == utf8.RuneError || r >= 0x2400 && r <= 0x2426 {
				return '_' // safetext's replacement and control pictures
			}
			return r
		}, name)
		if name == "" {
			name = "group"
		}
	}
	taken := func(n string) bool { return groupNamed(convs, n) != nil }
	if !taken(name) {
		return name
	}
	base := name + "-" + creator
	for i := 2; ; i++ {
		n := base
		if i > 2 {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		if !taken(n) {
			return n
		}
	}
}
