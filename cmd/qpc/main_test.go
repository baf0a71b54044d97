package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/rogpeppe/go-internal/testscript"
)

// serverBinary is a qpc-server built once for the scripts (set by
// TestMain): the scripts run the real server binary, not a stand-in.
var serverBinary string

// TestMain lets the test binary run as qpc for the scripts, and builds
// qpc-server for them.
func TestMain(m *testing.M) {
	testscript.Main(&buildServer{m}, map[string]func(){"qpc": main})
}

type buildServer struct{ m *testing.M }

func (b *buildServer) Run() int {
	dir, err := os.MkdirTemp("", "qpc-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	serverBinary = filepath.Join(dir, "qpc-server")
	cmd := exec.Command("go", "build", "-o", serverBinary, "github.com/quicprochat/qpc/cmd/qpc-server")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building qpc-server:", err)
		return 1
	}
	return b.m.Run()
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Setup: func(env *testscript.Env) error {
			env.Setenv("QPC_PASSPHRASE", "correct horse battery staple")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"server": serverCmd,
			// qrdecode VAR, damage FILE truncate|flip OFFSET (qr_test.go).
			"qrdecode": qrdecodeCmd,
			"damage":   damageCmd,
			// mode PATH 0700: the permission bits are exactly these.
			"mode": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: mode PATH 0700")
				}
				fi, err := os.Stat(ts.MkAbs(args[0]))
				ts.Check(err)
				if got := fmt.Sprintf("%04o", fi.Mode().Perm()); got != args[1] {
					ts.Fatalf("%s has mode %s, want %s", args[0], got, args[1])
				}
			},
			// match VAR REGEXP: VAR = the first group of REGEXP in the last stdout.
			"match": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 2 {
					ts.Fatalf("usage: match VAR REGEXP")
				}
				m := regexp.MustCompile(args[1]).FindStringSubmatch(ts.ReadFile("stdout"))
				if len(m) < 2 {
					ts.Fatalf("no match for %s in stdout", args[1])
				}
				ts.Setenv(args[0], m[1])
			},
			// same A B: the two strings are equal (negated: differ).
			"same": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: same A B")
				}
				if (args[0] == args[1]) == neg {
					ts.Fatalf("%q and %q: same=%v, want %v", args[0], args[1], args[0] == args[1], !neg)
				}
			},
			// home NAME: QPC_HOME=$WORK/NAME and QPC_PASSWORD for NAME.
			"home": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: home NAME")
				}
				ts.Setenv("QPC_HOME", ts.MkAbs("home-"+args[0]))
				ts.Setenv("QPC_PASSWORD", "password of "+args[0])
			},
		},
	})
}

// serverCmd runs the real qpc-server for a script:
//
//	server start     start it (on a free port the first time, then on the
//	                 same one); sets SERVER (its address) and INVITE (its invite)
//	                 and writes kt.pin (what qpc-server kt-vkey prints)
//	server restart   stop it (SIGTERM, drain) and start it again on the same port and data
//	server stop      stop it
//	server kill      SIGKILL it
func serverCmd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: server start|restart|stop|kill")
	}
	data := ts.MkAbs("server-data")
	switch args[0] {
	case "start":
		listen := ts.Getenv("QPC_SERVER_LISTEN")
		if listen == "" { // the first start: a free port, kept for later starts
			l, err := net.ListenPacket("udp", "127.0.0.1:0")
			ts.Check(err)
			listen = l.LocalAddr().String()
			l.Close()
			ts.Setenv("QPC_SERVER_LISTEN", listen)
		}
		startServer(ts, data, listen)
	case "restart":
		stopServer(ts, syscall.SIGTERM)
		startServer(ts, data, ts.Getenv("QPC_SERVER_LISTEN"))
	case "stop":
		stopServer(ts, syscall.SIGTERM)
	case "kill":
		stopServer(ts, syscall.SIGKILL)
	default:
		ts.Fatalf("usage: server start|restart|stop|kill")
	}
}

type serverProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process exited
	err  error         // from Wait, once done
}

func serverFlags(data, listen string) []string {
	return []string{"--data-dir", data, "--listen", listen, "--admin-listen", "off", "--kt-listen", "off",
		"--kt-epoch", "250ms", "--token-quota", "100000", "--log-level", "warn"}
}

func startServer(ts *testscript.TestScript, data, listen string) {
	query := func(cmd string) []byte {
		c := exec.Command(serverBinary, append([]string{cmd}, serverFlags(data, listen)...)...)
		c.Env = cleanEnv()
		out, err := c.CombinedOutput()
		if err != nil {
			ts.Fatalf("qpc-server %s: %v\n%s", cmd, err, out)
		}
		return out
	}
	if _, err := os.Stat(data); err != nil {
		query("init")
	}
	addr := strings.Fields(string(query("address")))[0]
	pin := query("kt-vkey")
	ts.Setenv("SERVER", addr)
	ts.Setenv("INVITE", strings.TrimSpace(string(query("invite"))))
	ts.Check(os.WriteFile(ts.MkAbs("kt.pin"), pin, 0o600))

	log, err := os.OpenFile(ts.MkAbs("server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	ts.Check(err)
	cmd := exec.Command(serverBinary, append([]string{"run"}, serverFlags(data, listen)...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = log, log
	ts.Check(cmd.Start())
	p := &serverProc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); log.Close(); close(p.done) }()
	ts.Defer(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	setServer(ts, p)
	waitReady(ts, addr, string(pin))
}

// waitReady waits until the server answers and has committed its token
// key in key transparency (clients refuse tokens before that).
func waitReady(ts *testscript.TestScript, addr, pinText string) {
	pin, err := protocol.ParseKTPin(pinText)
	ts.Check(err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := protocol.WaitTokenKey(ctx, addr, pin, protocol.Options{}, 100*time.Millisecond); err != nil {
		ts.Fatalf("%v\n%s", err, ts.ReadFile("server.log"))
	}
}

// servers are the running servers by script (scripts run in parallel).
var (
	serversMu sync.Mutex
	servers   = map[*testscript.TestScript]*serverProc{}
)

func setServer(ts *testscript.TestScript, p *serverProc) {
	serversMu.Lock()
	defer serversMu.Unlock()
	servers[ts] = p
}

func stopServer(ts *testscript.TestScript, sig syscall.Signal) {
	serversMu.Lock()
	p := servers[ts]
	delete(servers, ts)
	serversMu.Unlock()
	if p == nil {
		ts.Fatalf("no server running")
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		if sig == syscall.SIGTERM && p.err != nil {
			ts.Fatalf("server exited with %v after SIGTERM", p.err)
		}
	case <-time.After(30 * time.Second):
		ts.Fatalf("server did not stop")
	}
}

// cleanEnv is the environment without QPC_* settings of the test run.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPC_") {
			env = append(env, kv)
		}
	}
	return env
}
