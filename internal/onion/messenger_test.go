package onion

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
)

// TestMessengerDirectOverOnion is the direct-message scenario of the qpc
// command line (cmd/qpc/testdata/direct.txtar), with every connection
// through Tor: the real qpc-server runs --onion-only on the private
// network, and alice and bob are the real qpc binary with QPC_TOR_SOCKS
// set and only the server's qpc://…onion address. They register, add
// each other (equal safety numbers), alice sends, bob receives it exactly
// once, bob replies and alice receives that. The server's metrics then
// show every accepted connection came through the onion service, none
// over UDP, and the server holds no socket off loopback.
func TestMessengerDirectOverOnion(t *testing.T) {
	start := time.Now()
	// The client binary builds while the network starts.
	qpcDir := t.TempDir()
	qpcBin := filepath.Join(qpcDir, "qpc")
	qpcBuilt := make(chan error, 1)
	go func() {
		out, err := exec.Command("go", "build", "-o", qpcBin, "github.com/quicprochat/qpc/cmd/qpc").CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%v\n%s", err, out)
		}
		qpcBuilt <- err
	}()
	nw, socks := network(t)
	serverBin := buildServer(t)
	if err := <-qpcBuilt; err != nil {
		t.Fatalf("build qpc: %v", err)
	}
	t.Logf("network and binaries ready after %v", time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	torrc := writeTorrc(t, nw, dir)
	admin := freeTCPAddr(t)
	flags := []string{"--data-dir", filepath.Join(dir, "data"), "--onion-only", "--tor-config", torrc,
		"--admin-listen", admin, "--kt-listen", "off", "--kt-epoch", "250ms", "--token-quota", "1000",
		"--log-level", "warn"}
	serverCmd := func(cmd string) string {
		t.Helper()
		c := exec.Command(serverBin, append([]string{cmd}, flags...)...)
		c.Env = envWithoutQPC()
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("qpc-server %s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	serverCmd("init")
	pinText := serverCmd("kt-vkey")
	pinFile := filepath.Join(dir, "kt.pin")
	if err := os.WriteFile(pinFile, []byte(pinText), 0o600); err != nil {
		t.Fatal(err)
	}

	srv := runOnionOnly(t, serverBin, flags...)
	addr := srv.addr
	t.Logf("onion published after %v: %s", time.Since(start).Round(time.Millisecond), addr)
	waitTokenKeyInKT(t, addr, socks, pinText)
	t.Logf("token key committed in KT after %v", time.Since(start).Round(time.Millisecond))

	// The clients: the real qpc binary, each with a home of its own, every
	// connection through the tor client of the private network.
	qpc := func(user string, args ...string) string {
		t.Helper()
		c := exec.Command(qpcBin, append([]string{"--timeout", "3m"}, args...)...)
		c.Env = append(envWithoutQPC(),
			"QPC_HOME="+filepath.Join(dir, "home-"+user),
			"QPC_PASSPHRASE=correct horse battery staple",
			"QPC_PASSWORD=password of "+user,
			"QPC_TOR_SOCKS="+socks)
		var out, errOut bytes.Buffer
		c.Stdout, c.Stderr = &out, &errOut
		began := time.Now()
		err := c.Run()
		t.Logf("%s$ qpc %s (%v)\n%s%s", user, strings.Join(args, " "), time.Since(began).Round(time.Millisecond), out.String(), errOut.String())
		if err != nil {
			t.Fatalf("%s: qpc %s: %v", user, strings.Join(args, " "), err)
		}
		return out.String()
	}
	expect := func(out, re string) []string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("output %q does not match %s", out, re)
		}
		return m
	}
	clientsBegan := time.Now()
	for _, user := range []string{"alice", "bob"} {
		expect(qpc(user, "init", "--server", addr, "--kt", "@"+pinFile), `(?m)^initialised `)
		expect(qpc(user, "register", user), `(?m)^registered `+user)
	}
	out := qpc("bob", "contact", "add", "alice")
	expect(out, `(?m)^added alice \(key transparency version 1, verified\)`)
	snBob := expect(out, `safety number: ([0-9 ]+)`)[1]
	snAlice := expect(qpc("alice", "contact", "add", "bob"), `safety number: ([0-9 ]+)`)[1]
	if snAlice != snBob {
		t.Fatalf("safety numbers differ: alice sees %q, bob sees %q", snAlice, snBob)
	}

	expect(qpc("alice", "send", "bob", "hello bob over tor"), `(?m)^sent$`)
	out = qpc("bob", "recv")
	if n := len(regexp.MustCompile(`(?m)^alice: hello bob over tor$`).FindAllString(out, -1)); n != 1 {
		t.Fatalf("bob received alice's message %d times, want once:\n%s", n, out)
	}
	if out := qpc("bob", "recv"); strings.Contains(out, "hello bob") {
		t.Fatalf("bob received alice's message again on the next recv:\n%s", out)
	}
	expect(qpc("bob", "send", "alice", "hi alice, got it"), `(?m)^sent$`)
	out = qpc("alice", "recv")
	if n := len(regexp.MustCompile(`(?m)^bob: hi alice, got it$`).FindAllString(out, -1)); n != 1 {
		t.Fatalf("alice received bob's reply %d times, want once:\n%s", n, out)
	}
	t.Logf("the conversation took %v", time.Since(clientsBegan).Round(time.Millisecond))

	// Server side: every connection came in through the onion service.
	viaTor, viaUDP := acceptedConnections(t, admin)
	// At least one connection per qpc command (11 ran), plus the probe.
	if viaUDP != 0 || viaTor < 12 {
		t.Errorf("the server accepted %d connections over UDP and %d through tor; want 0 and at least 12", viaUDP, viaTor)
	}
	sockets := procSockets(t, srv.cmd.Process.Pid)
	if len(sockets) < 2 {
		t.Errorf("found %d inet sockets of qpc-server; the audit cannot see them", len(sockets))
	}
	for _, s := range sockets {
		if strings.HasPrefix(s.proto, "udp") || !s.local.IsLoopback() || !(s.remote.IsLoopback() || s.remote.IsUnspecified()) {
			t.Errorf("qpc-server holds a %s socket %v -> %v; an onion-only server has only TCP on loopback", s.proto, s.local, s.remote)
		}
	}
	t.Logf("connections accepted: %d through tor, %d over UDP; total %v", viaTor, viaUDP, time.Since(start).Round(time.Millisecond))
}

// waitTokenKeyInKT waits, through tor, until the server answers on its
// onion address and has committed its token key in key transparency
// (clients refuse tokens before that).
func waitTokenKeyInKT(t *testing.T, addr, socks, pinText string) {
	t.Helper()
	pin, err := protocol.ParseKTPin(pinText)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := protocol.Dial(ctx, addr, protocol.Options{Tor: &protocol.TorOptions{SOCKS: socks}})
	if err != nil {
		t.Fatalf("dial the onion: %v", err)
	}
	defer c.Close()
	for {
		err := func() error {
			keys, err := c.TokenKeys(ctx)
			if err != nil {
				return err
			}
			v, err := kt.NewVerifier(pin.VKey, pin.VRFKey, pin.ConfigHash)
			if err != nil {
				return err
			}
			return c.KTTokenKey(ctx, v, keys.Keys[keys.Current])
		}()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the token key is not in key transparency: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// acceptedConnections reads qpc_connections_accepted_total by transport
// from the server's /metrics.
func acceptedConnections(t *testing.T, admin string) (tor, udp int) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]int{}
	re := regexp.MustCompile(`(?m)^qpc_connections_accepted_total\{transport="(\w+)"\} (\d+)$`)
	for _, m := range re.FindAllStringSubmatch(string(body), -1) {
		found[m[1]], _ = strconv.Atoi(m[2])
	}
	if _, ok := found["tor"]; !ok {
		t.Fatalf("no qpc_connections_accepted_total{transport=\"tor\"} in /metrics:\n%s", body)
	}
	return found["tor"], found["udp"]
}

// freeTCPAddr is a loopback TCP address free a moment ago.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// envWithoutQPC is this process's environment without QPC_* settings.
func envWithoutQPC() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPC_") {
			env = append(env, kv)
		}
	}
	return env
}
