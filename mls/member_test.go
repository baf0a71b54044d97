package mls

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// A hostile member at the MLS level: it commits or proposes keys that
// RFC 9420 forbids, or poisons the proposal cache of the committer. The
// honest members' groups must refuse each message and stay unchanged, or,
// for proposals, commit without them.

// rejects checks that m refuses msg with an error wrapping want and that
// its stored state is byte for byte what it was.
func rejects(t *testing.T, m *testMember, msg []byte, want error) {
	t.Helper()
	before := stateOf(t, m.g)
	_, err := m.g.ProcessMessage(msg)
	if !errors.Is(err, want) {
		t.Fatalf("leaf %d: got %v, want %v", m.g.LeafIndex(), err, want)
	}
	if !bytes.Equal(stateOf(t, m.g), before) {
		t.Fatalf("leaf %d: state changed by a refused message", m.g.LeafIndex())
	}
}

// TestHostileMemberReusedLeafKey: the member at leaf 1 commits a path
// whose new leaf keeps its current encryption key (RFC 9420 §12.4.2:
// "Verify that the encryption_key value in the LeafNode is different from
// the committer's current leaf node"), and proposes an Update that keeps
// it (§12.1.2). The commit is refused by every other member; the Update is
// left out of the next honest commit and refused inside a commit that
// names it.
func TestHostileMemberReusedLeafKey(t *testing.T) {
	tg := newTestGroup(t, SuiteX25519AES128GCMSHA256Ed25519, nil)
	tg.add(tg.members[0], 2)
	creator, eve, carol := tg.members[0], tg.members[1], tg.members[2]
	old := slices.Clone(eve.g.tree.leaf(1).EncryptionKey)

	att := eve.g.clone()
	res, err := att.Commit(&CommitOptions{tamperPath: func(leaf *LeafNode, _ [][]byte) {
		leaf.EncryptionKey = slices.Clone(old)
	}})
	if err != nil {
		t.Fatal(err)
	}
	rejects(t, creator, res.Commit, ErrInvalidPath)
	rejects(t, carol, res.Commit, ErrInvalidPath)

	// An Update proposal that keeps the key, signed as Eve would.
	ln, _, err := eve.g.freshLeaf(LeafNodeSourceUpdate)
	if err != nil {
		t.Fatal(err)
	}
	ln.EncryptionKey = slices.Clone(old)
	if err := signLeaf(eve.g.suite, ln, eve.g.sigPriv, eve.g.ctx.GroupID, 1); err != nil {
		t.Fatal(err)
	}
	prop, err := eve.g.Propose(&Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*testMember{creator, carol} {
		if _, err := m.g.ProcessMessage(prop); err != nil {
			t.Fatal(err)
		}
	}
	// A commit that names the proposal is refused by its receivers.
	ref := carol.g.proposals[0].ref
	forged := forgeCommit(t, creator.g, &CommitOptions{SkipPending: true}, func(ac *AuthenticatedContent) {
		ac.Content.Commit.Proposals = append(ac.Content.Commit.Proposals, ProposalOrRef{Type: ProposalOrRefTypeReference, Reference: ref})
	})
	rejects(t, carol, forged, ErrInvalidProposals)
	// The honest creator's next commit leaves it out.
	up, err := creator.g.Update()
	if err != nil {
		t.Fatalf("the creator cannot commit with the proposal pending: %v", err)
	}
	if src := creator.g.tree.leaf(1).Source; src != LeafNodeSourceKeyPackage {
		t.Fatalf("the creator committed eve's key-keeping update (leaf source %v)", src)
	}
	for _, m := range []*testMember{eve, carol} {
		if _, err := m.g.ProcessMessage(up.Commit); err != nil {
			t.Fatalf("leaf %d: %v", m.g.LeafIndex(), err)
		}
	}
	tg.checkAgreement()
}

// TestHostileMemberDuplicateParentKey: the member at leaf 1 of a
// four-member group commits paths whose parent node (node 1, below the
// common ancestor with leaves 2 and 3, so they cannot check it against
// its path secret) carries a public key already in the tree: another
// parent's (node 5), its own old one (node 1), or the one it gives the
// root in the same path. RFC 9420 §12.4.2: "Verify that none of the public
// keys in the UpdatePath appear in any node of the new ratchet tree." The
// members at leaves 2 and 3 refuse each commit; an honest one still goes
// through.
func TestHostileMemberDuplicateParentKey(t *testing.T) {
	tg := newTestGroup(t, SuiteX25519AES128GCMSHA256Ed25519, nil)
	tg.add(tg.members[0], 3)
	// Leaf 2 commits, so that node 5 (above leaves 2 and 3) has a key.
	res, err := tg.members[2].g.Update()
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(tg.members[2], res.Commit)
	eve := tg.members[1]
	node5 := slices.Clone(eve.g.tree.encryptionKey(5))
	node1 := slices.Clone(eve.g.tree.encryptionKey(1))
	if node5 == nil || node1 == nil {
		t.Fatal("nodes 1 and 5 should have keys")
	}
	for _, tc := range []struct {
		name   string
		tamper func(*LeafNode, [][]byte)
	}{
		{"another parent's key", func(_ *LeafNode, pubs [][]byte) { pubs[0] = slices.Clone(node5) }},
		{"its own old key", func(_ *LeafNode, pubs [][]byte) { pubs[0] = slices.Clone(node1) }},
		{"the root's new key", func(_ *LeafNode, pubs [][]byte) { pubs[0] = slices.Clone(pubs[1]) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			att := eve.g.clone()
			res, err := att.Commit(&CommitOptions{tamperPath: func(leaf *LeafNode, pubs [][]byte) {
				if len(pubs) != 2 {
					t.Fatalf("leaf 1's filtered direct path has %d nodes, want 2", len(pubs))
				}
				tc.tamper(leaf, pubs)
			}})
			if err != nil {
				t.Fatal(err)
			}
			rejects(t, tg.members[2], res.Commit, ErrInvalidPath)
			rejects(t, tg.members[3], res.Commit, ErrInvalidPath)
		})
	}
	res, err = eve.g.Update()
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(eve, res.Commit)
	tg.checkAgreement()
}

// TestCommitLeavesOutInvalidProposals: proposals a member sent that the
// committer cannot commit (a Remove of the committer, two Removes of one
// leaf) are left out of its commit instead of failing it; the valid one
// goes in; the next epoch keeps none of them.
func TestCommitLeavesOutInvalidProposals(t *testing.T) {
	tg := newTestGroup(t, SuiteX25519AES128GCMSHA256Ed25519, nil)
	tg.add(tg.members[0], 3)
	creator, eve := tg.members[0], tg.members[1]
	var props [][]byte
	for _, leaf := range []uint32{0, 3, 3} {
		p, err := eve.g.Propose(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: leaf}})
		if err != nil {
			t.Fatal(err)
		}
		props = append(props, p)
	}
	for _, m := range tg.members[2:] {
		for _, p := range props {
			if _, err := m.g.ProcessMessage(p); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, p := range props {
		if _, err := creator.g.ProcessMessage(p); err != nil {
			t.Fatal(err)
		}
	}
	res, err := creator.g.Update()
	if err != nil {
		t.Fatalf("a Remove of the committer froze the group: %v", err)
	}
	tg.deliver(creator, res.Commit)
	if creator.g.tree.leaf(0) == nil || creator.g.tree.leaf(3) != nil {
		t.Fatal("want leaf 0 kept and leaf 3 removed")
	}
	if len(creator.g.proposals) != 0 {
		t.Fatalf("%d proposals kept into the new epoch", len(creator.g.proposals))
	}
	tg.checkAgreement()
}
