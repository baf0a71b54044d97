package attack

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/quicprochat/qpc/padding"
)

// TestSizeAttackBucketPolicies judges padding policies V1 and V2 (docs/adr/
// 0018-buckets.md) with the size attack: the server keeps the histogram of
// buckets each mailbox receives and ranks every known mailbox by the
// cosine of its histogram with a target's, hoping that the two ends of a
// conversation, which write alike, stand out. The population: 300 direct
// conversations; each side sends 60 texts into the other's mailbox; text
// lengths are lognormal, with a verbosity per conversation (its median
// times e^(0.8 Z)), under two distributions: the lab scenarios' default
// (lab/scenario: median 60 bytes, sigma 1) and the one ProcessOne measured
// on 474,562 XMPP messages (median 18 characters, mean 40.4, fitted by
// Log-N(2.83, 1.15), counted here as one byte a character, and as two for
// a script such as Cyrillic). A text's record is its bucket of the text
// plus the 1,807 bytes a message pays before it besides the handle
// (TestWireBytesPerMessage in internal/e2e) plus a handle of 3 to 12
// bytes.
//
// For each policy the test reports the share of texts in each bucket, the
// bits a bucket tells about a text (its entropy), and the attack's
// outcome: how often the partner is the unique top guess, and the median
// size of the partner's anonymity set (the mailboxes scored at least as
// high). It fails if V2 makes the attack find the partner of more than 3
// targets in 100 more than V1 does, or shrinks the median anonymity set
// by more than a tenth.
func TestSizeAttackBucketPolicies(t *testing.T) {
	const (
		convs    = 300
		msgs     = 60
		overhead = 1807 // TestWireBytesPerMessage's total, less its 5-byte handle
	)
	type dist struct {
		name      string
		mu, sigma float64
		scale     float64 // bytes per character
	}
	for _, d := range []dist{
		{"lab default (median 60 B, sigma 1)", math.Log(60), 1, 1},
		{"ProcessOne XMPP, 1 B/char", 2.83, 1.15, 1},
		{"ProcessOne XMPP, 2 B/char", 2.83, 1.15, 2},
	} {
		type outcome struct {
			share  map[int]float64
			bits   float64
			top1   float64
			medSet int
			p500   int
		}
		run := func(p padding.Policy) outcome {
			rng := rand.New(rand.NewPCG(7, 11)) // the same population for both policies
			ids := map[string]string{}
			handleLen := map[string]int{}
			var targets []string
			partner := map[string]string{}
			for c := range convs {
				a, b := fmt.Sprintf("u%da", c), fmt.Sprintf("u%db", c)
				ids[a], ids[b] = "mb-"+a, "mb-"+b
				handleLen[a], handleLen[b] = 3+rng.IntN(10), 3+rng.IntN(10)
				partner["mb-"+a], partner["mb-"+b] = "mb-"+b, "mb-"+a
				if c < convs/3 {
					targets = append(targets, "mb-"+a)
				}
			}
			verbosity := make([]float64, convs)
			for c := range verbosity {
				verbosity[c] = 0.8 * rng.NormFloat64()
			}
			r, err := New(Options{Identities: ids, TargetMailboxes: targets, Attacks: []string{"size"}, Top: 2 * convs})
			if err != nil {
				t.Fatal(err)
			}
			count := map[int]float64{}
			total := 0.0
			var tm int64
			for range msgs {
				for c := range convs {
					for _, from := range []string{"a", "b"} {
						to := "b"
						if from == "b" {
							to = "a"
						}
						sender := fmt.Sprintf("u%d%s", c, from)
						l := d.scale * math.Exp(d.mu+verbosity[c]+d.sigma*rng.NormFloat64())
						n := min(max(int(math.Round(l)), 1), 65535)
						bkt, err := p.Bucket(overhead + handleLen[sender] + n)
						if err != nil {
							bkt = p.Max() // chunks of the largest bucket
						}
						count[bkt]++
						total++
						tm += 1e6
						r.Observe(&Event{T: tm, Conn: "c" + sender, Ev: "request", Kind: "Send", Mailbox: fmt.Sprintf("mb-u%d%s", c, to), Bucket: bkt})
					}
				}
			}
			o := outcome{share: map[int]float64{}}
			for b, n := range count {
				o.share[b] = n / total
				o.bits -= n / total * math.Log2(n/total)
			}
			var sets []int
			hits := 0
			for _, res := range r.Results() {
				for _, tg := range res.Targets {
					want := partner[tg.Mailbox]
					score := -1.0
					for _, g := range tg.Final {
						if g.Mailbox == want {
							score = g.Score
						}
					}
					set := 0
					for _, g := range tg.Final {
						if g.Score >= score {
							set++
						}
					}
					if score < 0 {
						set = len(ids) - 1
					}
					sets = append(sets, set)
					if set == 1 {
						hits++
					}
				}
			}
			slices.Sort(sets)
			o.medSet = sets[len(sets)/2]
			o.top1 = float64(hits) / float64(len(sets))
			o.p500, _ = p.Bucket(overhead + 5 + 500)
			return o
		}
		v1, v2 := run(padding.V1), run(padding.V2)
		for _, x := range []struct {
			name string
			o    outcome
		}{{"v1", v1}, {"v2", v2}} {
			t.Logf("%s, %s: bucket shares %v, %.3f bits a text; partner unique top guess %.3f, median anonymity set %d of %d",
				d.name, x.name, fmtShares(x.o.share), x.o.bits, x.o.top1, x.o.medSet, 2*convs-1)
		}
		if v2.top1 > v1.top1+0.03 {
			t.Errorf("%s: V2 finds partners %.3f of the time, V1 %.3f", d.name, v2.top1, v1.top1)
		}
		if float64(v2.medSet) < 0.9*float64(v1.medSet) {
			t.Errorf("%s: V2's median anonymity set %d, V1's %d", d.name, v2.medSet, v1.medSet)
		}
		if v2.p500 > 4096 {
			t.Errorf("a 500-byte text in a %d-byte record under V2", v2.p500)
		}
	}
}

func fmtShares(m map[int]float64) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf(" %d:%.4f", k, m[k])
	}
	return "[" + s[1:] + "]"
}
