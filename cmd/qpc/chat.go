package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/tui"
	"github.com/quicprochat/qpc/tor"
)

// chat runs the terminal chat screen (package client/tui). The screen
// starts at once and says what it waits for: the local state opening
// (Argon2id), then the connection (through Tor with --tor or
// QPC_TOR_SOCKS, as every command). Then, as `qpc recv --follow` does,
// client.Follow runs in a goroutine and its events go to the screen;
// when it fails, the screen says so and it is started again.
func (c *cli) chat(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return usagef("chat takes no arguments")
	}
	pass, err := c.secret("QPC_PASSPHRASE", "Passphrase for the local state: ")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	model := tui.New(tui.Options{Context: ctx, Explain: explain})
	p := tea.NewProgram(model, tea.WithContext(ctx), tea.WithAltScreen())

	opts := c.options(pass)
	// Log lines would tear the screen; what matters reaches it as
	// status lines and events.
	opts.Logger = slog.New(slog.DiscardHandler)
	how := "connecting to the server…"
	if opts.Dial.Tor != nil {
		how = "connecting through Tor…"
		opts.Dial.Tor.Progress = func(ev tor.Progress) {
			p.Send(tui.Status(fmt.Sprintf("tor: %s (%d%%, %s)", ev.Summary, ev.Percent, ev.Elapsed.Round(time.Second))))
		}
	}

	var (
		wg sync.WaitGroup
		cl *client.Client
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		opened, err := client.Open(opts)
		if err != nil {
			p.Send(tui.Fatal{Err: err})
			return
		}
		cl = opened
		p.Send(tui.Status("loading the conversations…"))
		o := tui.Load(ctx, cl)
		p.Send(o)
		if o.Err == nil {
			chatFollow(ctx, cl, p, how, opts.Dial.Tor != nil)
		}
	}()
	_, runErr := p.Run()
	cancel()
	wg.Wait()
	if cl != nil {
		cl.Close()
	}
	if err := model.Err(); err != nil {
		return err
	}
	if runErr != nil && !errors.Is(runErr, tea.ErrProgramKilled) {
		return runErr
	}
	return nil
}

// chatFollow syncs, then follows, until ctx ends, reporting the
// connection on the status line and retrying with backoff.
func chatFollow(ctx context.Context, cl *client.Client, p *tea.Program, how string, viaTor bool) {
	send := func(e client.Event) { p.Send(tui.EventMsg(e)) }
	where := serverHost(cl.Server())
	if viaTor {
		where += " through Tor"
	}
	backoff := time.Second
	_ = cl.RefillIfEmpty(ctx) // before any anonymous connection (client.RefillIfEmpty); alarms show in the TUI
	for ctx.Err() == nil {
		p.Send(tui.Status(how))
		ev, err := cl.Sync(ctx)
		for _, e := range ev {
			send(e)
		}
		if err == nil {
			p.Send(tui.Status("connected to " + where))
			backoff = time.Second
			err = cl.Follow(ctx, send)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the connection ended")
		}
		p.Send(tui.Status(fmt.Sprintf("offline (%s): retrying in %s", explain(err), backoff)))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// serverHost is the host:port of a qpc://<pin>@host:port address.
func serverHost(addr string) string {
	if i := strings.LastIndex(addr, "@"); i >= 0 {
		return addr[i+1:]
	}
	return strings.TrimPrefix(addr, "qpc://")
}
