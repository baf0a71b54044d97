package tor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bine "github.com/cretz/bine/tor"

	"github.com/cretz/bine/control"
	"github.com/cretz/bine/process"
)

// Stage names a long wait that Progress reports.
type Stage string

// Stages of Progress.
const (
	StageBootstrap Stage = "bootstrap" // tor connects to the network
	StagePublish   Stage = "publish"   // the onion descriptor is uploaded
	StageConnect   Stage = "connect"   // a circuit to a server is built
)

// Progress reports a long wait. Percent is tor's bootstrap percentage for
// StageBootstrap; for the other stages it is 0 until the wait ends, then
// 100.
type Progress struct {
	Stage   Stage
	Percent int
	Summary string
	Elapsed time.Duration
}

// Config starts a tor process of our own.
type Config struct {
	// DataDir is tor's data directory (created 0700). Keeping it between
	// runs keeps tor's guards and consensus, so later starts are faster.
	DataDir string
	// ExePath is the tor binary; default "tor" from PATH.
	ExePath string
	// Torrc holds extra torrc lines, for example bridges, or the
	// DirAuthority lines of a private test network.
	Torrc string
	// SOCKS opens a SOCKS port on 127.0.0.1 (clients need one; a server
	// that only publishes an onion service does not).
	SOCKS bool
	// Progress, if set, is called as the bootstrap advances.
	Progress func(Progress)
}

// Tor is a tor process we started, or one we attached to through its
// control port. Close it when done: for our own process that stops tor.
type Tor struct {
	ctrl  *control.Conn
	mu    sync.Mutex // serialises control requests
	owned *bine.Tor  // nil when attached
	cmd   *exec.Cmd

	events   *eventConn
	ctrlAddr string // how to open a second control connection
	pass     string

	closeOnce sync.Once
	closeErr  error
}

// ErrNoTor is returned when the tor binary is not found.
var ErrNoTor = errors.New("tor: the tor binary was not found (install tor, for example apt-get install tor)")

// Start runs a tor process of our own and waits, until ctx is done, for it
// to bootstrap. The process lives until Close, whatever happens to ctx
// (bine's Start ties the process to its context, so it gets one of ours).
// tor also exits by itself if this process dies (__OwningControllerProcess).
func Start(ctx context.Context, conf Config) (*Tor, error) {
	if conf.DataDir == "" {
		return nil, errors.New("tor: Config.DataDir is required")
	}
	exe := conf.ExePath
	if exe == "" {
		exe = "tor"
	}
	path, err := exec.LookPath(exe)
	if err != nil {
		return nil, ErrNoTor
	}
	dir, err := filepath.Abs(conf.DataDir)
	if err != nil {
		return nil, fmt.Errorf("tor: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tor: %w", err)
	}
	torrc := filepath.Join(dir, "torrc")
	lines := []string{
		"# Written by qpc at every start; edit the torrc lines given to qpc instead.",
		"Log notice file " + filepath.Join(dir, "notice.log"),
		"ShutdownWaitLength 0",
	}
	if !conf.SOCKS {
		lines = append(lines, "SocksPort 0")
	} else {
		// IsolateSOCKSAuth (a default flag) gives every SOCKS username
		// its own circuits: the stream isolation of SOCKSDialer.
		lines = append(lines, "SocksPort 127.0.0.1:auto IsolateSOCKSAuth ExtendedErrors")
	}
	lines = append(lines, conf.Torrc)
	if err := os.WriteFile(torrc, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("tor: write torrc: %w", err)
	}
	// bine names its control-port file anew at every start; drop the
	// ones earlier runs left.
	if old, _ := filepath.Glob(filepath.Join(dir, "control-port-*")); len(old) > 0 {
		for _, f := range old {
			os.Remove(f)
		}
	}
	t := &Tor{}
	creator := processCreator(path, func(cmd *exec.Cmd) { t.cmd = cmd })
	owned, err := bine.Start(context.Background(), &bine.StartConf{
		ExePath:         path,
		ProcessCreator:  creator,
		DataDir:         dir,
		TorrcFile:       torrc,
		EnableNetwork:   true,
		NoAutoSocksPort: true,
		ExtraArgs:       []string{"--__OwningControllerProcess", strconv.Itoa(os.Getpid())},
	})
	if err != nil {
		return nil, fmt.Errorf("tor: start %s: %w (its log: %s)", path, err, filepath.Join(dir, "notice.log"))
	}
	t.owned, t.ctrl = owned, owned.Control
	t.ctrlAddr = "127.0.0.1:" + strconv.Itoa(owned.ControlPort)
	if err := t.waitBootstrap(ctx, conf.Progress); err != nil {
		t.Close()
		return nil, fmt.Errorf("%w (its log: %s)", err, filepath.Join(dir, "notice.log"))
	}
	return t, nil
}

// processCreator runs tor in its own process group, with its output
// discarded (it logs to notice.log in its data directory), so that a
// signal to our group does not reach it twice and Close can stop it
// alone.
func processCreator(path string, seen func(*exec.Cmd)) process.CmdCreatorFunc {
	return process.CmdCreatorFunc(func(ctx context.Context, args ...string) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, path, args...)
		ownProcessGroup(cmd)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		cmd.WaitDelay = 2 * time.Second
		seen(cmd)
		return cmd, nil
	})
}

// Attach connects to the control port of a tor that is already running
// (the system's, for example): addr is host:port or unix:/path. It
// authenticates with the cookie file tor names, or with password if tor
// asks for one, and waits until ctx for tor to be bootstrapped.
func Attach(ctx context.Context, addr, password string, progress func(Progress)) (*Tor, error) {
	conn, err := dialControl(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("tor: control port %s: %w", addr, err)
	}
	t := &Tor{ctrl: control.NewConn(textproto.NewConn(conn)), ctrlAddr: addr, pass: password}
	if err := t.ctrl.Authenticate(password); err != nil {
		t.ctrl.Close()
		return nil, fmt.Errorf("tor: authenticate to %s: %w (is the cookie file readable? the tor user's group, debian-tor, can read it)", addr, err)
	}
	if err := t.waitBootstrap(ctx, progress); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func dialControl(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return d.DialContext(ctx, "unix", path)
	}
	return d.DialContext(ctx, "tcp", addr)
}

// request runs one control command and returns its data lines.
func (t *Tor) request(format string, args ...any) (*control.Response, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ctrl.SendRequest(format, args...)
}

// getInfo returns one GETINFO value.
func (t *Tor) getInfo(key string) (string, error) {
	resp, err := t.request("GETINFO %s", key)
	if err != nil {
		return "", fmt.Errorf("tor: GETINFO %s: %w", key, err)
	}
	for _, d := range resp.Data {
		if v, ok := strings.CutPrefix(d, key+"="); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("tor: GETINFO %s: no value in %q", key, resp.Data)
}

// waitBootstrap polls tor's bootstrap phase until 100%. Polling a GETINFO
// is simpler and sturdier than bine's event wait, whose reader keeps
// running after the wait and can block the connection.
func (t *Tor) waitBootstrap(ctx context.Context, progress func(Progress)) error {
	start := time.Now()
	last := -1
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		phase, err := t.getInfo("status/bootstrap-phase")
		if err != nil {
			return err
		}
		pct, summary := parseBootstrap(phase)
		if strings.HasPrefix(phase, "ERR") || strings.HasPrefix(phase, "WARN") && pct < 0 {
			return fmt.Errorf("tor: bootstrap: %s", phase)
		}
		if progress != nil && pct != last {
			progress(Progress{Stage: StageBootstrap, Percent: max(pct, 0), Summary: summary, Elapsed: time.Since(start)})
		}
		last = pct
		if pct == 100 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("tor: bootstrap stopped at %d%% (%s): %w", max(pct, 0), summary, ctx.Err())
		case <-tick.C:
		}
	}
}

// parseBootstrap reads `NOTICE BOOTSTRAP PROGRESS=45 TAG=x SUMMARY="..."`.
func parseBootstrap(s string) (int, string) {
	pct := -1
	if _, rest, ok := strings.Cut(s, "PROGRESS="); ok {
		num, _, _ := strings.Cut(rest, " ")
		if v, err := strconv.Atoi(num); err == nil {
			pct = v
		}
	}
	summary := ""
	if _, rest, ok := strings.Cut(s, `SUMMARY="`); ok {
		summary, _, _ = strings.Cut(rest, `"`)
	}
	return pct, summary
}

// GetInfo returns one GETINFO value of tor's control protocol (for
// example "status/bootstrap-phase", or "stream-status" to see which
// circuit carries which stream).
func (t *Tor) GetInfo(key string) (string, error) { return t.getInfo(key) }

// SOCKSAddr is the address of tor's first SOCKS port on 127.0.0.1 or a
// unix socket ("unix:/path").
func (t *Tor) SOCKSAddr() (string, error) {
	v, err := t.getInfo("net/listeners/socks")
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(strings.TrimSpace(v), " ")
	first = strings.Trim(first, `"`)
	if first == "" {
		return "", errors.New("tor: no SOCKS port open (SocksPort 0?)")
	}
	return first, nil
}

// Dialer returns a SOCKSDialer through this tor; isolation is the SOCKS
// username (see SOCKSDialer).
func (t *Tor) Dialer(isolation string) (*SOCKSDialer, error) {
	addr, err := t.SOCKSAddr()
	if err != nil {
		return nil, err
	}
	return &SOCKSDialer{Addr: addr, Isolation: isolation}, nil
}

func (t *Tor) controlAddr() (string, error) { return t.ctrlAddr, nil }

// ControlAddr is the control port this Tor talks to (host:port or
// unix:/path), which another controller can Attach to.
func (t *Tor) ControlAddr() string { return t.ctrlAddr }

func (t *Tor) password() string { return t.pass }

// PID is the process ID of our own tor, or 0 when attached.
func (t *Tor) PID() int {
	if t.cmd == nil || t.cmd.Process == nil {
		return 0
	}
	return t.cmd.Process.Pid
}

// Close ends the control connection; for our own tor it also stops the
// process and waits for it. Onion services published on this connection
// end with it (they are not detached).
func (t *Tor) Close() error {
	t.closeOnce.Do(func() {
		if t.events != nil {
			t.events.close()
		}
		if t.owned != nil {
			t.closeErr = t.owned.Close()
			if t.cmd != nil && t.cmd.Process != nil {
				// bine waits 300 ms for the exit; make sure of it.
				killProcessGroup(t.cmd.Process)
				// bine's own goroutine reaps it; wait until it has.
				for i := 0; i < 200 && processAlive(t.cmd.Process); i++ {
					time.Sleep(10 * time.Millisecond)
				}
			}
			return
		}
		t.closeErr = t.ctrl.Close()
	})
	return t.closeErr
}
