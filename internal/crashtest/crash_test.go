package crashtest

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server/store"
	qtokens "github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
	bolt "go.etcd.io/bbolt"
)

// buildServer compiles cmd/qpc-server once into dir.
func buildServer(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "qpc-server")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/quicprochat/qpc/cmd/qpc-server")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("build qpc-server: %v", err)
	}
	return bin
}

// freePort finds a UDP port on 127.0.0.1 to reuse across restarts.
func freePort(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().String()
}

type serverProc struct {
	cmd  *exec.Cmd
	addr string
}

// start runs the server and waits for its address line.
func start(t *testing.T, bin, dataDir, listen string, tokens bool) *serverProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		args := []string{"run", "--data-dir", dataDir, "--listen", listen,
			"--require-tokens=" + strconv.FormatBool(tokens), "--log-level", "warn", "--admin-listen", "off",
			"--kt-listen", "127.0.0.1:0"}
		if tokens {
			args = append(args, "--token-quota", "1048576", "--request-rate", "100000", "--request-burst", "100000")
		}
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = nil
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "address: "); ok {
					line <- a
				}
			}
			close(line)
		}()
		select {
		case a, ok := <-line:
			if ok {
				return &serverProc{cmd: cmd, addr: a}
			}
		case <-time.After(15 * time.Second):
		}
		// The port may still be held for a moment after a kill.
		cmd.Process.Kill()
		cmd.Wait()
		if attempt == 10 {
			t.Fatal("server did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *serverProc) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	p.cmd.Wait()
}

// ledger is what the test knows: what was sent, what the server acked,
// and every (message ID, seq) the receiver saw.
type ledger struct {
	mu        sync.Mutex
	sent      map[wire.MessageID]bool // true once acked
	delivered map[wire.MessageID]map[uint64]bool
	paid      [][]byte // tokens spent by an acked, freshly stored Send (the tokens run)
}

// TestCrashLoop: a server without tokens, killed QPC_CRASH_CYCLES times
// (default 20) under load, loses no acknowledged Send and stores none twice.
func TestCrashLoop(t *testing.T) { crashLoop(t, 20, false) }

// TestCrashLoopTokens is TestCrashLoop against a server that requires
// delivery tokens, with senders paying through SendPaid, so that most
// Sends are paid by their connection's allowance (wire.SendsPerToken):
// besides TestCrashLoop's checks, every token spent by an acknowledged
// Send is refused as spent when it is shown again after the last crash,
// so no kill made the server forget a spend or accept a token twice.
func TestCrashLoopTokens(t *testing.T) { crashLoop(t, 10, true) }

func crashLoop(t *testing.T, cycles int, tokens bool) {
	if v := os.Getenv("QPC_CRASH_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("QPC_CRASH_CYCLES=%q", v)
		}
		cycles = n
	}
	tmp := t.TempDir()
	bin := buildServer(t, tmp)
	dataDir := filepath.Join(tmp, "data")
	listen := freePort(t)
	srv := start(t, bin, dataDir, listen, tokens)
	var srvMu sync.Mutex
	t.Cleanup(func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		srv.kill()
	})
	addr := srv.addr

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := protocol.Options{
		RequestTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second,
		MaxAttempts: 20, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	}
	dialCtx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	recv, err := protocol.Dial(dialCtx, addr, opts)
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	var pool tokenPool
	var createAuth []byte
	if tokens {
		pool.toks = mint(ctx, t, recv, 3001)
		createAuth = pool.take()
	}
	mctx, mcancel := context.WithTimeout(ctx, 20*time.Second)
	mb, err := recv.CreateMailbox(mctx, createAuth)
	mcancel()
	if err != nil {
		t.Fatal(err)
	}

	led := &ledger{sent: map[wire.MessageID]bool{}, delivered: map[wire.MessageID]map[uint64]bool{}}
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		failed  atomic.Int64
		senders = 8
	)
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := protocol.Dial(ctx, addr, opts)
			for err != nil {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				c, err = protocol.Dial(ctx, addr, opts)
			}
			defer c.Close()
			var held []byte // the token this sender pays with next
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if tokens && held == nil {
					if held = pool.take(); held == nil {
						return // out of tokens
					}
				}
				id := protocol.NewMessageID()
				led.mu.Lock()
				led.sent[id] = false
				led.mu.Unlock()
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				body := []byte(fmt.Sprintf("sender %d message %d", i, n))
				var err error
				var paid []byte
				if tokens {
					var spent, dup bool
					dup, spent, err = c.SendPaid(sctx, mb.SendID, id, body, held)
					if spent {
						// A fresh store spent it with the message; a
						// duplicate spends nothing, and whether an earlier
						// attempt that got no answer spent it is unknown.
						if !dup {
							paid = held
						}
						held = nil
					}
				} else {
					_, err = c.Send(sctx, mb.SendID, id, body, nil)
				}
				scancel()
				if err != nil {
					failed.Add(1) // not acked: it may or may not be stored
					continue
				}
				led.mu.Lock()
				led.sent[id] = true
				if paid != nil {
					led.paid = append(led.paid, paid)
				}
				led.mu.Unlock()
			}
		}()
	}
	// The receiver fetches after its cursor and acks what it got; a crash
	// between a fetch and a durable ack may deliver a message again, with
	// the same seq: that is at-least-once delivery, not a duplicate.
	var cursor uint64
	receive := func(rctx context.Context) {
		msgs, _, err := recv.Fetch(rctx, mb, cursor, 500)
		if err != nil {
			return
		}
		var ids []wire.MessageID
		led.mu.Lock()
		for _, m := range msgs {
			if led.delivered[m.ID] == nil {
				led.delivered[m.ID] = map[uint64]bool{}
			}
			led.delivered[m.ID][m.Seq] = true
			ids = append(ids, m.ID)
			cursor = max(cursor, m.Seq)
		}
		led.mu.Unlock()
		if len(ids) > 0 {
			recv.Ack(rctx, mb, ids)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			receive(rctx)
			rcancel()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for range cycles {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		srvMu.Lock()
		srv.kill()
		srv = start(t, bin, dataDir, listen, tokens)
		srvMu.Unlock()
	}
	// Let the last cycle's sends settle, then stop and drain.
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	for range 50 {
		before := cursor
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		receive(rctx)
		rcancel()
		if cursor == before {
			break
		}
	}
	// Every token an acked Send spent, shown again on a fresh connection
	// under a new message ID, is refused as spent.
	var respent int
	if tokens {
		respent = replayPaid(ctx, t, addr, opts, mb.SendID, led.paid)
	}
	srvMu.Lock()
	srv.kill() // the final stop is a crash too
	srvMu.Unlock()

	led.mu.Lock()
	defer led.mu.Unlock()
	var acked, lost, duplicated, phantom, delivered int
	for id, ok := range led.sent {
		if ok {
			acked++
			if len(led.delivered[id]) == 0 {
				lost++
			}
		}
	}
	for id, seqs := range led.delivered {
		delivered++
		if _, ok := led.sent[id]; !ok {
			phantom++
		}
		if len(seqs) > 1 {
			duplicated++ // stored twice under two seqs
		}
	}
	check := checkBolt(t, filepath.Join(dataDir, "qpc.db"))
	keys := checkKeys(t, filepath.Join(dataDir, "qpc.db"))
	fmt.Printf("crashtest: tokens=%v cycles=%d sent=%d acked=%d unacked=%d delivered=%d lost=%d duplicated=%d phantom=%d paid_tokens=%d accepted_again=%d bbolt=%s keys=%s\n",
		tokens, cycles, len(led.sent), acked, int(failed.Load()), delivered, lost, duplicated, phantom, len(led.paid), respent, check, keys)
	if acked == 0 {
		t.Fatal("nothing was acked: the test exercised nothing")
	}
	if tokens && len(led.paid) == 0 {
		t.Fatal("no acked Send spent a token: the tokens run exercised nothing")
	}
	if lost != 0 || duplicated != 0 || phantom != 0 || respent != 0 || check != "ok" || keys != "ok" {
		t.Fatalf("lost=%d duplicated=%d phantom=%d accepted_again=%d bbolt=%s keys=%s", lost, duplicated, phantom, respent, check, keys)
	}
}

// checkKeys opens the store after the final crash, as the next start
// would: every message still stored must have its key in the key-slot
// file (a crash between a key's write and its commit, or between an Ack
// and the key's zeroing, must cost no stored message its key), and the
// store must close cleanly after the check.
func checkKeys(t *testing.T, path string) string {
	var logs strings.Builder
	s, err := store.Open(path, store.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		return "open failed: " + err.Error()
	}
	st := s.Stats()
	if err := s.Close(); err != nil {
		return "close failed: " + err.Error()
	}
	if st.Unreadable != 0 {
		return fmt.Sprintf("%d stored messages without a key: %s", st.Unreadable, logs.String())
	}
	return "ok"
}

// checkBolt runs bbolt's consistency check over every page of the file.
func checkBolt(t *testing.T, path string) string {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return "open failed: " + err.Error()
	}
	defer db.Close()
	var problems []string
	db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		return nil
	})
	if len(problems) > 0 {
		return fmt.Sprintf("%d problems: %s", len(problems), problems[0])
	}
	return "ok"
}

// tokenPool hands out minted tokens to the senders.
type tokenPool struct {
	mu   sync.Mutex
	toks [][]byte
}

func (p *tokenPool) take() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.toks) == 0 {
		return nil
	}
	tok := p.toks[0]
	p.toks = p.toks[1:]
	return tok
}

// mint registers an account over c and issues n tokens with it. Tokens
// carry nothing of the account, so one account serves every sender.
func mint(ctx context.Context, t *testing.T, c *protocol.Conn, n int) [][]byte {
	t.Helper()
	var dev account.DeviceID
	crand.Read(dev[:])
	ksf := account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})
	sess, err := c.Register(ctx, "crashtest", []byte("crash test password"), dev, "crashtest", ksf)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	keys, err := c.TokenKeys(ctx)
	if err != nil {
		t.Fatalf("token keys: %v", err)
	}
	var out [][]byte
	for len(out) < n {
		toks, err := c.IssueTokens(ctx, sess, keys.Keys[keys.Current], min(qtokens.MaxBatch, n-len(out)))
		if err != nil {
			t.Fatalf("issue tokens: %v", err)
		}
		for _, tok := range toks {
			raw, err := tok.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, raw)
		}
	}
	return out
}

// replayPaid shows every token in paid again, on a fresh connection and
// under a new message ID, and returns how many the server accepted (any
// answer but TOKEN_SPENT is counted and logged).
func replayPaid(ctx context.Context, t *testing.T, addr string, opts protocol.Options, to wire.ID, paid [][]byte) int {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	c, err := protocol.Dial(dctx, addr, opts)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	accepted := 0
	for _, tok := range paid {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Send(sctx, to, protocol.NewMessageID(), []byte("replayed token"), tok)
		cancel()
		if code, _ := wire.CodeOf(err); code != wire.CodeTokenSpent {
			accepted++
			t.Logf("a token spent by an acked Send, shown again: %v", err)
		}
	}
	return accepted
}
