package mls

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// TestDeserializationVectors checks the varint length prefix of RFC 9420
// §2.1.2 against deserialization.json: each vlbytes_header must decode to
// length (consuming the whole header), and length must encode to exactly
// that header — which also proves the encoder picks the minimal form. One
// vector object is one case.
func TestDeserializationVectors(t *testing.T) {
	var cases []struct {
		Header hexBytes `json:"vlbytes_header"`
		Length uint64   `json:"length"`
	}
	loadVectors(t, "deserialization.json", &cases)
	c := newTally("deserialization.json")
	for i, tc := range cases {
		s := cryptobyte.String(tc.Header)
		n, ok := readVarint(&s)
		if !ok || !s.Empty() || uint64(n) != tc.Length {
			c.fail(t, "case %d: readVarint(%x) = %d, %v (rest %d bytes); want %d", i, []byte(tc.Header), n, ok, len(s), tc.Length)
			continue
		}
		var b cryptobyte.Builder
		addVarint(&b, int(tc.Length))
		out, err := b.Bytes()
		if err != nil || !bytes.Equal(out, tc.Header) {
			c.fail(t, "case %d: addVarint(%d) = %x, %v; want %x", i, tc.Length, out, err, []byte(tc.Header))
			continue
		}
		c.pass()
	}
	c.report(t)
}

// Byte builders for hand-made encodings. They are deliberately written
// without the package's codec so the tests do not only check the code
// against itself.

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func u8(x uint8) []byte   { return []byte{x} }
func u16(x uint16) []byte { return []byte{byte(x >> 8), byte(x)} }
func u32(x uint32) []byte { return []byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)} }
func u64(x uint64) []byte { return cat(u32(uint32(x>>32)), u32(uint32(x))) }

// vec prefixes body with a minimal varint length.
func vec(parts ...[]byte) []byte {
	body := cat(parts...)
	n := len(body)
	if n < 64 {
		return cat(u8(uint8(n)), body)
	}
	if n < 1<<14 {
		return cat(u16(uint16(n)|0x4000), body)
	}
	return cat(u32(uint32(n)|0x80000000), body)
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// Valid building blocks (RFC 9420 field order).
var (
	tEncKey  = fill(32, 0xe1)
	tSigKey  = fill(32, 0x51)
	tSig     = fill(64, 0x5e)
	tCredent = cat(u16(1), vec([]byte("alice")))                                                                   // basic Credential
	tCaps    = cat(vec(u16(1)), vec(u16(1), u16(0x0a0a)), vec(u16(0xfafa)), vec(u16(0x1a1a)), vec(u16(1), u16(2))) // Capabilities with GREASE values
	tLife    = cat(u64(0), u64(^uint64(0)))                                                                        // Lifetime
	tExts    = vec(u16(0x0a0a), vec([]byte{1, 2, 3}))                                                              // one extension
)

func leafNode(source []byte) []byte {
	return cat(vec(tEncKey), vec(tSigKey), tCredent, tCaps, source, tExts, vec(tSig))
}

var (
	tLeafKP     = leafNode(cat(u8(1), tLife))
	tLeafUpdate = leafNode(u8(2))
	tLeafCommit = leafNode(cat(u8(3), vec(fill(32, 0x9a))))
	tKeyPackage = cat(u16(1), u16(1), vec(fill(32, 0x11)), tLeafKP, vec(), vec(tSig))
	tGroupCtx   = cat(u16(1), u16(1), vec([]byte("group")), u64(7), vec(fill(32, 0x77)), vec(fill(32, 0x78)), vec())
	tExtPSKID   = cat(u8(1), vec([]byte("psk")), vec(fill(32, 0x4e)))
	tResPSKID   = cat(u8(2), u8(1), vec([]byte("group")), u64(3), vec(fill(32, 0x4e)))
	tHPKECt     = cat(vec(fill(32, 0xc0)), vec(fill(48, 0xc1)))
	tPath       = cat(tLeafCommit, vec(cat(vec(tEncKey), vec(tHPKECt, tHPKECt))))
	tRemove     = cat(u16(3), u32(5)) // Proposal(remove)
	tCommit     = cat(vec(u8(1), tRemove, u8(2), vec(fill(32, 0x2f))), u8(1), tPath)
	tParent     = cat(vec(tEncKey), vec(fill(32, 0x9a)), vec(u32(2), u32(4)))
	tTree       = vec(u8(1), u8(1), tLeafKP, u8(1), u8(2), tParent, u8(0), u8(1), u8(1), tLeafUpdate)
	tGroupInfo  = cat(tGroupCtx, tExts, vec(fill(32, 0xcf)), u32(0), vec(tSig))
	tWelcome    = cat(u16(1), vec(vec(fill(16, 0xee)), tHPKECt), vec(fill(100, 0xe9)))
	tSecrets    = cat(vec(fill(32, 0x10)), u8(1), vec(fill(32, 0x20)), vec(tExtPSKID, tResPSKID))

	tMemberSender = cat(u8(1), u32(1))
	tAppContent   = cat(vec([]byte("group")), u64(7), tMemberSender, vec([]byte("aad")), u8(1), vec([]byte("hello")))
	tPublicApp    = cat(u16(1), u16(1), tAppContent, vec(tSig), vec(fill(32, 0x3a)))
	tPublicCommit = cat(u16(1), u16(1), vec([]byte("group")), u64(7), u8(4), vec(), u8(3), tCommit, vec(tSig), vec(fill(32, 0xcf)))
	tPublicExtern = cat(u16(1), u16(1), vec([]byte("group")), u64(7), u8(2), u32(0), vec(), u8(2), tRemove, vec(tSig))
	tPrivate      = cat(u16(1), u16(2), vec([]byte("group")), u64(7), u8(1), vec([]byte("aad")), vec(fill(12, 0x5d)), vec(fill(40, 0xca)))
)

// replace returns a copy of data with the first occurrence of old replaced;
// it panics if old is absent so that a fail case cannot silently turn into
// a copy of its good counterpart.
func replace(data, old, new []byte) []byte {
	if !bytes.Contains(data, old) {
		panic("replace: pattern not found")
	}
	return bytes.Replace(data, old, new, 1)
}

type codecCase struct {
	name string
	newT func() codec
	data []byte
}

func newMLSMessage() codec  { return new(MLSMessage) }
func newKeyPackage() codec  { return new(KeyPackage) }
func newLeafNode() codec    { return new(LeafNode) }
func newCommit() codec      { return new(Commit) }
func newRatchetTree() codec { return new(RatchetTree) }
func newGroupSecrets() codec {
	return new(GroupSecrets)
}
func newProposal() codec { return new(Proposal) }

// goodCases are hand-built valid encodings; each must decode and re-encode
// to the same bytes. The fail cases below are each a one-spot change of one
// of these, so a failure there is attributable to that spot.
var goodCases = []codecCase{
	{"good_key_package", newKeyPackage, tKeyPackage},
	{"good_leaf_update", newLeafNode, tLeafUpdate},
	{"good_leaf_commit", newLeafNode, tLeafCommit},
	{"good_x509_leaf", newLeafNode, replace(tLeafUpdate, tCredent, cat(u16(2), vec(vec(fill(10, 0xce)), vec(fill(3, 0xcf)))))},
	{"good_commit", newCommit, tCommit},
	{"good_commit_no_path", newCommit, cat(vec(u8(1), tRemove), u8(0))},
	{"good_ratchet_tree", newRatchetTree, tTree},
	{"good_group_secrets", newGroupSecrets, tSecrets},
	{"good_group_secrets_no_path", newGroupSecrets, cat(vec(fill(32, 0x10)), u8(0), vec())},
	{"good_proposal_remove", newProposal, tRemove},
	{"good_proposal_psk", newProposal, cat(u16(4), tResPSKID)},
	{"good_proposal_reinit", newProposal, cat(u16(5), vec([]byte("g2")), u16(2), u16(0x004d), vec())},
	{"good_mls_key_package", newMLSMessage, cat(u16(1), u16(5), tKeyPackage)},
	{"good_mls_group_info", newMLSMessage, cat(u16(1), u16(4), tGroupInfo)},
	{"good_mls_welcome", newMLSMessage, cat(u16(1), u16(3), tWelcome)},
	{"good_public_application", newMLSMessage, tPublicApp},
	{"good_public_commit_new_member", newMLSMessage, tPublicCommit},
	{"good_public_external_proposal", newMLSMessage, tPublicExtern},
	{"good_private", newMLSMessage, tPrivate},
	{"good_2byte_vector", newMLSMessage, replace(tPrivate, vec(fill(40, 0xca)), vec(fill(300, 0xca)))},
	{"good_4byte_vector", newMLSMessage, replace(tPrivate, vec(fill(40, 0xca)), vec(fill(20000, 0xca)))},
}

var failCases = []codecCase{
	// Truncation and trailing bytes.
	{"fail_truncated_key_package", newKeyPackage, tKeyPackage[:len(tKeyPackage)-1]},
	{"fail_trailing_key_package", newKeyPackage, cat(tKeyPackage, u8(0))},
	{"fail_trailing_mls_message", newMLSMessage, cat(tPrivate, u8(0))},
	{"fail_empty_mls_message", newMLSMessage, nil},
	{"fail_vector_longer_than_input", newMLSMessage, replace(tPrivate, vec(fill(40, 0xca)), cat(u8(41), fill(40, 0xca)))},

	// Varint rules (§2.1.2).
	{"fail_nonminimal_varint_2byte", newMLSMessage, replace(tPrivate, vec([]byte("aad")), cat(u16(0x4003), []byte("aad")))},
	{"fail_nonminimal_varint_4byte", newMLSMessage, replace(tPrivate, vec([]byte("aad")), cat(u32(0x80000003), []byte("aad")))},
	{"fail_nonminimal_varint_4byte_for_2byte", newMLSMessage, replace(tPrivate, vec(fill(40, 0xca)), cat(u32(0x80000000|100), fill(100, 0xca)))},
	{"fail_reserved_varint_prefix", newMLSMessage, replace(tPrivate, vec([]byte("aad")), cat(u32(0xc0000003), []byte("aad")))},

	// optional<T> presence byte (§2.1.3).
	{"fail_optional_2_commit_path", newCommit, replace(tCommit, cat(u8(1), tPath), cat(u8(2), tPath))},
	{"fail_optional_ff_group_secrets", newGroupSecrets, replace(tSecrets, cat(u8(1), vec(fill(32, 0x20))), cat(u8(0xff), vec(fill(32, 0x20))))},
	{"fail_optional_2_ratchet_tree", newRatchetTree, replace(tTree, cat(u8(0), u8(1), u8(1), tLeafUpdate), cat(u8(2), u8(1), u8(1), tLeafUpdate))},

	// Enumerations.
	{"fail_version_0", newMLSMessage, cat(u16(0), tPrivate[2:])},
	{"fail_version_2", newMLSMessage, cat(u16(2), tPrivate[2:])},
	{"fail_wire_format_0", newMLSMessage, cat(u16(1), u16(0), tPrivate[4:])},
	{"fail_wire_format_6", newMLSMessage, cat(u16(1), u16(6), tPrivate[4:])},
	{"fail_content_type_0", newMLSMessage, replace(tPrivate, cat(u64(7), u8(1)), cat(u64(7), u8(0)))},
	{"fail_content_type_4", newMLSMessage, replace(tPrivate, cat(u64(7), u8(1)), cat(u64(7), u8(4)))},
	{"fail_public_content_type_4", newMLSMessage, replace(tPublicApp, cat(vec([]byte("aad")), u8(1)), cat(vec([]byte("aad")), u8(4)))},
	{"fail_sender_type_0", newMLSMessage, replace(tPublicApp, tMemberSender, cat(u8(0), u32(1)))},
	{"fail_sender_type_5", newMLSMessage, replace(tPublicApp, tMemberSender, cat(u8(5), u32(1)))},
	{"fail_proposal_type_0", newProposal, cat(u16(0), u32(5))},
	{"fail_proposal_type_8", newProposal, cat(u16(8), u32(5))},
	{"fail_proposal_type_grease", newProposal, cat(u16(0x0a0a), u32(5))},
	{"fail_proposal_or_ref_3", newCommit, replace(tCommit, cat(u8(1), tRemove), cat(u8(3), tRemove))},
	{"fail_psk_type_0", newProposal, cat(u16(4), u8(0), tExtPSKID[1:])},
	{"fail_psk_type_3", newProposal, cat(u16(4), u8(3), tExtPSKID[1:])},
	{"fail_psk_usage_0", newProposal, cat(u16(4), u8(2), u8(0), tResPSKID[2:])},
	{"fail_psk_usage_4", newProposal, cat(u16(4), u8(2), u8(4), tResPSKID[2:])},
	{"fail_leaf_source_0", newLeafNode, replace(tLeafUpdate, cat(tCaps, u8(2)), cat(tCaps, u8(0)))},
	{"fail_leaf_source_4", newLeafNode, replace(tLeafUpdate, cat(tCaps, u8(2)), cat(tCaps, u8(4)))},
	{"fail_credential_type_0", newLeafNode, replace(tLeafUpdate, tCredent, cat(u16(0), tCredent[2:]))},
	{"fail_credential_type_grease", newLeafNode, replace(tLeafUpdate, tCredent, cat(u16(0x0a0a), tCredent[2:]))},
	{"fail_node_type_0", newRatchetTree, replace(tTree, cat(u8(1), u8(1), tLeafKP), cat(u8(1), u8(0), tLeafKP))},
	{"fail_node_type_3", newRatchetTree, replace(tTree, cat(u8(1), u8(2), tParent), cat(u8(1), u8(3), tParent))},

	// Structure-specific rules.
	{"fail_ratchet_tree_trailing_blank", newRatchetTree, vec(u8(1), u8(1), tLeafKP, u8(0))},
	{"fail_ratchet_tree_empty", newRatchetTree, vec()},
	{"fail_capabilities_odd_list", newLeafNode, replace(tLeafUpdate, vec(u16(1), u16(2)), vec(u16(1), u8(2)))},
	{"fail_unmerged_leaves_partial", newRatchetTree, replace(tTree, vec(u32(2), u32(4)), vec(u32(2), u16(4)))},
	{"fail_commit_proposal_list_partial", newCommit, replace(tCommit, vec(u8(1), tRemove, u8(2), vec(fill(32, 0x2f))), vec(u8(1), tRemove, u8(2)))},
	{"fail_public_member_missing_membership_tag", newMLSMessage, tPublicApp[:len(tPublicApp)-len(vec(fill(32, 0x3a)))]},
	{"fail_public_commit_missing_confirmation_tag", newMLSMessage, tPublicCommit[:len(tPublicCommit)-len(vec(fill(32, 0xcf)))]},
	{"fail_public_external_with_membership_tag", newMLSMessage, cat(tPublicExtern, vec(fill(32, 0x3a)))},
}

func TestGoodEncodings(t *testing.T) {
	for _, tc := range goodCases {
		v := tc.newT()
		if err := v.Unmarshal(tc.data); err != nil {
			t.Errorf("%s: decode: %v", tc.name, err)
			continue
		}
		out, err := v.Marshal()
		if err != nil || !bytes.Equal(out, tc.data) {
			t.Errorf("%s: re-encode: %v\n got %x\nwant %x", tc.name, err, out, tc.data)
		}
	}
}

func TestMalformedEncodings(t *testing.T) {
	for _, tc := range failCases {
		err := tc.newT().Unmarshal(tc.data)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want an error wrapping ErrMalformed", tc.name, err)
		}
	}
}

// TestTruncationAndTrailing checks, for every field of the first vector
// object in messages.json, that every proper prefix and the input with one
// extra byte are rejected. MLS encodings are self-delimiting, so no proper
// prefix of a valid encoding is itself valid.
func TestTruncationAndTrailing(t *testing.T) {
	cases := messageVectors(t)
	for name, data := range cases[0] {
		mk := messageFields[name]
		if mk == nil {
			t.Errorf("field %q has no decoder", name)
			continue
		}
		for n := 0; n < len(data); n++ {
			v, _ := mk()
			if err := v.Unmarshal(data[:n]); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s truncated to %d of %d bytes: got %v", name, n, len(data), err)
				break
			}
		}
		v, _ := mk()
		if err := v.Unmarshal(cat(data, u8(0))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with a trailing byte: got %v", name, err)
		}
	}
}

// TestPrivateMessageContent exercises the plaintext of a PrivateMessage,
// which the vectors only carry encrypted: zero padding is kept as a length
// and round-trips, non-zero padding is rejected, and the content type from
// the header decides the layout.
func TestPrivateMessageContent(t *testing.T) {
	app := cat(vec([]byte("hello")), vec(tSig))
	commit := cat(tCommit, vec(tSig), vec(fill(32, 0xcf)))
	for _, tc := range []struct {
		name string
		ct   ContentType
		data []byte
		ok   bool
	}{
		{"application_no_padding", ContentTypeApplication, app, true},
		{"application_padding", ContentTypeApplication, cat(app, fill(17, 0)), true},
		{"commit_padding", ContentTypeCommit, cat(commit, fill(3, 0)), true},
		{"proposal", ContentTypeProposal, cat(tRemove, vec(tSig)), true},
		{"nonzero_padding", ContentTypeApplication, cat(app, fill(16, 0), u8(1)), false},
		{"commit_missing_tag", ContentTypeCommit, cat(tCommit, vec(tSig)), false},
		{"bad_content_type", ContentType(0), app, false},
	} {
		pc, err := UnmarshalPrivateMessageContent(tc.data, tc.ct)
		if !tc.ok {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: got %v, want ErrMalformed", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		out, err := pc.Marshal()
		if err != nil || !bytes.Equal(out, tc.data) {
			t.Errorf("%s: re-encode %v\n got %x\nwant %x", tc.name, err, out, tc.data)
		}
	}
}

// TestSenderData round-trips the 12-byte sender data and rejects other
// lengths.
func TestSenderData(t *testing.T) {
	data := cat(u32(3), u32(9), []byte{1, 2, 3, 4})
	var sd SenderData
	if err := sd.Unmarshal(data); err != nil {
		t.Fatal(err)
	}
	if sd.LeafIndex != 3 || sd.Generation != 9 || sd.ReuseGuard != [4]byte{1, 2, 3, 4} {
		t.Errorf("decoded %+v", sd)
	}
	if out, err := sd.Marshal(); err != nil || !bytes.Equal(out, data) {
		t.Errorf("re-encode %x, %v", out, err)
	}
	for _, bad := range [][]byte{data[:11], cat(data, u8(0))} {
		if err := new(SenderData).Unmarshal(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: got %v", len(bad), err)
		}
	}
}

// TestMarshalRejectsInconsistent checks that encoders refuse structures
// whose fields disagree, instead of emitting bytes that would decode to
// something else.
func TestMarshalRejectsInconsistent(t *testing.T) {
	for name, v := range map[string]codec{
		"mls_message_no_body":        &MLSMessage{Version: MLS10, WireFormat: WireFormatWelcome},
		"mls_message_wrong_body":     &MLSMessage{Version: MLS10, WireFormat: WireFormatWelcome, KeyPackage: &KeyPackage{}},
		"mls_message_version":        &MLSMessage{Version: 2, WireFormat: WireFormatWelcome, Welcome: &Welcome{}},
		"proposal_wrong_body":        &Proposal{Type: ProposalTypeAdd, Remove: &Remove{}},
		"proposal_two_bodies":        &Proposal{Type: ProposalTypeRemove, Remove: &Remove{}, ExternalInit: &ExternalInit{}},
		"sender_new_member_index":    &Sender{Type: SenderTypeNewMemberCommit, Index: 1},
		"public_external_member_tag": &PublicMessage{Content: FramedContent{Sender: Sender{Type: SenderTypeExternal}, ContentType: ContentTypeApplication}, MembershipTag: []byte{1}},
		"framed_commit_without_body": &FramedContent{Sender: Sender{Type: SenderTypeMember}, ContentType: ContentTypeCommit},
		"ratchet_tree_trailing_nil":  &RatchetTree{{Type: NodeTypeParent, ParentNode: &ParentNode{}}, nil},
		"leaf_update_with_lifetime":  &LeafNode{Credential: Credential{Type: CredentialTypeBasic}, Source: LeafNodeSourceUpdate, Lifetime: &Lifetime{}},
		"psk_external_with_epoch":    &PreSharedKeyID{PSKType: PSKTypeExternal, PSKEpoch: 1},
		"private_content_type_0":     &PrivateMessage{},
		"private_content_huge_pad":   &PrivateMessageContent{ContentType: ContentTypeApplication, PaddingLen: 1 << 31},
		"private_content_neg_pad":    &PrivateMessageContent{ContentType: ContentTypeApplication, PaddingLen: -1},
	} {
		if out, err := v.Marshal(); err == nil {
			t.Errorf("%s: encoded to %x, want an error", name, out)
		}
	}
}

// TestMarshalDoesNotMutate checks that encoding takes the auth data's
// content type from the enclosing content without writing it back, so a
// message shared between goroutines can be encoded concurrently.
func TestMarshalDoesNotMutate(t *testing.T) {
	var m MLSMessage
	if err := m.Unmarshal(tPublicCommit); err != nil {
		t.Fatal(err)
	}
	pm := m.PublicMessage
	pm.Auth.ContentType = 0
	out, err := m.Marshal()
	if err != nil || !bytes.Equal(out, tPublicCommit) {
		t.Fatalf("re-encode: %v\n got %x\nwant %x", err, out, tPublicCommit)
	}
	if pm.Auth.ContentType != 0 {
		t.Errorf("Marshal wrote Auth.ContentType = %v", pm.Auth.ContentType)
	}
	ac := pm.AuthenticatedContent()
	if _, err := ac.Marshal(); err != nil {
		t.Fatal(err)
	}
	// A new_member_commit sender signs over the group context (§6.1), so
	// the TBS encoders need one and must refuse to go without.
	if _, err := ac.MarshalTBM(nil); err == nil {
		t.Error("MarshalTBM without a group context succeeded for new_member_commit")
	}
	if _, err := ac.MarshalTBM(&GroupContext{Version: MLS10}); err != nil {
		t.Fatal(err)
	}
	if ac.Auth.ContentType != 0 {
		t.Errorf("AuthenticatedContent encoders wrote Auth.ContentType = %v", ac.Auth.ContentType)
	}
}
