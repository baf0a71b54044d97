package client

import (
	"bytes"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/client/content"
)

// FuzzParsePolicy: the policy record a commit's authenticated data
// carries (docs/protocol.md §11.6) comes from any member; parsing never
// panics, and what parses has 1 to MaxGroupMembers admins and encodes
// back to a record that parses the same.
func FuzzParsePolicy(f *testing.F) {
	f.Add(marshalPolicy(&policyRecord{Admins: []string{"alice", "bob"}}))
	f.Add([]byte(policyPrefix + `{"admins":[]}`))
	f.Add([]byte(policyPrefix + `{"admins":null}`))
	f.Add([]byte("qpc-policy/2 {}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePolicy(b)
		if err != nil {
			return
		}
		if len(p.Admins) == 0 || len(p.Admins) > MaxGroupMembers {
			t.Fatalf("%d admins parsed", len(p.Admins))
		}
		q, err := parsePolicy(marshalPolicy(p))
		if err != nil || !slices.Equal(p.Admins, q.Admins) {
			t.Fatalf("re-encoded: %v, %v", q, err)
		}
	})
}

// TestCommitRankOrder: a removal outranks any other commit; between two
// others, the committer's keyed leaf decides, the same for every member
// of the epoch and different from one epoch to the next.
func TestCommitRankOrder(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	upd := commitRank(k1, 3, []byte("update"), false)
	rem := commitRank(k1, 3, []byte("remove"), true)
	if bytes.Compare(rem, upd) >= 0 {
		t.Fatal("a removal does not outrank an update")
	}
	if !sameCommitter(upd, commitRank(k1, 3, []byte("other"), false)) || sameCommitter(upd, commitRank(k1, 4, []byte("update"), false)) {
		t.Fatal("sameCommitter is wrong")
	}
	// Over many epochs each of two leaves wins about half the time: no
	// leaf always wins.
	wins := 0
	for i := range 200 {
		k := bytes.Repeat([]byte{byte(i)}, 32)
		if bytes.Compare(commitRank(k, 0, []byte("a"), false), commitRank(k, 1, []byte("a"), false)) < 0 {
			wins++
		}
	}
	if wins < 60 || wins > 140 {
		t.Fatalf("leaf 0 won %d of 200 epochs", wins)
	}
	if bytes.Equal(commitRank(k1, 0, nil, false), commitRank(k2, 0, nil, false)) {
		t.Fatal("the rank does not depend on the epoch")
	}
}

// TestJudgeCommit: the policy every member applies to a commit.
func TestJudgeCommit(t *testing.T) {
	g := &convRecord{Kind: content.ConvGroup, Creator: "alice"}
	set := func(h ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range h {
			m[x] = true
		}
		return m
	}
	abc, ab := set("alice", "bob", "carol"), set("alice", "bob")
	for _, tc := range []struct {
		name          string
		list          []string
		before, after map[string]bool
		sender        string
		aad           []byte
		want          []string
		ok            bool
	}{
		{"update by anyone", nil, abc, abc, "carol", nil, nil, true},
		{"creator removes", nil, abc, ab, "alice", nil, nil, true},
		{"member removes", nil, abc, ab, "bob", nil, nil, false},
		{"admin list", []string{"alice", "bob"}, abc, ab, "bob", nil, []string{"alice", "bob"}, true},
		{"hand on", []string{"alice"}, abc, abc, "alice", marshalPolicy(&policyRecord{Admins: []string{"bob"}}), []string{"bob"}, true},
		{"self-made admin", []string{"alice"}, abc, abc, "carol", marshalPolicy(&policyRecord{Admins: []string{"carol"}}), nil, false},
		{"admin not a member", []string{"alice"}, abc, abc, "alice", marshalPolicy(&policyRecord{Admins: []string{"zed"}}), nil, false},
		{"junk data", []string{"alice"}, abc, abc, "alice", []byte("x"), nil, false},
		{"admins gone: everyone", []string{"zed"}, abc, ab, "bob", nil, []string{"alice", "bob"}, true},
	} {
		got, err := judgeCommit(g, tc.list, tc.before, tc.after, tc.sender, tc.aad)
		if (err == nil) != tc.ok || (tc.ok && !slices.Equal(got, tc.want)) {
			t.Errorf("%s: %v, %v; want %v, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
	d := &convRecord{Kind: content.ConvDirect, Creator: "alice"}
	if _, err := judgeCommit(d, nil, ab, set("alice"), "alice", nil); err == nil {
		t.Error("a direct chat's member was removed")
	}
}
