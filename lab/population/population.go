package population

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/content"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/lab/netrecord"
	"github.com/quicprochat/qpc/lab/record"
	"github.com/quicprochat/qpc/lab/scenario"
)

// Files a run writes into its output directory.
const (
	FileObserver = "observer.jsonl" // the server's observer record
	FileTruth    = "truth.jsonl"    // the ground truth
	FileManifest = "run.json"       // Manifest
	FileNetwork  = "network.jsonl"  // the network record (Options.Network)
)

// Options configure a run.
type Options struct {
	Scenario *scenario.Scenario // required
	Seed     int64
	Out      string // output directory, created if missing; required
	// Users, Speed and Duration (simulated) override the scenario's when
	// not zero.
	Users    int
	Speed    float64
	Duration time.Duration
	// Drain is the real time the run goes on after the last scheduled
	// message, for deliveries and receipts; default 2 s plus the longest
	// receipt delay (in real time).
	Drain time.Duration
	// Network puts the lab's UDP relay (lab/netrecord) between the
	// clients and the server and writes its network record.
	Network bool
	// Settle is the real time between the setup and the schedule, for
	// every messenger's Follow to subscribe to its new mailboxes (it does
	// at its next 5-second tick); default 5.5 s.
	Settle time.Duration
	// Logger gets the run's progress at Info; the server and clients log
	// at Warn and above only. Default: discard.
	Logger *slog.Logger
}

// Manifest describes a finished run (run.json): what attacks need to
// turn real times into simulated ones and epochs.
type Manifest struct {
	Scenario     string  `json:"scenario"`
	Seed         int64   `json:"seed"`
	Users        int     `json:"users"`
	Speed        float64 `json:"speed"`
	EpochNS      int64   `json:"epoch_ns"`    // the scenario's epoch, simulated time
	DurationNS   int64   `json:"duration_ns"` // simulated
	ScheduleHash string  `json:"schedule_hash"`
	// RunStartNS is when the schedule's time 0 was, in nanoseconds since
	// the observer record's start; what comes before is the setup
	// (registration, conversations).
	RunStartNS int64 `json:"run_start_ns"`
	RunEndNS   int64 `json:"run_end_ns"`
	Naive      bool  `json:"naive"`
	// Counts of what the ground truth holds.
	Texts     int `json:"texts"`
	Scheduled int `json:"scheduled"`
	Receipts  int `json:"receipts"`
	// StrayReceipts is the receipts among Receipts that answered no text
	// (the scenario's traffic.stray_receipts), Dropped the receipts they
	// replaced (dropped by the recipient of a text).
	StrayReceipts int `json:"stray_receipts,omitempty"`
	Dropped       int `json:"dropped_receipts,omitempty"`
	Cover         int `json:"cover"`
	// Lost is the scheduled texts that never reached the server.
	Lost int `json:"lost"`
	// Wall-clock seconds of the setup and of the scheduled run.
	SetupSeconds float64 `json:"setup_seconds"`
	RunSeconds   float64 `json:"run_seconds"`
}

// user is one simulated user: a real messenger and its bookkeeping.
type user struct {
	i      int
	name   string
	handle string
	c      *client.Client
	work   chan func()

	mu      sync.Mutex
	pending map[string][]*textOut // hex conv ID -> texts not yet fully sent, in order
	strays  map[string]int        // peer handle -> stray receipts asked for, not yet sent
}

// textOut is one text on its way: the recipients (handles) whose envelope
// the server has not yet stored.
type textOut struct {
	msg    string
	conv   string // the lab's conversation ID
	to     []string
	left   map[string]bool
	first  time.Time
	logged bool
}

// run is the state of one run.
type run struct {
	opts  Options
	sc    *scenario.Scenario
	sched *scenario.Schedule
	log   *slog.Logger
	speed float64

	users   []*user
	byHand  map[string]*user
	convHex map[string]int // hex conv ID -> schedule conv index
	hexOf   []string       // schedule conv index -> hex conv ID

	infos     []record.TruthUser
	convInfos []record.TruthConv

	mu       sync.Mutex
	truth    []truthLine // times absolute (ns since the Unix epoch) until written
	receipts int
	cover    int
	texts    int
	strays   int
	dropped  int

	// Stray receipts (Traffic.StrayReceipts), on from the schedule's
	// start to the end of the drain (a text scheduled late is still
	// processed then).
	strayOn atomic.Bool
	strayMu sync.Mutex
	draws   *scenario.Strays
	ctx     context.Context
}

// Run runs a scenario on a live server and writes the records to
// opts.Out; it stops by itself when the schedule is done and the drain
// time has passed, or when ctx ends (then it returns ctx's error after
// writing what it has).
func Run(ctx context.Context, opts Options) (*Manifest, error) {
	if opts.Scenario == nil || opts.Out == "" {
		return nil, errors.New("population: a scenario and an output directory are required")
	}
	sc := *opts.Scenario
	if opts.Users != 0 {
		sc.Users = opts.Users
	}
	if opts.Speed != 0 {
		sc.Speed = opts.Speed
	}
	if opts.Duration != 0 {
		sc.Duration.Duration = opts.Duration
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if sc.Users > MaxLiveUsers {
		return nil, fmt.Errorf("population: %d users: a live run holds at most %d on one machine (use the trace mode beyond)", sc.Users, MaxLiveUsers)
	}
	sched, err := sc.Generate(opts.Seed)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	if opts.Settle == 0 {
		opts.Settle = 5500 * time.Millisecond
	}
	r := &run{opts: opts, sc: &sc, sched: sched, log: log, speed: sc.Speed, byHand: map[string]*user{}, convHex: map[string]int{},
		draws: scenario.NewStrays(sched, sc.Traffic.StrayReceipts)}
	return r.run(ctx)
}

// MaxLiveUsers bounds a live run: every user is a real messenger with a
// QUIC connection per conversation, on one machine (docs/research.md
// gives what fits).
const MaxLiveUsers = 1000

// real turns a simulated duration into real time.
func (r *run) real(d time.Duration) time.Duration {
	return time.Duration(float64(d) / r.speed)
}

func (r *run) run(ctx context.Context) (*Manifest, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	work, err := os.MkdirTemp("", "qpc-lab-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	obsFile, err := os.Create(filepath.Join(r.opts.Out, FileObserver))
	if err != nil {
		return nil, err
	}
	defer obsFile.Close()
	obs := bufio.NewWriterSize(obsFile, 1<<20)
	obsW := &lockedWriter{w: obs}
	srvDir := filepath.Join(work, "server")
	if err := os.MkdirAll(srvDir, 0o700); err != nil {
		return nil, err
	}
	setupStart := time.Now()
	srv, err := startServer(srvDir, obsW, quiet)
	if err != nil {
		return nil, fmt.Errorf("population: starting the server: %w", err)
	}
	closed := false
	defer func() {
		if !closed {
			srv.close()
		}
	}()
	r.log.Info("server up", "users", r.sc.Users, "messages", len(r.sched.Messages), "speed", r.speed)

	clientAddr := srv.addr
	var relay *netrecord.Relay
	var netFile *os.File
	if r.opts.Network {
		if netFile, err = os.Create(filepath.Join(r.opts.Out, FileNetwork)); err != nil {
			return nil, err
		}
		defer netFile.Close()
		nw, err := record.NewNetworkWriter(netFile, time.Now())
		if err != nil {
			return nil, err
		}
		if relay, err = netrecord.Start("127.0.0.1:0", srv.host, nw); err != nil {
			return nil, err
		}
		defer relay.Close()
		clientAddr = srv.id.Address(relay.Addr().String()).String()
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ctx = runCtx
	if err := r.startUsers(runCtx, work, srv, clientAddr); err != nil {
		return nil, err
	}
	var follow sync.WaitGroup
	defer func() {
		cancel()
		follow.Wait()
		for _, u := range r.users {
			u.c.Close()
		}
	}()
	for _, u := range r.users {
		follow.Add(2)
		go func() {
			defer follow.Done()
			if err := u.c.Follow(runCtx, func(client.Event) {}); err != nil && runCtx.Err() == nil {
				r.log.Warn("follow ended", "user", u.name, "err", err)
			}
		}()
		go func() {
			defer follow.Done()
			for {
				select {
				case f := <-u.work:
					f()
				case <-runCtx.Done():
					return
				}
			}
		}()
	}
	if err := r.setupConversations(runCtx); err != nil {
		return nil, err
	}
	setupDur := time.Since(setupStart)
	r.log.Info("setup done", "seconds", setupDur.Seconds())

	// The schedule, in real time.
	r.strayOn.Store(true)
	start := time.Now()
	for _, m := range r.sched.Messages {
		if err := sleepUntil(runCtx, start.Add(r.real(m.At))); err != nil {
			break
		}
		r.send(runCtx, m)
	}
	end := start.Add(r.real(r.sched.Duration))
	drain := r.opts.Drain
	if drain == 0 {
		drain = 2*time.Second + r.receiptDelay().Max
	}
	sleepUntil(runCtx, end)
	// Texts the machine is still behind on are sent before the drain
	// starts, for at most a minute: a run records what it scheduled.
	r.waitSent(runCtx, time.Now().Add(time.Minute))
	end = time.Now()
	sleepUntil(runCtx, end.Add(drain))
	runDur := time.Since(start)
	cause := ctx.Err()
	cancel()
	follow.Wait()
	for _, u := range r.users {
		u.c.Close()
	}
	r.users = nil
	if relay != nil {
		if err := relay.Close(); err != nil {
			return nil, fmt.Errorf("population: the network record: %w", err)
		}
		if err := netFile.Close(); err != nil {
			return nil, err
		}
	}
	closed = true
	if err := srv.close(); err != nil {
		r.log.Warn("server shutdown", "err", err)
	}
	obsW.mu.Lock()
	err = obs.Flush()
	obsW.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := obsFile.Close(); err != nil {
		return nil, err
	}
	base, accounts, err := readObserver(filepath.Join(r.opts.Out, FileObserver))
	if err != nil {
		return nil, err
	}
	for i := range r.infos {
		r.infos[i].Account = accounts[r.infos[i].Handle]
	}
	m, err := r.writeTruth(base, start, end.Add(drain))
	if err != nil {
		return nil, err
	}
	m.SetupSeconds, m.RunSeconds = setupDur.Seconds(), runDur.Seconds()
	raw, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(r.opts.Out, FileManifest), append(raw, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, cause
}

// waitSent waits until every user's worker is idle and outbox empty, or
// until deadline.
func (r *run) waitSent(ctx context.Context, deadline time.Time) {
	for time.Now().Before(deadline) && ctx.Err() == nil {
		busy := false
		for _, u := range r.users {
			if len(u.work) > 0 {
				busy = true
				break
			}
			u.mu.Lock()
			for _, q := range u.pending {
				busy = busy || len(q) > 0
			}
			u.mu.Unlock()
			if busy {
				break
			}
		}
		if !busy {
			return
		}
		sleepUntil(ctx, time.Now().Add(100*time.Millisecond))
	}
}

// keepReceipt is every client's KeepReceipt: while the schedule runs, it
// drops the scenario's fraction traffic.stray_receipts of delivery
// receipts and has a random user send, at once, a stray receipt to a
// random contact of theirs in its place (Martiny et al.'s simulated
// traffic). It is called inside the recipient's state transaction, so it
// only hands the stray receipt to the sender's worker.
func (r *run) keepReceipt(string) bool {
	f := r.sc.Traffic.StrayReceipts
	if f <= 0 || !r.strayOn.Load() {
		return true
	}
	r.strayMu.Lock()
	drop, x, y, _ := r.draws.Next()
	r.strayMu.Unlock()
	if !drop {
		return true
	}
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
	u, peer := r.users[x], r.users[y].handle
	u.mu.Lock()
	u.strays[peer]++
	u.mu.Unlock()
	ctx := r.ctx
	select {
	case u.work <- func() {
		if err := u.c.StrayReceipt(ctx, peer); err != nil && !errors.Is(err, client.ErrQueued) && ctx.Err() == nil {
			r.log.Warn("stray receipt", "user", u.name, "to", peer, "err", err)
		}
	}:
	default:
		u.mu.Lock()
		u.strays[peer]--
		u.mu.Unlock()
		r.log.Warn("send queue full: a stray receipt is lost", "user", u.name)
	}
	return false
}

// receiptDelay is the clients' receipt delay in real time. A fixed delay
// d is the client's exponential distribution with a mean far above d,
// capped at d: it is d but for one draw in a thousand.
func (r *run) receiptDelay() client.ReceiptDelay {
	d := r.sc.Receipts.Delay
	switch d.Dist {
	case "fixed":
		v := r.real(d.Mean.Duration)
		if v <= 0 {
			return client.ReceiptDelay{Mean: time.Nanosecond, Max: time.Nanosecond} // at once
		}
		return client.ReceiptDelay{Mean: 1000 * v, Max: v}
	default: // exp
		return client.ReceiptDelay{Mean: max(r.real(d.Mean.Duration), time.Nanosecond), Max: r.real(d.Max.Duration)}
	}
}

// startUsers initialises and registers every user, a few at a time.
func (r *run) startUsers(ctx context.Context, work string, srv *labServer, addr string) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rd := r.receiptDelay()
	var cover *client.CoverOptions
	if rate := r.sc.Cover.RatePerDay; rate > 0 {
		// The client fetches every FetchEvery in cover mode; compressed
		// below half a second real it would fetch more than the machine
		// sends, so it is held there (docs/research.md).
		cover = &client.CoverOptions{Rate: rate / 86400 * r.speed, FetchEvery: max(r.real(r.sc.Cover.FetchEvery.Duration), 500*time.Millisecond)}
	}
	r.users = make([]*user, len(r.sched.Users))
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(r.users))
	var wg sync.WaitGroup
	for i, su := range r.sched.Users {
		u := &user{i: i, name: su.Name, handle: su.Handle, work: make(chan func(), 4096), pending: map[string][]*textOut{}, strays: map[string]int{}}
		r.users[i] = u
		r.byHand[u.handle] = u
		opts := client.Options{
			Home: filepath.Join(work, su.Name), Passphrase: []byte("lab"),
			KDF:           &state.Options{Time: 1, MemoryKiB: 64, Threads: 1},
			Dial:          protocol.Options{MaxAttempts: 8, BaseBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Policy: srv.policy, Logger: quiet},
			Logger:        quiet,
			ReceiptDelay:  &rd,
			Cover:         cover,
			RefillMean:    time.Second,
			SingleMailbox: !r.sc.PerConversation(),
			SentEnvelope:  func(e client.SentEnvelope) { r.sent(u, e) },
			KeepReceipt:   r.keepReceipt,
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			c, err := client.Init(ictx, addr, srv.pin(), opts)
			if err != nil {
				errs <- fmt.Errorf("population: init %s: %w", u.name, err)
				return
			}
			u.c = c
			if err := c.Register(ictx, u.handle, []byte("lab password of "+u.handle)); err != nil {
				errs <- fmt.Errorf("population: register %s: %w", u.name, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for _, u := range r.users {
		if u.c == nil {
			// Close what did start before reporting.
			for _, v := range r.users {
				if v.c != nil {
					v.c.Close()
				}
			}
			r.users = nil
			break
		}
	}
	if err := <-errs; err != nil {
		return err
	}
	r.log.Info("users registered", "n", len(r.users))
	return nil
}

// setupConversations has each conversation's first member start it (a
// first text for a direct chat, CreateGroup for a group), turns delivery
// receipts on between direct peers if the scenario has them, and waits
// until every member has joined every conversation.
func (r *run) setupConversations(ctx context.Context) error {
	if r.sc.Receipts.Enabled {
		for _, c := range r.sched.Convs {
			if c.Group {
				continue
			}
			a, b := r.users[c.Members[0]], r.users[c.Members[1]]
			if err := a.c.SetReceipts(b.handle, true, false); err != nil {
				return err
			}
			if err := b.c.SetReceipts(a.handle, true, false); err != nil {
				return err
			}
		}
	}
	// Members have a group's creator as a contact, so that they join
	// without an invitation to accept (a group from a stranger waits for
	// consent, docs/threat-model.md).
	contacts := map[[2]int]bool{}
	for _, c := range r.sched.Convs {
		if !c.Group {
			continue
		}
		for _, m := range c.Members[1:] {
			k := [2]int{m, c.Members[0]}
			if contacts[k] {
				continue
			}
			contacts[k] = true
			if _, err := r.users[m].c.AddContact(ctx, r.users[c.Members[0]].handle); err != nil {
				return fmt.Errorf("population: %s adds %s: %w", r.users[m].name, r.users[c.Members[0]].name, err)
			}
		}
	}
	sem := make(chan struct{}, 4)
	errs := make(chan error, len(r.sched.Convs))
	var wg sync.WaitGroup
	for ci, c := range r.sched.Convs {
		creator := r.users[c.Members[0]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			var err error
			if c.Group {
				var hs []string
				for _, m := range c.Members[1:] {
					hs = append(hs, r.users[m].handle)
				}
				err = creator.c.CreateGroup(sctx, c.Name, hs)
			} else {
				peer := r.users[c.Members[1]]
				creator.queueText(r, "s"+strings.TrimPrefix(c.ID, "c"), c.ID, []string{peer.handle}, "")
				_, err = creator.c.SendText(sctx, peer.handle, "hello from "+creator.name)
			}
			if errors.Is(err, client.ErrQueued) {
				err = nil // sent by the outbox later
			}
			if err != nil {
				errs <- fmt.Errorf("population: starting %s (conversation %d): %w", c.ID, ci, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// Wait until every member has every conversation, with a mailbox of
	// its own for it and every other member's known (the Follow loops do
	// the work).
	want := make([]int, len(r.users))
	for _, c := range r.sched.Convs {
		for _, m := range c.Members {
			want[m]++
		}
	}
	deadline := time.Now().Add(2*time.Minute + time.Duration(len(r.sched.Convs))*200*time.Millisecond)
	for {
		ready := 0
		for i, u := range r.users {
			convs, err := u.c.Conversations(ctx)
			if err != nil {
				return err
			}
			n := 0
			for _, cv := range convs {
				if cv.Active {
					n++
				}
			}
			pend, err := u.c.Pending()
			if err != nil {
				return err
			}
			if n >= want[i] && pend == 0 {
				ready++
			}
		}
		if ready == len(r.users) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("population: after the setup's deadline only %d of %d users have all their conversations", ready, len(r.users))
		}
		if err := sleepUntil(ctx, time.Now().Add(200*time.Millisecond)); err != nil {
			return err
		}
	}
	// A creator learns each member's mailbox from the member's
	// announcement, which waits in the creator's new conversation
	// mailbox until its Follow subscribes to it (at its next tick, within
	// 5 s): one Sync each reads them now, so that no scheduled text
	// follows the Welcome into an intro mailbox.
	var sw sync.WaitGroup
	for _, u := range r.users {
		sw.Add(1)
		go func() {
			defer sw.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if _, err := u.c.Sync(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("setup sync", "user", u.name, "err", err)
			}
		}()
	}
	sw.Wait()
	if err := sleepUntil(ctx, time.Now().Add(r.opts.Settle)); err != nil {
		return err
	}
	// Map each user's conversations to the schedule's.
	byPair := map[[2]int]int{}
	byName := map[string]int{}
	for ci, c := range r.sched.Convs {
		if c.Group {
			byName[c.Name] = ci
		} else {
			byPair[[2]int{min(c.Members[0], c.Members[1]), max(c.Members[0], c.Members[1])}] = ci
		}
	}
	r.hexOf = make([]string, len(r.sched.Convs))
	for _, u := range r.users {
		convs, err := u.c.Conversations(ctx)
		if err != nil {
			return err
		}
		for _, cv := range convs {
			if !cv.Active {
				continue
			}
			ci := -1
			if cv.Group {
				if i, ok := byName[cv.Name]; ok {
					ci = i
				}
			} else if p := r.byHand[cv.Name]; p != nil {
				if i, ok := byPair[[2]int{min(u.i, p.i), max(u.i, p.i)}]; ok {
					ci = i
				}
			}
			if ci < 0 {
				return fmt.Errorf("population: %s has a conversation %q the schedule does not", u.name, cv.Name)
			}
			if prev := r.hexOf[ci]; prev != "" && prev != cv.ID {
				return fmt.Errorf("population: %s is two MLS groups (%s, %s)", r.sched.Convs[ci].ID, prev, cv.ID)
			}
			r.hexOf[ci] = cv.ID
			r.convHex[cv.ID] = ci
		}
	}
	// The ground truth of who holds which mailbox.
	boxes := make([]map[string][]string, len(r.sched.Convs))
	for _, u := range r.users {
		mbs, err := u.c.Mailboxes()
		if err != nil {
			return err
		}
		info := record.TruthUser{User: u.name, Handle: u.handle}
		for _, mb := range mbs {
			if mb.Conv == "" {
				info.IntroMailbox = hexID(mb.ReceiveID[:])
				continue
			}
			ci, ok := r.convHex[mb.Conv]
			if !ok {
				continue
			}
			if boxes[ci] == nil {
				boxes[ci] = map[string][]string{}
			}
			boxes[ci][u.name] = append(boxes[ci][u.name], hexID(mb.ReceiveID[:]))
		}
		r.infos = append(r.infos, info)
	}
	for ci, c := range r.sched.Convs {
		tc := record.TruthConv{Conv: c.ID, Mailboxes: boxes[ci]}
		for _, m := range c.Members {
			tc.Members = append(tc.Members, r.users[m].name)
		}
		r.convInfos = append(r.convInfos, tc)
	}
	return nil
}

// queueText notes a text before it is sent, so that its envelopes can be
// told apart in SentEnvelope (the outbox sends a conversation's entries
// to each member in order). convHex "" means not known yet (a direct
// chat's first text): the first conversation the client names for it.
func (u *user) queueText(r *run, msg, conv string, to []string, convHex string) {
	t := &textOut{msg: msg, conv: conv, to: to, left: map[string]bool{}}
	for _, h := range to {
		t.left[h] = true
	}
	u.mu.Lock()
	u.pending[convHex] = append(u.pending[convHex], t)
	u.mu.Unlock()
}

// send hands one scheduled text to its sender's worker.
func (r *run) send(ctx context.Context, m scenario.Message) {
	u := r.users[m.From]
	c := r.sched.Convs[m.Conv]
	var to []string
	for _, i := range r.sched.Recipients(m) {
		to = append(to, r.users[i].handle)
	}
	target := "#" + c.Name // a bare name is always a person (docs/user-guide.md)
	if !c.Group {
		target = to[0]
	}
	u.queueText(r, m.ID, c.ID, to, r.hexOf[m.Conv])
	text := textOf(m)
	select {
	case u.work <- func() {
		_, err := u.c.SendText(ctx, target, text)
		if err != nil && !errors.Is(err, client.ErrQueued) && ctx.Err() == nil {
			r.log.Warn("send", "user", u.name, "msg", m.ID, "err", err)
		}
	}:
	default:
		r.log.Warn("send queue full: the machine is behind the schedule", "user", u.name, "msg", m.ID)
	}
}

// textOf is the text of a scheduled message: its ID, then filler to its
// size.
func textOf(m scenario.Message) string {
	s := m.ID + " "
	if len(s) >= m.Size {
		return s[:max(m.Size, 1)]
	}
	return s + strings.Repeat("x", m.Size-len(s))
}

// sent is the SentEnvelope hook of user u: it turns what the server
// stored into ground truth.
func (r *run) sent(u *user, e client.SentEnvelope) {
	switch {
	case e.Cover:
		r.addTruth(record.TruthMessage{T: sentAt(e), From: u.name, To: []string{r.nameOf(e.To)}, Kind: record.MsgCover}, e.Conv, &r.cover)
	case e.Kind == content.KindReceipt:
		m := record.TruthMessage{T: sentAt(e), From: u.name, To: []string{r.nameOf(e.To)}, Kind: record.MsgReceipt}
		u.mu.Lock()
		stray := u.strays[e.To] > 0
		if stray {
			u.strays[e.To]--
			m.Msg = record.StrayPrefix
		}
		u.mu.Unlock()
		r.addTruth(m, e.Conv, &r.receipts)
	case e.Kind == content.KindText:
		u.mu.Lock()
		t := u.match(e)
		var line *record.TruthMessage
		if t != nil && !t.logged {
			t.logged, t.first = true, e.At
			to := make([]string, len(t.to))
			for i, h := range t.to {
				to[i] = r.nameOf(h)
			}
			line = &record.TruthMessage{T: sentAt(e), From: u.name, To: to, Conv: t.conv, Msg: t.msg, Kind: record.MsgText}
		}
		u.mu.Unlock()
		if line != nil {
			r.addTruth(*line, "", &r.texts)
		}
	}
}

// sentAt is the truth's time of an envelope: when its request went out,
// which comes before the server's arrival event in the observer record.
// The SDA's step for the window a text opens then counts that text, as the
// trace's does (the server's answer, a round trip later, missed it and
// made every link at a text's window look one text faster live than in
// the trace); receipt lags are measured between the same two events.
// Cover ticks do not say when their request went out: the answer's time.
func sentAt(e client.SentEnvelope) int64 {
	if e.Sent.IsZero() {
		return e.At.UnixNano()
	}
	return e.Sent.UnixNano()
}

// match finds the text an envelope belongs to: the oldest pending text of
// its conversation still waiting for that member. Under u.mu.
func (u *user) match(e client.SentEnvelope) *textOut {
	for _, key := range []string{e.Conv, ""} {
		q := u.pending[key]
		for i, t := range q {
			if !t.left[e.To] {
				continue
			}
			delete(t.left, e.To)
			if len(t.left) == 0 {
				u.pending[key] = slices.Delete(q, i, i+1)
			}
			return t
		}
	}
	return nil
}

// truthLine is a message of the ground truth before it is written: its
// conversation may be known by its group ID only (an envelope sent during
// the setup, before the run mapped group IDs to the schedule's).
type truthLine struct {
	m       record.TruthMessage
	convHex string
}

func (r *run) addTruth(m record.TruthMessage, convHex string, count *int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch m.Msg {
	case "":
		m.Msg = fmt.Sprintf("%c%d", m.Kind[0], len(r.truth)+1)
	case record.StrayPrefix:
		m.Msg = fmt.Sprintf("%s%d", record.StrayPrefix, len(r.truth)+1)
		r.strays++
	}
	r.truth = append(r.truth, truthLine{m, convHex})
	*count++
}

func (r *run) nameOf(handle string) string {
	if u := r.byHand[handle]; u != nil {
		return u.name
	}
	return handle
}

// convName is the lab's ID of a conversation by its hex group ID.
func (r *run) convName(hexID string) string {
	if i, ok := r.convHex[hexID]; ok {
		return r.sched.Convs[i].ID
	}
	return ""
}

// writeTruth writes the ground truth with times since base (the observer
// record's start) and returns the manifest's counts.
func (r *run) writeTruth(base, start, end time.Time) (*Manifest, error) {
	f, err := os.Create(filepath.Join(r.opts.Out, FileTruth))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bw := bufio.NewWriter(f)
	w, err := record.NewTruthWriter(bw, r.opts.Seed, r.sc.Name)
	if err != nil {
		return nil, err
	}
	for _, u := range r.infos {
		if err := w.WriteUser(u); err != nil {
			return nil, err
		}
	}
	for _, c := range r.convInfos {
		if err := w.WriteConv(c); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	msgs := make([]record.TruthMessage, len(r.truth))
	for i, l := range r.truth {
		msgs[i] = l.m
		if msgs[i].Conv == "" {
			msgs[i].Conv = r.convName(l.convHex)
		}
	}
	m := &Manifest{
		Scenario: r.sc.Name, Seed: r.opts.Seed, Users: r.sc.Users, Speed: r.speed,
		EpochNS: int64(r.sc.Epoch.Duration), DurationNS: int64(r.sc.Duration.Duration), ScheduleHash: r.sched.Hash(),
		RunStartNS: start.Sub(base).Nanoseconds(), RunEndNS: end.Sub(base).Nanoseconds(), Naive: r.sc.Naive,
		Texts: r.texts, Scheduled: len(r.sched.Messages), Receipts: r.receipts, Cover: r.cover,
		StrayReceipts: r.strays, Dropped: r.dropped,
	}
	r.mu.Unlock()
	slices.SortStableFunc(msgs, func(a, b record.TruthMessage) int { return int(max(min(a.T-b.T, 1), -1)) })
	got := map[string]bool{}
	for _, x := range msgs {
		got[x.Msg] = true
		x.T = max(x.T-base.UnixNano(), 0)
		if err := w.WriteMessage(x); err != nil {
			return nil, err
		}
	}
	for _, sm := range r.sched.Messages {
		if !got[sm.ID] {
			m.Lost++
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return m, f.Close()
}

// readObserver reads the observer record at path: its start, and the
// account each handle published under (what the server itself links: a
// KTPublish carries both).
func readObserver(path string) (time.Time, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, nil, err
	}
	defer f.Close()
	rd, err := record.NewObserverReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("population: the observer record: %w", err)
	}
	accounts := map[string]string{}
	for {
		e, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("population: the observer record: %w", err)
		}
		if e.Kind == "KTPublish" && e.Handle != "" && e.Account != "" {
			accounts[e.Handle] = e.Account
		}
	}
	return rd.Header.Start, accounts, nil
}

// lockedWriter serializes writes to the observer record's buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hexID formats a mailbox ID as the records do.
func hexID(b []byte) string { return hex.EncodeToString(b) }
