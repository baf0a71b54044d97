package invite

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/quicprochat/qpc/kt"
	"golang.org/x/crypto/cryptobyte"
)

// The witness policy field (docs/protocol.md §1.1.1) is the policy's
// directives in order, each a u8 tag:
//
//	witness: u8<name> u8<key name, empty when it is the name> u8<signature type || key>
//	group:   u8<name> u8 threshold (0: any, 255: all, else k) u8<member refs, u8 each>
//	quorum:  u8 ref (255: none)
//
// A ref is the index of a witness or group defined before it, counted
// together in order of definition. The text is rebuilt from them and
// parsed by kt.ParseWitnessPolicy; witness URLs are left out (a client
// never contacts witnesses). A policy of three witnesses takes about 170
// bytes this way instead of about 380 as text.
const (
	tagWitness = 1
	tagGroup   = 2
	tagQuorum  = 3

	thresholdAny = 0
	thresholdAll = 255
	refNone      = 255
)

// maxPolicyNames bounds the witnesses and groups of one policy: refs are
// one byte, and 255 means none.
const maxPolicyNames = 254

func encodePolicy(text string) ([]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: witness policy: %s", ErrMalformed, fmt.Sprintf(format, a...))
	}
	wp, err := kt.ParseWitnessPolicy(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var b cryptobyte.Builder
	var names []string
	ref := func(name string) (uint8, error) {
		for i, n := range names {
			if n == name {
				return uint8(i), nil
			}
		}
		return 0, bad("%q is used before it is defined", name)
	}
	str := func(s string) {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
	}
	define := func(name string) error {
		if len(names) >= maxPolicyNames {
			return bad("more than %d witnesses and groups", maxPolicyNames)
		}
		if len(name) > 255 {
			return bad("name %.20q... is too long", name)
		}
		names = append(names, name)
		return nil
	}
	for line := range strings.Lines(wp.Text()) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "witness":
			vname, key, err := splitVKey(f[2])
			if err != nil {
				return nil, bad("witness %s: %v", f[1], err)
			}
			if err := define(f[1]); err != nil {
				return nil, err
			}
			if vname == f[1] {
				vname = ""
			}
			b.AddUint8(tagWitness)
			str(f[1])
			str(vname)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(key) })
		case len(f) >= 3 && f[0] == "group":
			var threshold uint8
			switch f[2] {
			case "any":
				threshold = thresholdAny
			case "all":
				threshold = thresholdAll
			default:
				k, err := strconv.Atoi(f[2])
				if err != nil || k <= 0 || k >= thresholdAll {
					return nil, bad("group %s: threshold %q", f[1], f[2])
				}
				threshold = uint8(k)
			}
			var refs []byte
			for _, m := range f[3:] {
				r, err := ref(m)
				if err != nil {
					return nil, err
				}
				refs = append(refs, r)
			}
			if len(refs) > 255 {
				return nil, bad("group %s has more than 255 members", f[1])
			}
			if err := define(f[1]); err != nil {
				return nil, err
			}
			b.AddUint8(tagGroup)
			str(f[1])
			b.AddUint8(threshold)
			b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(refs) })
		case len(f) == 2 && f[0] == "quorum":
			r := uint8(refNone)
			if f[1] != "none" {
				if r, err = ref(f[1]); err != nil {
					return nil, err
				}
			}
			b.AddUint8(tagQuorum)
			b.AddUint8(r)
		default:
			return nil, bad("cannot carry %q", strings.TrimSpace(line))
		}
	}
	return b.Bytes()
}

func decodePolicy(v cryptobyte.String) (string, error) {
	bad := func(what string) error { return fmt.Errorf("%w: witness policy: bad %s", ErrMalformed, what) }
	var text strings.Builder
	var names []string
	name := func(r uint8) (string, bool) {
		if int(r) >= len(names) {
			return "", false
		}
		return names[r], true
	}
	for !v.Empty() {
		var tag uint8
		if !v.ReadUint8(&tag) {
			return "", bad("directive")
		}
		switch tag {
		case tagWitness:
			var n, vname, key cryptobyte.String
			if !v.ReadUint8LengthPrefixed(&n) || !v.ReadUint8LengthPrefixed(&vname) || !v.ReadUint8LengthPrefixed(&key) ||
				len(n) == 0 || len(key) == 0 || string(vname) == string(n) {
				return "", bad("witness")
			}
			if len(vname) == 0 {
				vname = n
			}
			names = append(names, string(n))
			fmt.Fprintf(&text, "witness %s %s\n", n, joinVKey(string(vname), key))
		case tagGroup:
			var n, refs cryptobyte.String
			var threshold uint8
			if !v.ReadUint8LengthPrefixed(&n) || !v.ReadUint8(&threshold) || !v.ReadUint8LengthPrefixed(&refs) || len(n) == 0 {
				return "", bad("group")
			}
			spec := strconv.Itoa(int(threshold))
			switch threshold {
			case thresholdAny:
				spec = "any"
			case thresholdAll:
				spec = "all"
			}
			fmt.Fprintf(&text, "group %s %s", n, spec)
			for _, r := range refs {
				m, ok := name(r)
				if !ok {
					return "", bad("group member")
				}
				text.WriteString(" " + m)
			}
			text.WriteString("\n")
			names = append(names, string(n))
		case tagQuorum:
			var r uint8
			if !v.ReadUint8(&r) {
				return "", bad("quorum")
			}
			q, ok := name(r)
			if r == refNone {
				q, ok = "none", true
			}
			if !ok {
				return "", bad("quorum")
			}
			fmt.Fprintf(&text, "quorum %s\n", q)
		default:
			return "", bad(fmt.Sprintf("directive %d", tag))
		}
		if len(names) > maxPolicyNames {
			return "", bad("size")
		}
	}
	// The text must be a policy, and one spelling of it: names are single
	// words, without what the text format would read otherwise.
	wp, err := kt.ParseWitnessPolicy(text.String())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if wp.Text() != text.String() {
		return "", bad("names")
	}
	return wp.Text(), nil
}
