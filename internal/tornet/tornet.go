// Package tornet runs a private Tor network on 127.0.0.1 for tests: three
// directory authorities (also relays and HSDirs) and a few non-exit
// relays, the shape of chutney's hs-v3-min. Onion services and clients
// join it with the torrc lines of Network.Torrc; StartClient adds a client
// with a SOCKS port.
//
// Start it with Start(t) in a test (t.Cleanup stops it) or with New and
// Close in a TestMain. Every process runs in its own process group and
// with --__OwningControllerProcess set to this process, so tor exits by
// itself if the test binary dies; Close sends SIGTERM to exactly the
// groups it started, then SIGKILL, and a watchdog does the same when
// Options.MaxLifetime has passed, whatever state the test is in.
//
// It needs tor and tor-gencert on PATH (Debian: apt-get install tor). On
// two cores the network is ready in about 15 to 25 s and takes 400 to
// 750 MiB.
package tornet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options shape a network. Zero values take the defaults.
type Options struct {
	Dir    string // default: a new temporary directory, removed by Close
	Relays int    // relays besides the 3 authorities; default 3
	// Exit makes the first relay an exit, so that clients can reach
	// loopback "clearnet" servers through the network.
	Exit        bool
	Timeout     time.Duration // for the network to be ready; default 120 s
	MaxLifetime time.Duration // watchdog: everything is killed after this; default 10 min
	Logf        func(format string, args ...any)
}

// Network is a running private Tor network.
type Network struct {
	Dir      string
	dirLines []string
	opts     Options
	tempDir  bool

	mu        sync.Mutex
	procs     []*proc
	closed    bool
	closeDone chan struct{} // closed when the first Close has finished
	closeErr  error
	watch     *time.Timer
}

type proc struct {
	name string
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

const authorities = 3

// ErrNoTor means tor or tor-gencert is missing.
var ErrNoTor = errors.New("tornet: tor and tor-gencert must be on PATH (Debian: apt-get install -y tor)")

// Start runs a network for the test and stops it in t.Cleanup. A missing
// tor fails the test: the network is the point of the tests that ask.
func Start(t testing.TB, opts Options) *Network {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeoutOr(opts.Timeout))
	defer cancel()
	n, err := New(ctx, opts)
	if n != nil {
		t.Cleanup(func() { n.Close() })
	}
	if err != nil {
		t.Fatalf("private tor network: %v", err)
	}
	return n
}

func timeoutOr(d time.Duration) time.Duration {
	if d <= 0 {
		return 120 * time.Second
	}
	return d
}

// New builds and starts a network and waits until ctx (and at most
// Options.Timeout) for every relay to have the consensus. On error the
// returned Network, if not nil, must still be closed.
func New(ctx context.Context, opts Options) (*Network, error) {
	for _, bin := range []string{"tor", "tor-gencert"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, ErrNoTor
		}
	}
	if opts.Relays <= 0 {
		opts.Relays = 3
	}
	opts.Timeout = timeoutOr(opts.Timeout)
	if opts.MaxLifetime <= 0 {
		opts.MaxLifetime = 10 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	n := &Network{opts: opts, Dir: opts.Dir, closeDone: make(chan struct{})}
	if n.Dir == "" {
		d, err := os.MkdirTemp("", "tornet-")
		if err != nil {
			return nil, fmt.Errorf("tornet: %w", err)
		}
		n.Dir, n.tempDir = d, true
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	n.watch = time.AfterFunc(opts.MaxLifetime, func() {
		opts.Logf("tornet: MaxLifetime %v passed: killing the network", opts.MaxLifetime)
		n.Close()
	})
	start := time.Now()
	if err := n.start(ctx); err != nil {
		return n, fmt.Errorf("tornet: %w", err)
	}
	opts.Logf("tornet: %d authorities and %d relays ready in %v", authorities, opts.Relays, time.Since(start).Round(100*time.Millisecond))
	return n, nil
}

type node struct {
	name            string
	dir             string
	orPort, dirPort int
}

func (n *Network) start(ctx context.Context) error {
	ports, err := freePorts(2*authorities + n.opts.Relays)
	if err != nil {
		return err
	}
	var auths, relays []node
	for i := range authorities {
		auths = append(auths, node{name: fmt.Sprintf("auth%d", i+1), orPort: ports[2*i], dirPort: ports[2*i+1]})
	}
	for i := range n.opts.Relays {
		relays = append(relays, node{name: fmt.Sprintf("relay%d", i+1), orPort: ports[2*authorities+i]})
	}
	for _, nd := range append(slices.Clone(auths), relays...) {
		if err := os.MkdirAll(filepath.Join(n.Dir, nd.name, "keys"), 0o700); err != nil {
			return err
		}
	}
	for i := range auths {
		auths[i].dir = filepath.Join(n.Dir, auths[i].name)
	}
	for i := range relays {
		relays[i].dir = filepath.Join(n.Dir, relays[i].name)
	}

	// Keys in parallel: tor-gencert and --list-fingerprint cost a
	// second or two each.
	lines := make([]string, authorities)
	errs := make([]error, authorities)
	var wg sync.WaitGroup
	for i, a := range auths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lines[i], errs[i] = authorityKeys(ctx, a)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	n.dirLines = lines

	for _, a := range auths {
		conf := n.common(a) + relayConf(a) + fmt.Sprintf(`DirPort 127.0.0.1:%d
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
`, a.dirPort)
		if err := n.launch(a.name, a.dir, conf); err != nil {
			return err
		}
	}
	for i, r := range relays {
		conf := n.common(r) + relayConf(r)
		if i == 0 && n.opts.Exit {
			// accept *:* rather than 127.0.0.1 only: clients judge exits by
			// the policy summary in the microdescriptor, which counts only
			// public addresses, so a loopback-only exit looks like none.
			// Clients ask it for loopback addresses only, and there is no
			// route to anything else from where tests run.
			conf = strings.Replace(conf, "ExitRelay 0\nExitPolicy reject *:*\n",
				"ExitRelay 1\nExitPolicy accept *:*\nExitPolicyRejectPrivate 0\n", 1)
		}
		if err := n.launch(r.name, r.dir, conf); err != nil {
			return err
		}
	}

	// Phase 1: every authority serves a consensus with every router and
	// every microdescriptor it lists. A client started before that gets
	// 404s and backs off for up to a minute.
	want := authorities + len(relays)
	for {
		ready := 0
		for _, a := range auths {
			if consensusReady(ctx, a.dirPort, want) {
				ready++
			}
		}
		if ready == authorities {
			break
		}
		if err := n.sleep(ctx, 500*time.Millisecond, "a consensus with all routers"); err != nil {
			return err
		}
	}
	// Phase 2: relays backed off after the 404s; SIGHUP resets their
	// download schedules, then they bootstrap within a second or two.
	for _, p := range n.snapshot() {
		if strings.HasPrefix(p.name, "relay") {
			p.cmd.Process.Signal(syscall.SIGHUP)
		}
	}
	for {
		booted := 0
		for _, nd := range append(slices.Clone(auths), relays...) {
			if bootstrapped(nd.dir) {
				booted++
			}
		}
		if booted == want {
			return nil
		}
		if err := n.sleep(ctx, 200*time.Millisecond, "every relay bootstrapped"); err != nil {
			return err
		}
	}
}

// sleep waits, failing early if ctx ends or a tor process died.
func (n *Network) sleep(ctx context.Context, d time.Duration, waitingFor string) error {
	for _, p := range n.snapshot() {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited while waiting for %s; its log ends:\n%s", p.name, waitingFor, tail(filepath.Join(p.dir, "notice.log"), 15))
		default:
		}
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", waitingFor, ctx.Err())
	case <-time.After(d):
		return nil
	}
}

func (n *Network) snapshot() []*proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*proc(nil), n.procs...)
}

// Torrc returns the lines that make a tor a client or onion service of
// this network.
func (n *Network) Torrc() string {
	return "TestingTorNetwork 1\nPathsNeededToBuildCircuits 0.67\n" + n.dirAuthorities()
}

func (n *Network) dirAuthorities() string { return strings.Join(n.dirLines, "\n") + "\n" }

func (n *Network) common(nd node) string {
	return fmt.Sprintf(`TestingTorNetwork 1
DataDirectory %[1]s
Nickname %[2]s
PidFile %[1]s/pid
Log notice file %[1]s/notice.log
SafeLogging 0
LogTimeGranularity 1
ShutdownWaitLength 0
PathsNeededToBuildCircuits 0.67
TestingDirAuthVoteExit *
TestingDirAuthVoteHSDir *
TestingDirAuthVoteGuard *
TestingDirAuthVoteGuardIsStrict 0
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
`, nd.dir, nd.name) + n.dirAuthorities()
}

func relayConf(nd node) string {
	return fmt.Sprintf(`SocksPort 0
ORPort 127.0.0.1:%d
Address 127.0.0.1
AssumeReachable 1
ExitRelay 0
ExitPolicy reject *:*
ContactInfo tornet-test@example.invalid
`, nd.orPort)
}

// authorityKeys makes an authority's identity and signing keys and
// returns its DirAuthority line.
func authorityKeys(ctx context.Context, a node) (string, error) {
	k := filepath.Join(a.dir, "keys")
	gencert := exec.CommandContext(ctx, "tor-gencert", "--create-identity-key", "--passphrase-fd", "0", "-m", "12",
		"-a", fmt.Sprintf("127.0.0.1:%d", a.dirPort),
		"-i", filepath.Join(k, "authority_identity_key"), "-s", filepath.Join(k, "authority_signing_key"),
		"-c", filepath.Join(k, "authority_certificate"))
	gencert.Stdin = strings.NewReader("\n")
	if out, err := gencert.CombinedOutput(); err != nil {
		return "", fmt.Errorf("tor-gencert for %s: %w: %s", a.name, err, out)
	}
	cert, err := os.ReadFile(filepath.Join(k, "authority_certificate"))
	if err != nil {
		return "", err
	}
	v3ident := ""
	for line := range strings.SplitSeq(string(cert), "\n") {
		if f, ok := strings.CutPrefix(line, "fingerprint "); ok {
			v3ident = strings.TrimSpace(f)
		}
	}
	fpCmd := exec.CommandContext(ctx, "tor", "--ignore-missing-torrc", "-f", "/dev/null", "--DataDirectory", a.dir,
		"--ORPort", strconv.Itoa(a.orPort), "--Nickname", a.name, "--list-fingerprint", "--quiet")
	out, err := fpCmd.Output()
	if err != nil {
		return "", fmt.Errorf("tor --list-fingerprint for %s: %w", a.name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	_, fp, _ := strings.Cut(lines[len(lines)-1], " ")
	fp = strings.ReplaceAll(fp, " ", "")
	if len(fp) != 40 || v3ident == "" {
		return "", fmt.Errorf("%s: bad fingerprint %q or v3 identity %q", a.name, fp, v3ident)
	}
	return fmt.Sprintf("DirAuthority %s orport=%d no-v2 v3ident=%s 127.0.0.1:%d %s", a.name, a.orPort, v3ident, a.dirPort, fp), nil
}

// launch starts one tor in its own process group.
func (n *Network) launch(name, dir, conf string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	torrc := filepath.Join(dir, "torrc")
	if err := os.WriteFile(torrc, []byte(conf), 0o600); err != nil {
		return err
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command("tor", "-f", torrc, "--quiet", "--__OwningControllerProcess", strconv.Itoa(os.Getpid()))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		out.Close()
		return errors.New("network closed")
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); out.Close(); close(p.done) }()
	n.procs = append(n.procs, p)
	return nil
}

// StartClient starts a tor client of the network with a SOCKS port and
// waits until ctx for it to bootstrap. Close stops it with the rest.
func (n *Network) StartClient(ctx context.Context, name string) (socks string, err error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(n.Dir, name)
	socks = fmt.Sprintf("127.0.0.1:%d", ports[0])
	conf := fmt.Sprintf("TestingTorNetwork 1\nDataDirectory %[1]s\nNickname %[2]s\nLog notice file %[1]s/notice.log\nSafeLogging 0\nShutdownWaitLength 0\nPathsNeededToBuildCircuits 0.67\nSocksPort %[3]s IsolateSOCKSAuth ExtendedErrors\n", dir, name, socks) + n.dirAuthorities()
	if err := n.launch(name, dir, conf); err != nil {
		return "", fmt.Errorf("tornet: %w", err)
	}
	for !bootstrapped(dir) {
		if err := n.sleep(ctx, 200*time.Millisecond, name+" bootstrapped"); err != nil {
			return "", fmt.Errorf("tornet: %w", err)
		}
	}
	return socks, nil
}

// PIDs lists the processes the network started and that still run.
func (n *Network) PIDs() []int {
	var pids []int
	for _, p := range n.snapshot() {
		select {
		case <-p.done:
		default:
			pids = append(pids, p.cmd.Process.Pid)
		}
	}
	return pids
}

// Close stops every process the network started: SIGTERM to each
// process group, SIGKILL to what is left after 5 s. It waits for them
// all (also when another Close, such as the watchdog's, is under way),
// and removes the directory if New made it.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		<-n.closeDone
		return n.closeErr
	}
	n.closed = true
	procs := append([]*proc(nil), n.procs...)
	n.mu.Unlock()
	defer close(n.closeDone)
	if n.watch != nil {
		n.watch.Stop()
	}
	for _, p := range procs {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	}
	// One timer for all: a tor that deadlocks while "exiting cleanly"
	// (seen with authorities) must not hold up the others' SIGKILL.
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
wait:
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline.C:
			break wait
		}
	}
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if n.tempDir {
		n.closeErr = os.RemoveAll(n.Dir)
	}
	return n.closeErr
}

func freePorts(k int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("tornet: free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

var dirClient = &http.Client{Timeout: 2 * time.Second}

func dirGet(ctx context.Context, port int, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return nil, err
	}
	// tor answers gzip requests with a deflate body Go cannot read.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := dirClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

func consensusReady(ctx context.Context, dirPort, want int) bool {
	cons, err := dirGet(ctx, dirPort, "/tor/status-vote/current/consensus-microdesc")
	if err != nil {
		return false
	}
	routers := 0
	var digests []string
	sc := bufio.NewScanner(bytes.NewReader(cons))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "r ") {
			routers++
		}
		if d, ok := strings.CutPrefix(line, "m "); ok {
			digests = append(digests, strings.TrimSpace(d))
		}
	}
	if routers < want || len(digests) < want {
		return false
	}
	mds, err := dirGet(ctx, dirPort, "/tor/micro/d/"+strings.Join(digests, "-"))
	if err != nil {
		return false
	}
	// Whole lines only: "ntor-onion-key" must not count.
	keys := 0
	for line := range strings.SplitSeq(string(mds), "\n") {
		if strings.TrimSpace(line) == "onion-key" {
			keys++
		}
	}
	return keys >= want
}

func bootstrapped(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "notice.log"))
	return err == nil && bytes.Contains(b, []byte("Bootstrapped 100%"))
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}
