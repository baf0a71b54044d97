package trace

import (
	"math"
	"strconv"
	"testing"

	"github.com/quicprochat/qpc/lab/attack"
	"github.com/quicprochat/qpc/lab/scenarios"
)

// TestLabPaperTrafficFractions checks, on the generated record alone, that
// the traffic options of Martiny et al.'s simulation come out at the stated
// fractions: stray receipts land on mailboxes other than the hot pair's,
// background replies reverse and repeats copy an earlier Send.
func TestLabPaperTrafficFractions(t *testing.T) {
	const tol = 0.02
	sc, err := scenarios.Load("martiny-naive")
	if err != nil {
		t.Fatal(err)
	}
	paper, err := FromScenario(sc, 7)
	if err != nil {
		t.Fatal(err)
	}
	if paper.StrayReceipts == 0 || paper.BgReplies == 0 || paper.BgRepeats == 0 {
		t.Fatalf("martiny-naive.toml has no paper traffic: %+v", sc.Traffic)
	}
	t.Run("stray receipts", func(t *testing.T) {
		// One hot pair, no background: every delivery that is not to the
		// pair's two mailboxes is a stray receipt.
		p := Params{Seed: 7, Users: 100_000, Duration: 3600 * second, Hot: 1, HotInterval: second,
			Receipts: ReceiptsAtOnce, ReceiptDelay: second / 2, StrayReceipts: paper.StrayReceipts}
		var other, total int
		pair := map[string]bool{}
		tr, err := Generate(p, func(e *attack.Event) error {
			if e.Ev != "deliver" {
				return nil
			}
			total++
			if len(pair) == 0 {
				pair[mailboxID(p.Seed, 1, 0, 0)], pair[mailboxID(p.Seed, 1, 1, 0)] = true, true
			}
			if !pair[e.Mailbox] {
				other++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		receipts := total - tr.Texts
		t.Logf("stray receipts: %d of %d", other, receipts)
		if receipts < 5000 {
			t.Fatalf("only %d receipts", receipts)
		}
		if got := float64(other) / float64(receipts); math.Abs(got-paper.StrayReceipts) > tol {
			t.Fatalf("stray receipts: %d of %d = %.3f, want %.3f ± %g", other, receipts, got, paper.StrayReceipts, tol)
		}
	})
	for _, c := range []struct {
		name             string
		replies, repeats float64
	}{{"replies", paper.BgReplies, 0}, {"repeats", 0, paper.BgRepeats}, {"both", paper.BgReplies, paper.BgRepeats}, {"neither", 0, 0}} {
		t.Run("background "+c.name, func(t *testing.T) {
			// 10^6 users with one conversation each and 10,000 texts: a
			// pair recurs by chance in about 1% of texts.
			p := Params{Seed: 9, Users: 1_000_000, Duration: 3600 * second, Contacts: 1,
				RatePerDay: 10_000 * 24 / 1e6, BgReplies: c.replies, BgRepeats: c.repeats}
			seen := map[[2]int32]bool{}
			var sends, same, reverse, either int
			_, err := Generate(p, func(e *attack.Event) error {
				if e.Ev != "request" || e.Kind != "Send" {
					return nil
				}
				n, err := strconv.Atoi(e.Conn[1:])
				if err != nil {
					t.Fatalf("send connection %q", e.Conn)
				}
				_, v, _, ok := ownerOf(p.Seed, e.Mailbox)
				if !ok {
					t.Fatalf("mailbox %q", e.Mailbox)
				}
				u := int32(n)
				sends++
				s, r := seen[[2]int32{u, v}], seen[[2]int32{v, u}]
				if s {
					same++
				}
				if r {
					reverse++
				}
				if s || r {
					either++
				}
				seen[[2]int32{u, v}] = true
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if sends < 8_000 {
				t.Fatalf("only %d texts", sends)
			}
			// A reply to a reply repeats a text, so a reply is a text whose
			// reverse was sent before, a repeat one whose own direction was.
			f := func(n int) float64 { return float64(n) / float64(sends) }
			t.Logf("%d texts: own direction sent before %.3f, reverse %.3f, either %.3f", sends, f(same), f(reverse), f(either))
			if got := f(either); math.Abs(got-(c.replies+c.repeats)) > tol {
				t.Fatalf("texts answering or repeating an earlier one: %.3f, want %g ± %g", got, c.replies+c.repeats, tol)
			}
			if c.repeats == 0 && math.Abs(f(reverse)-c.replies) > tol {
				t.Fatalf("replies %.3f, want %g ± %g", f(reverse), c.replies, tol)
			}
			if c.replies == 0 && math.Abs(f(same)-c.repeats) > tol {
				t.Fatalf("repeats %.3f, want %g ± %g", f(same), c.repeats, tol)
			}
		})
	}
}
