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
