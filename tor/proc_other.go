//go:build !unix

package tor

import (
	"os"
	"os/exec"
)

// Without Unix process groups (Windows), tor runs in ours and is killed
// on its own; it starts no children of its own to leave behind.
func ownProcessGroup(cmd *exec.Cmd) {}

func killProcessGroup(p *os.Process) { p.Kill() }

// processAlive cannot probe without a signal 0; the kill above is
// synchronous enough that the reaping wait may end at once.
func processAlive(p *os.Process) bool { return false }
