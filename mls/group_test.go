package mls

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// testMember is one client in a simulated group.
type testMember struct {
	id *Identity
	g  *Group
}

func newIdentity(t testing.TB, suite CipherSuiteID, name string) *Identity {
	t.Helper()
	id, err := NewBasicIdentity(suite, []byte(name))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newKP(t testing.TB, id *Identity) *KeyPackagePrivate {
	t.Helper()
	kp, err := NewKeyPackage(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// testGroup is a set of members that deliver every commit to each other.
type testGroup struct {
	t       testing.TB
	suite   CipherSuiteID
	cfg     *Config
	members []*testMember // nil entries are members that left
	n       int
}

func newTestGroup(t testing.TB, suite CipherSuiteID, cfg *Config) *testGroup {
	t.Helper()
	id := newIdentity(t, suite, "member-0")
	g, err := Create(id, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testGroup{t: t, suite: suite, cfg: cfg, members: []*testMember{{id: id, g: g}}, n: 1}
}

// deliver hands a commit to every member but the committer, and checks
// that everyone ends up in the committer's epoch.
func (tg *testGroup) deliver(from *testMember, msg []byte) {
	tg.t.Helper()
	for _, m := range tg.members {
		if m == nil || m == from || !m.g.Active() {
			continue
		}
		r, err := m.g.ProcessMessage(msg)
		if err != nil {
			tg.t.Fatalf("leaf %d processing commit: %v", m.g.LeafIndex(), err)
		}
		if r.Removed {
			continue
		}
		if m.g.Epoch() != from.g.Epoch() {
			tg.t.Fatalf("leaf %d in epoch %d, committer in %d", m.g.LeafIndex(), m.g.Epoch(), from.g.Epoch())
		}
	}
}

// add has member `by` add k new members in one commit.
func (tg *testGroup) add(by *testMember, k int) {
	tg.t.Helper()
	var kps []*KeyPackagePrivate
	var pub []*KeyPackage
	for i := 0; i < k; i++ {
		id := newIdentity(tg.t, tg.suite, fmt.Sprintf("member-%d", tg.n))
		tg.n++
		kp := newKP(tg.t, id)
		kps = append(kps, kp)
		pub = append(pub, &kp.KeyPackage)
	}
	res, err := by.g.Add(pub...)
	if err != nil {
		tg.t.Fatal(err)
	}
	tg.deliver(by, res.Commit)
	for _, kp := range kps {
		g, err := Join(res.Welcome, kp, tg.cfg, nil)
		if err != nil {
			tg.t.Fatal(err)
		}
		tg.members = append(tg.members, &testMember{id: kp.Identity, g: g})
	}
}

func (tg *testGroup) active() []*testMember {
	var out []*testMember
	for _, m := range tg.members {
		if m != nil && m.g.Active() {
			out = append(out, m)
		}
	}
	return out
}

func (tg *testGroup) checkAgreement() {
	tg.t.Helper()
	act := tg.active()
	for _, m := range act[1:] {
		if m.g.Epoch() != act[0].g.Epoch() || !bytes.Equal(m.g.EpochAuthenticator(), act[0].g.EpochAuthenticator()) {
			tg.t.Fatalf("leaf %d disagrees with leaf %d", m.g.LeafIndex(), act[0].g.LeafIndex())
		}
	}
}

// TestLifecycleXWing runs the X-Wing suite through a whole life: the group
// grows to 50 members by adds, a third is removed, every remaining member
// commits an update, and all agree on epoch and epoch authenticator; the
// removed members can read nothing after their removal.
func TestLifecycleXWing(t *testing.T) {
	suite := SuiteXWingChaCha20Poly1305SHA256Ed25519
	tg := newTestGroup(t, suite, nil)
	for len(tg.members) < 50 {
		// Adds come from different members, in batches, so that the
		// tree gets unmerged leaves and varied paths.
		by := tg.members[len(tg.members)/2]
		k := min(7, 50-len(tg.members))
		tg.add(by, k)
	}
	tg.checkAgreement()
	if n := len(tg.members[0].g.Members()); n != 50 {
		t.Fatalf("%d members, want 50", n)
	}

	// Remove a third (16 of 50), spread over the tree, in one commit.
	var leaves []uint32
	var removed []*testMember
	var before []*Group
	for i := 1; i < 50 && len(leaves) < 16; i += 3 {
		m := tg.members[i]
		leaves = append(leaves, m.g.LeafIndex())
		removed = append(removed, m)
		st, err := m.g.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		old, err := UnmarshalGroup(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, old)
	}
	committer := tg.members[0]
	res, err := committer.g.Remove(leaves...)
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(committer, res.Commit)
	for _, m := range removed {
		if m.g.Active() {
			t.Fatalf("removed leaf %d still active", m.g.LeafIndex())
		}
	}
	if n := len(committer.g.Members()); n != 34 {
		t.Fatalf("%d members after removal, want 34", n)
	}

	// Every remaining member commits an update; all others process it.
	for _, m := range tg.active() {
		res, err := m.g.Update()
		if err != nil {
			t.Fatal(err)
		}
		tg.deliver(m, res.Commit)
	}
	tg.checkAgreement()
	act := tg.active()
	if len(act) != 34 {
		t.Fatalf("%d active members, want 34", len(act))
	}

	// The next message is readable by members and by no removed member,
	// neither with its final state nor with its state from before the
	// removal.
	msg, err := act[5].g.Encrypt([]byte("after the purge"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range act {
		if m == act[5] {
			continue
		}
		pt, sender, err := m.g.Decrypt(msg)
		if err != nil || string(pt) != "after the purge" || sender != act[5].g.LeafIndex() {
			t.Fatalf("leaf %d: %q %v", m.g.LeafIndex(), pt, err)
		}
	}
	for i, m := range removed {
		if _, _, err := m.g.Decrypt(msg); !errors.Is(err, ErrGroupInactive) {
			t.Fatalf("removed member decrypted or wrong error: %v", err)
		}
		if _, _, err := before[i].Decrypt(msg); !errors.Is(err, ErrWrongGroup) {
			t.Fatalf("removed member's old state: %v", err)
		}
	}
}

// TestGroupBasics covers one of each operation on the suites with vectors:
// proposals by reference, PSK proposals, external commits, state storage
// round trips, exporter agreement and the member verification hook.
func TestGroupBasics(t *testing.T) {
	for _, suite := range allSuites {
		t.Run(suiteName(suite), func(t *testing.T) {
			psk := bytes.Repeat([]byte{7}, 32)
			cfg := &Config{ExternalPSKs: map[string][]byte{"shared": psk}}
			tg := newTestGroup(t, suite, cfg)
			tg.add(tg.members[0], 3)
			a, b, c := tg.members[0], tg.members[1], tg.members[2]

			// b proposes an update, c proposes a PSK; a commits both by
			// reference.
			up, err := b.g.ProposeUpdate()
			if err != nil {
				t.Fatal(err)
			}
			nonce := bytes.Repeat([]byte{9}, 32)
			pp, err := c.g.Propose(&Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: ExternalPSKID([]byte("shared"), nonce)}})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range tg.members {
				for _, p := range []struct {
					from *testMember
					msg  []byte
				}{{b, up}, {c, pp}} {
					if m == p.from {
						continue
					}
					if _, err := m.g.ProcessMessage(p.msg); err != nil {
						t.Fatal(err)
					}
				}
			}
			res, err := a.g.Commit(nil)
			if err != nil {
				t.Fatal(err)
			}
			tg.deliver(a, res.Commit)
			tg.checkAgreement()

			// External join from a published GroupInfo.
			gi, err := c.g.GroupInfo()
			if err != nil {
				t.Fatal(err)
			}
			eid := newIdentity(t, suite, "external")
			eg, commit, err := JoinExternal(gi, eid, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			em := &testMember{id: eid, g: eg}
			tg.members = append(tg.members, em)
			tg.deliver(em, commit)
			tg.checkAgreement()

			// Storage round trip keeps everything, including the ability to
			// read the next message.
			st, err := b.g.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			restored, err := UnmarshalGroup(st, cfg)
			if err != nil {
				t.Fatal(err)
			}
			st2, _ := restored.Marshal()
			if !bytes.Equal(st, st2) {
				t.Fatal("state does not round-trip")
			}
			msg, err := em.g.Encrypt([]byte("hi"))
			if err != nil {
				t.Fatal(err)
			}
			if pt, _, err := restored.Decrypt(msg); err != nil || string(pt) != "hi" {
				t.Fatalf("restored state: %q %v", pt, err)
			}
			x1, _ := a.g.ExportSecret("test", []byte("ctx"), 32)
			x2, _ := em.g.ExportSecret("test", []byte("ctx"), 32)
			if !bytes.Equal(x1, x2) {
				t.Fatal("exporter disagreement")
			}

			// The verification hook can refuse a member.
			refuse := errors.New("not in key transparency log")
			strict := &Config{VerifyMember: func(cred Credential, _ []byte) error {
				if string(cred.Identity) == "mallory" {
					return refuse
				}
				return nil
			}}
			a.g.cfg = *strict
			mkp := newKP(t, newIdentity(t, suite, "mallory"))
			if _, err := a.g.Add(&mkp.KeyPackage); !errors.Is(err, ErrMemberRejected) || !errors.Is(err, refuse) {
				t.Fatalf("mallory added: %v", err)
			}
		})
	}
}

// stateOf is the marshalled state, for unchanged-state checks.
func stateOf(t testing.TB, g *Group) []byte {
	t.Helper()
	st, err := g.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// forgeCommit creates a commit from m's group (without applying it), lets
// mutate change the commit, and then re-signs and re-MACs it as m would,
// so that receivers get past signature and membership checks and reach the
// check under test.
func forgeCommit(t testing.TB, m *Group, opts *CommitOptions, mutate func(*AuthenticatedContent)) []byte {
	t.Helper()
	c := m.clone()
	c.cfg.PublicHandshake = true
	res, err := c.Commit(opts)
	if err != nil {
		t.Fatal(err)
	}
	var msg MLSMessage
	if err := msg.Unmarshal(res.Commit); err != nil {
		t.Fatal(err)
	}
	ac := msg.PublicMessage.AuthenticatedContent()
	mutate(ac)
	tbs, err := ac.MarshalTBS(&m.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ac.Auth.Signature, err = m.suite.SignWithLabel(m.sigPriv, "FramedContentTBS", tbs); err != nil {
		t.Fatal(err)
	}
	pm, err := m.suite.ProtectPublic(ac, &m.ctx, m.secrets.MembershipKey)
	if err != nil {
		t.Fatal(err)
	}
	out, err := (&MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBadInputs feeds each member invalid messages and checks the typed
// error and that the stored state is byte-for-byte unchanged.
func TestBadInputs(t *testing.T) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(t, suite, nil)
	tg.add(tg.members[0], 4)
	a, b := tg.members[0].g, tg.members[1].g

	resign := func(ln *LeafNode) {
		if err := signLeaf(a.suite, ln, a.sigPriv, a.ctx.GroupID, a.priv.leaf); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		msg  func() []byte
		want error
	}{
		{"undecryptable path secrets", func() []byte {
			return forgeCommit(t, a, nil, func(ac *AuthenticatedContent) {
				for i := range ac.Content.Commit.Path.Nodes {
					for j := range ac.Content.Commit.Path.Nodes[i].EncryptedPathSecret {
						ct := &ac.Content.Commit.Path.Nodes[i].EncryptedPathSecret[j]
						ct.Ciphertext = slices.Clone(ct.Ciphertext)
						ct.Ciphertext[0] ^= 1
					}
				}
			})
		}, ErrInvalidPath},
		{"path of the wrong length", func() []byte {
			return forgeCommit(t, a, nil, func(ac *AuthenticatedContent) {
				p := ac.Content.Commit.Path
				p.Nodes = p.Nodes[:len(p.Nodes)-1]
			})
		}, ErrInvalidPath},
		{"bad parent hash", func() []byte {
			return forgeCommit(t, a, nil, func(ac *AuthenticatedContent) {
				ln := &ac.Content.Commit.Path.LeafNode
				ln.ParentHash = slices.Clone(ln.ParentHash)
				ln.ParentHash[0] ^= 1
				resign(ln)
			})
		}, ErrParentHash},
		{"wrong signature", func() []byte {
			c := a.clone()
			c.cfg.PublicHandshake = true
			res, err := c.Commit(nil)
			if err != nil {
				t.Fatal(err)
			}
			var msg MLSMessage
			if err := msg.Unmarshal(res.Commit); err != nil {
				t.Fatal(err)
			}
			// Signed by another key but correctly MAC'd: only the
			// signature check can catch it.
			ac := msg.PublicMessage.AuthenticatedContent()
			tbs, _ := ac.MarshalTBS(&a.ctx)
			ac.Auth.Signature, _ = a.suite.SignWithLabel(tg.members[2].id.SignaturePriv, "FramedContentTBS", tbs)
			pm, err := a.suite.ProtectPublic(ac, &a.ctx, a.secrets.MembershipKey)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := (&MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}).Marshal()
			return out
		}, ErrVerifyFailed},
		{"§12.2: two removes of one leaf", func() []byte {
			return forgeCommit(t, a, &CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 3}}}},
				func(ac *AuthenticatedContent) {
					c := ac.Content.Commit
					c.Proposals = append(c.Proposals, c.Proposals[0])
				})
		}, ErrInvalidProposals},
		{"§12.2: committer removes itself", func() []byte {
			return forgeCommit(t, a, &CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 3}}}},
				func(ac *AuthenticatedContent) {
					ac.Content.Commit.Proposals[0].Proposal = &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 0}}
				})
		}, ErrInvalidProposals},
		{"remove without a path", func() []byte {
			return forgeCommit(t, a, &CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 3}}}},
				func(ac *AuthenticatedContent) { ac.Content.Commit.Path = nil })
		}, ErrInvalidCommit},
		{"unknown proposal reference", func() []byte {
			return forgeCommit(t, a, nil, func(ac *AuthenticatedContent) {
				ac.Content.Commit.Proposals = []ProposalOrRef{{Type: ProposalOrRefTypeReference, Reference: bytes.Repeat([]byte{1}, 32)}}
			})
		}, ErrUnknownProposal},
		{"wrong confirmation tag", func() []byte {
			return forgeCommit(t, a, nil, func(ac *AuthenticatedContent) {
				ac.Auth.ConfirmationTag = slices.Clone(ac.Auth.ConfirmationTag)
				ac.Auth.ConfirmationTag[0] ^= 1
			})
		}, ErrConfirmationTag},
		{"message for another epoch", func() []byte {
			c := a.clone()
			res, err := c.Update()
			if err != nil {
				t.Fatal(err)
			}
			// c is now one epoch ahead; its message is from the future.
			out, err := c.Encrypt([]byte("future"))
			if err != nil {
				t.Fatal(err)
			}
			_ = res
			return out
		}, ErrWrongGroup},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := tc.msg()
			before := stateOf(t, b)
			_, err := b.ProcessMessage(msg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !bytes.Equal(before, stateOf(t, b)) {
				t.Fatal("state changed by a rejected message")
			}
		})
	}

	t.Run("replayed application message", func(t *testing.T) {
		msg, err := a.Encrypt([]byte("once"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Decrypt(msg); err != nil {
			t.Fatal(err)
		}
		before := stateOf(t, b)
		if _, _, err := b.Decrypt(msg); !errors.Is(err, ErrKeyConsumed) {
			t.Fatalf("replay: %v", err)
		}
		if !bytes.Equal(before, stateOf(t, b)) {
			t.Fatal("state changed by a replay")
		}
	})

	t.Run("message from an old epoch", func(t *testing.T) {
		msg, err := a.Encrypt([]byte("old"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Update()
		if err != nil {
			t.Fatal(err)
		}
		tg.deliver(tg.members[0], res.Commit)
		before := stateOf(t, b)
		if _, _, err := b.Decrypt(msg); !errors.Is(err, ErrWrongGroup) {
			t.Fatalf("old epoch: %v", err)
		}
		if !bytes.Equal(before, stateOf(t, b)) {
			t.Fatal("state changed by an old message")
		}
	})

	t.Run("add without a path", func(t *testing.T) {
		kp := newKP(t, newIdentity(t, suite, "pathless"))
		res, err := a.Commit(&CommitOptions{NoPath: true, Proposals: []*Proposal{{Type: ProposalTypeAdd, Add: &Add{KeyPackage: kp.KeyPackage}}}})
		if err != nil {
			t.Fatal(err)
		}
		tg.deliver(tg.members[0], res.Commit)
		ng, err := Join(res.Welcome, kp, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		tg.members = append(tg.members, &testMember{id: kp.Identity, g: ng})
		tg.checkAgreement()
		if _, err := a.Commit(&CommitOptions{NoPath: true, Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 4}}}}); !errors.Is(err, ErrInvalidCommit) {
			t.Fatalf("pathless remove: %v", err)
		}
	})

	t.Run("welcome for another key package", func(t *testing.T) {
		kp := newKP(t, newIdentity(t, suite, "joiner"))
		other := newKP(t, newIdentity(t, suite, "bystander"))
		c := a.clone()
		res, err := c.Add(&kp.KeyPackage)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Join(res.Welcome, other, nil, nil); !errors.Is(err, ErrWelcomeNotForUs) {
			t.Fatalf("join with another key package: %v", err)
		}
		if _, err := Join(res.Welcome, kp, nil, nil); err != nil {
			t.Fatalf("rightful joiner: %v", err)
		}
	})

	t.Run("invalid key package", func(t *testing.T) {
		kp := newKP(t, newIdentity(t, suite, "joiner"))
		bad := kp.KeyPackage
		bad.InitKey = bad.LeafNode.EncryptionKey
		tbs, err := bad.MarshalTBS()
		if err != nil {
			t.Fatal(err)
		}
		// Properly signed, so only the init key rule can reject it.
		if bad.Signature, err = a.suite.SignWithLabel(kp.Identity.SignaturePriv, "KeyPackageTBS", tbs); err != nil {
			t.Fatal(err)
		}
		before := stateOf(t, a)
		if _, err := a.Add(&bad); !errors.Is(err, ErrInvalidProposals) || !errors.Is(err, ErrInvalidKeyPackage) {
			t.Fatalf("init key = encryption key accepted: %v", err)
		}
		if !bytes.Equal(before, stateOf(t, a)) {
			t.Fatal("state changed by a failed commit")
		}
	})
}
