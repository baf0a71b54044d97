package mls

import (
	"bytes"
	"fmt"
	"sort"
	"testing"
)

// codec is what every top-level structure implements.
type codec interface {
	Marshal() ([]byte, error)
	Unmarshal([]byte) error
}

// mlsMessageCheck decodes an MLSMessage and checks the wire format, plus an
// optional extra check on the decoded message.
func mlsMessageCheck(want WireFormat, extra func(*MLSMessage) error) func() (codec, func() error) {
	return func() (codec, func() error) {
		m := new(MLSMessage)
		return m, func() error {
			if m.WireFormat != want {
				return fmt.Errorf("wire format %v, want %v", m.WireFormat, want)
			}
			if extra != nil {
				return extra(m)
			}
			return nil
		}
	}
}

// publicContent checks that a public message carries the content type the
// vector field names.
func publicContent(want ContentType) func(*MLSMessage) error {
	return func(m *MLSMessage) error {
		if got := m.PublicMessage.Content.ContentType; got != want {
			return fmt.Errorf("content type %v, want %v", got, want)
		}
		return nil
	}
}

// plain returns a decoder target with no extra check.
func plain(newT func() codec) func() (codec, func() error) {
	return func() (codec, func() error) { return newT(), func() error { return nil } }
}

// messageFields maps each messages.json field (test-vectors.md, "Messages")
// to the structure it holds.
var messageFields = map[string]func() (codec, func() error){
	"mls_welcome":     mlsMessageCheck(WireFormatWelcome, nil),
	"mls_group_info":  mlsMessageCheck(WireFormatGroupInfo, nil),
	"mls_key_package": mlsMessageCheck(WireFormatKeyPackage, nil),

	"ratchet_tree":  plain(func() codec { return new(RatchetTree) }),
	"group_secrets": plain(func() codec { return new(GroupSecrets) }),

	"add_proposal":                      plain(func() codec { return new(Add) }),
	"update_proposal":                   plain(func() codec { return new(Update) }),
	"remove_proposal":                   plain(func() codec { return new(Remove) }),
	"pre_shared_key_proposal":           plain(func() codec { return new(PreSharedKey) }),
	"re_init_proposal":                  plain(func() codec { return new(ReInit) }),
	"external_init_proposal":            plain(func() codec { return new(ExternalInit) }),
	"group_context_extensions_proposal": plain(func() codec { return new(GroupContextExtensions) }),

	"commit": plain(func() codec { return new(Commit) }),

	"public_message_application": mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeApplication)),
	"public_message_proposal":    mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeProposal)),
	"public_message_commit":      mlsMessageCheck(WireFormatPublicMessage, publicContent(ContentTypeCommit)),
	"private_message":            mlsMessageCheck(WireFormatPrivateMessage, nil),
}

// TestMessagesVectors decodes and re-encodes every field of every case in
// messages.json. The tally counts one case per field (so 17 per vector
// object): a field is the unit that can independently pass or fail. A field
// with no known decoder counts as a failure, so a new field in the vectors
// cannot go unnoticed.
func TestMessagesVectors(t *testing.T) {
	var cases []map[string]hexBytes
	loadVectors(t, "messages.json", &cases)
	c := newTally("messages.json")
	for i, tc := range cases {
		names := make([]string, 0, len(tc))
		for name := range tc {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			data := tc[name]
			mk, ok := messageFields[name]
			if !ok {
				c.fail(t, "case %d: field %q has no decoder", i, name)
				continue
			}
			v, check := mk()
			if err := v.Unmarshal(data); err != nil {
				c.fail(t, "case %d %s: decode: %v", i, name, err)
				continue
			}
			if err := check(); err != nil {
				c.fail(t, "case %d %s: %v", i, name, err)
				continue
			}
			out, err := v.Marshal()
			if err != nil {
				c.fail(t, "case %d %s: encode: %v", i, name, err)
				continue
			}
			if !bytes.Equal(out, data) {
				c.fail(t, "case %d %s: re-encoding differs:\n got %x\nwant %x", i, name, out, data)
				continue
			}
			c.pass()
		}
	}
	c.report(t)
}
