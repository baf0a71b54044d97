package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

type messageProtectionCase struct {
	CipherSuite             uint16   `json:"cipher_suite"`
	GroupID                 hexBytes `json:"group_id"`
	Epoch                   uint64   `json:"epoch"`
	TreeHash                hexBytes `json:"tree_hash"`
	ConfirmedTranscriptHash hexBytes `json:"confirmed_transcript_hash"`
	SignaturePriv           hexBytes `json:"signature_priv"`
	SignaturePub            hexBytes `json:"signature_pub"`
	EncryptionSecret        hexBytes `json:"encryption_secret"`
	SenderDataSecret        hexBytes `json:"sender_data_secret"`
	MembershipKey           hexBytes `json:"membership_key"`
	Proposal                hexBytes `json:"proposal"`
	ProposalPub             hexBytes `json:"proposal_pub"`
	ProposalPriv            hexBytes `json:"proposal_priv"`
	Commit                  hexBytes `json:"commit"`
	CommitPub               hexBytes `json:"commit_pub"`
	CommitPriv              hexBytes `json:"commit_priv"`
	Application             hexBytes `json:"application"`
	ApplicationPriv         hexBytes `json:"application_priv"`
}

// protectionLeaves is the group size the message-protection vectors
// assume: a secret tree of two leaves, the sender at leaf 1.
const protectionLeaves = 2

func TestVectorMessageProtection(t *testing.T) {
	var cases []messageProtectionCase
	loadVectors(t, "message-protection.json", &cases)
	c := newTally("message-protection.json")
	for i, tc := range cases {
		s := vectorSuite(t, c, tc.CipherSuite)
		if s == nil {
			continue
		}
		if err := checkMessageProtection(s, &tc); err != nil {
			c.fail(t, "case %d (suite %d): %v", i, tc.CipherSuite, err)
			continue
		}
		c.pass()
	}
	c.report(t)
}

// contentBody encodes the body of authenticated content (the Proposal,
// the Commit, or the application data) for comparison with the vector.
func contentBody(ac *AuthenticatedContent) ([]byte, error) {
	switch ac.Content.ContentType {
	case ContentTypeProposal:
		return ac.Content.Proposal.Marshal()
	case ContentTypeCommit:
		return ac.Content.Commit.Marshal()
	default:
		return ac.Content.ApplicationData, nil
	}
}

func decodeMLSMessage(data []byte) (*MLSMessage, error) {
	var m MLSMessage
	if err := m.Unmarshal(data); err != nil {
		return nil, err
	}
	return &m, nil
}

func checkMessageProtection(s *CipherSuite, tc *messageProtectionCase) error {
	gc := &GroupContext{
		Version: MLS10, CipherSuite: s.ID, GroupID: tc.GroupID, Epoch: tc.Epoch,
		TreeHash: tc.TreeHash, ConfirmedTranscriptHash: tc.ConfirmedTranscriptHash,
	}
	signer := func(leaf uint32) ([]byte, error) {
		if leaf >= protectionLeaves {
			return nil, ErrLeafIndex
		}
		return tc.SignaturePub, nil
	}
	// Unprotect the messages the vector gives and compare their content.
	// Each was protected independently, with generation 0 of a fresh
	// secret tree, so each gets its own receiving tree.
	type given struct {
		name      string
		pub, priv []byte
		body      []byte
	}
	var commitAC *AuthenticatedContent
	for _, g := range []given{
		{"proposal", tc.ProposalPub, tc.ProposalPriv, tc.Proposal},
		{"commit", tc.CommitPub, tc.CommitPriv, tc.Commit},
		{"application", nil, tc.ApplicationPriv, tc.Application},
	} {
		if g.pub != nil {
			m, err := decodeMLSMessage(g.pub)
			if err != nil || m.PublicMessage == nil {
				return fmt.Errorf("%s_pub: %v", g.name, err)
			}
			ac, err := s.UnprotectPublic(m.PublicMessage, gc, tc.MembershipKey, tc.SignaturePub)
			if err != nil {
				return fmt.Errorf("%s_pub: %w", g.name, err)
			}
			if body, err := contentBody(ac); err != nil || !bytes.Equal(body, g.body) {
				return fmt.Errorf("%s_pub: content %x, %v", g.name, body, err)
			}
			if ac.Content.ContentType == ContentTypeCommit {
				commitAC = ac
			}
		}
		recv, err := NewSecretTree(s, tc.EncryptionSecret, protectionLeaves, nil)
		if err != nil {
			return err
		}
		m, err := decodeMLSMessage(g.priv)
		if err != nil || m.PrivateMessage == nil {
			return fmt.Errorf("%s_priv: %v", g.name, err)
		}
		ac, err := s.UnprotectPrivate(m.PrivateMessage, gc, recv, tc.SenderDataSecret, signer)
		if err != nil {
			return fmt.Errorf("%s_priv: %w", g.name, err)
		}
		if body, err := contentBody(ac); err != nil || !bytes.Equal(body, g.body) {
			return fmt.Errorf("%s_priv: content %x, %v", g.name, body, err)
		}
		// Each key is usable once: the same message again is a replay.
		if _, err := s.UnprotectPrivate(m.PrivateMessage, gc, recv, tc.SenderDataSecret, signer); !errors.Is(err, ErrKeyConsumed) {
			return fmt.Errorf("%s_priv replay: %v", g.name, err)
		}
	}
	if commitAC == nil {
		return errors.New("no commit in the vector")
	}

	// Protect the same contents ourselves and unprotect the result.
	sender, _ := NewSecretTree(s, tc.EncryptionSecret, protectionLeaves, nil)
	recv2, _ := NewSecretTree(s, tc.EncryptionSecret, protectionLeaves, nil)
	var prop Proposal
	var commit Commit
	if err := prop.Unmarshal(tc.Proposal); err != nil {
		return err
	}
	if err := commit.Unmarshal(tc.Commit); err != nil {
		return err
	}
	base := FramedContent{
		GroupID: tc.GroupID, Epoch: tc.Epoch, AuthenticatedData: []byte("authenticated data"),
		Sender: Sender{Type: SenderTypeMember, Index: commitAC.Content.Sender.Index},
	}
	for _, ct := range []ContentType{ContentTypeProposal, ContentTypeCommit, ContentTypeApplication} {
		fc := base
		fc.ContentType = ct
		switch ct {
		case ContentTypeProposal:
			fc.Proposal = &prop
		case ContentTypeCommit:
			fc.Commit = &commit
		default:
			fc.ApplicationData = ApplicationData(tc.Application)
		}
		wfs := []WireFormat{WireFormatPrivateMessage}
		if ct != ContentTypeApplication {
			wfs = append(wfs, WireFormatPublicMessage)
		}
		for _, wf := range wfs {
			got, err := roundTrip(s, wf, &fc, gc, tc.SignaturePriv, tc.MembershipKey, commitAC.Auth.ConfirmationTag,
				sender, recv2, tc.SenderDataSecret, signer)
			if err != nil {
				return fmt.Errorf("round trip %v as %v: %w", ct, wf, err)
			}
			want := ac2bytes(&AuthenticatedContent{WireFormat: wf, Content: fc})
			if !bytes.Equal(ac2bytes(got), want) {
				return fmt.Errorf("round trip %v as %v: content changed", ct, wf)
			}
		}
	}
	return nil
}

// ac2bytes encodes the FramedContent part of authenticated content, the
// part that must survive protection unchanged.
func ac2bytes(ac *AuthenticatedContent) []byte {
	b, err := ac.Content.Marshal()
	if err != nil {
		return nil
	}
	return append([]byte{byte(ac.WireFormat >> 8), byte(ac.WireFormat)}, b...)
}

// roundTrip signs and protects content, encodes it as an MLSMessage,
// decodes it and unprotects it.
func roundTrip(s *CipherSuite, wf WireFormat, fc *FramedContent, gc *GroupContext, sigPriv, membershipKey, confTag []byte,
	sender, recv *SecretTree, senderDataSecret []byte, signer SignerKeyFunc) (*AuthenticatedContent, error) {
	ac, err := s.SignContent(wf, fc, gc, sigPriv)
	if err != nil {
		return nil, err
	}
	if fc.ContentType == ContentTypeCommit {
		ac.Auth.ConfirmationTag = confTag
	}
	msg := &MLSMessage{Version: MLS10, WireFormat: wf}
	if wf == WireFormatPublicMessage {
		if msg.PublicMessage, err = s.ProtectPublic(ac, gc, membershipKey); err != nil {
			return nil, err
		}
	} else if msg.PrivateMessage, err = s.ProtectPrivate(ac, sender, senderDataSecret, 32); err != nil {
		return nil, err
	}
	wire, err := msg.Marshal()
	if err != nil {
		return nil, err
	}
	m, err := decodeMLSMessage(wire)
	if err != nil {
		return nil, err
	}
	sigPub, err := signer(fc.Sender.Index)
	if err != nil {
		return nil, err
	}
	if wf == WireFormatPublicMessage {
		return s.UnprotectPublic(m.PublicMessage, gc, membershipKey, sigPub)
	}
	return s.UnprotectPrivate(m.PrivateMessage, gc, recv, senderDataSecret, signer)
}

// protectFixture is a small group state for round-trip tests.
type protectFixture struct {
	s                              *CipherSuite
	gc                             *GroupContext
	sigPub, sigPriv                []byte
	membershipKey, senderData, enc []byte
	sender, recv                   *SecretTree
}

func newProtectFixture(t testing.TB, id CipherSuiteID, leaves uint32) *protectFixture {
	t.Helper()
	s := mustSuite(t, id)
	pub, priv, err := s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	f := &protectFixture{
		s: s, sigPub: pub, sigPriv: priv,
		gc: &GroupContext{
			Version: MLS10, CipherSuite: id, GroupID: []byte("fixture group"), Epoch: 42,
			TreeHash: bytes.Repeat([]byte{1}, s.Nh()), ConfirmedTranscriptHash: bytes.Repeat([]byte{2}, s.Nh()),
		},
		membershipKey: bytes.Repeat([]byte{3}, s.Nh()),
		senderData:    bytes.Repeat([]byte{4}, s.Nh()),
		enc:           bytes.Repeat([]byte{5}, s.Nh()),
	}
	if f.sender, err = NewSecretTree(s, f.enc, leaves, nil); err != nil {
		t.Fatal(err)
	}
	if f.recv, err = NewSecretTree(s, f.enc, leaves, nil); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *protectFixture) signer(uint32) ([]byte, error) { return f.sigPub, nil }

func (f *protectFixture) app(leaf uint32, data []byte) *FramedContent {
	return &FramedContent{
		GroupID: f.gc.GroupID, Epoch: f.gc.Epoch, Sender: Sender{Type: SenderTypeMember, Index: leaf},
		ContentType: ContentTypeApplication, ApplicationData: data,
	}
}

func (f *protectFixture) protectApp(t testing.TB, leaf uint32, data []byte, pad int) *PrivateMessage {
	t.Helper()
	ac, err := f.s.SignContent(WireFormatPrivateMessage, f.app(leaf, data), f.gc, f.sigPriv)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := f.s.ProtectPrivate(ac, f.sender, f.senderData, pad)
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

// TestXWingMessageProtection round-trips every content type through both
// message kinds with the X-Wing suite, which has no official vectors.
func TestXWingMessageProtection(t *testing.T) {
	f := newProtectFixture(t, SuiteXWingChaCha20Poly1305SHA256Ed25519, 4)
	remove := &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 2}}
	commit := &Commit{Proposals: []ProposalOrRef{{Type: ProposalOrRefTypeProposal, Proposal: remove}}}
	tag := f.s.ConfirmationTag(bytes.Repeat([]byte{6}, 32), f.gc.ConfirmedTranscriptHash)
	for _, fc := range []*FramedContent{
		f.app(3, []byte("hello, post-quantum group")),
		{GroupID: f.gc.GroupID, Epoch: f.gc.Epoch, Sender: Sender{Type: SenderTypeMember, Index: 1},
			ContentType: ContentTypeProposal, Proposal: remove},
		{GroupID: f.gc.GroupID, Epoch: f.gc.Epoch, Sender: Sender{Type: SenderTypeMember, Index: 0},
			AuthenticatedData: []byte("ad"), ContentType: ContentTypeCommit, Commit: commit},
	} {
		wfs := []WireFormat{WireFormatPrivateMessage}
		if fc.ContentType != ContentTypeApplication {
			wfs = append(wfs, WireFormatPublicMessage)
		}
		for _, wf := range wfs {
			got, err := roundTrip(f.s, wf, fc, f.gc, f.sigPriv, f.membershipKey, tag, f.sender, f.recv, f.senderData, f.signer)
			if err != nil {
				t.Fatalf("%v as %v: %v", fc.ContentType, wf, err)
			}
			if !bytes.Equal(ac2bytes(got), ac2bytes(&AuthenticatedContent{WireFormat: wf, Content: *fc})) {
				t.Fatalf("%v as %v: content changed", fc.ContentType, wf)
			}
			if fc.ContentType == ContentTypeCommit && !bytes.Equal(got.Auth.ConfirmationTag, tag) {
				t.Fatalf("%v as %v: confirmation tag lost", fc.ContentType, wf)
			}
		}
	}
}

// TestPrivateMessageTampering checks that each protected field is bound.
func TestPrivateMessageTampering(t *testing.T) {
	f := newProtectFixture(t, SuiteX25519AES128GCMSHA256Ed25519, 2)
	pm := f.protectApp(t, 1, []byte("secret"), 0)
	open := func(pm *PrivateMessage) error {
		_, err := f.s.UnprotectPrivate(pm, f.gc, f.recv, f.senderData, f.signer)
		return err
	}
	mut := func(change func(*PrivateMessage)) *PrivateMessage {
		c := *pm
		c.Ciphertext = append([]byte(nil), pm.Ciphertext...)
		c.EncryptedSenderData = append([]byte(nil), pm.EncryptedSenderData...)
		change(&c)
		return &c
	}
	for name, tc := range map[string]struct {
		pm   *PrivateMessage
		want error
	}{
		"ciphertext":    {mut(func(m *PrivateMessage) { m.Ciphertext[len(m.Ciphertext)-1] ^= 1 }), ErrDecryptFailed},
		"sender data":   {mut(func(m *PrivateMessage) { m.EncryptedSenderData[0] ^= 1 }), ErrDecryptFailed},
		"content type":  {mut(func(m *PrivateMessage) { m.ContentType = ContentTypeProposal }), ErrDecryptFailed},
		"auth data":     {mut(func(m *PrivateMessage) { m.AuthenticatedData = []byte("x") }), ErrDecryptFailed},
		"epoch":         {mut(func(m *PrivateMessage) { m.Epoch++ }), ErrWrongGroup},
		"group":         {mut(func(m *PrivateMessage) { m.GroupID = []byte("other") }), ErrWrongGroup},
		"short content": {mut(func(m *PrivateMessage) { m.Ciphertext = m.Ciphertext[:3] }), ErrDecryptFailed},
	} {
		if err := open(tc.pm); !errors.Is(err, tc.want) {
			t.Errorf("tampered %s: got %v, want %v", name, err, tc.want)
		}
	}
	// The failed attempts did not burn the key: the genuine message opens.
	if err := open(pm); err != nil {
		t.Fatalf("genuine message after forgeries: %v", err)
	}
	if err := open(pm); !errors.Is(err, ErrKeyConsumed) {
		t.Errorf("replay: %v", err)
	}
	// A wrong signer key is detected after decryption.
	pm2 := f.protectApp(t, 1, []byte("again"), 0)
	otherPub, _, _ := f.s.GenerateSignatureKeyPair()
	if _, err := f.s.UnprotectPrivate(pm2, f.gc, f.recv, f.senderData, func(uint32) ([]byte, error) { return otherPub, nil }); !errors.Is(err, ErrVerifyFailed) {
		t.Errorf("wrong signer: %v", err)
	}
}

// TestPrivateMessagePadding checks that the padded plaintext is a
// multiple of the block and that padding is removed on receipt.
func TestPrivateMessagePadding(t *testing.T) {
	f := newProtectFixture(t, SuiteX25519ChaCha20Poly1305SHA256Ed25519, 2)
	const block, tagLen = 64, 16
	for _, n := range []int{0, 1, 63, 64, 200} {
		data := bytes.Repeat([]byte{'a'}, n)
		pm := f.protectApp(t, 0, data, block)
		if (len(pm.Ciphertext)-tagLen)%block != 0 {
			t.Errorf("%d bytes: plaintext of %d bytes is not padded to %d", n, len(pm.Ciphertext)-tagLen, block)
		}
		ac, err := f.s.UnprotectPrivate(pm, f.gc, f.recv, f.senderData, f.signer)
		if err != nil || !bytes.Equal(ac.Content.ApplicationData, data) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

// TestPublicMessageChecks covers the membership tag and content rules.
func TestPublicMessageChecks(t *testing.T) {
	f := newProtectFixture(t, SuiteP256AES128GCMSHA256P256, 2)
	fc := &FramedContent{
		GroupID: f.gc.GroupID, Epoch: f.gc.Epoch, Sender: Sender{Type: SenderTypeMember, Index: 1},
		ContentType: ContentTypeProposal, Proposal: &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 0}},
	}
	ac, err := f.s.SignContent(WireFormatPublicMessage, fc, f.gc, f.sigPriv)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := f.s.ProtectPublic(ac, f.gc, f.membershipKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.UnprotectPublic(pm, f.gc, bytes.Repeat([]byte{9}, 32), f.sigPub); !errors.Is(err, ErrMembershipTag) {
		t.Errorf("wrong membership key: %v", err)
	}
	other := *f.gc
	other.TreeHash = bytes.Repeat([]byte{7}, 32)
	if _, err := f.s.UnprotectPublic(pm, &other, f.membershipKey, f.sigPub); !errors.Is(err, ErrMembershipTag) {
		t.Errorf("other group context: %v", err)
	}
	if _, err := f.s.UnprotectPublic(pm, f.gc, f.membershipKey, f.sigPub); err != nil {
		t.Errorf("genuine: %v", err)
	}
	// An application message must not be sent in the clear.
	appAC, _ := f.s.SignContent(WireFormatPublicMessage, f.app(1, []byte("x")), f.gc, f.sigPriv)
	if _, err := f.s.ProtectPublic(appAC, f.gc, f.membershipKey); !errors.Is(err, ErrProtectionMismatch) {
		t.Errorf("application as public message: %v", err)
	}
	// Content signed for a PublicMessage cannot be sent as PrivateMessage.
	if _, err := f.s.ProtectPrivate(ac, f.sender, f.senderData, 0); !errors.Is(err, ErrProtectionMismatch) {
		t.Errorf("public content as private message: %v", err)
	}
}
