package population

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/lab/scenario"
)

// small is a scenario that runs in a few seconds: 8 users, two contacts
// each and a group, an hour at 900× (4 s), receipts 0.5 s after delivery.
const small = `
name = "small"
users = 8
duration = "1h"
speed = 900
[graph]
contacts = 2
groups = 1
group_min = 3
group_max = 3
[timing]
rate_per_day = 240
reply_prob = 0.3
reply_delay = { dist = "exp", mean = "1m" }
[receipts]
enabled = true
delay = { dist = "fixed", mean = "500ms" }
`

func runSmall(t *testing.T, src string, seed int64, network bool) (string, *Manifest) {
	t.Helper()
	sc, err := scenario.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	m, err := Run(ctx, Options{Scenario: sc, Seed: seed, Out: out, Drain: time.Second, Settle: time.Millisecond, Network: network})
	if err != nil {
		t.Fatal(err)
	}
	return out, m
}

// TestLabPopulationTruthInRecord runs a small seeded population on the
// real server and checks the ground truth against what the server
// recorded: every text and receipt in the truth arrived as a Send to a
// mailbox of its recipient in that conversation, no scheduled text was
// lost, and a second run with the seed follows the same schedule.
func TestLabPopulationTruthInRecord(t *testing.T) {
	out, m := runSmall(t, small, 5, true)
	t.Logf("manifest: %+v", *m)
	if m.Scheduled == 0 || m.Lost != 0 {
		t.Fatalf("%d of %d scheduled texts never reached the server", m.Lost, m.Scheduled)
	}
	if m.Receipts == 0 {
		t.Error("receipts are on, yet none was sent")
	}
	users, convs, msgs := readTruth(t, out, 5, "small")
	if len(users) != 8 {
		t.Fatalf("%d users in the truth", len(users))
	}
	for name, u := range users {
		if u.IntroMailbox == "" || u.Handle == "" || u.Account == "" {
			t.Errorf("user %s without handle, intro mailbox or account: %+v", name, u)
		}
	}
	checkAgainstObserver(t, out, m, users, convs, msgs)
	checkAgainstSchedule(t, small, 5, m, msgs)
	checkNetwork(t, out, len(users))
}

// checkAgainstSchedule: the run followed the seed's schedule, the same
// schedule Generate draws again: every scheduled text is in the truth
// once, from its sender to the other members of its conversation, in
// order. With TestLabScheduleReproducible (one seed, one schedule) this
// makes a run reproducible up to the network's timing.
func checkAgainstSchedule(t *testing.T, src string, seed int64, m *Manifest, msgs []*record.TruthMessage) {
	t.Helper()
	sc, err := scenario.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sched, err := sc.Generate(seed)
	if err != nil {
		t.Fatal(err)
	}
	if sched.Hash() != m.ScheduleHash {
		t.Fatalf("the run's schedule %s is not seed %d's %s", m.ScheduleHash, seed, sched.Hash())
	}
	byID := map[string]*record.TruthMessage{}
	for _, x := range msgs {
		if x.Kind == record.MsgText {
			if byID[x.Msg] != nil {
				t.Fatalf("text %s twice in the truth", x.Msg)
			}
			byID[x.Msg] = x
		}
	}
	for _, sm := range sched.Messages {
		x := byID[sm.ID]
		if x == nil {
			t.Errorf("scheduled %s is not in the truth", sm.ID)
			continue
		}
		c := sched.Convs[sm.Conv]
		var to []string
		for _, u := range sched.Recipients(sm) {
			to = append(to, sched.Users[u].Name)
		}
		if x.From != sched.Users[sm.From].Name || x.Conv != c.ID || !slices.Equal(x.To, to) {
			t.Errorf("%s: truth %s -> %v in %s, schedule %s -> %v in %s", sm.ID, x.From, x.To, x.Conv, sched.Users[sm.From].Name, to, c.ID)
		}
		if x.T < m.RunStartNS+int64(float64(sm.At)/m.Speed) {
			t.Errorf("%s reached the server before its scheduled time", sm.ID)
		}
	}
}

func readTruth(t *testing.T, out string, seed int64, name string) (map[string]*record.TruthUser, map[string]*record.TruthConv, []*record.TruthMessage) {
	t.Helper()
	f, err := os.Open(filepath.Join(out, FileTruth))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, lines, err := record.ReadTruth(f)
	if err != nil {
		t.Fatal(err)
	}
	if h.Seed != seed || h.Scenario != name {
		t.Errorf("truth header %+v", h)
	}
	users := map[string]*record.TruthUser{}
	convs := map[string]*record.TruthConv{}
	var msgs []*record.TruthMessage
	for _, x := range lines {
		switch {
		case x.User != nil:
			users[x.User.User] = x.User
		case x.Conv != nil:
			convs[x.Conv.Conv] = x.Conv
		case x.Message != nil:
			msgs = append(msgs, x.Message)
		}
	}
	return users, convs, msgs
}

// naive is Signal's sealed sender in miniature: 4 users, one mailbox
// each, receipts at once.
const naive = `
name = "naive"
users = 4
duration = "1h"
speed = 1800
naive = true
[graph]
contacts = 1
[timing]
rate_per_day = 480
`

// TestLabPopulationNaive: in naive mode every conversation receives at
// its members' intro mailboxes (the mailbox key transparency names for
// them), every text of the schedule arrives there, and receipts follow.
func TestLabPopulationNaive(t *testing.T) {
	out, m := runSmall(t, naive, 2, false)
	t.Logf("manifest: %+v", *m)
	if !m.Naive || m.Lost != 0 || m.Texts < m.Scheduled || m.Receipts == 0 {
		t.Fatalf("naive run: %+v", *m)
	}
	users, convs, msgs := readTruth(t, out, 2, "naive")
	for _, c := range convs {
		for _, u := range c.Members {
			if boxes := c.Mailboxes[u]; len(boxes) != 1 || boxes[0] != users[u].IntroMailbox {
				t.Errorf("%s receives in %s at %v, not at its intro mailbox %s", u, c.Conv, boxes, users[u].IntroMailbox)
			}
		}
	}
	checkAgainstObserver(t, out, m, users, convs, msgs)
	checkAgainstSchedule(t, naive, 2, m, msgs)
}

// checkNetwork: the relay's network record saw every user's flows, both
// ways.
func checkNetwork(t *testing.T, out string, users int) {
	t.Helper()
	f, err := os.Open(filepath.Join(out, FileNetwork))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, pkts, err := record.ReadNetwork(f)
	if err != nil {
		t.Fatal(err)
	}
	flows := map[string]bool{}
	var up, down int
	for _, p := range pkts {
		flows[p.Flow] = true
		if p.Dir == record.DirUp {
			up++
		} else {
			down++
		}
	}
	// Each user has a connection per conversation and more (account, KT).
	if len(flows) < users || up == 0 || down == 0 {
		t.Errorf("network record: %d flows, %d up, %d down packets for %d users", len(flows), up, down, users)
	}
}

// paper is naive mode with Martiny et al.'s simulated traffic, half the
// receipts stray (more than their third, so that a few seconds show it).
const paper = `
name = "paper"
users = 8
duration = "1h"
speed = 900
naive = true
[graph]
contacts = 2
[timing]
rate_per_day = 480
[traffic]
stray_receipts = 0.5
replies = 0.25
repeats = 0.25
`

// TestLabPopulationPaperTraffic: with [traffic] the live clients drop
// the stated fraction of delivery receipts and, in their place, random
// users send real receipts (sealed, paid, over QUIC) to a random peer of
// theirs, which the ground truth marks as strays and the server recorded
// as Sends to the stray's recipient; the correlated background is the
// schedule's, which the run followed.
func TestLabPopulationPaperTraffic(t *testing.T) {
	out, m := runSmall(t, paper, 4, false)
	t.Logf("manifest: %+v", *m)
	if m.Lost != 0 || m.StrayReceipts == 0 {
		t.Fatalf("run: %+v", *m)
	}
	users, convs, msgs := readTruth(t, out, 4, "paper")
	checkAgainstObserver(t, out, m, users, convs, msgs)
	checkAgainstSchedule(t, paper, 4, m, msgs)
	peers := map[[2]string]bool{}
	for _, c := range convs {
		if len(c.Members) == 2 {
			peers[[2]string{c.Members[0], c.Members[1]}], peers[[2]string{c.Members[1], c.Members[0]}] = true, true
		}
	}
	var strays, genuine, texts int
	for _, x := range msgs {
		if x.T < m.RunStartNS {
			continue
		}
		switch {
		case x.Kind == record.MsgText:
			texts++
		case x.Kind == record.MsgReceipt && strings.HasPrefix(x.Msg, record.StrayPrefix):
			strays++
			if !peers[[2]string{x.From, x.To[0]}] {
				t.Errorf("stray receipt %s from %s to %s, not a peer of theirs", x.Msg, x.From, x.To[0])
			}
		case x.Kind == record.MsgReceipt:
			genuine++
		}
	}
	// Each text's receipt is dropped, and a stray sent, at the stated
	// fraction, within four binomial standard deviations (receipts due
	// together in one chat leave as one, so receipts are not counted
	// against texts).
	f, sd := float64(m.Dropped)/float64(texts), 0.5/math.Sqrt(float64(texts))
	t.Logf("%d texts, %d receipts, %d of them stray, %d dropped (%.2f of texts)", texts, strays+genuine, strays, m.Dropped, f)
	if m.Dropped != m.StrayReceipts || strays != m.StrayReceipts || genuine == 0 {
		t.Errorf("%d texts, %d genuine receipts and %d stray; the manifest says %d stray, %d dropped", texts, genuine, strays, m.StrayReceipts, m.Dropped)
	}
	if math.Abs(f-0.5) > 4*sd {
		t.Errorf("%.2f of receipts dropped for a stray, want 0.5 ± %.2f", f, 4*sd)
	}
}
