//go:build unix

package tor

import (
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup starts tor in a process group of its own, so that a
// signal to ours does not reach it twice and it can be stopped alone.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills tor and anything it started.
func killProcessGroup(p *os.Process) { syscall.Kill(-p.Pid, syscall.SIGKILL) }

// processAlive reports whether the process still exists (signal 0).
func processAlive(p *os.Process) bool { return syscall.Kill(p.Pid, 0) == nil }
