package mls

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// resyncGroup is a group of four (X-Wing) in which member 1 fell behind:
// member 0 committed twice and member 1 processed neither commit. It
// returns the group and the stale member's state.
func resyncGroup(t *testing.T) (*testGroup, *testMember) {
	t.Helper()
	tg := newTestGroup(t, SuiteXWingChaCha20Poly1305SHA256Ed25519, nil)
	tg.add(tg.members[0], 3)
	stale := tg.members[1]
	tg.members[1] = nil // misses what follows
	for range 2 {
		res, err := tg.members[0].g.Update()
		if err != nil {
			t.Fatal(err)
		}
		tg.deliver(tg.members[0], res.Commit)
	}
	tg.checkAgreement()
	return tg, stale
}

// TestExternalCommitResync: a member that missed two commits rejoins by
// external commit from a GroupInfo another member signed (RFC 9420
// §12.4.3.2), removing its own old leaf in the same commit. The members
// process the commit with the ordinary code, learn from
// Received.External whom it replaced, and everyone ends in the same epoch
// with the same epoch authenticator; messages go both ways; the tree has
// as many members as before.
func TestExternalCommitResync(t *testing.T) {
	tg, stale := resyncGroup(t)
	oldLeaf := stale.g.LeafIndex()
	signer := tg.members[2]
	gi, err := signer.g.GroupInfo()
	if err != nil {
		t.Fatal(err)
	}
	before := len(signer.g.Members())
	g, commit, err := JoinExternalWith(gi, stale.id, nil, &ExternalJoinOptions{
		GroupID: stale.g.GroupID(), Signer: signer.id.Credential.Identity, Resync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range tg.members {
		if m == nil {
			continue
		}
		r, err := m.g.ProcessMessage(commit)
		if err != nil {
			t.Fatalf("leaf %d: %v", m.g.LeafIndex(), err)
		}
		if r.External == nil || r.External.Resynced == nil || r.External.Resynced.Leaf != oldLeaf ||
			!bytes.Equal(r.External.Joiner.Credential.Identity, stale.id.Credential.Identity) || r.External.Joiner.Leaf != g.LeafIndex() {
			t.Fatalf("leaf %d: external join reported as %+v", m.g.LeafIndex(), r.External)
		}
	}
	tg.members[1] = &testMember{id: stale.id, g: g}
	tg.checkAgreement()
	if n := len(g.Members()); n != before {
		t.Fatalf("%d members after the resync, %d before", n, before)
	}
	msg, err := g.Encrypt([]byte("back"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range tg.members[2:] {
		if pt, _, err := m.g.Decrypt(msg); err != nil || string(pt) != "back" {
			t.Fatalf("leaf %d reads %q, %v", m.g.LeafIndex(), pt, err)
		}
	}
	reply, err := tg.members[0].g.Encrypt([]byte("welcome back"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, _, err := g.Decrypt(reply); err != nil || string(pt) != "welcome back" {
		t.Fatalf("the rejoined member reads %q, %v", pt, err)
	}
	// The group goes on: a commit after the resync reaches everyone.
	res, err := tg.members[0].g.Update()
	if err != nil {
		t.Fatal(err)
	}
	tg.deliver(tg.members[0], res.Commit)
	tg.checkAgreement()
}

// resignedGroupInfo is m's GroupInfo MLSMessage after edit changed it,
// signed again with m's key, so that the check under test is reached.
func resignedGroupInfo(t *testing.T, m *Group, edit func(*GroupInfo)) []byte {
	t.Helper()
	gi, err := m.signGroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	edit(gi)
	tbs, err := gi.MarshalTBS()
	if err != nil {
		t.Fatal(err)
	}
	if gi.Signature, err = m.suite.SignWithLabel(m.sigPriv, "GroupInfoTBS", tbs); err != nil {
		t.Fatal(err)
	}
	out, err := (&MLSMessage{Version: MLS10, WireFormat: WireFormatGroupInfo, GroupInfo: gi}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestExternalCommitResyncFails: what a joiner refuses before it sends
// anything, each with its error: a GroupInfo whose signature does not
// verify, one of another group, one without external_pub, one signed by
// another member than expected, a resync without a leaf of ours, and a
// member refused by Config.VerifyMember.
func TestExternalCommitResyncFails(t *testing.T) {
	tg, stale := resyncGroup(t)
	signer := tg.members[2]
	gi, err := signer.g.GroupInfo()
	if err != nil {
		t.Fatal(err)
	}
	badSig := slices.Clone(gi)
	badSig[len(badSig)-1] ^= 1 // the signature is the GroupInfo's last field
	noPub := resignedGroupInfo(t, signer.g, func(gi *GroupInfo) {
		gi.Extensions = slices.DeleteFunc(gi.Extensions, func(e Extension) bool { return e.Type == ExtensionTypeExternalPub })
	})
	refuse := errors.New("not the key key transparency shows")
	stranger := newIdentity(t, tg.suite, "stranger")
	for _, c := range []struct {
		name string
		gi   []byte
		id   *Identity
		cfg  *Config
		opts ExternalJoinOptions
		want error
	}{
		{"fail_bad_signature", badSig, stale.id, nil, ExternalJoinOptions{Resync: true}, ErrInvalidGroupInfo},
		{"fail_wrong_group", gi, stale.id, nil, ExternalJoinOptions{GroupID: []byte("another group"), Resync: true}, ErrWrongGroup},
		{"fail_missing_external_pub", noPub, stale.id, nil, ExternalJoinOptions{Resync: true}, ErrInvalidGroupInfo},
		{"fail_other_signer", gi, stale.id, nil, ExternalJoinOptions{Signer: tg.members[0].id.Credential.Identity, Resync: true}, ErrInvalidGroupInfo},
		{"fail_resync_not_a_member", gi, stranger, nil, ExternalJoinOptions{Resync: true}, ErrInvalidGroupInfo},
		{"fail_member_refused", gi, stale.id, &Config{VerifyMember: func(Credential, []byte) error { return refuse }}, ExternalJoinOptions{Resync: true}, ErrMemberRejected},
		{"fail_not_a_group_info", stale.g.mustEncrypt(t, "x"), stale.id, nil, ExternalJoinOptions{}, ErrUnexpectedMessage},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, commit, err := JoinExternalWith(c.gi, c.id, c.cfg, &c.opts)
			if !errors.Is(err, c.want) || g != nil || commit != nil {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func (g *Group) mustEncrypt(t *testing.T, s string) []byte {
	t.Helper()
	msg, err := g.Encrypt([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestExternalCommitPlainJoinReported: an external commit without a
// Remove (a plain join) is processed by the mls package as RFC 9420
// allows, and reported with Resynced nil, so that an application that
// accepts resyncs only (qpc) can refuse it.
func TestExternalCommitPlainJoinReported(t *testing.T) {
	tg, _ := resyncGroup(t)
	gi, err := tg.members[2].g.GroupInfo()
	if err != nil {
		t.Fatal(err)
	}
	_, commit, err := JoinExternal(gi, newIdentity(t, tg.suite, "stranger"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tg.members[0].g.ProcessMessage(commit)
	if err != nil {
		t.Fatal(err)
	}
	if r.External == nil || r.External.Resynced != nil || string(r.External.Joiner.Credential.Identity) != "stranger" {
		t.Fatalf("plain join reported as %+v", r.External)
	}
}

// FuzzGroupJoinExternal feeds JoinExternalWith arbitrary GroupInfo
// messages, seeded with a genuine one: it must not panic, and a join it
// accepts must give a group that can send, whose commit a member can
// process.
func FuzzGroupJoinExternal(f *testing.F) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(f, suite, nil)
	tg.add(tg.members[0], 2)
	gi, err := tg.members[1].g.GroupInfo()
	if err != nil {
		f.Fatal(err)
	}
	member := stateOf(f, tg.members[0].g)
	id := tg.members[2].id
	f.Add(gi)
	f.Add(gi[:len(gi)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		g, commit, err := JoinExternalWith(data, id, nil, &ExternalJoinOptions{Resync: true})
		if err != nil {
			return
		}
		if _, err := g.Encrypt([]byte("x")); err != nil {
			t.Fatalf("joined group cannot send: %v", err)
		}
		m, err := UnmarshalGroup(member, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.ProcessMessage(commit) // may be refused (a GroupInfo of another group); must not panic
	})
}
