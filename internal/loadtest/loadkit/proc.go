package loadkit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServerCommand is a qpc-server command line for a harness: its
// configuration comes from args alone (the test's QPC_ environment is
// left out), and it runs in a process group of its own, so that a kill
// reaches whatever it starts.
func ServerCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPC_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Proc is a started qpc-server process.
type Proc struct {
	Cmd  *exec.Cmd
	Logs *LockedBuffer // its stderr (the first MiB)
	Done chan struct{} // closed once it has exited
}

// StartServer starts cmd (from ServerCommand), keeps its stderr in Logs
// and waits up to wait for the "address: " line on its stdout, whose
// address it returns. If the process exits first, or prints no address
// in time (its process group is then killed), the error carries its logs.
// The Proc is not nil whenever the process started, even with an error.
func StartServer(cmd *exec.Cmd, wait time.Duration) (*Proc, string, error) {
	p := &Proc{Cmd: cmd, Logs: &LockedBuffer{}, Done: make(chan struct{})}
	cmd.Stderr = p.Logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", fmt.Errorf("qpc-server stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start qpc-server: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "address: "); ok {
				select {
				case line <- a:
				default:
				}
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		cmd.Wait()
		close(p.Done)
	}()
	select {
	case a := <-line:
		return p, a, nil
	case <-p.Done:
		return p, "", fmt.Errorf("qpc-server exited before it listened:\n%s", p.Logs.String())
	case <-time.After(wait):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.Done
		return p, "", fmt.Errorf("qpc-server printed no address in %v:\n%s", wait, p.Logs.String())
	}
}

// Stop ends the process with SIGTERM, then kills its process group
// after 15 s; it returns once the process has exited.
func (p *Proc) Stop() {
	select {
	case <-p.Done:
		return
	default:
	}
	syscall.Kill(p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.Done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.Done
	}
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Metrics scrapes the Prometheus text at http://admin/metrics into series
// (name with its labels, as written) → value.
func Metrics(admin string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", l, err)
		}
		out[l[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// CPU is process pid's user plus system CPU time so far (utime and stime
// of /proc/<pid>/stat).
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; count from the ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
