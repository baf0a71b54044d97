package mls

import (
	"bytes"
	"errors"
	"testing"
)

// Fuzz properties shared by every decoder: decoding never panics, failures
// wrap ErrMalformed, and whatever decodes re-encodes to exactly the input.
// The last point is what strict decoding (RFC 9420 §2.1.2 minimal varints,
// §2.1.3 optional bytes, closed enums, no trailing bytes) buys: there is one
// encoding per value, so signatures and hashes computed over re-encoded
// structures match the sender's.

func checkRoundTrip(t *testing.T, v codec, data []byte) {
	t.Helper()
	if err := v.Unmarshal(data); err != nil {
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("decode error does not wrap ErrMalformed: %v", err)
		}
		return
	}
	out, err := v.Marshal()
	if err != nil {
		t.Fatalf("decoded but does not re-encode: %v\ninput %x", err, data)
	}
	if !bytes.Equal(out, data) {
		t.Fatalf("round trip differs:\n got %x\nwant %x", out, data)
	}
}

// fuzzSeedCases is how many messages.json objects seed each target: enough
// to cover every structure shape without slowing the seed-only runs of
// `go test`.
const fuzzSeedCases = 4

// seedFromVectors adds, for the first few messages.json objects, the fields
// named in fields, each transformed by conv (nil conv means as is), plus a
// little junk every target should reject.
func seedFromVectors(f *testing.F, conv func(name string, data []byte) []byte, fields ...string) {
	cases := messageVectors(f)
	for i := 0; i < fuzzSeedCases && i < len(cases); i++ {
		for _, name := range fields {
			data, ok := cases[i][name]
			if !ok {
				f.Fatalf("messages.json case %d has no %s", i, name)
			}
			if conv != nil {
				data = conv(name, data)
			}
			f.Add([]byte(data))
		}
	}
	for _, junk := range [][]byte{nil, {0}, {0xff}, {0x00, 0x01, 0x00, 0x01}, {0xc0, 0, 0, 0}, {0x40, 0x01}, bytes.Repeat([]byte{0x01}, 64)} {
		f.Add(junk)
	}
}

// stripHeader removes the MLSMessage version and wire_format (RFC 9420 §6)
// to get at the body.
func stripHeader(_ string, data []byte) []byte { return data[4:] }

var allMessageFields = []string{
	"mls_welcome", "mls_group_info", "mls_key_package",
	"public_message_application", "public_message_proposal", "public_message_commit",
	"private_message",
}

func FuzzMLSMessage(f *testing.F) {
	seedFromVectors(f, nil, allMessageFields...)
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(MLSMessage), data) })
}

func FuzzKeyPackage(f *testing.F) {
	seedFromVectors(f, stripHeader, "mls_key_package")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(KeyPackage), data) })
}

func FuzzWelcome(f *testing.F) {
	seedFromVectors(f, stripHeader, "mls_welcome")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(Welcome), data) })
}

func FuzzGroupInfo(f *testing.F) {
	seedFromVectors(f, stripHeader, "mls_group_info")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(GroupInfo), data) })
}

func FuzzGroupSecrets(f *testing.F) {
	seedFromVectors(f, nil, "group_secrets")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(GroupSecrets), data) })
}

func FuzzRatchetTree(f *testing.F) {
	seedFromVectors(f, nil, "ratchet_tree")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(RatchetTree), data) })
}

func FuzzCommit(f *testing.F) {
	seedFromVectors(f, nil, "commit")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(Commit), data) })
}

// proposalTypeOf maps the proposal fields of messages.json, which hold bare
// bodies, to the proposal_type that prefixes them inside a Proposal.
var proposalTypeOf = map[string]ProposalType{
	"add_proposal":                      ProposalTypeAdd,
	"update_proposal":                   ProposalTypeUpdate,
	"remove_proposal":                   ProposalTypeRemove,
	"pre_shared_key_proposal":           ProposalTypePSK,
	"re_init_proposal":                  ProposalTypeReInit,
	"external_init_proposal":            ProposalTypeExternalInit,
	"group_context_extensions_proposal": ProposalTypeGroupContextExtensions,
}

func FuzzProposal(f *testing.F) {
	var fields []string
	for name := range proposalTypeOf {
		fields = append(fields, name)
	}
	seedFromVectors(f, func(name string, data []byte) []byte {
		return cat(u16(uint16(proposalTypeOf[name])), data)
	}, fields...)
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(Proposal), data) })
}

func FuzzPublicMessage(f *testing.F) {
	seedFromVectors(f, stripHeader, "public_message_application", "public_message_proposal", "public_message_commit")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(PublicMessage), data) })
}

func FuzzPrivateMessage(f *testing.F) {
	seedFromVectors(f, stripHeader, "private_message")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(PrivateMessage), data) })
}

// FuzzPrivateMessageContent takes the content type (the PrivateMessage
// header's, RFC 9420 §6.3.1) from the first input byte.
func FuzzPrivateMessageContent(f *testing.F) {
	f.Add(cat(u8(1), vec([]byte("hello")), vec(tSig), fill(5, 0)))
	f.Add(cat(u8(2), tRemove, vec(tSig)))
	f.Add(cat(u8(3), tCommit, vec(tSig), vec(fill(32, 0xcf)), fill(2, 0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		checkRoundTrip(t, &PrivateMessageContent{ContentType: ContentType(data[0])}, data[1:])
	})
}

// FuzzAuthenticatedContent covers the structure the transcript hashes and
// proposal references are computed over (RFC 9420 §6.1, §8.2, §5.2); seeds
// are the public messages with the version stripped (leaving wire_format)
// and the membership tag left as trailing bytes for the fuzzer to trim.
func FuzzAuthenticatedContent(f *testing.F) {
	seedFromVectors(f, func(_ string, data []byte) []byte { return data[2:] },
		"public_message_application", "public_message_proposal", "public_message_commit")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(AuthenticatedContent), data) })
}

// FuzzLeafNode covers leaves of every source, from update proposals and
// commit paths.
func FuzzLeafNode(f *testing.F) {
	seedFromVectors(f, nil, "update_proposal")
	f.Add(tLeafKP)
	f.Add(tLeafCommit)
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, new(LeafNode), data) })
}

// anyStructure lists a constructor for every decodable structure, so that
// FuzzAnyStructure reaches the types without a dedicated target (and the
// context-dependent ones under every context value).
var anyStructure = []func() codec{
	func() codec { return new(MLSMessage) },
	func() codec { return new(PublicMessage) },
	func() codec { return new(PrivateMessage) },
	func() codec { return new(FramedContent) },
	func() codec { return new(AuthenticatedContent) },
	func() codec { return &FramedContentAuthData{ContentType: ContentTypeApplication} },
	func() codec { return &FramedContentAuthData{ContentType: ContentTypeCommit} },
	func() codec { return new(Sender) },
	func() codec { return new(ApplicationData) },
	func() codec { return new(SenderData) },
	func() codec { return new(Proposal) },
	func() codec { return new(Add) },
	func() codec { return new(Update) },
	func() codec { return new(Remove) },
	func() codec { return new(PreSharedKey) },
	func() codec { return new(PreSharedKeyID) },
	func() codec { return new(ReInit) },
	func() codec { return new(ExternalInit) },
	func() codec { return new(GroupContextExtensions) },
	func() codec { return new(ProposalOrRef) },
	func() codec { return new(Commit) },
	func() codec { return new(UpdatePath) },
	func() codec { return new(UpdatePathNode) },
	func() codec { return new(HPKECiphertext) },
	func() codec { return new(KeyPackage) },
	func() codec { return new(KeyPackageTBS) },
	func() codec { return new(LeafNode) },
	func() codec { return new(Capabilities) },
	func() codec { return new(Lifetime) },
	func() codec { return new(Credential) },
	func() codec { return new(Welcome) },
	func() codec { return new(EncryptedGroupSecrets) },
	func() codec { return new(GroupSecrets) },
	func() codec { return new(PathSecret) },
	func() codec { return new(GroupInfo) },
	func() codec { return new(GroupInfoTBS) },
	func() codec { return new(RatchetTree) },
	func() codec { return new(Node) },
	func() codec { return new(ParentNode) },
}

// FuzzAnyStructure picks the structure from the first input byte and
// decodes the rest.
func FuzzAnyStructure(f *testing.F) {
	for i, mk := range anyStructure {
		// Seed each type with a hand-built value where one exists.
		switch mk().(type) {
		case *KeyPackage:
			f.Add(cat(u8(uint8(i)), tKeyPackage))
		case *LeafNode:
			f.Add(cat(u8(uint8(i)), tLeafCommit))
		case *Commit:
			f.Add(cat(u8(uint8(i)), tCommit))
		case *RatchetTree:
			f.Add(cat(u8(uint8(i)), tTree))
		case *GroupInfo:
			f.Add(cat(u8(uint8(i)), tGroupInfo))
		case *GroupSecrets:
			f.Add(cat(u8(uint8(i)), tSecrets))
		case *PreSharedKeyID:
			f.Add(cat(u8(uint8(i)), tResPSKID))
		case *Credential:
			f.Add(cat(u8(uint8(i)), tCredent))
		case *MLSMessage:
			f.Add(cat(u8(uint8(i)), tPublicCommit))
		default:
			f.Add([]byte{uint8(i)})
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		checkRoundTrip(t, anyStructure[int(data[0])%len(anyStructure)](), data[1:])
	})
}
