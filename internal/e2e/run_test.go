package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/tokens"
	"github.com/quicprochat/qpc/wire"
)

// runServer is a server started exactly as `qpc-server run` starts one:
// the command line through config.Flags and config.Load, then
// server.Run, which opens the key, store, accounts, token issuer, KT
// directory and listeners. Only the environment differs: it is empty but
// for free ports for the admin and KT listeners (the binary's tests set
// the same), so that tests run side by side.
type runServer struct {
	t      *testing.T
	cfg    *config.Config
	addr   string // the qpc:// address of the QUIC listener
	admin  string // host:port of the admin listener
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	err    error // Run's result, once returned
	// returned is set once Run has returned.
	returned bool
}

// startRun starts a server with the flags of `qpc-server run` and waits
// until it serves; stopped at the end of the test if still running.
func startRun(t *testing.T, args ...string) *runServer {
	t.Helper()
	r, err := tryRun(t, args...)
	if err != nil {
		t.Fatalf("server.Run: %v\nlog:\n%s", err, r.logs.String())
	}
	return r
}

// tryRun starts a server as startRun does and returns Run's error if it
// stopped before serving.
func tryRun(t *testing.T, args ...string) (*runServer, error) {
	t.Helper()
	fset := flag.NewFlagSet("qpc-server run", flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	flags := config.Flags{}
	flags.Register(fset)
	if err := fset.Parse(args); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"QPC_ADMIN_LISTEN": "127.0.0.1:0", "QPC_KT_LISTEN": "127.0.0.1:0"}
	cfg, err := config.Load(flags, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	r := &runServer{t: t, cfg: cfg, logs: &syncBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	listening := make(chan server.Listener, 8)
	go func() {
		r.done <- server.Run(ctx, cfg, server.RunOptions{
			Logger:    cfg.NewLogger(r.logs),
			Listening: func(l server.Listener) { listening <- l },
		})
	}()
	t.Cleanup(func() { r.stop() })
	want := map[server.ListenerKind]bool{server.ListenerQUIC: true}
	if cfg.AdminListen != config.AdminOff {
		want[server.ListenerAdmin] = true
	}
	timeout := time.After(60 * time.Second)
	for len(want) > 0 {
		select {
		case l := <-listening:
			switch l.Kind {
			case server.ListenerQUIC:
				r.addr = l.Address.String()
			case server.ListenerAdmin:
				r.admin = l.Addr
			}
			delete(want, l.Kind)
		case err := <-r.done:
			r.err, r.returned = err, true
			if err == nil {
				t.Fatalf("server.Run returned before serving, without an error\nlog:\n%s", r.logs.String())
			}
			return r, err
		case <-timeout:
			t.Fatalf("server.Run not serving after 60s\nlog:\n%s", r.logs.String())
		}
	}
	return r, nil
}

// stop cancels Run's context, as the binary does on SIGTERM, and returns
// Run's result.
func (r *runServer) stop() error {
	r.t.Helper()
	r.signal()
	return r.wait()
}

// signal cancels Run's context without waiting for the drain.
func (r *runServer) signal() { r.cancel() }

// wait waits for Run to return, after signal.
func (r *runServer) wait() error {
	r.t.Helper()
	if r.returned {
		return r.err
	}
	select {
	case r.err = <-r.done:
		r.returned = true
	case <-time.After(60 * time.Second):
		r.t.Fatalf("server.Run still running 60s after its context ended\nlog:\n%s", r.logs.String())
	}
	return r.err
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s has mode %04o, want %04o", path, fi.Mode().Perm(), want)
	}
}

// TestRunServesRound: server.Run on a fresh directory initialises it as
// `qpc-server init` would, serves a whole mailbox round paid with tokens
// of a registered account (tokens are required by default), and drains;
// no identifier of that round, nor the client's address, reaches the log.
func TestRunServesRound(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	r := startRun(t, "--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s")

	checkMode(t, dir, 0o700)
	for _, f := range []string{"tls.key", "qpc-server.toml", "qpc.db", "tokens.key", "opaque.key", "accounts.db"} {
		checkMode(t, filepath.Join(dir, f), 0o600)
	}
	a, err := wire.ParseAddress(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	if host, port, _ := net.SplitHostPort(a.Host); host != "127.0.0.1" || port == "0" {
		t.Errorf("address %s: want 127.0.0.1 and the bound port", r.addr)
	}
	id, err := server.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.Pin() != a.Pin {
		t.Errorf("Run announced %s, which does not pin the key in %s", r.addr, dir)
	}

	// A client socket whose address we know, to look for it in the log.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	raddr, err := net.ResolveUDPAddr("udp", a.Host)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := protocol.Dial(ctx, r.addr, protocol.Options{PacketConn: pc, RemoteAddr: raddr})
	if err != nil {
		t.Fatalf("dial %s: %v", r.addr, err)
	}
	if status, err := conn.Health(ctx); err != nil || status != wire.StatusServing {
		t.Fatalf("health = %d, %v", status, err)
	}
	if _, err := conn.CreateMailbox(ctx, nil); !errors.Is(err, &wire.Error{Code: wire.CodeTokenMissing}) {
		t.Fatalf("tokenless create on a default server: %v, want TOKEN_MISSING", err)
	}
	first := sendFirst(t, ctx, conn, "operator-test", 2)
	sess, mb, msgID, sendTok := first.sess, first.mb, first.msgID, first.sendTok
	msgs, _, err := conn.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetch: %d messages, %v", len(msgs), err)
	}
	if n, err := conn.Ack(ctx, mb, []wire.MessageID{msgID}); err != nil || n != 1 {
		t.Fatalf("ack: %d, %v", n, err)
	}
	conn.Close()

	if err := r.stop(); err != nil {
		t.Fatalf("Run after the drain: %v", err)
	}
	logs := r.logs.String()
	for _, want := range []string{"level=INFO", "draining", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	secrets := map[string][]byte{
		"receive ID": mb.ReceiveID[:], "send ID": mb.SendID[:], "message ID": msgID[:],
		"owner public key": mb.Key[32:], // an Ed25519 private key ends with its public key
		"session":          sess.Token[:],
		"token":            sendTok[5:37],
	}
	for what, b := range secrets {
		for _, form := range encodings(b) {
			if strings.Contains(logs, form) {
				t.Errorf("log contains the %s (%q)", what, form)
			}
		}
	}
	if c := pc.LocalAddr().String(); strings.Contains(logs, c) {
		t.Errorf("log contains the client address %s", c)
	}
}

// firstSend is what sendFirst did.
type firstSend struct {
	device  account.DeviceID
	sess    *protocol.Session
	keys    *protocol.TokenKeys
	toks    []tokens.Token // issued; the first two are spent
	mb      *protocol.Mailbox
	msgID   wire.MessageID
	sendTok []byte // the send's token
}

// sendFirst is a new user's first round on a server run by startRun:
// handle registers (device 1, with the password "a long passphrase"),
// has n tokens issued (n >= 2), creates a mailbox paying with the first
// and sends it "an opaque envelope" paying with the second.
func sendFirst(t *testing.T, ctx context.Context, conn *protocol.Conn, handle string, n int) firstSend {
	t.Helper()
	var f firstSend
	f.device[0] = 1
	var err error
	f.sess, err = conn.Register(ctx, handle, []byte("a long passphrase"), f.device, "test",
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1}))
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if f.keys, err = conn.TokenKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if f.toks, err = conn.IssueTokens(ctx, f.sess, f.keys.Keys[f.keys.Current], n); err != nil {
		t.Fatalf("issue tokens: %v", err)
	}
	createTok, _ := f.toks[0].MarshalBinary()
	f.sendTok, _ = f.toks[1].MarshalBinary()
	if f.mb, err = conn.CreateMailbox(ctx, createTok); err != nil {
		t.Fatal(err)
	}
	f.msgID = protocol.NewMessageID()
	if _, err := conn.Send(ctx, f.mb.SendID, f.msgID, []byte("an opaque envelope"), f.sendTok); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestRunStoreLocked: a second Run on the same data directory fails with
// a clear message once the store's lock wait times out, and the first
// keeps serving.
func TestRunStoreLocked(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	first := startRun(t, "--data-dir", dir, "--listen", "127.0.0.1:0")
	_, err := tryRun(t, "--data-dir", dir, "--listen", "127.0.0.1:0")
	if want := "is locked by another process"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second Run: %v, want %q", err, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := protocol.Dial(ctx, first.addr, protocol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if status, err := conn.Health(ctx); err != nil || status != wire.StatusServing {
		t.Errorf("first server: health %d, %v", status, err)
	}
	conn.Close()
	if err := first.stop(); err != nil {
		t.Errorf("first server: %v", err)
	}
}

// TestRunRefusesStrandedEnvelopes: an operator shrinks the padding policy
// while a long envelope waits. The server must not start (that envelope
// could never be delivered and would block its mailbox) and must say what
// bucket to keep; started again with the old policy, it delivers both
// waiting messages intact.
func TestRunRefusesStrandedEnvelopes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	common := []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--require-tokens=false"}
	first := startRun(t, common...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := protocol.Dial(ctx, first.addr, protocol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := conn.CreateMailbox(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	long, short := bytes.Repeat([]byte{0xAB}, 20000), []byte("short")
	for _, env := range [][]byte{long, short} {
		if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), env, nil); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	if err := first.stop(); err != nil {
		t.Fatalf("first server: %v", err)
	}

	// 20000 bytes of envelope plus the Delivery record around it (4-byte
	// record header, 35 bytes of fields) need a bucket of 20039 bytes.
	_, err = tryRun(t, append([]string{"--buckets", "512,2048,16384"}, common...)...)
	if err == nil {
		t.Fatal("a shrunk policy started")
	}
	for _, want := range []string{"1 stored envelopes are longer than the limit of 16345 bytes", "keep a largest bucket of at least 20039 bytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal lacks %q: %v", want, err)
		}
	}
	t.Logf("refusal: %v", err)

	again := startRun(t, common...)
	conn, err = protocol.Dial(ctx, again.addr, protocol.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs, _, err := conn.Fetch(ctx, mb, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || !bytes.Equal(msgs[0].Envelope, long) || !bytes.Equal(msgs[1].Envelope, short) {
		t.Fatalf("after the refusal: %d messages", len(msgs))
	}
	if err := again.stop(); err != nil {
		t.Errorf("again: %v", err)
	}
}
