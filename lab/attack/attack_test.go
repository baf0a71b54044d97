package attack

import (
	"fmt"
	"strings"
	"testing"
)

// handRecord is a hand-built observer record: alice's mailbox "a1"
// receives every 10 s and "b1" (bob's) receives 0.5 s after each (a
// receipt); n noise mailboxes receive, one per second, round robin; alice
// reads a1 on connection ca, which also writes to b1.
func handRecord(n, msgs int) string {
	var b strings.Builder
	b.WriteString(`{"v":1,"schema":"qpc-observer","start":"2026-12-07T00:00:00Z"}` + "\n")
	b.WriteString(`{"t":0,"conn":"ca","ev":"open","transport":"udp"}` + "\n")
	b.WriteString(`{"t":0,"conn":"ca","ev":"subscribe","mailbox":"a1"}` + "\n")
	for s := range msgs * 10 {
		t := int64(s) * second
		if s%10 == 0 {
			fmt.Fprintf(&b, `{"t":%d,"conn":"cx","ev":"request","kind":"Send","mailbox":"a1","bucket":2048,"epoch":1}`+"\n", t)
			fmt.Fprintf(&b, `{"t":%d,"conn":"ca","ev":"deliver","mailbox":"a1","bucket":2048}`+"\n", t+1)
			fmt.Fprintf(&b, `{"t":%d,"conn":"ca","ev":"request","kind":"Send","mailbox":"b1","bucket":2048,"epoch":1}`+"\n", t+second/2)
		}
		fmt.Fprintf(&b, `{"t":%d,"conn":"cn","ev":"request","kind":"Send","mailbox":"%s","bucket":512,"epoch":1}`+"\n", t+second*3/4, noise(s%n))
	}
	return b.String()
}

func runHand(t *testing.T, rec string, opt Options) []Result {
	t.Helper()
	r, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := ReadObserver(strings.NewReader(rec), func(e *Event) error { r.Observe(e); return nil }); err != nil {
		t.Fatal(err)
	}
	return r.Results()
}

func TestLabAttacksKnownAnswer(t *testing.T) {
	ids := map[string]string{"alice": "a1", "bob": "b1", "nora": noise(3)}
	res := runHand(t, handRecord(7, 20), Options{Identities: ids, Targets: []string{"alice"}})
	byName := map[string]Result{}
	for _, r := range res {
		byName[r.Attack] = r
	}
	for _, name := range []string{"sda", "intersection", "timing"} {
		tg := byName[name].Targets[0]
		if tg.K != 20 {
			t.Errorf("%s: %d target messages, want 20", name, tg.K)
		}
		if len(tg.Final) == 0 || tg.Final[0].Mailbox != "b1" || tg.Final[0].Handle != "bob" {
			t.Fatalf("%s: final ranking %+v, want bob's b1 first", name, tg.Final)
		}
		if name == "timing" {
			continue // its 3-minute windows hold every noise mailbox
		}
		// Noise mailboxes also fall in every 1-s window a seventh of the
		// time; bob must lead uniquely from the second message on.
		var first Step
		for _, st := range tg.Steps {
			if st.Unique && st.Top.Mailbox == "b1" {
				first = st
				break
			}
		}
		if first.K == 0 || first.K > 2 {
			t.Errorf("%s: bob first ranks first uniquely after %d messages, want 1 or 2 (steps %+v)", name, first.K, tg.Steps)
		}
	}
	// Intersection: the anonymity set shrinks to bob alone.
	steps := byName["intersection"].Targets[0].Steps
	if last := steps[len(steps)-1]; last.Set != 1 {
		t.Errorf("intersection: final anonymity set %d, want 1", last.Set)
	}
	// Linking: ca reads a1 and writes b1.
	lk := byName["linking"].Targets[0]
	if len(lk.Final) != 1 || lk.Final[0].Mailbox != "b1" {
		t.Errorf("linking: %+v, want b1 only", lk.Final)
	}
	// Size: a1 and b1 receive only 2048-byte records, the noise 512.
	sz := byName["size"].Targets[0]
	if len(sz.Final) == 0 || sz.Final[0].Mailbox != "b1" || sz.Final[0].Score < 0.999 {
		t.Errorf("size: %+v, want b1 at cosine 1", sz.Final)
	}
}

func TestLabReadObserverRefuses(t *testing.T) {
	for name, rec := range map[string]string{
		"empty":      "",
		"schema":     `{"v":1,"schema":"qpc-network","start":"x"}` + "\n",
		"version":    `{"v":2,"schema":"qpc-observer","start":"x"}` + "\n",
		"not json":   `{"v":1,"schema":"qpc-observer","start":"x"}` + "\nnope\n",
		"no ev":      `{"v":1,"schema":"qpc-observer","start":"x"}` + "\n" + `{"t":1}` + "\n",
		"time order": `{"v":1,"schema":"qpc-observer","start":"x"}` + "\n" + `{"t":5,"ev":"open"}` + "\n" + `{"t":4,"ev":"close"}` + "\n",
	} {
		err := ReadObserver(strings.NewReader(rec), func(*Event) error { return nil })
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzReadObserver(f *testing.F) {
	f.Add([]byte(handRecord(3, 2)))
	f.Add([]byte(`{"v":1,"schema":"qpc-observer","start":"x"}` + "\n" + `{"t":1,"ev":"request","kind":"Send","mailbox":"m"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := New(Options{TargetMailboxes: []string{"m", "a1"}})
		if err != nil {
			t.Fatal(err)
		}
		_ = ReadObserver(strings.NewReader(string(b)), func(e *Event) error { r.Observe(e); return nil })
		r.Results()
	})
}

// noise is the i-th noise mailbox of handRecord (hex, as the record's
// reader requires).
func noise(i int) string { return fmt.Sprintf("ee%02x", i) }
