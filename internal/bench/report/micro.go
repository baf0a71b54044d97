package report

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/hpke"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/mls"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/sealed"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Measure is one testing.Benchmark result.
type Measure struct {
	Name        string
	NsPerOp     float64
	AllocsPerOp int64
	BytesPerOp  int64
	N           int
}

// Figure is one measured operation against its baseline, both measured in
// the same run.
type Figure struct {
	Group    string // section of the report
	Subject  Measure
	Baseline Measure
	// PerOp divides Subject's figures when one benchmark op covers
	// several units (a batch of tokens): ns/op and allocs are then per unit.
	PerOp int
}

// Ratio is subject time over baseline time.
func (f Figure) Ratio() float64 {
	if f.Baseline.NsPerOp == 0 {
		return 0
	}
	return f.unitNs() / f.Baseline.NsPerOp
}

func (f Figure) unitNs() float64 {
	if f.PerOp > 1 {
		return f.Subject.NsPerOp / float64(f.PerOp)
	}
	return f.Subject.NsPerOp
}

var benchFlagOnce sync.Once

// setBenchTime sets testing's -test.benchtime, which testing.Benchmark
// reads outside a test binary too once testing.Init has registered it.
func setBenchTime(v string) error {
	benchFlagOnce.Do(testing.Init)
	return flag.Set("test.benchtime", v)
}

// measure runs f under testing.Benchmark.
func measure(name string, f func(b *testing.B)) (Measure, error) {
	var failed error
	var mu sync.Mutex
	r := testing.Benchmark(func(b *testing.B) {
		defer func() {
			if b.Failed() {
				mu.Lock()
				failed = fmt.Errorf("benchmark %s failed", name)
				mu.Unlock()
			}
		}()
		f(b)
	})
	if failed != nil {
		return Measure{}, failed
	}
	if r.N == 0 {
		return Measure{}, fmt.Errorf("benchmark %s did not run", name)
	}
	return Measure{
		Name:        name,
		NsPerOp:     float64(r.T.Nanoseconds()) / float64(r.N),
		AllocsPerOp: r.AllocsPerOp(),
		BytesPerOp:  r.AllocedBytesPerOp(),
		N:           r.N,
	}, nil
}

// benchSet is benchmarks to run in turn, round after round, so that a
// figure and its baseline see the same machine: on a shared machine the
// load changes within seconds, and measuring one after the other would
// put that change into the ratio. Each keeps its fastest round, the one
// least disturbed by the rest of the machine.
type benchSet struct {
	names []string
	fns   []func(*testing.B)
}

// add queues a benchmark and returns its index in run's result.
func (s *benchSet) add(name string, f func(*testing.B)) int {
	s.names, s.fns = append(s.names, name), append(s.fns, f)
	return len(s.fns) - 1
}

// run runs every benchmark once per round, in order, for rounds rounds.
func (s *benchSet) run(rounds int) ([]Measure, error) {
	best := make([]Measure, len(s.fns))
	for r := range max(rounds, 1) {
		for i, f := range s.fns {
			m, err := measure(s.names[i], f)
			if err != nil {
				return nil, err
			}
			if r == 0 || m.NsPerOp < best[i].NsPerOp {
				best[i] = m
			}
		}
	}
	return best, nil
}

// must turns an error inside a benchmark into a failure.
func must(b *testing.B, err error) {
	if err != nil {
		b.Fatal(err)
	}
}

// sealedFigures: sealed.Seal and sealed.Open of 1 KiB of content against a
// bare HPKE seal and open of the same 1 KiB under the same suite (X-Wing,
// HKDF-SHA256, ChaCha20-Poly1305). The difference is the envelope's own
// work: the sender's Ed25519 signature (and its check), the identity block
// and the padding to a 2 KiB bucket.
func sealedFigures(rounds int) ([]Figure, error) {
	rk, err := sealed.GenerateMailboxKey()
	if err != nil {
		return nil, err
	}
	_, idKey, _ := ed25519.GenerateKey(rand.Reader)
	from := sealed.SenderIdentity{Key: idKey, Handle: "alice"}
	var mailbox wire.ID
	rand.Read(mailbox[:])
	content := make([]byte, 1024)
	now := time.Now()

	suite := hpke.NewSuite(hpke.KEM_XWING, hpke.KDF_HKDF_SHA256, hpke.AEAD_ChaCha20Poly1305)
	pk, sk, err := hpke.KEM_XWING.Scheme().GenerateKeyPair()
	if err != nil {
		return nil, err
	}
	info := []byte("qpc bench baseline")
	hpkeSeal := func(b *testing.B) ([]byte, []byte) {
		snd, err := suite.NewSender(pk, info)
		must(b, err)
		enc, sealer, err := snd.Setup(rand.Reader)
		must(b, err)
		ct, err := sealer.Seal(content, nil)
		must(b, err)
		return enc, ct
	}

	var set benchSet
	env, err := sealed.Seal(padding.Default, rk.Public(), mailbox, from, sealed.ContentMLS, content, now)
	if err != nil {
		return nil, err
	}
	seal := set.add("sealed.Seal (1 KiB content, 2 KiB bucket)", func(b *testing.B) {
		for b.Loop() {
			_, err := sealed.Seal(padding.Default, rk.Public(), mailbox, from, sealed.ContentMLS, content, now)
			must(b, err)
		}
	})
	rawSeal := set.add("HPKE X-Wing seal of 1 KiB", func(b *testing.B) {
		for b.Loop() {
			hpkeSeal(b)
		}
	})
	open := set.add("sealed.Open", func(b *testing.B) {
		for b.Loop() {
			_, err := sealed.Open(rk, mailbox, env, now, 0, nil)
			must(b, err)
		}
	})
	rawOpen := set.add("HPKE X-Wing open of 1 KiB", func(b *testing.B) {
		enc, ct := hpkeSeal(b)
		for b.Loop() {
			rcv, err := suite.NewReceiver(sk, info)
			must(b, err)
			opener, err := rcv.Setup(enc)
			must(b, err)
			_, err = opener.Open(ct, nil)
			must(b, err)
		}
	})
	m, err := set.run(rounds)
	if err != nil {
		return nil, err
	}
	return []Figure{
		{Group: "sealed", Subject: m[seal], Baseline: m[rawSeal]},
		{Group: "sealed", Subject: m[open], Baseline: m[rawOpen]},
	}, nil
}

// scalarMult is one variable-base ristretto255 scalar multiplication
// (circl), the unit both token operations are built from.
func scalarMult(set *benchSet) int {
	g := group.Ristretto255
	s := g.RandomScalar(rand.Reader)
	p := g.RandomElement(rand.Reader)
	q := g.NewElement()
	return set.add("ristretto255 scalar multiplication", func(b *testing.B) {
		for b.Loop() {
			q.Mul(p, s)
		}
	})
}

// tokenFigures: the issuer's cost per token (a batch of tokens.MaxBatch:
// one evaluation per token and one batched DLEQ proof), the client's
// finalization per token (proof check and unblinding), and redemption
// (parse, hash to group, one scalar multiplication, compare), each against
// one ristretto255 scalar multiplication.
func tokenFigures(rounds int) ([]Figure, error) {
	master := make([]byte, 32)
	rand.Read(master)
	iss, err := tokens.NewIssuer(master)
	if err != nil {
		return nil, err
	}
	pk, err := iss.PublicKey(iss.Epoch())
	if err != nil {
		return nil, err
	}
	bl, req, err := tokens.Blind(pk, tokens.MaxBatch)
	if err != nil {
		return nil, err
	}
	resp, err := iss.Issue(req)
	if err != nil {
		return nil, err
	}
	toks, err := bl.Finalize(resp)
	if err != nil {
		return nil, err
	}
	enc, err := toks[0].MarshalBinary()
	if err != nil {
		return nil, err
	}
	var set benchSet
	base := scalarMult(&set)
	issue := set.add(fmt.Sprintf("Issuer.Issue, batch of %d, per token", tokens.MaxBatch), func(b *testing.B) {
		for b.Loop() {
			_, err := iss.Issue(req)
			must(b, err)
		}
	})
	fin := set.add(fmt.Sprintf("Blinding.Finalize (client), batch of %d, per token", tokens.MaxBatch), func(b *testing.B) {
		for b.Loop() {
			_, err := bl.Finalize(resp)
			must(b, err)
		}
	})
	redeem := set.add("ParseToken + Issuer.Redeem", func(b *testing.B) {
		for b.Loop() {
			t, err := tokens.ParseToken(enc)
			must(b, err)
			must(b, iss.Redeem(t))
		}
	})
	m, err := set.run(rounds)
	if err != nil {
		return nil, err
	}
	return []Figure{
		{Group: "tokens", Subject: m[issue], Baseline: m[base], PerOp: tokens.MaxBatch},
		{Group: "tokens", Subject: m[fin], Baseline: m[base], PerOp: tokens.MaxBatch},
		{Group: "tokens", Subject: m[redeem], Baseline: m[base]},
	}, nil
}

// loginFigures: the server's cost of one OPAQUE login (LoginStart and
// LoginFinish of server/accounts, including the fsynced session write),
// the client's work (its key stretching above all) done with the timer
// stopped; and LoginStart alone, the part an unauthenticated client can
// make the server do. The baseline is one Ed25519 signature: a familiar
// unit of public-key work, not an equivalent protocol.
func loginFigures(dir string, rounds int) ([]Figure, error) {
	pin := []byte("qpc bench server pin")
	keys, err := accounts.LoadOrCreateKeys(dir, pin)
	if err != nil {
		return nil, err
	}
	svc, err := accounts.Open(dir, keys, accounts.Options{MaxFailures: 1 << 30, GlobalRate: 1e9, GlobalBurst: 1 << 30, RegisterRate: 1e9, RegisterBurst: 1 << 30})
	if err != nil {
		return nil, err
	}
	defer svc.Close()
	ctx := context.Background()
	ksf := account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})
	var dev account.DeviceID
	rand.Read(dev[:])
	const user, pw = "bench", "bench password"

	reg, startBody, err := account.ClientRegister(user, []byte(pw), pin, ksf)
	if err != nil {
		return nil, err
	}
	start, err := account.UnmarshalRegisterStart(startBody)
	if err != nil {
		return nil, err
	}
	resp, err := svc.RegisterStart(ctx, start.Username, start.Request)
	if err != nil {
		return nil, err
	}
	respBody, err := (&account.RegisterResponse{Response: resp}).Marshal()
	if err != nil {
		return nil, err
	}
	finBody, _, err := reg.Finish(respBody, dev, "bench")
	if err != nil {
		return nil, err
	}
	fin, err := account.UnmarshalRegisterFinish(finBody)
	if err != nil {
		return nil, err
	}
	if _, err := svc.RegisterFinish(ctx, start.Username, fin.Record, fin.Device, fin.DeviceName); err != nil {
		return nil, err
	}

	var set benchSet
	login := set.add("OPAQUE login, server side (LoginStart + LoginFinish, fsynced session)", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			l, lsBody, err := account.ClientLogin(user, []byte(pw), pin, ksf)
			must(b, err)
			ls, err := account.UnmarshalLoginStart(lsBody)
			must(b, err)
			b.StartTimer()
			ke2, st, err := svc.LoginStart(ctx, ls.Username, ls.KE1)
			must(b, err)
			b.StopTimer()
			lr, err := (&account.LoginResponse{KE2: ke2}).Marshal()
			must(b, err)
			lfBody, _, _, err := l.Finish(lr, dev, "bench")
			must(b, err)
			lf, err := account.UnmarshalLoginFinish(lfBody)
			must(b, err)
			b.StartTimer()
			_, err = svc.LoginFinish(ctx, st, lf.KE3, lf.Device, lf.DeviceName)
			must(b, err)
		}
	})
	_, lsBody, err := account.ClientLogin(user, []byte(pw), pin, ksf)
	if err != nil {
		return nil, err
	}
	ls, err := account.UnmarshalLoginStart(lsBody)
	if err != nil {
		return nil, err
	}
	loginStart := set.add("OPAQUE LoginStart alone", func(b *testing.B) {
		for b.Loop() {
			_, _, err := svc.LoginStart(ctx, ls.Username, ls.KE1)
			must(b, err)
		}
	})
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 64)
	sign := set.add("Ed25519 sign (64 bytes)", func(b *testing.B) {
		for b.Loop() {
			ed25519.Sign(priv, msg)
		}
	})
	m, err := set.run(rounds)
	if err != nil {
		return nil, err
	}
	return []Figure{
		{Group: "opaque", Subject: m[login], Baseline: m[sign]},
		{Group: "opaque", Subject: m[loginStart], Baseline: m[sign]},
	}, nil
}

// MLSPoint is the commit cost at one group size.
type MLSPoint struct {
	Members         int
	Create, Process Measure
}

// mlsFigures measures, for each group size, an update commit (an empty
// commit with a fresh path) made by the group's creator and its
// processing by another member, in the X-Wing suite (0x004D). Each group
// is built by one commit of n-1 Adds, so the creator's next commit
// encrypts to every other leaf: the worst case (mls/group_bench_test.go).
// Each op works on a fresh copy of the state (Marshal, UnmarshalGroup),
// made with the timer stopped, so every commit starts from the same
// epoch. The baseline is one HPKE seal of a 32-byte path secret in the
// suite's HPKE (X-Wing, HKDF-SHA256, ChaCha20-Poly1305).
func mlsFigures(sizes []int, rounds int) ([]MLSPoint, Measure, error) {
	const suite = mls.SuiteXWingChaCha20Poly1305SHA256Ed25519
	hs := hpke.NewSuite(hpke.KEM_XWING, hpke.KDF_HKDF_SHA256, hpke.AEAD_ChaCha20Poly1305)
	pk, _, err := hpke.KEM_XWING.Scheme().GenerateKeyPair()
	if err != nil {
		return nil, Measure{}, err
	}
	secret := make([]byte, 32)
	var set benchSet
	type point struct{ n, create, process int }
	var idx []point
	base := set.add("HPKE X-Wing seal of 32 bytes", func(b *testing.B) {
		for b.Loop() {
			snd, err := hs.NewSender(pk, nil)
			must(b, err)
			_, sealer, err := snd.Setup(rand.Reader)
			must(b, err)
			_, err = sealer.Seal(secret, nil)
			must(b, err)
		}
	})
	var out []MLSPoint
	for _, n := range sizes {
		if n < 2 {
			return nil, Measure{}, fmt.Errorf("mls group size %d: want at least 2", n)
		}
		creatorID, err := mls.NewBasicIdentity(suite, []byte("creator"))
		if err != nil {
			return nil, Measure{}, err
		}
		creator, err := mls.Create(creatorID, nil, nil)
		if err != nil {
			return nil, Measure{}, err
		}
		var kps []*mls.KeyPackagePrivate
		var pubs []*mls.KeyPackage
		for i := 1; i < n; i++ {
			id, err := mls.NewBasicIdentity(suite, fmt.Appendf(nil, "member %d", i))
			if err != nil {
				return nil, Measure{}, err
			}
			kp, err := mls.NewKeyPackage(id, nil)
			if err != nil {
				return nil, Measure{}, err
			}
			kps, pubs = append(kps, kp), append(pubs, &kp.KeyPackage)
		}
		added, err := creator.Add(pubs...)
		if err != nil {
			return nil, Measure{}, err
		}
		receiver, err := mls.Join(added.Welcome, kps[0], nil, nil)
		if err != nil {
			return nil, Measure{}, err
		}
		creatorState, err := creator.Marshal()
		if err != nil {
			return nil, Measure{}, err
		}
		receiverState, err := receiver.Marshal()
		if err != nil {
			return nil, Measure{}, err
		}
		clone := func(b *testing.B, state []byte) *mls.Group {
			g, err := mls.UnmarshalGroup(state, nil)
			must(b, err)
			return g
		}
		first, err := mls.UnmarshalGroup(creatorState, nil)
		if err != nil {
			return nil, Measure{}, err
		}
		create := set.add(fmt.Sprintf("update commit, %d members, create", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				g := clone(b, creatorState)
				b.StartTimer()
				_, err := g.Commit(nil)
				must(b, err)
			}
		})
		commit, err := first.Commit(nil)
		if err != nil {
			return nil, Measure{}, err
		}
		process := set.add(fmt.Sprintf("update commit, %d members, process", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				g := clone(b, receiverState)
				b.StartTimer()
				_, err := g.ProcessMessage(commit.Commit)
				must(b, err)
			}
		})
		idx = append(idx, point{n, create, process})
	}
	m, err := set.run(rounds)
	if err != nil {
		return nil, Measure{}, err
	}
	for _, p := range idx {
		out = append(out, MLSPoint{Members: p.n, Create: m[p.create], Process: m[p.process]})
	}
	return out, m[base], nil
}

// tempDir is a directory removed by the returned function.
func tempDir(prefix string) (string, func(), error) {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}
