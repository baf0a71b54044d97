package client

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// TestWelcomeCost measures what a group's Welcome costs its creator (issue
// 22 item 4): the Welcome's bytes, and the chunks (one token each) per
// member under the default padding policy, sent whole to every member as
// before or cut down to the member's own group secrets (mls.WelcomeFor),
// and one member's MLS processing of it (mls.Join). It checks that the cut
// Welcome joins the same group and that a member's cut is refused to
// another. The default run makes a group of 11; QPC_BENCH=1 also 32, 64
// and 128:
//
//	QPC_BENCH=1 go test ./client -run TestWelcomeCost -v
func TestWelcomeCost(t *testing.T) {
	sizes := []int{11}
	if os.Getenv("QPC_BENCH") == "1" {
		sizes = []int{11, 32, 64, 128}
	}
	policy, err := sealed.PlaintextPolicy(padding.Default, tokens.TokenSize)
	if err != nil {
		t.Fatal(err)
	}
	chunk := sealed.MaxContentFor(policy, wire.MaxEnvelope(padding.Default), len("member-0123"))
	chunks := func(payload int) int {
		if payload+chunkTypeSize <= chunk {
			return 1
		}
		parts, err := padding.Split(padding.ChunkID{}, make([]byte, chunkTypeSize+payload), chunk)
		if err != nil {
			t.Fatal(err)
		}
		return len(parts)
	}
	for _, n := range sizes {
		creatorID, err := mls.NewBasicIdentity(DefaultSuite, []byte("member-0000"))
		if err != nil {
			t.Fatal(err)
		}
		creator, err := mls.Create(creatorID, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		var kps []*mls.KeyPackagePrivate
		var pub []*mls.KeyPackage
		for i := 1; i < n; i++ {
			id, err := mls.NewBasicIdentity(DefaultSuite, fmt.Appendf(nil, "member-%04d", i))
			if err != nil {
				t.Fatal(err)
			}
			kp, err := mls.NewKeyPackage(id, nil)
			if err != nil {
				t.Fatal(err)
			}
			kps = append(kps, kp)
			pub = append(pub, &kp.KeyPackage)
		}
		res, err := creator.Add(pub...)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := kps[0].KeyPackage.Ref()
		if err != nil {
			t.Fatal(err)
		}
		cut, err := mls.WelcomeFor(res.Welcome, ref)
		if err != nil {
			t.Fatal(err)
		}
		other, err := kps[1].KeyPackage.Ref()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mls.Join(cut, kps[1], nil, nil); !errors.Is(err, mls.ErrWelcomeNotForUs) {
			t.Fatalf("a Welcome cut for member 1 joined member 2: %v", err)
		}
		if _, err := mls.WelcomeFor(res.Welcome, slices.Concat(other, []byte{0})); !errors.Is(err, mls.ErrWelcomeNotForUs) {
			t.Fatalf("a cut for a ref not in the Welcome: %v", err)
		}
		var whole, part []time.Duration
		for range 3 {
			for _, w := range []struct {
				msg []byte
				d   *[]time.Duration
			}{{res.Welcome, &whole}, {cut, &part}} {
				start := time.Now()
				g, err := mls.Join(w.msg, kps[0], nil, nil)
				*w.d = append(*w.d, time.Since(start))
				if err != nil {
					t.Fatal(err)
				}
				if g.Epoch() != creator.Epoch() || !slices.Equal(g.EpochAuthenticator(), creator.EpochAuthenticator()) {
					t.Fatal("the joiner is not in the creator's epoch")
				}
			}
		}
		med := func(ds []time.Duration) time.Duration { s := slices.Clone(ds); slices.Sort(s); return s[len(s)/2] }
		cw, cc := chunks(len(res.Welcome)), chunks(len(cut))
		t.Logf("n=%3d: Welcome %7d B whole, %7d B cut (%.2f); chunks of %d B per member %3d whole, %3d cut; tokens for the group %5d whole, %5d cut (%.2f); mls.Join median %v whole, %v cut",
			n, len(res.Welcome), len(cut), float64(len(cut))/float64(len(res.Welcome)), chunk, cw, cc, cw*(n-1), cc*(n-1), float64(cc)/float64(cw), med(whole).Round(time.Microsecond), med(part).Round(time.Microsecond))
	}
}
