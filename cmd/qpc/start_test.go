package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/invite"
)

// TestRegisterRightAfterStart plays the script that starts a fresh
// qpc-server and registers at once (issue 24): the moment the server
// prints its address, a client made from its invite registers, and that
// never fails. Before the fix a fresh server printed its address about
// three KT epochs before the token keys a registration checks were
// committed, and every such registration failed with "kt token key: epoch
// N is not committed yet". The server runs with the default kt_epoch, as
// a user's would; 20 fresh starts, four at a time.
func TestRegisterRightAfterStart(t *testing.T) {
	starts := 20
	if testing.Short() {
		starts = 4
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range starts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := registerAfterStart(t, i); err != nil {
				t.Errorf("start %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

func registerAfterStart(t *testing.T, i int) error {
	dir := t.TempDir()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	listen := l.LocalAddr().String()
	l.Close()
	flags := []string{"--data-dir", filepath.Join(dir, "server"), "--listen", listen, "--admin-listen", "off", "--kt-listen", "off", "--log-level", "warn"}
	cmd := exec.Command(serverBinary, append([]string{"run"}, flags...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The address line: from here on the server is announced.
	sc := bufio.NewScanner(out)
	announced := false
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "address: ") {
			announced = true
			break
		}
	}
	if !announced {
		return fmt.Errorf("no address line (stderr: %s)", stderr.String())
	}
	go io.Copy(io.Discard, out)
	text, err := exec.CommandContext(ctx, serverBinary, append([]string{"invite"}, flags...)...).Output()
	if err != nil {
		return fmt.Errorf("qpc-server invite: %w", err)
	}
	inv, err := invite.Parse(string(text))
	if err != nil {
		return err
	}
	opts := client.Options{
		Home:       filepath.Join(dir, "home"),
		Passphrase: []byte("pass"),
		KDF:        &state.Options{Time: 1, MemoryKiB: 64, Threads: 1},
	}
	opts.Dial.Policy = inv.Buckets
	pin := protocol.KTPin{VKey: inv.LogKey, VRFKey: inv.VRFKey, ConfigHash: inv.ConfigHash}
	cl, err := client.Init(ctx, inv.Address(false), pin, opts)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	defer cl.Close()
	if err := cl.Register(ctx, fmt.Sprintf("user%d", i), []byte("password")); err != nil {
		return fmt.Errorf("register right after the address was printed: %w", err)
	}
	return nil
}
