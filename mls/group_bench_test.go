package mls

import (
	"fmt"
	"testing"
)

// commitFixture is a group of n members built with one commit of n-1 Adds
// (so that even 1024 members take seconds, not minutes, to set up on a
// small machine), seen from the creator (leaf 0) and from one joiner.
//
// Note on what the numbers mean: right after such a commit only the
// creator's direct path has keys, so the creator's next commit encrypts
// to every leaf of each copath subtree (n-1 HPKE encryptions). That is the
// worst case; trees whose members have committed are much fuller and
// cheaper.
type commitFixture struct {
	creator, receiver *Group
	joiner            *KeyPackage
}

func newCommitFixture(b *testing.B, suite CipherSuiteID, n int) *commitFixture {
	b.Helper()
	id := newIdentity(b, suite, "creator")
	creator, err := Create(id, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	var kps []*KeyPackagePrivate
	var pub []*KeyPackage
	for i := 1; i < n; i++ {
		kp := newKP(b, newIdentity(b, suite, fmt.Sprintf("m%d", i)))
		kps = append(kps, kp)
		pub = append(pub, &kp.KeyPackage)
	}
	res, err := creator.Add(pub...)
	if err != nil {
		b.Fatal(err)
	}
	receiver, err := Join(res.Welcome, kps[0], nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return &commitFixture{creator: creator, receiver: receiver, joiner: &newKP(b, newIdentity(b, suite, "joiner")).KeyPackage}
}

func (f *commitFixture) opts(op string, n int) *CommitOptions {
	switch op {
	case "add":
		return &CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *f.joiner}}}}
	case "remove":
		// The last leaf; in a 2-member group that is the receiver, whose
		// processing then stops at noticing its removal.
		return &CommitOptions{Proposals: []*Proposal{{Type: ProposalTypeRemove, Remove: &Remove{Removed: uint32(n - 1)}}}}
	default:
		return nil // update: an empty commit with a fresh path
	}
}

// BenchmarkCommit measures creating a commit (at the creator) and
// processing it (at another member) for adds, removes and updates, in
// groups of 2 to 1024 members, for suite 0x0001 and X-Wing (0x004D).
// Each iteration works on a copy of the fixture, so every one commits
// from the same epoch.
func BenchmarkCommit(b *testing.B) {
	for _, suite := range benchSuites {
		for _, n := range []int{2, 16, 128, 1024} {
			var fx *commitFixture
			fixture := func(b *testing.B) *commitFixture {
				if fx == nil {
					fx = newCommitFixture(b, suite, n)
				}
				return fx
			}
			for _, op := range []string{"add", "remove", "update"} {
				b.Run(fmt.Sprintf("%s/members=%d/%s/create", suiteName(suite), n, op), func(b *testing.B) {
					f := fixture(b)
					for b.Loop() {
						if _, err := f.creator.clone().Commit(f.opts(op, n)); err != nil {
							b.Fatal(err)
						}
					}
				})
				b.Run(fmt.Sprintf("%s/members=%d/%s/process", suiteName(suite), n, op), func(b *testing.B) {
					f := fixture(b)
					res, err := f.creator.clone().Commit(f.opts(op, n))
					if err != nil {
						b.Fatal(err)
					}
					for b.Loop() {
						if _, err := f.receiver.clone().ProcessMessage(res.Commit); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
