package crashtest

import (
	"bufio"
	"context"
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

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/server/store"
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
func start(t *testing.T, bin, dataDir, listen string) *serverProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(bin, "run", "--data-dir", dataDir, "--listen", listen,
			"--require-tokens=false", "--log-level", "warn", "--admin-listen", "off",
			"--kt-listen", "127.0.0.1:0")
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
}

func TestCrashLoop(t *testing.T) {
	cycles := 20
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
	srv := start(t, bin, dataDir, listen)
	var srvMu sync.Mutex
	t.Cleanup(func() {
		srvMu.Lock()
		defer srvMu.Unlock()
		srv.kill()
	})
	addr := srv.addr

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := client.Options{
		RequestTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second, IdleTimeout: 5 * time.Second,
		MaxAttempts: 20, BaseBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
	}
	dialCtx, dcancel := context.WithTimeout(ctx, 20*time.Second)
	recv, err := client.Dial(dialCtx, addr, opts)
	dcancel()
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	mctx, mcancel := context.WithTimeout(ctx, 20*time.Second)
	mb, err := recv.CreateMailbox(mctx, nil)
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
			c, err := client.Dial(ctx, addr, opts)
			for err != nil {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				c, err = client.Dial(ctx, addr, opts)
			}
			defer c.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := client.NewMessageID()
				led.mu.Lock()
				led.sent[id] = false
				led.mu.Unlock()
				sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.Send(sctx, mb.SendID, id, []byte(fmt.Sprintf("sender %d message %d", i, n)), nil)
				scancel()
				if err != nil {
					failed.Add(1) // not acked: it may or may not be stored
					continue
				}
				led.mu.Lock()
				led.sent[id] = true
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
		srv = start(t, bin, dataDir, listen)
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
	fmt.Printf("crashtest: cycles=%d sent=%d acked=%d unacked=%d delivered=%d lost=%d duplicated=%d phantom=%d bbolt=%s keys=%s\n",
		cycles, len(led.sent), acked, int(failed.Load()), delivered, lost, duplicated, phantom, check, keys)
	if acked == 0 {
		t.Fatal("nothing was acked: the test exercised nothing")
	}
	if lost != 0 || duplicated != 0 || phantom != 0 || check != "ok" || keys != "ok" {
		t.Fatalf("lost=%d duplicated=%d phantom=%d bbolt=%s keys=%s", lost, duplicated, phantom, check, keys)
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
