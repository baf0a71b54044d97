package scenario

import "math/rand/v2"

// Strays draws the stray receipts of traffic.stray_receipts (Martiny et
// al.'s simulated traffic): for each delivery receipt of a run, in the
// order the run's texts are delivered, whether it is dropped and, if so,
// which user sends a stray receipt in its place and to which peer of its
// direct chats. The draws follow from the schedule's seed alone, so that a
// live run (lab/population) and the trace of its schedule
// (trace.FromSchedule) play the same strays: comparing the two then
// compares the models, not two independent draws of the stray traffic
// (which alone move the SDA's median texts-to-link over 20 targets from 1
// to 6, docs/research.md). Not safe for concurrent use.
type Strays struct {
	frac  float64
	rng   *rand.Rand
	peers [][]int // user -> the peers of its direct chats, in conversation order
	convs [][]int // user -> the conversation of each of those peers
	any   bool
}

// NewStrays returns the stray draws of schedule s, of which the fraction
// frac of receipts are stray.
func NewStrays(s *Schedule, frac float64) *Strays {
	st := &Strays{frac: frac, rng: rand.New(rand.NewPCG(uint64(s.Seed), 0x7374726179)), // "stray"
		peers: make([][]int, len(s.Users)), convs: make([][]int, len(s.Users))}
	for ci, c := range s.Convs {
		if c.Group {
			continue
		}
		a, b := c.Members[0], c.Members[1]
		st.peers[a], st.convs[a] = append(st.peers[a], b), append(st.convs[a], ci)
		st.peers[b], st.convs[b] = append(st.peers[b], a), append(st.convs[b], ci)
		st.any = true
	}
	return st
}

// Next draws for the next receipt: stray is false when the receipt is
// kept; else from sends a stray receipt to its peer to in their direct
// chat conv (indexes into the schedule's Users and Convs).
func (st *Strays) Next() (stray bool, from, to, conv int) {
	if st.frac <= 0 || !st.any || st.rng.Float64() >= st.frac {
		return false, 0, 0, 0
	}
	for {
		from = st.rng.IntN(len(st.peers))
		if len(st.peers[from]) > 0 {
			break
		}
	}
	i := st.rng.IntN(len(st.peers[from]))
	return true, from, st.peers[from][i], st.convs[from][i]
}
