package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the variable of an existing server to use instead of a
// throwaway cluster.
const EnvURL = "QPC_TEST_POSTGRES"

var (
	once    sync.Once
	admin   string   // URL of a database on the server from which to CREATE DATABASE
	local   *cluster // the throwaway cluster, if this binary started one
	haveErr error    // why there is no server
	// durable: the throwaway cluster syncs its commits to disk (fsync
	// on). Main turns it on when benchmarks run, which must measure real
	// commits; tests test what a commit means, not that it survives a
	// power cut, and run several times faster without the syncs.
	durable bool
)

// Main runs the package's tests and then stops the throwaway cluster, if
// one was started. Call it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	flag.Parse() // m.Run would; durable needs -test.bench now
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		durable = true
	}
	code := m.Run()
	if dbName != "" && local == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		// FORCE ends the connections a failed test left open.
		if err := exec1(ctx, admin, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: dropping the test database %s: %v\n", dbName, err)
		}
		cancel()
	}
	if local != nil {
		if err := local.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: stopping the throwaway cluster: %v\n", err)
		}
	}
	return code
}

// DB returns the URL of a new, empty namespace on the server: a schema of
// its own in the shared test database, named by the URL's search_path,
// dropped with everything in it when t ends. (A schema rather than a
// database: CREATE DATABASE copies a template and costs a second or more
// on a loaded machine, a schema costs a catalog row.) With no PostgreSQL
// to be had it fails t under CI=true and skips it otherwise, saying why.
func DB(t testing.TB) string {
	t.Helper()
	u, err := testDatabase()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v (CI must provide PostgreSQL: .ci/run installs Debian's postgresql)", err)
		}
		t.Skipf("pgtest: %v; install PostgreSQL (Debian: apt-get install postgresql) or set %s to run this test", err, EnvURL)
	}
	name := "qpc_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := exec1(ctx, u, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := exec1(ctx, u, "DROP SCHEMA IF EXISTS "+name+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return withParam(u, "search_path", name)
}

var (
	dbOnce sync.Once
	dbURL  string
	dbErr  error
)

// testDatabase returns the URL of the database the schemas go in: one per
// test binary, created on the server on first use (and dropped by Main
// when the server is not a throwaway one).
func testDatabase() (string, error) {
	dbOnce.Do(func() {
		u, err := Server()
		if err != nil {
			dbErr = err
			return
		}
		name := "qpc_test_" + randomHex(8)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := exec1(ctx, u, "CREATE DATABASE "+name); err != nil {
			dbErr = fmt.Errorf("create the test database: %w", err)
			return
		}
		dbName, dbURL = name, withDatabase(u, name)
	})
	return dbURL, dbErr
}

// dbName is the test database, for Main to drop.
var dbName string

// Server returns the URL of the server's maintenance database, starting
// the throwaway cluster on first use, or why there is no server.
func Server() (string, error) {
	once.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			admin = u
			return
		}
		bindir, err := findBinaries()
		if err != nil {
			haveErr = err
			return
		}
		local, haveErr = startCluster(bindir)
		if haveErr == nil {
			admin = local.url
		}
	})
	return admin, haveErr
}

func exec1(ctx context.Context, u, sql string) error {
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withParam returns u with the connection parameter key set to value.
func withParam(u, key, value string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
		return u + " " + key + "=" + value
	}
	q := p.Query()
	q.Set(key, value)
	p.RawQuery = q.Encode()
	return p.String()
}

// withDatabase returns u naming the database name instead.
func withDatabase(u, name string) string {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
		// A keyword/value connection string: a later dbname wins.
		return u + " dbname=" + name
	}
	p.Path = "/" + name
	return p.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// findBinaries returns the directory of initdb and postgres.
func findBinaries() (string, error) {
	var dirs []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest major version first (numerically: 9 < 15).
	sort.Slice(found, func(i, j int) bool { return majorOf(found[i]) > majorOf(found[j]) })
	dirs = append(dirs, found...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server binaries (initdb, postgres) found by pg_config --bindir or in /usr/lib/postgresql/*/bin, and %s is not set", EnvURL)
}

func majorOf(bindir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(bindir)))
	return n
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// cluster is a throwaway PostgreSQL server.
type cluster struct {
	dir    string
	url    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startCluster runs initdb and postgres in a new temporary directory.
func startCluster(bindir string) (*cluster, error) {
	attr, uid, gid, err := unprivileged()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "qpc-pgtest-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*cluster, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			return fail(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = attr()
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w\n%s", err, out))
	}
	var lastErr error
	for range 3 { // a free port may be taken before postgres binds it
		port, err := freePort()
		if err != nil {
			return fail(err)
		}
		c, err := runPostgres(bindir, dir, data, port, attr())
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return fail(lastErr)
}

func runPostgres(bindir, dir, data string, port int, attr *syscall.SysProcAttr) (*cluster, error) {
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	os.Chmod(logPath, 0o666) // written by the cluster's user
	cmd := exec.Command(filepath.Join(bindir, "postgres"), "-D", data,
		"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
		"-c", "max_connections=300", "-c", "shared_buffers=64MB",
		"-c", "fsync="+onOff(durable), "-c", "full_page_writes="+onOff(durable))
	cmd.SysProcAttr = attr
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &cluster{
		dir:    dir,
		url:    fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		cmd:    cmd,
		exited: make(chan struct{}),
	}
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec1(ctx, c.url, "SELECT 1")
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited at start: %s", lastLines(string(log), 10))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-c.exited
			return nil, fmt.Errorf("postgres did not accept connections within 60 s: %v", err)
		}
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop shuts the cluster down (fast shutdown, then kill) and removes its
// directory.
func (c *cluster) stop() error {
	var err error
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
		err = errors.New("postgres did not stop within 15 s: killed")
	}
	return errors.Join(err, os.RemoveAll(c.dir))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
