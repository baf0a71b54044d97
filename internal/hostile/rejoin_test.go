package hostile_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/internal/hostile"
	"github.com/quicprochat/qpc/mls"
)

// Rejoining after missed commits (issue 20, item 5; docs/protocol.md
// §11.8): a member whose group state fell behind rejoins by external
// commit, and an external commit that is not a member's resync of itself
// is refused.

// groupOf is c's view of the MLS group of conv.
func groupOf(t *testing.T, ctx context.Context, c *client.Client, conv string) client.GroupView {
	t.Helper()
	gv, err := c.Groups(ctx, conv)
	if err != nil || len(gv) != 1 {
		t.Fatalf("%s: groups of %s: %v %v", c.Handle(), conv, gv, err)
	}
	return gv[0]
}

// handlesOf is the members' handles of v.
func handlesOf(v client.GroupView) []string {
	var out []string
	for _, m := range v.Members {
		out = append(out, m.Handle)
	}
	slices.Sort(out)
	return out
}

// TestRejoinAfterMailboxTTL: bob is offline while alice adds dave to the
// group and writes; the server's message lifetime passes, and its purge
// deletes what bob never fetched, alice's commit among it. Back online,
// bob holds the state of an epoch the group left. Before, he waited for
// that commit for good (nothing he received could be read). Now alice's
// next message shows him he is behind: he asks her for the group's state,
// rejoins by external commit without anyone's help, and reads what she
// writes next; alice, carol and dave read what he writes. Everyone ends
// in the same epoch, with the same members; bob's history from before
// is kept.
func TestRejoinAfterMailboxTTL(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	if err := carol.Send(ctx, "#g", "before bob left"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol)

	// Bob is away.
	if err := alice.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, carol, dave)
	if err := alice.Send(ctx, "#g", "while bob was away"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, carol, dave)
	// The message lifetime passes: everything not fetched is purged.
	if n, err := h.Store().PurgeExpired(ctx, time.Now().Add(22*24*time.Hour), 21*24*time.Hour); err != nil || n == 0 {
		t.Fatalf("purge: %d messages, %v", n, err)
	}
	if err := alice.Send(ctx, "#g", "after the purge"); err != nil {
		t.Fatal(err)
	}

	// Bob back: alice's message is from an epoch he cannot reach.
	memberEvents(t, ctx, bob, client.AlarmDropped)
	for range 3 {
		for _, c := range []*client.Client{alice, bob, carol, dave} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	want := groupOf(t, ctx, alice, "#g")
	for _, c := range []*client.Client{bob, carol, dave} {
		got := groupOf(t, ctx, c, "#g")
		if got.Epoch != want.Epoch || !slices.Equal(handlesOf(got), handlesOf(want)) {
			t.Fatalf("%s at epoch %d with %v; alice at %d with %v", c.Handle(), got.Epoch, handlesOf(got), want.Epoch, handlesOf(want))
		}
	}
	if !slices.Equal(handlesOf(want), []string{"alice", "bob", "carol", "dave"}) {
		t.Fatalf("members after the rejoin: %v", handlesOf(want))
	}
	// qpc group: alice saw bob's leaf change when she processed his
	// rejoin.
	for _, m := range want.Members {
		if m.Handle == "bob" && m.Updated.IsZero() {
			t.Fatal("alice's view does not show bob's leaf update")
		}
	}

	if err := bob.Send(ctx, "#g", "bob is back"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, carol, dave} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Contains(got, "bob: bob is back") {
			t.Fatalf("%s read %q", c.Handle(), got)
		}
	}
	if err := alice.Send(ctx, "#g", "welcome back"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob)); !slices.Equal(got, []string{"alice: welcome back"}) {
		t.Fatalf("bob read %q", got)
	}
	hist, err := bob.History("#g", 0)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	rejoined := false
	for _, e := range hist {
		if e.Kind == client.EventMessage {
			texts = append(texts, e.From+": "+e.Text)
		}
		rejoined = rejoined || strings.Contains(e.Text, "you rejoined")
	}
	if !slices.Contains(texts, "carol: before bob left") || !rejoined {
		t.Fatalf("bob's history: %q (rejoin recorded: %v)", texts, rejoined)
	}
}

// TestHostileMemberExternalJoin: eve, a member of alice's group, gets
// the group's GroupInfo (any member can make one) and sends the members
// external commits (RFC 9420 §12.4.3.2) that the creator never made:
// one that adds mallory, a registered stranger with a real key in key
// transparency, and one that adds a second leaf for eve herself (no
// Remove of her own). A member's external commit is accepted only as the
// resync of its own leaf: alice and bob refuse both, with an alarm (the
// client's policy refuses mallory's; eve's second leaf, with her one
// signature key, already fails MLS's check that no two leaves share a
// key), stay in their epoch with the same members, and still read each
// other.
// (It needs no fix of older code, which refused every external commit;
// it pins down that rejoining opened no door. Accepting any external
// commit makes it fail.)
func TestHostileMemberExternalJoin(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "eve", "mallory")
	alice, bob, eve, mallory := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, eve)
	before := groupOf(t, ctx, alice, "#g")

	for _, joiner := range []*client.Client{mallory, eve} {
		id := joiner.MLSIdentity()
		err := eve.SendMLS(ctx, "#g", nil, func(g *mls.Group) ([]byte, error) {
			gi, err := g.GroupInfo()
			if err != nil {
				return nil, err
			}
			_, commit, err := mls.JoinExternal(gi, id, nil, nil)
			return commit, err
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*client.Client{alice, bob} {
			ev := memberEvents(t, ctx, c, client.AlarmMemberPolicy, client.AlarmDropped)
			var alarms []string
			for _, e := range ev {
				if e.Kind == client.EventAlarm {
					alarms = append(alarms, e.Alarm.Detail)
				}
			}
			t.Logf("%s on %s's external commit: %q", c.Handle(), joiner.Handle(), alarms)
			if len(alarms) == 0 {
				t.Fatalf("%s raised no alarm for %s's external commit", c.Handle(), joiner.Handle())
			}
		}
	}
	for _, c := range []*client.Client{alice, bob} {
		got := groupOf(t, ctx, c, "#g")
		if got.Epoch != before.Epoch || !slices.Equal(handlesOf(got), handlesOf(before)) {
			t.Fatalf("%s at epoch %d with %v, was %d with %v", c.Handle(), got.Epoch, handlesOf(got), before.Epoch, handlesOf(before))
		}
	}
	if err := alice.Send(ctx, "#g", "still ours"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob)); !slices.Equal(got, []string{"alice: still ours"}) {
		t.Fatalf("bob read %q", got)
	}
}

// TestRejoinAfterBackupRestore: bob exports a backup, then the group goes
// on (alice adds dave, everyone writes, bob's device reads it all), and
// bob's device is lost. Restored from the backup on a new device, bob
// holds the state of an epoch the group left, and the server holds
// nothing more for him (his old device acknowledged it all). Alice's
// next message shows him he is behind; he rejoins by himself, and he and
// the others read each other again.
func TestRejoinAfterBackupRestore(t *testing.T) {
	h := hostile.Start(t, hostile.Options{Accounts: hostile.RoomyAccounts})
	u := newMembers(t, h, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	ctx := memberCtx(t)
	groupG(t, ctx, alice, bob, carol)
	var backup bytes.Buffer
	if err := bob.ExportBackup(&backup, []byte("backup pass"), true); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddMember(ctx, "#g", "dave"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, dave)
	if err := carol.Send(ctx, "#g", "read by the lost device"); err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, alice, bob, carol, dave)
	bob.Close() // the device is lost

	opts := h.ClientOptions(t)
	bob2, err := client.RestoreBackup(ctx, bytes.NewReader(backup.Bytes()), func(int) ([]byte, error) { return []byte("backup pass"), nil }, opts)
	if err != nil {
		t.Fatal(err)
	}
	// As `qpc backup import` then `qpc login`: a new process logs in
	// (the restore's own sync opened anonymous connections, after which
	// this one does not refill, to keep them apart from the account).
	bob2.Close()
	if bob2, err = client.Open(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob2.Close() })
	if err := bob2.Login(ctx, []byte("password of bob")); err != nil {
		t.Fatal(err)
	}
	if err := bob2.RefillIfEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if got := groupOf(t, ctx, bob2, "#g"); got.Epoch >= groupOf(t, ctx, alice, "#g").Epoch {
		t.Fatalf("the restored state is at epoch %d, not behind", got.Epoch)
	}
	if err := alice.Send(ctx, "#g", "after the restore"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for _, c := range []*client.Client{alice, bob2, carol, dave} {
			memberEvents(t, ctx, c, client.AlarmDropped)
		}
	}
	want := groupOf(t, ctx, alice, "#g")
	for _, c := range []*client.Client{bob2, carol, dave} {
		if got := groupOf(t, ctx, c, "#g"); got.Epoch != want.Epoch || !slices.Equal(handlesOf(got), handlesOf(want)) {
			t.Fatalf("%s at epoch %d with %v; alice at %d with %v", c.Handle(), got.Epoch, handlesOf(got), want.Epoch, handlesOf(want))
		}
	}
	if err := bob2.Send(ctx, "#g", "restored bob"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{alice, carol, dave} {
		if got := textsIn(memberEvents(t, ctx, c)); !slices.Contains(got, "bob: restored bob") {
			t.Fatalf("%s read %q", c.Handle(), got)
		}
	}
	if err := dave.Send(ctx, "#g", "hello restored bob"); err != nil {
		t.Fatal(err)
	}
	if got := textsIn(memberEvents(t, ctx, bob2)); !slices.Equal(got, []string{"dave: hello restored bob"}) {
		t.Fatalf("bob read %q", got)
	}
}
