package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/store"
	qtokens "github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// Defaults of Config (and of the qpc-bench flags).
const (
	DefaultRecordSize     = 2048
	DefaultSenders        = 64
	DefaultSendersPerConn = 8
	DefaultDuration       = 10 * time.Second
	DefaultDrain          = 5 * time.Second
	DefaultScenario       = "send-2KiB-64x1"
)

// Config describes one scenario. Zero fields take the defaults above.
type Config struct {
	Scenario string
	// Server is the qpc:// address of an existing server. Empty starts
	// one in-process on 127.0.0.1 with a bbolt store in a temporary data
	// directory, removed afterwards.
	Server string
	// RecordSize is the bucket every Send record fills exactly; the
	// envelope is RecordSize - wire.SendOverhead(0) bytes.
	RecordSize int
	Senders    int
	// SendersPerConn is how many senders share one protocol.Conn (one QUIC
	// connection; each Send is its own stream on it). 8 keeps each
	// connection's stream concurrency well under the server's default
	// MaxStreams of 100 while still multiplexing, as a busy client would.
	SendersPerConn int
	Duration       time.Duration
	// Drain bounds the wait, after the senders stop, for acknowledged
	// messages still on their way to the receiver.
	Drain time.Duration
	// Baseline runs the in-memory relay phase before the qpc phase.
	Baseline bool
	// Tokens adds a third phase (in-process only): the same load against a
	// server that requires delivery tokens. Creates carry a token each;
	// senders pay through protocol.Conn.SendPaid, one token per
	// wire.SendsPerToken Sends on their connection (docs/adr/0017). The
	// tokens are minted before the window from the server's issuer, so the
	// phase measures redemption on the send path, not issuance; its rate
	// is reported as a ratio to the tokens-off phase of the same run.
	Tokens bool
	// TokenPerSend has the tokens phase pay every Send with a token of its
	// own (protocol.Conn.Send), as clients did before a token paid for
	// wire.SendsPerToken Sends on its connection (protocol.Conn.SendPaid).
	TokenPerSend bool
	// CPUProfile and BaselineCPUProfile, if set, receive a CPU profile of
	// the qpc phase and of the baseline phase (setup excluded).
	CPUProfile, BaselineCPUProfile string
	// TokensCPUProfile, if set, receives a CPU profile of the tokens
	// phase's send window.
	TokensCPUProfile string
	// Logger receives the in-process server's and the clients' logs.
	// Nil discards everything below Warn to stderr.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	c.Scenario = cmp.Or(c.Scenario, DefaultScenario)
	c.RecordSize = cmp.Or(c.RecordSize, DefaultRecordSize)
	c.Senders = cmp.Or(c.Senders, DefaultSenders)
	c.SendersPerConn = cmp.Or(c.SendersPerConn, DefaultSendersPerConn)
	c.Duration = cmp.Or(c.Duration, DefaultDuration)
	c.Drain = cmp.Or(c.Drain, DefaultDrain)
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
}

func (c *Config) validate() error {
	switch {
	case c.RecordSize < wire.SendOverhead(0)+envHeaderSize:
		return fmt.Errorf("bench: record size %d leaves no room for the %d-byte bench header", c.RecordSize, envHeaderSize)
	case c.Senders < 1:
		return fmt.Errorf("bench: %d senders", c.Senders)
	case c.SendersPerConn < 1:
		return fmt.Errorf("bench: %d senders per connection", c.SendersPerConn)
	case c.Duration < 0 || c.Drain < 0:
		return errors.New("bench: negative duration")
	}
	return nil
}

// EnvelopeSize is the envelope that makes a Send record exactly recordSize
// bytes with empty auth.
func EnvelopeSize(recordSize int) int { return recordSize - wire.SendOverhead(0) }

// Result is the one JSON line qpc-bench prints. Rates are acknowledged
// sends per second of the send window; latencies run from the start of
// the Send call to the message's arrival on the receiver's subscription.
type Result struct {
	Scenario         string  `json:"scenario"`
	Target           string  `json:"target"` // "in-process" or "external"
	RecordBytes      int     `json:"record_bytes"`
	EnvelopeBytes    int     `json:"envelope_bytes"`
	Senders          int     `json:"senders"`
	SenderConns      int     `json:"sender_conns"`
	DurationS        float64 `json:"duration_s"`
	Messages         int     `json:"messages"`
	MsgsPerS         float64 `json:"msgs_per_s"`
	BaselineMsgsPerS float64 `json:"baseline_msgs_per_s"`
	Ratio            float64 `json:"ratio"`
	P50Ms            float64 `json:"p50_ms"`
	P99Ms            float64 `json:"p99_ms"`
	Lost             int     `json:"lost"`
	Duplicates       int     `json:"duplicates"`
	Corrupt          int     `json:"corrupt"`
	SendErrors       int     `json:"send_errors"`
	UnackedDelivered int     `json:"unacked_delivered"`
	AckErrors        int     `json:"ack_errors"`
	DrainMs          float64 `json:"drain_ms"`
	// MaxSendMs is the slowest single Send call, retries included: a value
	// near the client's 30 s request timeout means a request stalled.
	MaxSendMs float64 `json:"max_send_ms"`

	BaselineMessages   int     `json:"baseline_messages"`
	BaselineP50Ms      float64 `json:"baseline_p50_ms"`
	BaselineP99Ms      float64 `json:"baseline_p99_ms"`
	BaselineLost       int     `json:"baseline_lost"`
	BaselineDuplicates int     `json:"baseline_duplicates"`
	BaselineSendErrors int     `json:"baseline_send_errors"`
	BaselineMaxSendMs  float64 `json:"baseline_max_send_ms"`

	// Group-commit writer during the send window (in-process only; the
	// receiver's acks are operations too).
	StoreCommits  uint64  `json:"store_commits,omitempty"`
	StoreOps      uint64  `json:"store_ops,omitempty"`
	MeanBatch     float64 `json:"mean_batch,omitempty"`
	LargestBatch  int     `json:"largest_batch,omitempty"`
	MeanCommitMs  float64 `json:"mean_commit_ms,omitempty"`
	CommitBusyPct float64 `json:"commit_busy_pct,omitempty"` // share of the window the writer spent in transactions
	// Where an acknowledged Send's time went, as means: the whole Send
	// call at the client (mean_send_ms, also reported for the baseline);
	// inside the server's store, waiting for the writer to take the
	// operation (store_queued_ms), in its transaction until the fsynced
	// commit (store_txn_ms), and from the commit until the handler ran
	// again (store_wake_ms). The rest of mean_send_ms is the request's
	// trip through QUIC and the server's handling.
	MeanSendMs         float64 `json:"mean_send_ms"`
	BaselineMeanSendMs float64 `json:"baseline_mean_send_ms,omitempty"`
	StoreQueuedMs      float64 `json:"store_queued_ms,omitempty"`
	StoreTxnMs         float64 `json:"store_txn_ms,omitempty"`
	StoreWakeMs        float64 `json:"store_wake_ms,omitempty"`
	// StorePagesPerOp is the database pages (of StorePageBytes) the
	// commits wrote per operation: the store's write amplification.
	StorePagesPerOp float64 `json:"store_pages_per_op,omitempty"`
	StorePageBytes  int     `json:"store_page_bytes,omitempty"`
	// CPU time of the whole process (clients and server, user and
	// system) per acknowledged Send during the send window, in µs, and
	// the baseline's over qpc's. Both phases saturate the CPU on a small
	// machine, so the cpu ratio bounds the throughput ratio and, unlike
	// it, hardly moves with other processes' load.
	CPUUsPerMsg         float64 `json:"cpu_us_per_msg,omitempty"`
	BaselineCPUUsPerMsg float64 `json:"baseline_cpu_us_per_msg,omitempty"`
	CPURatio            float64 `json:"cpu_ratio,omitempty"`
	// FsyncMs is the median time of a 4 KiB write and fdatasync of a
	// scratch file beside the store, probed just before and just after
	// the qpc phase's window (in-process only). Each commit waits for
	// three such syncs and the relay for none: a ratio measured while
	// other work keeps the disk busy is low for that reason, whatever
	// the load average says.
	FsyncMs float64 `json:"fsync_ms,omitempty"`

	// The tokens phase (Config.Tokens): throughput with a token redeemed
	// per send, as a ratio to the tokens-off qpc phase above.
	TokensMessages   int     `json:"tokens_messages,omitempty"`
	TokensMsgsPerS   float64 `json:"tokens_msgs_per_s,omitempty"`
	TokensRatio      float64 `json:"tokens_ratio,omitempty"`
	TokensP50Ms      float64 `json:"tokens_p50_ms,omitempty"`
	TokensP99Ms      float64 `json:"tokens_p99_ms,omitempty"`
	TokensLost       int     `json:"tokens_lost,omitempty"`
	TokensDuplicates int     `json:"tokens_duplicates,omitempty"`
	TokensSendErrors int     `json:"tokens_send_errors,omitempty"`
	// The store writer during the tokens phase's window, as for the qpc
	// phase (MeanBatch, CommitBusyPct, StorePagesPerOp).
	TokensMeanBatch     float64 `json:"tokens_mean_batch,omitempty"`
	TokensCommitBusyPct float64 `json:"tokens_commit_busy_pct,omitempty"`
	TokensPagesPerOp    float64 `json:"tokens_store_pages_per_op,omitempty"`
}

// phase is what one load run measured.
type phase struct {
	elapsed    time.Duration // send window: start until the last sender returned
	drain      time.Duration
	maxSend    time.Duration
	sendTime   time.Duration // summed over acknowledged sends
	sendErrors int
	ackErrors  int
	conns      int
	tally      tally
	// cpu is the whole process's CPU time (user and system: clients,
	// server and store) spent during the send window.
	cpu time.Duration
}

// cpuUsPerMsg is the process CPU time per acknowledged Send, in µs.
func (p phase) cpuUsPerMsg() float64 {
	if p.tally.acked == 0 {
		return 0
	}
	return round(float64(p.cpu) / float64(time.Microsecond) / float64(p.tally.acked))
}

func (p phase) meanSendMs() float64 {
	if p.tally.acked == 0 {
		return 0
	}
	return ms(p.sendTime / time.Duration(p.tally.acked))
}

func (p phase) rate() float64 {
	if p.elapsed <= 0 {
		return 0
	}
	return float64(p.tally.acked) / p.elapsed.Seconds()
}

// Run runs the baseline phase (if cfg.Baseline) and then the qpc phase,
// and returns the combined result.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	res := Result{
		Scenario:      cfg.Scenario,
		Target:        "in-process",
		RecordBytes:   cfg.RecordSize,
		EnvelopeBytes: EnvelopeSize(cfg.RecordSize),
		Senders:       cfg.Senders,
	}
	if cfg.Server != "" {
		res.Target = "external"
	}
	if cfg.Baseline {
		b, err := runBaseline(ctx, cfg)
		if err != nil {
			return res, fmt.Errorf("baseline: %w", err)
		}
		res.setBaseline(b)
		// The baseline's garbage (every envelope it held) must not be
		// collected on the qpc phase's time.
		runtime.GC()
	}
	var (
		q   phase
		err error
	)
	if cfg.Server != "" {
		if cfg.Tokens {
			return res, errors.New("bench: the tokens phase needs the in-process server")
		}
		q, err = load(ctx, cfg, cfg.Server, cfg.CPUProfile, nil, nil)
	} else {
		q, err = runInProcess(ctx, cfg, &res, 0)
	}
	if err != nil {
		return res, err
	}
	if cfg.Tokens {
		runtime.GC()
		// Enough tokens for the tokens-off rate plus headroom; a sender
		// that runs out stops, which ends the window early, never quietly.
		need := int(q.rate()*cfg.Duration.Seconds()*1.5) + cfg.Senders + 1
		var tres Result
		tp, err := runInProcess(ctx, cfg, &tres, need)
		if err != nil {
			return res, fmt.Errorf("tokens phase: %w", err)
		}
		res.TokensMessages = tp.tally.acked
		res.TokensMsgsPerS = round(tp.rate())
		if q.rate() > 0 {
			res.TokensRatio = round(tp.rate() / q.rate())
		}
		res.TokensP50Ms = round(percentile(tp.tally.latencies, 50))
		res.TokensP99Ms = round(percentile(tp.tally.latencies, 99))
		res.TokensLost = tp.tally.lost
		res.TokensDuplicates = tp.tally.duplicates
		res.TokensSendErrors = tp.sendErrors
		res.TokensMeanBatch = tres.MeanBatch
		res.TokensCommitBusyPct = tres.CommitBusyPct
		res.TokensPagesPerOp = tres.StorePagesPerOp
	}
	res.setQPC(q)
	return res, nil
}

// setBaseline fills in the baseline phase's figures.
func (res *Result) setBaseline(b phase) {
	res.BaselineMessages = b.tally.acked
	res.BaselineMsgsPerS = round(b.rate())
	res.BaselineP50Ms = round(percentile(b.tally.latencies, 50))
	res.BaselineP99Ms = round(percentile(b.tally.latencies, 99))
	res.BaselineLost = b.tally.lost
	res.BaselineDuplicates = b.tally.duplicates
	res.BaselineSendErrors = b.sendErrors
	res.BaselineMaxSendMs = ms(b.maxSend)
	res.BaselineMeanSendMs = b.meanSendMs()
	res.BaselineCPUUsPerMsg = b.cpuUsPerMsg()
}

// setQPC fills in the qpc phase's figures, and the ratio if the baseline
// ran before.
func (res *Result) setQPC(q phase) {
	res.SenderConns = q.conns
	res.DurationS = round(q.elapsed.Seconds())
	res.Messages = q.tally.acked
	res.MsgsPerS = round(q.rate())
	if res.BaselineMsgsPerS > 0 {
		res.Ratio = round(q.rate() / res.BaselineMsgsPerS)
	}
	res.P50Ms = round(percentile(q.tally.latencies, 50))
	res.P99Ms = round(percentile(q.tally.latencies, 99))
	res.Lost = q.tally.lost
	res.Duplicates = q.tally.duplicates
	res.Corrupt = q.tally.corrupt
	res.SendErrors = q.sendErrors
	res.UnackedDelivered = q.tally.unackedDelivered
	res.AckErrors = q.ackErrors
	res.DrainMs = ms(q.drain)
	res.MaxSendMs = ms(q.maxSend)
	res.MeanSendMs = q.meanSendMs()
	res.CPUUsPerMsg = q.cpuUsPerMsg()
	if res.BaselineCPUUsPerMsg > 0 && res.CPUUsPerMsg > 0 {
		res.CPURatio = round(res.BaselineCPUUsPerMsg / res.CPUUsPerMsg)
	}
}

func round(x float64) float64 { return math.Round(x*1000) / 1000 }

func ms(d time.Duration) float64 { return round(float64(d) / float64(time.Millisecond)) }

// runInProcess starts a real server over a fresh bbolt file and runs the
// load against it, reporting the writer's statistics for the send window.
// With tokens > 0 the server requires delivery tokens and that many are
// minted before the window.
func runInProcess(ctx context.Context, cfg Config, res *Result, tokens int) (phase, error) {
	dir, err := os.MkdirTemp("", "qpc-bench-")
	if err != nil {
		return phase{}, err
	}
	defer os.RemoveAll(dir)
	id, err := server.CreateIdentity(dir)
	if err != nil {
		return phase{}, err
	}
	st, err := store.Open(filepath.Join(dir, "qpc.db"), store.Options{Logger: cfg.Logger})
	if err != nil {
		return phase{}, err
	}
	defer st.Close()
	opts := server.Options{
		Identity: id,
		Store:    st,
		// The receiver acks continuously, but a slow moment must not turn
		// into quota refusals that the bench would count as send errors.
		Quota: store.Quota{MaxMessages: 1 << 24, MaxBytes: 1 << 40},
		// The per-connection request rate limit protects a real server
		// from one abusive connection; here 8 senders share a connection
		// on purpose, and the relay has no such limit.
		RequestRate:  1e9,
		RequestBurst: 1 << 30,
		// Sends carry no token: the bench measures delivery and storage,
		// as the relay does, not token redemption. Named explicitly so a
		// change of the default cannot silently add that cost to one phase.
		Authorizer: server.OpenAccess{},
		Logger:     cfg.Logger,
	}
	var pool *tokenPool
	if tokens > 0 {
		secret := make([]byte, qtokens.MasterSecretSize)
		rand.Read(secret)
		issuer, err := qtokens.NewIssuer(secret)
		if err != nil {
			return phase{}, err
		}
		opts.Tokens, opts.Authorizer = issuer, nil // the token authorizer
		if pool, err = mintTokens(issuer, tokens); err != nil {
			return phase{}, err
		}
	}
	srv, err := server.New(opts)
	if err != nil {
		return phase{}, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return phase{}, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(pc) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-served
	}()
	var before, after store.Stats
	hooks := &windowHooks{
		start: func() { before = st.Stats() },
		end:   func() { after = st.Stats() },
	}
	profile := cfg.CPUProfile
	if tokens > 0 {
		profile = cfg.TokensCPUProfile
	}
	// The disk's sync latency, just before and just after the window.
	syncs := fsyncProbe(dir, nil)
	p, err := load(ctx, cfg, id.Address(pc.LocalAddr().String()).String(), profile, hooks, pool)
	if err != nil {
		return p, err
	}
	res.FsyncMs = medianMs(fsyncProbe(dir, syncs))
	res.StoreCommits = after.Commits - before.Commits
	res.StoreOps = after.Ops - before.Ops
	res.LargestBatch = after.LargestBatch
	if res.StoreCommits > 0 {
		busy := after.CommitTime - before.CommitTime
		res.MeanBatch = round(float64(res.StoreOps) / float64(res.StoreCommits))
		res.MeanCommitMs = round(float64(busy) / float64(res.StoreCommits) / float64(time.Millisecond))
		if p.elapsed > 0 {
			res.CommitBusyPct = round(100 * float64(busy) / float64(p.elapsed))
		}
		perOp := func(a, b time.Duration) float64 {
			return round(float64(a-b) / float64(res.StoreOps) / float64(time.Millisecond))
		}
		res.StoreQueuedMs = perOp(after.OpQueued, before.OpQueued)
		res.StoreTxnMs = perOp(after.OpTxn, before.OpTxn)
		res.StoreWakeMs = perOp(after.OpWake, before.OpWake)
		res.StorePagesPerOp = round(float64(after.PagesWritten-before.PagesWritten) / float64(res.StoreOps))
		res.StorePageBytes = after.PageSize
	}
	return p, nil
}

// runBaseline runs the load against the in-memory relay, which uses a
// server.Identity's TLS configuration so the handshake is the same.
func runBaseline(ctx context.Context, cfg Config) (phase, error) {
	dir, err := os.MkdirTemp("", "qpc-bench-relay-")
	if err != nil {
		return phase{}, err
	}
	defer os.RemoveAll(dir)
	id, err := server.CreateIdentity(dir)
	if err != nil {
		return phase{}, err
	}
	tlsConf, err := id.TLSConfig()
	if err != nil {
		return phase{}, err
	}
	r, err := startRelay(tlsConf, padding.Default)
	if err != nil {
		return phase{}, err
	}
	defer r.Close()
	return load(ctx, cfg, id.Address(r.Addr()).String(), cfg.BaselineCPUProfile, nil, nil)
}

// windowHooks run at the start and end of the send window.
type windowHooks struct{ start, end func() }

// load drives one target: a receiver subscribed to a fresh mailbox and
// acking what it gets, and cfg.Senders senders sending to it back to back
// for cfg.Duration.
func load(ctx context.Context, cfg Config, addr, profile string, hooks *windowHooks, pool *tokenPool) (phase, error) {
	var p phase
	copts := protocol.Options{Logger: cfg.Logger}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	recv, err := protocol.Dial(setupCtx, addr, copts)
	if err != nil {
		return p, fmt.Errorf("dial receiver: %w", err)
	}
	defer recv.Close()
	envSize := EnvelopeSize(cfg.RecordSize)
	rec, err := wire.AppendMessage(nil, recv.Policy(), &wire.Send{Envelope: make([]byte, envSize)})
	if err != nil || len(rec) != cfg.RecordSize || !recv.Policy().IsBucket(cfg.RecordSize) {
		return p, fmt.Errorf("record size %d is not a bucket of the server's policy %s", cfg.RecordSize, recv.Policy())
	}
	mb, err := recv.CreateMailbox(setupCtx, pool.take())
	if err != nil {
		return p, err
	}
	if cfg.Server != "" {
		// On someone else's server, leave nothing behind.
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			recv.DeleteMailbox(dctx, mb)
		}()
	}
	sub, err := recv.Subscribe(setupCtx, mb, 0)
	if err != nil {
		return p, err
	}
	defer sub.Close()
	select {
	case <-sub.CaughtUp():
	case <-setupCtx.Done():
		return p, fmt.Errorf("subscribe: %w", setupCtx.Err())
	}

	nconns := (cfg.Senders + cfg.SendersPerConn - 1) / cfg.SendersPerConn
	conns := make([]*protocol.Conn, nconns)
	for i := range conns {
		c, err := protocol.Dial(setupCtx, addr, copts)
		if err != nil {
			return p, fmt.Errorf("dial sender: %w", err)
		}
		defer c.Close()
		conns[i] = c
	}
	p.conns = nconns

	var runID [8]byte
	rand.Read(runID[:])
	run := binary.BigEndian.Uint64(runID[:])
	// base is the zero of the send timestamps in envelopes; the receiver
	// subtracts them from its own time.Since(base), monotonic both ways.
	base := time.Now()
	t := &tracker{}

	// Receiver: checks and records every delivery, hands the IDs to the
	// acker so that reading the subscription never waits for an Ack.
	ackQ := make(chan wire.MessageID, 4096)
	var ackErrs atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		defer close(ackQ)
		for m := range sub.C {
			seq, sent, err := parseEnvelope(m.Envelope, run)
			if err != nil {
				t.badDelivery()
			} else {
				t.deliver(seq, time.Since(base)-sent)
			}
			ackQ <- m.ID
		}
	}()
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		ackLoop(recv, mb, ackQ, &ackErrs)
	}()

	var stopProfile func()
	if profile != "" {
		stopProfile, err = startProfile(profile)
		if err != nil {
			return p, err
		}
	}
	var (
		seqs    atomic.Uint64
		errs    atomic.Int64
		slowest atomic.Int64
		sumSend atomic.Int64 // acknowledged sends only
		wg      sync.WaitGroup
		startGo = make(chan struct{})
	)
	var windowStart, deadline time.Time // set before startGo is closed
	sendCtx, stopSends := context.WithCancel(ctx)
	defer stopSends()
	for i := range cfg.Senders {
		conn := conns[i/cfg.SendersPerConn]
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := make([]byte, envSize)
			rand.Read(env[envHeaderSize:]) // incompressible, like ciphertext
			var worst time.Duration
			var held []byte // a token not yet spent
			defer func() {
				for {
					cur := slowest.Load()
					if int64(worst) <= cur || slowest.CompareAndSwap(cur, int64(worst)) {
						return
					}
				}
			}()
			<-startGo
			for sendCtx.Err() == nil {
				start := time.Now()
				if !start.Before(deadline) {
					return
				}
				if pool != nil && held == nil {
					if held = pool.take(); held == nil {
						return // out of tokens: this sender's window ends here
					}
				}
				seq := seqs.Add(1)
				stampEnvelope(env, run, seq, start.Sub(base))
				var err error
				switch {
				case pool == nil:
					_, err = conn.Send(sendCtx, mb.SendID, protocol.NewMessageID(), env, nil)
				case cfg.TokenPerSend:
					_, err = conn.Send(sendCtx, mb.SendID, protocol.NewMessageID(), env, held)
					held = nil
				default:
					// A token pays for wire.SendsPerToken Sends on its
					// connection: keep it while the allowance pays.
					var spent bool
					_, spent, err = conn.SendPaid(sendCtx, mb.SendID, protocol.NewMessageID(), env, held)
					if spent {
						held = nil
					}
				}
				took := time.Since(start)
				worst = max(worst, took)
				if err != nil {
					errs.Add(1)
					if sendCtx.Err() == nil {
						cfg.Logger.Debug("send failed", "err", err)
					}
					continue
				}
				sumSend.Add(int64(took))
				t.ack(seq)
			}
		}()
	}
	if hooks != nil {
		hooks.start()
	}
	cpuStart := processCPU()
	windowStart = time.Now()
	deadline = windowStart.Add(cfg.Duration)
	close(startGo)
	wg.Wait()
	p.elapsed = time.Since(windowStart)
	p.cpu = processCPU() - cpuStart
	if hooks != nil {
		hooks.end()
	}
	if stopProfile != nil {
		stopProfile()
	}
	p.sendErrors = int(errs.Load())
	p.maxSend = time.Duration(slowest.Load())
	p.sendTime = time.Duration(sumSend.Load())

	// Drain: every acknowledged message should reach the receiver.
	drainStart := time.Now()
	drainEnd := drainStart.Add(cfg.Drain)
	for t.outstanding() > 0 && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	p.drain = time.Since(drainStart)
	sub.Close()
	<-recvDone
	<-ackDone
	p.ackErrors = int(ackErrs.Load())
	p.tally = t.tally()
	if err := ctx.Err(); err != nil {
		return p, err
	}
	return p, nil
}

// ackLoop acks delivered messages in batches: whatever has queued up while
// the previous Ack was in flight, up to the protocol's maximum, so acking
// costs a few requests per second, not one per message.
func ackLoop(c *protocol.Conn, mb *protocol.Mailbox, q <-chan wire.MessageID, errs *atomic.Int64) {
	batch := make([]wire.MessageID, 0, wire.MaxAckIDs)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.Ack(ctx, mb, batch); err != nil {
			errs.Add(1)
		}
		batch = batch[:0]
	}
	for id := range q {
		batch = append(batch, id)
	more:
		for len(batch) < wire.MaxAckIDs {
			select {
			case id, ok := <-q:
				if !ok {
					break more
				}
				batch = append(batch, id)
			default:
				break more
			}
		}
		flush()
	}
	flush()
}

func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// tokenPool hands out pre-minted delivery tokens; a nil pool hands out
// none (open access).
type tokenPool struct {
	mu   sync.Mutex
	toks [][]byte
}

func (p *tokenPool) take() []byte {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.toks) == 0 {
		return nil
	}
	t := p.toks[len(p.toks)-1]
	p.toks = p.toks[:len(p.toks)-1]
	return t
}

// mintTokens obtains n tokens from issuer the way a client does (blind,
// issue with a DLEQ proof, finalize and verify), on every core.
func mintTokens(issuer *qtokens.Issuer, n int) (*tokenPool, error) {
	pk, err := issuer.PublicKey(issuer.Epoch())
	if err != nil {
		return nil, err
	}
	pool := &tokenPool{}
	var (
		wg       sync.WaitGroup
		firstErr atomic.Pointer[error]
		next     atomic.Int64
	)
	batches := (n + qtokens.MaxBatch - 1) / qtokens.MaxBatch
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(batches) && firstErr.Load() == nil {
				blinding, req, err := qtokens.Blind(pk, qtokens.MaxBatch)
				if err == nil {
					var resp *qtokens.TokenResponse
					if resp, err = issuer.Issue(req); err == nil {
						var toks []qtokens.Token
						if toks, err = blinding.Finalize(resp); err == nil {
							raws := make([][]byte, 0, len(toks))
							for i := range toks {
								raw, merr := toks[i].MarshalBinary()
								if merr != nil {
									err = merr
									break
								}
								raws = append(raws, raw)
							}
							pool.mu.Lock()
							pool.toks = append(pool.toks, raws...)
							pool.mu.Unlock()
						}
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return nil, fmt.Errorf("mint tokens: %w", *e)
	}
	return pool, nil
}
