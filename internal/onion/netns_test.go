package onion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/tornet"
)

// childEnv, when set, names the qpc-server binary and tells the test
// binary that it runs inside the fresh network namespace.
const childEnv = "QPC_NETNS_CHILD"

// TestOnionOnlyInNamespace runs qpc-server --onion-only in a network
// namespace that has nothing but loopback, together with a private Tor
// network and a client, and checks that the server works there, made no
// DNS query (a resolver on 127.0.0.1:53 counts them) and holds no socket
// that is not on loopback, and that nothing in the namespace listens
// anywhere but on loopback. The parent builds the binary and re-runs this
// test under unshare(1); the child does the work.
func TestOnionOnlyInNamespace(t *testing.T) {
	if bin := os.Getenv(childEnv); bin != "" {
		onionOnlyChild(t, bin)
		return
	}
	if os.Geteuid() != 0 {
		t.Fatal("this test creates a network namespace (unshare -n) and needs root; CI runs as root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare(1) not found (util-linux)")
	}
	bin := buildServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// -n: a new network namespace (only a down loopback in it); -m: a
	// mount namespace, so the child can put its own resolv.conf in place.
	cmd := exec.CommandContext(ctx, "unshare", "-n", "-m", "--",
		os.Args[0], "-test.run=^TestOnionOnlyInNamespace$", "-test.v", "-test.timeout=3m30s")
	cmd.Env = append(os.Environ(), childEnv+"="+bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On timeout the whole group goes, tor processes included.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	t.Logf("namespace child:\n%s", out)
	if err != nil {
		t.Fatalf("the test inside the namespace failed: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestOnionOnlyInNamespace") {
		t.Fatal("the namespace child did not report a pass")
	}
}

func onionOnlyChild(t *testing.T, bin string) {
	// Only loopback may exist here, and it starts down.
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifc := range ifs {
		if ifc.Name != "lo" {
			t.Fatalf("interface %s in what should be a fresh namespace", ifc.Name)
		}
	}
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v %s", err, out)
	}
	queries := dnsSink(t)

	nw := tornet.Start(t, tornet.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	socks, err := nw.StartClient(ctx, "client")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	torrc := writeTorrc(t, nw, dir)
	data := filepath.Join(dir, "data")
	args := []string{"--data-dir", data, "--onion-only", "--tor-config", torrc, "--log-level", "warn"}
	srv := runOnionOnly(t, bin, args...)
	addr := srv.addr

	// The full path with delivery tokens: an account on one connection,
	// anonymous traffic on another, both through tor.
	acct, err := protocol.Dial(ctx, addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatalf("dial the onion-only server: %v", err)
	}
	defer acct.Close()
	var dev account.DeviceID
	rand.Read(dev[:])
	sess, err := acct.Register(ctx, "alice", []byte("correct horse battery"), dev, "laptop",
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1}))
	if err != nil {
		t.Fatalf("register over tor: %v", err)
	}
	keys, err := acct.TokenKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks, err := acct.IssueTokens(ctx, sess, keys.Keys[keys.Current], 2)
	if err != nil {
		t.Fatalf("tokens over tor: %v", err)
	}
	anon, err := protocol.Dial(ctx, addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	raw := make([][]byte, len(toks))
	for i, tok := range toks {
		if raw[i], err = tok.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	mb, err := anon.CreateMailbox(ctx, raw[0])
	if err != nil {
		t.Fatalf("create mailbox with a token: %v", err)
	}
	id := protocol.NewMessageID()
	if _, err := anon.Send(ctx, mb.SendID, id, envelope("onion only"), raw[1]); err != nil {
		t.Fatalf("send with a token: %v", err)
	}
	if msgs, _, err := anon.Fetch(ctx, mb, 0, 5); err != nil || len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("fetch: %d, %v", len(msgs), err)
	}

	// The server's sockets: every one on loopback. It holds some (the
	// tunnel listener and tor's control connections), or the audit would
	// prove nothing.
	mine := procSockets(t, srv.cmd.Process.Pid)
	if len(mine) < 2 {
		t.Errorf("found %d inet sockets of qpc-server; the audit cannot see them", len(mine))
	}
	for _, s := range mine {
		if !s.local.IsLoopback() || !(s.remote.IsLoopback() || s.remote.IsUnspecified()) {
			t.Errorf("qpc-server holds a %s socket %v -> %v", s.proto, s.local, s.remote)
		}
	}
	// Nothing in the namespace listens beyond loopback.
	all := procSockets(t, 0)
	if len(all) <= len(mine) {
		t.Errorf("found %d inet sockets in the namespace with a whole tor network in it", len(all))
	}
	for _, s := range all {
		if s.listening && !s.local.IsLoopback() {
			t.Errorf("a %s socket listens on %v", s.proto, s.local)
		}
	}
	if n := queries.Load(); n != 0 {
		t.Errorf("%d DNS queries reached the namespace's resolver", n)
	}

	// address prints only the onion form in onion-only mode.
	out, err := exec.Command(bin, append([]string{"address"}, args...)...).Output()
	if err != nil || strings.TrimSpace(string(out)) != addr {
		t.Errorf("qpc-server address --onion-only printed %q (%v), want just %s", out, err, addr)
	}

	// A clean stop takes its own tor with it.
	torPIDs := processesUsing(filepath.Join(data, "tor"))
	if len(torPIDs) == 0 {
		t.Error("found no tor process of the server's")
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-srv.exited:
		if err != nil {
			t.Errorf("qpc-server after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("qpc-server did not stop within 30 s of SIGTERM")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(processesUsing(filepath.Join(data, "tor"))) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := processesUsing(filepath.Join(data, "tor")); len(left) > 0 {
		t.Errorf("the server's tor (pids %v) outlived it", left)
	}
}

// dnsSink answers nothing and counts every DNS packet or connection to
// 127.0.0.1:53, after pointing this mount namespace's resolv.conf at it.
func dnsSink(t *testing.T) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	udp, err := net.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		t.Fatalf("DNS sink: %v", err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:53")
	if err != nil {
		t.Fatalf("DNS sink: %v", err)
	}
	t.Cleanup(func() { udp.Close(); tcp.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := udp.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	go func() {
		for {
			c, err := tcp.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", conf, "/etc/resolv.conf").CombinedOutput(); err != nil {
		t.Fatalf("bind-mount resolv.conf: %v %s", err, out)
	}
	// The sink works: a lookup of a name no hosts file knows reaches it.
	r := &net.Resolver{PreferGo: true}
	lctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	r.LookupHost(lctx, "probe.invalid.")
	cancel()
	if n.Load() == 0 {
		t.Fatal("the DNS sink saw no query from a deliberate lookup")
	}
	n.Store(0)
	return &n
}

type sockInfo struct {
	proto         string
	local, remote net.IP
	listening     bool
}

// procSockets lists the inet sockets of the namespace from /proc/net;
// with pid > 0, only those whose inode is an open fd of pid.
func procSockets(t *testing.T, pid int) []sockInfo {
	t.Helper()
	var inodes map[string]bool
	if pid > 0 {
		inodes = map[string]bool{}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	var out []sockInfo
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6", "raw", "raw6"} {
		b, err := os.ReadFile("/proc/self/net/" + proto)
		if err != nil {
			continue
		}
		for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) < 10 {
				continue
			}
			if inodes != nil && !inodes[f[9]] {
				continue
			}
			s := sockInfo{proto: proto, local: procIP(t, f[1]), remote: procIP(t, f[2])}
			// TCP state 0A is LISTEN; an unconnected UDP socket (07) is
			// one that receives from anywhere.
			s.listening = strings.HasPrefix(proto, "tcp") && f[3] == "0A" || strings.HasPrefix(proto, "udp") && f[3] == "07"
			out = append(out, s)
		}
	}
	return out
}

// procIP reads /proc/net's hex address: 32-bit words in host (little
// endian) order.
func procIP(t *testing.T, field string) net.IP {
	hexIP, _, _ := strings.Cut(field, ":")
	raw, err := hex.DecodeString(hexIP)
	if err != nil || len(raw)%4 != 0 {
		t.Fatalf("bad /proc/net address %q", field)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	return net.IP(raw)
}

// processesUsing lists processes whose command line mentions path.
func processesUsing(path string) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), path) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// testWriter sends a process's output to the test log, line by line.
type testWriter struct {
	t      *testing.T
	prefix string
	buf    []byte
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
