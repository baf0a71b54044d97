package mls

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// TestKeyPackageValidation covers §10.1: each broken key package is
// rejected with ErrInvalidKeyPackage or ErrUnsupportedCapability, and a
// good one (with last_resort) passes.
func TestKeyPackageValidation(t *testing.T) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	id := newIdentity(t, suite, "kp")
	now := time.Now()
	good, err := NewKeyPackage(id, &KeyPackageOptions{LastResort: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateKeyPackage(&good.KeyPackage, suite, now); err != nil {
		t.Fatalf("good key package: %v", err)
	}
	if !good.KeyPackage.IsLastResort() {
		t.Fatal("last_resort extension missing")
	}
	s := mustSuite(t, suite)
	// resign re-signs the leaf and the package, so that only the rule
	// under test can reject it.
	resign := func(kp *KeyPackage) {
		if err := signLeaf(s, &kp.LeafNode, id.SignaturePriv, nil, 0); err != nil {
			t.Fatal(err)
		}
		tbs, _ := kp.MarshalTBS()
		kp.Signature, _ = s.SignWithLabel(id.SignaturePriv, "KeyPackageTBS", tbs)
	}
	cases := []struct {
		name   string
		mutate func(*KeyPackage)
		at     time.Time
		want   error
	}{
		{"bad signature", func(kp *KeyPackage) { kp.Signature = bytes.Clone(kp.Signature); kp.Signature[0] ^= 1 }, now, ErrVerifyFailed},
		{"init key equals encryption key", func(kp *KeyPackage) { kp.InitKey = kp.LeafNode.EncryptionKey; resign(kp) }, now, ErrInvalidKeyPackage},
		{"expired", func(kp *KeyPackage) {}, now.Add(365 * 24 * time.Hour), ErrInvalidLeafNode},
		{"not yet valid", func(kp *KeyPackage) {}, now.Add(-48 * time.Hour), ErrInvalidLeafNode},
		{"suite not in capabilities", func(kp *KeyPackage) {
			kp.LeafNode.Capabilities.CipherSuites = []CipherSuiteID{SuiteP256AES128GCMSHA256P256}
			resign(kp)
		}, now, ErrUnsupportedCapability},
		{"wrong version", func(kp *KeyPackage) { kp.Version = 2; resign(kp) }, now, ErrInvalidKeyPackage},
		{"wrong suite", func(kp *KeyPackage) { kp.CipherSuite = SuiteX25519ChaCha20Poly1305SHA256Ed25519; resign(kp) }, now, ErrInvalidKeyPackage},
		{"leaf source update", func(kp *KeyPackage) { kp.LeafNode.Source, kp.LeafNode.Lifetime = LeafNodeSourceUpdate, nil; resign(kp) }, now, ErrInvalidLeafNode},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kp := good.KeyPackage
			kp.LeafNode.Capabilities.CipherSuites = append([]CipherSuiteID(nil), kp.LeafNode.Capabilities.CipherSuites...)
			tc.mutate(&kp)
			if err := ValidateKeyPackage(&kp, suite, tc.at); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestExternalSenderAndExtensions covers external senders (§12.1.8.1),
// GroupContextExtensions with required capabilities (§11.1, §12.1.7) and
// ReInit (§12.1.5).
func TestExternalSenderAndExtensions(t *testing.T) {
	suite := SuiteX25519ChaCha20Poly1305SHA256Ed25519
	s := mustSuite(t, suite)
	dsPub, dsPriv, err := s.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	ext, err := MarshalExternalSenders([]ExternalSender{{SignatureKey: dsPub, Credential: Credential{Type: CredentialTypeBasic, Identity: []byte("ds")}}})
	if err != nil {
		t.Fatal(err)
	}
	id := newIdentity(t, suite, "owner")
	g, err := Create(id, nil, &CreateOptions{Extensions: []Extension{{Type: ExtensionTypeExternalSenders, Data: ext}}})
	if err != nil {
		t.Fatal(err)
	}
	tg := &testGroup{t: t, suite: suite, members: []*testMember{{id: id, g: g}}, n: 1}
	tg.add(tg.members[0], 3)

	// The delivery service, an external sender, proposes removing leaf 2.
	prop, err := ExternalProposal(suite, g.GroupID(), g.Epoch(), 0, dsPriv, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 2}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range tg.members {
		if _, err := m.g.ProcessMessage(prop); err != nil {
			t.Fatalf("leaf %d: external proposal: %v", m.g.LeafIndex(), err)
		}
	}
	// A forged external proposal (wrong key) is rejected.
	_, otherPriv, _ := s.GenerateSignatureKeyPair()
	forged, _ := ExternalProposal(suite, g.GroupID(), g.Epoch(), 0, otherPriv, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 1}})
	if _, err := tg.members[1].g.ProcessMessage(forged); !errors.Is(err, ErrVerifyFailed) {
		t.Fatalf("forged external proposal: %v", err)
	}
	res, err := tg.members[1].g.Commit(nil)
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(tg.members[1], res.Commit)
	if tg.members[2].g.Active() || len(tg.members[0].g.Members()) != 3 {
		t.Fatal("external remove not applied")
	}
	tg.checkAgreement()

	// Requiring basic credentials is fine; requiring an extension nobody
	// supports must be refused by the committer's own validation.
	rc := RequiredCapabilities{Credentials: []CredentialType{CredentialTypeBasic}}
	rcData, _ := rc.Marshal()
	exts := []Extension{{Type: ExtensionTypeExternalSenders, Data: ext}, {Type: ExtensionTypeRequiredCapabilities, Data: rcData}}
	res, err = g.Commit(&CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: exts}}}})
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(tg.members[0], res.Commit)
	tg.checkAgreement()
	bad := RequiredCapabilities{Extensions: []ExtensionType{0xff00}}
	badData, _ := bad.Marshal()
	before := stateOf(t, g)
	_, err = g.Commit(&CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeGroupContextExtensions,
		GroupContextExtensions: &GroupContextExtensions{Extensions: []Extension{{Type: ExtensionTypeRequiredCapabilities, Data: badData}}}}}})
	if !errors.Is(err, ErrInvalidProposals) || !errors.Is(err, ErrUnsupportedCapability) {
		t.Fatalf("unsupported required extension: %v", err)
	}
	if !bytes.Equal(before, stateOf(t, g)) {
		t.Fatal("failed commit changed the state")
	}

	// Requiring a credential type the members lack is refused too.
	rc2 := RequiredCapabilities{Credentials: []CredentialType{CredentialTypeX509}}
	rc2Data, _ := rc2.Marshal()
	_, err = g.Commit(&CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeGroupContextExtensions,
		GroupContextExtensions: &GroupContextExtensions{Extensions: []Extension{{Type: ExtensionTypeRequiredCapabilities, Data: rc2Data}}}}}})
	if !errors.Is(err, ErrUnsupportedCapability) {
		t.Fatalf("unsupported required credential: %v", err)
	}

	// ReInit ends the group for everyone.
	res, err = g.Commit(&CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeReInit, ReInit: &ReInit{
		GroupID: []byte("next"), Version: MLS10, CipherSuite: SuiteXWingChaCha20Poly1305SHA256Ed25519}}}})
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(tg.members[0], res.Commit)
	for _, m := range tg.members {
		if m.g.Active() {
			t.Fatalf("leaf %d still active after reinit", m.g.LeafIndex())
		}
	}
	if _, err := g.Encrypt([]byte("x")); !errors.Is(err, ErrGroupInactive) {
		t.Fatalf("encrypt after reinit: %v", err)
	}
}

// TestWelcomeTreeOutOfBand joins with the ratchet tree given out of band
// (§12.4.3.3) and checks that a tampered tree is refused: a changed parent
// hash fails §7.9.2, a tree with an extra member fails the tree hash, and
// a verifier that distrusts a member refuses the whole Welcome.
func TestWelcomeTreeOutOfBand(t *testing.T) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(t, suite, nil)
	// Grow with paths so that the tree has parent nodes.
	for i := 0; i < 3; i++ {
		tg.add(tg.members[len(tg.members)-1], 1)
		res, err := tg.members[len(tg.members)-1].g.Update()
		if err != nil {
			t.Fatal(err)
		}
		tg.deliver(tg.members[len(tg.members)-1], res.Commit)
	}
	a := tg.members[0].g
	a.cfg.OmitRatchetTree = true
	kp := newKP(t, newIdentity(t, suite, "oob"))
	res, err := a.Add(&kp.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	tree := a.RatchetTree()
	if _, err := Join(res.Welcome, kp, nil, nil); !errors.Is(err, ErrInvalidGroupInfo) {
		t.Fatalf("join without any tree: %v", err)
	}

	tampered := append(RatchetTree(nil), tree...)
	for x := 1; x < len(tampered); x += 2 {
		if n := tampered[x]; n != nil {
			p := *n.ParentNode
			p.ParentHash = bytes.Clone(p.ParentHash)
			p.ParentHash = append(p.ParentHash, 0)
			tampered[x] = &Node{Type: NodeTypeParent, ParentNode: &p}
			break
		}
	}
	if _, err := Join(res.Welcome, kp, nil, tampered); !errors.Is(err, ErrParentHash) {
		t.Fatalf("tampered parent hash: %v", err)
	}

	distrust := &Config{VerifyMember: func(c Credential, _ []byte) error {
		if string(c.Identity) == "member-1" {
			return errors.New("unknown key")
		}
		return nil
	}}
	if _, err := Join(res.Welcome, kp, distrust, tree); !errors.Is(err, ErrMemberRejected) {
		t.Fatalf("distrusted member: %v", err)
	}

	g, err := Join(res.Welcome, kp, nil, tree)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.EpochAuthenticator(), a.EpochAuthenticator()) {
		t.Fatal("joiner disagrees")
	}
}

// TestWelcomeMaxLeaves: a Welcome whose tree is wider than
// Config.MaxLeaves is refused with ErrTreeTooWide, before any member is
// verified; at the bound it is joined.
func TestWelcomeMaxLeaves(t *testing.T) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(t, suite, nil)
	tg.add(tg.members[0], 2) // leaves 0..2
	kp := newKP(t, newIdentity(t, suite, "late"))
	res, err := tg.members[0].g.Add(&kp.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	cfg := &Config{MaxLeaves: 3, VerifyMember: func(Credential, []byte) error { verified++; return nil }}
	if _, err := Join(res.Welcome, kp, cfg, nil); !errors.Is(err, ErrTreeTooWide) || verified != 0 {
		t.Fatalf("a tree 4 leaves wide under MaxLeaves 3: %v (%d members verified)", err, verified)
	}
	cfg.MaxLeaves = 4
	if _, err := Join(res.Welcome, kp, cfg, nil); err != nil {
		t.Fatalf("a tree 4 leaves wide under MaxLeaves 4: %v", err)
	}
}
