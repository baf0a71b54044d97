package kt

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestFollowMatchesRefill: a cache brought up to date by follow (the
// paths of the update lists of the epochs committed since) holds exactly
// the nodes a cache read whole from the store holds, at every depth up to
// its own, through epochs that split nodes at cached depths. A follower
// of several nodes serves lookups from such a cache: a node missed there
// would be a wrong proof.
func TestFollowMatchesRefill(t *testing.T) {
	d := newTestDir(t)
	ctx := context.Background()
	for _, depth := range []int{2, 6} {
		follower := newTreeStore(depth)
		if err := viewTree(ctx, d.store, follower.refill); err != nil {
			t.Fatal(err)
		}
		for round := range 9 {
			// Several epochs between two follows, some rounds none.
			for e := range round % 3 {
				var chs []<-chan Published
				for i := range 20 {
					ch, err := d.Enqueue(fmt.Sprintf("d%d-r%d-e%d-%d", depth, round, e, i), []byte("v"))
					if err != nil {
						t.Fatal(err)
					}
					chs = append(chs, ch)
				}
				if _, err := d.Tick(ctx); err != nil {
					t.Fatal(err)
				}
				for _, ch := range chs {
					if p := <-ch; p.Err != nil {
						t.Fatal(p.Err)
					}
				}
			}
			if err := viewTree(ctx, d.store, follower.follow); err != nil {
				t.Fatal(err)
			}
			whole := newTreeStore(depth)
			if err := viewTree(ctx, d.store, whole.refill); err != nil {
				t.Fatal(err)
			}
			if follower.epochs != whole.epochs {
				t.Fatalf("depth %d round %d: followed to %d epochs, the store has %d", depth, round, follower.epochs, whole.epochs)
			}
			ids := slices.Collect(maps.Keys(whole.cache))
			if len(follower.cache) != len(ids) {
				t.Fatalf("depth %d round %d: the followed cache holds %d nodes, the store %d", depth, round, len(follower.cache), len(ids))
			}
			for _, id := range ids {
				f, ok := follower.cache[id]
				if !ok {
					t.Fatalf("depth %d round %d: node at depth %d missing from the followed cache", depth, round, id.depth)
				}
				if f.epoch != whole.cache[id].epoch || f.state != whole.cache[id].state {
					t.Fatalf("depth %d round %d: node at depth %d is stale in the followed cache (epoch %d, the store's %d)",
						depth, round, id.depth, f.epoch, whole.cache[id].epoch)
				}
			}
		}
	}
}
