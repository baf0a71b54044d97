package mls

import (
	"bytes"
	"testing"
)

// Fuzz targets for the group layer: a fixed group state receives arbitrary
// messages. Whatever the input, processing must not panic, and a rejected
// message must leave the stored state byte-for-byte unchanged (§12.4.2:
// a commit is applied fully or not at all).

type groupFuzzFixture struct {
	state   []byte // the receiver's marshalled state
	seeds   [][]byte
	welcome []byte
	joiner  *KeyPackagePrivate
}

func newGroupFuzzFixture(f *testing.F) *groupFuzzFixture {
	f.Helper()
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(f, suite, nil)
	tg.add(tg.members[0], 2)
	a, b := tg.members[0].g, tg.members[1].g
	fx := &groupFuzzFixture{state: stateOf(f, b)}
	for _, public := range []bool{true, false} {
		c := a.clone()
		c.cfg.PublicHandshake = public
		kp := newKP(f, newIdentity(f, suite, "seed"))
		for _, opts := range []*CommitOptions{nil,
			{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 2}}}},
			{Proposals: []*Proposal{{Type: ProposalTypeAdd, Add: &Add{KeyPackage: kp.KeyPackage}}}},
		} {
			res, err := c.clone().Commit(opts)
			if err != nil {
				f.Fatal(err)
			}
			fx.seeds = append(fx.seeds, res.Commit)
		}
		p, err := c.clone().ProposeUpdate()
		if err != nil {
			f.Fatal(err)
		}
		fx.seeds = append(fx.seeds, p)
	}
	app, err := a.clone().Encrypt([]byte("seed"))
	if err != nil {
		f.Fatal(err)
	}
	fx.seeds = append(fx.seeds, app)
	fx.joiner = newKP(f, newIdentity(f, suite, "joiner"))
	res, err := a.clone().Add(&fx.joiner.KeyPackage)
	if err != nil {
		f.Fatal(err)
	}
	fx.welcome = res.Welcome
	return fx
}

func FuzzGroupProcessCommit(f *testing.F) {
	fx := newGroupFuzzFixture(f)
	for _, s := range fx.seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := UnmarshalGroup(fx.state, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.ProcessMessage(data); err != nil {
			if !bytes.Equal(stateOf(t, g), fx.state) {
				t.Fatalf("rejected message changed the state: %v", err)
			}
			return
		}
		// Accepted: the state must still encode and decode.
		if _, err := UnmarshalGroup(stateOf(t, g), nil); err != nil {
			t.Fatalf("accepted message left an unstorable state: %v", err)
		}
	})
}

func FuzzGroupJoinWelcome(f *testing.F) {
	fx := newGroupFuzzFixture(f)
	f.Add(fx.welcome)
	f.Add(fx.welcome[:len(fx.welcome)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Join(data, fx.joiner, nil, nil)
		if err != nil {
			return
		}
		// Whatever was accepted must be a usable group.
		if _, err := g.Encrypt([]byte("x")); err != nil {
			t.Fatalf("joined group cannot send: %v", err)
		}
	})
}

// FuzzGroupSignedCommit goes past the signature and membership tag: the
// input is a Commit body, which the fixture signs and MACs as a genuine
// member would, so the fuzzer reaches proposal validation (§12.2), the
// UpdatePath checks (§7.5, §7.9) and the key schedule. Rejection must
// leave the state unchanged; nothing may panic.
func FuzzGroupSignedCommit(f *testing.F) {
	suite := SuiteX25519AES128GCMSHA256Ed25519
	tg := newTestGroup(f, suite, nil)
	tg.add(tg.members[0], 2)
	a, b := tg.members[0].g, tg.members[1].g
	state := stateOf(f, b)
	kp := newKP(f, newIdentity(f, suite, "seed"))
	for _, opts := range []*CommitOptions{nil,
		{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: 2}}}},
		{Proposals: []*Proposal{{Type: ProposalTypeAdd, Add: &Add{KeyPackage: kp.KeyPackage}}}, NoPath: true},
	} {
		c := a.clone()
		c.cfg.PublicHandshake = true
		res, err := c.Commit(opts)
		if err != nil {
			f.Fatal(err)
		}
		var m MLSMessage
		if err := m.Unmarshal(res.Commit); err != nil {
			f.Fatal(err)
		}
		body, err := m.PublicMessage.Content.Commit.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var commit Commit
		if commit.Unmarshal(data) != nil {
			return
		}
		fc := a.frame(ContentTypeCommit)
		fc.Commit = &commit
		ac, err := a.suite.SignContent(WireFormatPublicMessage, fc, &a.ctx, a.sigPriv)
		if err != nil {
			return
		}
		ac.Auth.ConfirmationTag = make([]byte, a.suite.Nh())
		pm, err := a.suite.ProtectPublic(ac, &a.ctx, a.secrets.MembershipKey)
		if err != nil {
			return
		}
		msg, err := (&MLSMessage{Version: MLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}).Marshal()
		if err != nil {
			return
		}
		g, err := UnmarshalGroup(state, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.ProcessMessage(msg); err == nil {
			// The confirmation tag is zero, so acceptance means the tag
			// check was skipped.
			t.Fatal("commit with a zero confirmation tag accepted")
		}
		if !bytes.Equal(stateOf(t, g), state) {
			t.Fatal("rejected commit changed the state")
		}
	})
}
