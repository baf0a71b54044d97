// Command qpc is the quicprochat client: end-to-end encrypted direct and
// group messaging from the command line, over QUIC or Tor.
//
//	qpc init <invite>               create the local state (what qpc-server invite prints)
//	qpc init --server <qpc://...> --kt <pin> [--buckets <sizes>]   the same, from its parts
//	qpc buckets [<sizes>|default]   show or change the pinned padding policy
//	qpc register <handle> | login | logout
//	qpc contact add <handle|contact string> | contact list | contact show-qr [<handle>]
//	qpc backup export [--history] <file> | backup import <file>
//	qpc send <handle|#group> <text>
//	qpc recv [--follow]
//	qpc group create <name> <handle>... | add|remove <name> <handle> | leave <name> | list | [show] [name]
//	qpc invites | accept <id> | decline <id>
//	qpc history [<handle|#group>] | chat
//	qpc contact show-qr | contact receipts <handle> on|off | cover <rate>|off
//	qpc backup export|import <file>
//	qpc kt check | status
//
// QPC_HOME selects the state directory, QPC_PASSPHRASE and QPC_PASSWORD
// give the local-state passphrase and the account password without a
// prompt; --json prints machine-readable output; --tor sends everything
// through Tor (onion addresses always go through it). docs/user-guide.md
// is the manual. This is a thin main: the work is in package client.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/client/safetext"
	"github.com/quicprochat/qpc/client/state"
	"github.com/quicprochat/qpc/invite"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/wire"
	"golang.org/x/term"
)

func main() {
	c := &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(c.main(os.Args[1:]))
}

type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	json     bool
	tor      bool
	torSOCKS string
	home     string
	timeout  time.Duration
	prog     *progress // progress lines on standard error (progress.go)
}

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const usage = `qpc: the quicprochat client

Usage: qpc [--json] [--tor] [--home DIR] <command> [arguments]

Set up:
  qpc init <invite>                create the local state for a server: the invite
                                   (qpc1:...) is what 'qpc-server invite' prints, and all
                                   a client needs; with --tor, its onion endpoint is used
  qpc init --server <qpc://...> --kt <pin|@file> [--buckets <sizes>]
                                   the same from the parts an invite carries; the pin is what
                                   'qpc-server kt-vkey' prints (three lines, or @file);
                                   --buckets pins the padding policy the operator gave you
                                   (default 512,2048,4096,16384,131072)
  qpc buckets [<sizes>|default]    show or change the pinned padding policy (a server that
                                   announces other buckets is refused)
  qpc register <handle>            create your account and publish your keys
  qpc login | qpc logout           open or close the account session (tokens need one)

Contacts and messages:
  qpc contact add <handle>         look a user up in key transparency; shows the safety number
  qpc contact add <qpc:contact:...> the same, refusing a key without the string's fingerprint
  qpc contact list
  qpc contact show-qr [<handle>]   your (or a contact's) contact string, and as a QR code
  qpc send <handle|#group> <text>  send (starts a direct chat on first use); a bare
                                   name is always a person: write #name for a group;
                                   --lines sends each line of standard input
  qpc recv [--follow]              fetch and print new messages (--follow: keep listening)
  qpc recv --follow --cover <rate> [--force]
                                   send at a constant Poisson rate (real or dummy envelopes);
                                   refused above 80 % of the token quota unless --force
  qpc cover <rate>|off [--force]   the same as a stored setting (qpc status shows its cost);
                                   refused above 80 % of the token quota unless --force
  qpc contact receipts <handle> on|off [--read]
                                   delivery (and read) receipts to a contact; off by default
  qpc history [<handle|#group>]    print the stored conversation history
  qpc chat                         full-screen chat: conversations, messages, alarms

Groups (its admins add and remove; at first the creator alone):
  qpc group create <name> <handle>...
  qpc group add <name> <handle> | qpc group remove <name> <handle>
  qpc group admins <name> <handle>...
                                   hand the admin role on (list yourself to keep it)
  qpc group leave <name> | qpc group list
  qpc group [name]                   each conversation's epoch, members, leaf updates
  qpc invites                      group invitations from people who are not your contacts
                                   (contacts: added, or written to in a direct chat)
  qpc accept <id> | qpc decline <id>
                                   join the invitation's group, or drop it

Backups (hold your keys, not your session: after an import, qpc login):
  qpc backup export [--history] <file>
                                   encrypted under QPC_BACKUP_PASSPHRASE (or a prompt)
  qpc backup import <file>         into a new QPC_HOME; the old device must stop being used

Checks:
  qpc kt check                     owner monitoring: is the directory showing only your keys?
  qpc status                       server, Tor, tokens left and quota, queued messages, alarms

Environment: QPC_HOME (state directory, default ~/.local/share/qpc),
QPC_PASSPHRASE (local state), QPC_PASSWORD (account), QPC_BACKUP_PASSPHRASE
(backups), QPC_TOR_SOCKS (tor's SOCKS port when --tor, default 127.0.0.1:9050).
`

func (c *cli) main(args []string) int {
	fs := flag.NewFlagSet("qpc", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&c.json, "json", false, "machine-readable output")
	fs.BoolVar(&c.tor, "tor", false, "connect through Tor")
	fs.StringVar(&c.home, "home", "", "state directory (default $QPC_HOME or ~/.local/share/qpc)")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "give up on a command after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(c.stdout, usage)
			return exitOK
		}
		return c.usageErr("%v", err)
	}
	args = fs.Args()
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	if c.home == "" {
		c.home = c.getenv("QPC_HOME")
	}
	if c.home == "" {
		c.home = defaultHome(c.getenv)
	}
	c.torSOCKS = c.getenv("QPC_TOR_SOCKS")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	case "init":
		err = c.initCmd(ctx, rest)
	case "register":
		err = c.register(ctx, rest)
	case "login":
		err = c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
			pw, err := c.secret("QPC_PASSWORD", "Account password: ")
			if err != nil {
				return err
			}
			if err := cl.Login(ctx, pw); err != nil {
				return err
			}
			return c.say("logged in as %s", cl.Handle())
		})
	case "logout":
		err = c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
			if err := cl.Logout(); err != nil {
				return err
			}
			return c.say("logged out")
		})
	case "contact":
		err = c.contact(ctx, rest)
	case "send":
		err = c.send(ctx, rest)
	case "recv":
		err = c.recv(ctx, rest)
	case "history":
		err = c.history(rest)
	case "chat":
		err = c.chat(ctx, rest)
	case "group":
		err = c.group(ctx, rest)
	case "invites", "accept", "decline":
		err = c.invites(ctx, cmd, rest)
	case "kt":
		err = c.ktCmd(ctx, rest)
	case "status":
		err = c.status(ctx)
	case "cover":
		err = c.coverCmd(ctx, rest)
	case "backup":
		err = c.backupCmd(ctx, rest)
	case "buckets":
		err = c.bucketsCmd(ctx, rest)
	default:
		return c.usageErr("unknown command %q", cmd)
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return c.usageErr("%s", ue.msg)
		}
		fmt.Fprintf(c.stderr, "qpc: %s\n", explain(err))
		return exitError
	}
	return exitOK
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func (c *cli) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "qpc: "+format+" (qpc help shows the commands)\n", a...)
	return exitUsage
}

// explain turns an error into one line that says what to do. An error
// may quote the server or a peer, so the line goes through safetext.Line.
func explain(err error) string {
	return safetext.Line(explainRaw(err))
}

func explainRaw(err error) string {
	msg := strings.NewReplacer("\r\n", " ", "\n", " ").Replace(err.Error())
	switch {
	case errors.Is(err, state.ErrPassphrase):
		return "wrong passphrase for the local state (QPC_PASSPHRASE)"
	case errors.Is(err, state.ErrLocked):
		return "another qpc is using this QPC_HOME (a `qpc recv --follow`?): stop it or wait"
	case errors.Is(err, state.ErrNotFound):
		return "no local state here: run `qpc init <invite>` first (or set QPC_HOME)"
	case errors.Is(err, state.ErrExists):
		return "a local state already exists in this QPC_HOME"
	case errors.Is(err, protocol.ErrPolicy):
		return msg + " (ask the operator for the buckets and pin them with `qpc buckets <sizes>` only if they confirm the change)"
	case errors.Is(err, context.DeadlineExceeded):
		return msg + " (timed out: is the server reachable? with --tor, is tor running?)"
	}
	if code, ok := wire.CodeOf(err); ok {
		switch code {
		case wire.CodeRateLimited:
			return msg + " (the server is rate limiting; try again shortly)"
		case wire.CodeUnavailable:
			return msg + " (the server is restarting or unavailable; try again)"
		}
	}
	return msg
}

// defaultHome is the state directory when neither --home nor QPC_HOME
// names one: $XDG_DATA_HOME/qpc, else ~/.local/share/qpc. The SDK reads
// no environment; this command does.
func defaultHome(getenv func(string) string) string {
	if x := getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "qpc")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".", "qpc-home")
	}
	return filepath.Join(home, ".local", "share", "qpc")
}

// options builds the client options from the environment and flags.
func (c *cli) options(passphrase []byte) client.Options {
	o := client.Options{
		Home:       c.home,
		Passphrase: passphrase,
		Logger:     slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if c.tor || c.torSOCKS != "" {
		// --tor is every connection through Tor, a clearnet server's
		// too (out of an exit to its tunnel listener, docs/tor.md), never
		// straight to it: an address without an onion must not take the
		// user off Tor (TestAttackTorFlagNeverDialsDirect).
		o.Dial.Tor = &protocol.TorOptions{SOCKS: c.torSOCKS, Progress: c.torProgress(), Always: c.tor}
	}
	return o
}

// secret reads a secret from the environment, else from the terminal
// without echo, else one line of standard input.
func (c *cli) secret(env, prompt string) ([]byte, error) {
	if v := c.getenv(env); v != "" {
		return []byte(v), nil
	}
	if f, ok := c.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(c.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.stderr)
		return b, err
	}
	b, err := client.ReadSecret(c.stdin)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("%s is not set and no %s was given on standard input", env, strings.ToLower(strings.TrimSuffix(prompt, ": ")))
	}
	return b, nil
}

// refillFirst tops up a token wallet below its low-water mark before a
// command opens any anonymous connection, so the refill does not follow
// its sends (client.RefillIfEmpty); after a refill the anonymous
// connections wait a random quiet gap, which is told on standard error.
// A failure is told there too; the command goes on with the tokens it
// has.
func (c *cli) refillFirst(ctx context.Context, cl *client.Client) {
	if err := cl.RefillIfEmpty(ctx); err != nil {
		fmt.Fprintf(c.stderr, "qpc: could not refill the token wallet: %v\n", err)
	}
	if wait := time.Until(cl.QuietUntil()); wait > 0 {
		fmt.Fprintf(c.stderr, "qpc: refilled the token wallet; waiting %.1fs before connecting to mailboxes, so the server cannot tie them to your account by timing\n", wait.Seconds())
	}
}

// withClient opens the local state, runs fn with a deadline, and closes.
func (c *cli) withClient(ctx context.Context, fn func(context.Context, *client.Client) error) error {
	pass, err := c.secret("QPC_PASSPHRASE", "Passphrase for the local state: ")
	if err != nil {
		return err
	}
	stop := c.wait("unlocking the local state")
	cl, err := client.Open(c.options(pass))
	stop()
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	return fn(ctx, cl)
}

// say prints a human line, or {"ok":true,"message":...} with --json. The
// line may name a peer or a group, so it goes through safetext.Line.
func (c *cli) say(format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if c.json {
		return c.printJSON(map[string]any{"ok": true, "message": msg})
	}
	_, err := fmt.Fprintln(c.stdout, safetext.Line(msg))
	return err
}

// printJSON prints v as one line of JSON. Values stay exactly as received
// (a program reading them gets the peer's text), but every character a
// terminal would act on is a \u escape (safetext.EscapeJSON), so the
// output is safe to show too.
func (c *cli) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(append(safetext.EscapeJSON(b), '\n'))
	return err
}

func (c *cli) initCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("qpc init", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", c.getenv("QPC_SERVER"), "server address qpc://<pin>@host:port")
	ktPin := fs.String("kt", c.getenv("QPC_KT_PIN"), "key-transparency pin (what qpc-server kt-vkey prints), or @file")
	buckets := fs.String("buckets", c.getenv("QPC_BUCKETS"), "padding policy the operator gave you (default 512,2048,4096,16384,131072)")
	// Flags may come before or after the invite.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return usagef("init: %v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	var addr string
	var pin protocol.KTPin
	var policy padding.Policy
	switch len(positional) {
	case 0:
		var err error
		if addr, pin, policy, err = c.initFlags(*server, *ktPin, *buckets); err != nil {
			return err
		}
	case 1:
		inv, err := invite.Parse(positional[0])
		if err != nil {
			return err
		}
		addr = inv.Address(c.tor)
		pin = protocol.KTPin{VKey: inv.LogKey, VRFKey: inv.VRFKey, ConfigHash: inv.ConfigHash, WitnessPolicy: inv.WitnessPolicy}
		policy = inv.Buckets
		if err := c.initConflicts(fs, inv, pin, *server, *ktPin, *buckets); err != nil {
			return err
		}
	default:
		return usagef("init takes one invite (qpc init <invite>), or --server and --kt")
	}
	pass, err := c.secret("QPC_PASSPHRASE", "New passphrase for the local state: ")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	stop := c.wait("creating the local state and checking the server")
	opts := c.options(pass)
	opts.Dial.Policy = policy
	cl, err := client.Init(ctx, addr, pin, opts)
	stop()
	if err != nil {
		return err
	}
	defer cl.Close()
	return c.say("initialised %s for %s", c.home, addr)
}

// initFlags reads the server, pin and buckets of an init without invite.
func (c *cli) initFlags(server, ktPin, buckets string) (string, protocol.KTPin, padding.Policy, error) {
	var policy padding.Policy
	if server == "" || ktPin == "" {
		return "", protocol.KTPin{}, policy, usagef("init needs an invite (qpc init <invite>), or --server <qpc://...> and --kt <pin>")
	}
	if buckets != "" {
		p, err := padding.ParsePolicy(buckets)
		if err != nil {
			return "", protocol.KTPin{}, policy, usagef("init --buckets: %v", err)
		}
		policy = p
	}
	pin, err := readKTPin(ktPin)
	return server, pin, policy, err
}

// readKTPin parses a pin given as text or @file.
func readKTPin(text string) (protocol.KTPin, error) {
	if name, ok := strings.CutPrefix(text, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return protocol.KTPin{}, fmt.Errorf("reading the kt pin: %w", err)
		}
		text = string(b)
	}
	return protocol.ParseKTPin(text)
}

// withoutURLs drops the witness URLs from a witness policy's text, as an
// invite does (a client never contacts witnesses).
func withoutURLs(policy string) string {
	var b strings.Builder
	for line := range strings.Lines(policy) {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "witness" {
			f = f[:3]
		}
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String()
}

// initConflicts refuses flags given beside an invite that say something
// else than it: which one to trust is not for qpc to guess. A flag that
// agrees is harmless; the QPC_* variables are not read at all.
func (c *cli) initConflicts(fs *flag.FlagSet, inv *invite.Invite, pin protocol.KTPin, server, ktPin, buckets string) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if err != nil {
			return
		}
		switch f.Name {
		case "server":
			if server != inv.Address(false) && server != inv.Address(true) {
				err = usagef("init: --server %s is not a server address in the invite (give the invite alone)", server)
			}
		case "kt":
			p, perr := readKTPin(ktPin)
			if perr != nil {
				err = perr
			} else if p.VKey != pin.VKey || !bytes.Equal(p.VRFKey, pin.VRFKey) || p.ConfigHash != pin.ConfigHash ||
				withoutURLs(p.WitnessPolicy) != pin.WitnessPolicy {
				err = usagef("init: --kt is not the key-transparency pin in the invite (give the invite alone)")
			}
		case "buckets":
			p, perr := padding.ParsePolicy(buckets)
			if perr != nil || !p.Equal(inv.Buckets) {
				err = usagef("init: --buckets %s is not the padding policy in the invite, %s (give the invite alone)", buckets, inv.Buckets)
			}
		}
	})
	return err
}

func (c *cli) register(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("register needs one handle")
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		pw, err := c.secret("QPC_PASSWORD", "New account password: ")
		if err != nil {
			return err
		}
		if err := cl.Register(ctx, args[0], pw); err != nil {
			return err
		}
		return c.say("registered %s; your keys are published in key transparency", args[0])
	})
}

func (c *cli) contact(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("contact add <handle|contact string> | contact list | contact show-qr [<handle>]")
	}
	switch args[0] {
	case "receipts":
		return c.contactReceipts(ctx, args[1:])
	case "add":
		if len(args) != 2 {
			return usagef("contact add needs one handle or contact string")
		}
		return c.contactAdd(ctx, args[1])
	case "show-qr":
		return c.contactShowQR(ctx, args[1:])
	case "list":
		return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
			list, err := cl.Contacts()
			if err != nil {
				return err
			}
			if c.json {
				out := []any{}
				for i := range list {
					out = append(out, contactJSON(&list[i]))
				}
				return c.printJSON(out)
			}
			for _, ct := range list {
				fmt.Fprintf(c.stdout, "%s\t%s\n", safetext.Line(ct.Handle), client.FormatSafetyNumber(ct.SafetyNumber))
			}
			return nil
		})
	}
	return usagef("contact add <handle|contact string> | contact list | contact show-qr [<handle>]")
}

func contactJSON(ct *client.Contact) map[string]any {
	return map[string]any{"handle": ct.Handle, "safety_number": ct.SafetyNumber, "kt_version": ct.Version}
}

func (c *cli) send(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("qpc send", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	lines := fs.Bool("lines", false, "send each line of standard input as one message")
	if err := fs.Parse(args); err != nil {
		return usagef("send: %v", err)
	}
	args = fs.Args()
	var texts []string
	switch {
	case *lines && len(args) == 1:
		b, err := io.ReadAll(c.stdin)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimRight(l, "\r"); l != "" {
				texts = append(texts, l)
			}
		}
	case !*lines && len(args) >= 2:
		texts = []string{strings.Join(args[1:], " ")}
	default:
		return usagef("send <handle|group> <text>, or send --lines <handle|group> < file")
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		c.refillFirst(ctx, cl)
		queued := false
		for _, text := range texts {
			err := cl.Send(ctx, args[0], text)
			if err != nil && isQueued(err) {
				n, _ := cl.Pending()
				fmt.Fprintf(c.stderr, "qpc: not delivered yet, kept in the outbox (%d queued): %s\n", n, explain(err))
				queued = true
				continue
			}
			if err != nil {
				return err
			}
		}
		if queued {
			return c.say("queued")
		}
		return c.say("sent")
	})
}

// isQueued reports an error after which the message is safe in the
// outbox: a delivery attempt failed, not the message itself.
func isQueued(err error) bool {
	return errors.Is(err, client.ErrQueued)
}

func (c *cli) recv(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("qpc recv", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	follow := fs.Bool("follow", false, "keep listening")
	cover := fs.String("cover", "", "with --follow: cover traffic at this many envelopes per second")
	force := fs.Bool("force", false, "with --cover: skip the token-quota check")
	if err := fs.Parse(args); err != nil {
		return usagef("recv: %v", err)
	}
	print := func(e client.Event) {
		if c.json {
			c.printJSON(e)
			return
		}
		fmt.Fprintln(c.stdout, e.String())
	}
	if *follow {
		c.timeout = 0
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		c.refillFirst(ctx, cl)
		if *follow {
			if *cover != "" {
				return c.followCover(ctx, cl, *cover, *force, print)
			}
			return cl.Follow(ctx, print)
		}
		ev, err := cl.Sync(ctx)
		for _, e := range ev {
			print(e)
		}
		if err != nil && isQueued(err) {
			fmt.Fprintf(c.stderr, "qpc: %s\n", explain(err))
			return nil
		}
		return err
	})
}

func (c *cli) history(args []string) error {
	target := ""
	if len(args) > 1 {
		return usagef("history [<handle|group>]")
	}
	if len(args) == 1 {
		target = args[0]
	}
	return c.withClient(context.Background(), func(ctx context.Context, cl *client.Client) error {
		ev, err := cl.History(target, 0)
		if err != nil {
			return err
		}
		if target != "" {
			cl.MarkRead(target) // read receipts, if on for the contact
		}
		for _, e := range ev {
			if c.json {
				c.printJSON(e)
				continue
			}
			fmt.Fprintf(c.stdout, "%s %s\n", e.At.Format("2006-01-02 15:04"), e.String())
		}
		return nil
	})
}

func (c *cli) group(ctx context.Context, args []string) error {
	if len(args) == 0 {
		args = []string{"show"}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "create", "add", "remove", "admins", "leave", "list", "show":
	default:
		// qpc group <name>: that group's state.
		sub, rest = "show", args
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		if sub != "list" && sub != "show" {
			c.refillFirst(ctx, cl)
		}
		var err error
		switch sub {
		case "create":
			if len(rest) < 2 {
				return usagef("group create <name> <handle>...")
			}
			if err = cl.CreateGroup(ctx, rest[0], rest[1:]); err == nil || isQueued(err) {
				return c.say("created group %s", rest[0])
			}
		case "add", "remove":
			if len(rest) != 2 {
				return usagef("group %s <name> <handle>", sub)
			}
			if sub == "add" {
				err = cl.AddMember(ctx, rest[0], rest[1])
			} else {
				err = cl.RemoveMember(ctx, rest[0], rest[1])
			}
			if err == nil || isQueued(err) {
				return c.say("%s: %s %s", rest[0], map[string]string{"add": "added", "remove": "removed"}[sub], rest[1])
			}
		case "admins":
			if len(rest) < 2 {
				return usagef("group admins <name> <handle>...")
			}
			if err = cl.SetAdmins(ctx, rest[0], rest[1:]); err == nil || isQueued(err) {
				return c.say("%s: the admins are now %s", rest[0], strings.Join(rest[1:], ", "))
			}
		case "leave":
			if len(rest) != 1 {
				return usagef("group leave <name>")
			}
			if err = cl.Leave(ctx, rest[0]); err == nil || isQueued(err) {
				return c.say("asked to leave %s", rest[0])
			}
		case "list":
			convs, err := cl.Conversations(ctx)
			if err != nil {
				return err
			}
			var groups []client.Conversation
			for _, cv := range convs {
				if cv.Group {
					groups = append(groups, cv)
				}
			}
			if c.json {
				if groups == nil {
					groups = []client.Conversation{}
				}
				return c.printJSON(groups)
			}
			for _, g := range groups {
				state := ""
				if !g.Active {
					state = " (removed)"
				}
				fmt.Fprintf(c.stdout, "%s\t%s\t%s%s%s\n",
					safetext.Line(g.Name), createdBy(g.Creator, g.CreatorLeft), safetext.Line(strings.Join(g.Members, ",")), adminsLabel(g.Admins), state)
			}
			return nil
		case "show":
			if len(rest) > 1 {
				return usagef("group [show] [name]")
			}
			target := ""
			if len(rest) == 1 {
				target = rest[0]
			}
			return c.groupShow(ctx, cl, target)
		default:
			return usagef("group create|add|remove|leave|list|show")
		}
		return err
	})
}

// createdBy labels a group's creator, marked when it is no longer a
// member: the admins decide (adminsLabel), not the creator.
func createdBy(creator string, left bool) string {
	if creator == "" {
		return "created by a member who left" // joined after (client/invites.go)
	}
	s := "created by " + safetext.Line(creator)
	if left {
		s += " (left)"
	}
	return s
}

// adminsLabel is "\tadmins a,b" for a group's admins, "" for none (a
// direct chat, or a group we are no longer in).
func adminsLabel(admins []string) string {
	if len(admins) == 0 {
		return ""
	}
	var out []string
	for _, a := range admins {
		out = append(out, safetext.Line(a))
	}
	return "\tadmins " + strings.Join(out, ",")
}

// groupShow prints the MLS state of every conversation, or of target's:
// its epoch, and each member with when its leaf last changed.
func (c *cli) groupShow(ctx context.Context, cl *client.Client, target string) error {
	views, err := cl.Groups(ctx, target)
	if err != nil {
		return err
	}
	if c.json {
		if views == nil {
			views = []client.GroupView{}
		}
		return c.printJSON(views)
	}
	for _, v := range views {
		name := safetext.Line(v.Name)
		if v.Group {
			name = "#" + name
		}
		state := ""
		if !v.Active {
			state = " (not a member)"
		}
		fmt.Fprintf(c.stdout, "%s\tepoch %d\t%s%s%s\n", name, v.Epoch, createdBy(v.Creator, v.CreatorLeft), adminsLabel(v.Admins), state)
		for _, m := range v.Members {
			who := safetext.Line(m.Handle)
			if m.You {
				who += " (you)"
			}
			if m.Unchecked {
				who += " (key not checked yet)"
			}
			updated := "not seen"
			if !m.Updated.IsZero() {
				updated = m.Updated.Local().Format("2006-01-02 15:04")
			}
			fmt.Fprintf(c.stdout, "  leaf %d\t%s\tleaf updated %s\n", m.Leaf, who, updated)
		}
	}
	return nil
}

// invites lists, accepts or declines group invitations.
func (c *cli) invites(ctx context.Context, cmd string, args []string) error {
	if cmd == "invites" && len(args) != 0 || cmd != "invites" && len(args) != 1 {
		return usagef("invites | accept <id> | decline <id>")
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		switch cmd {
		case "accept":
			c.refillFirst(ctx, cl)
			if err := cl.AcceptInvite(ctx, args[0]); err != nil && !isQueued(err) {
				return err
			}
			return c.say("joined: qpc group list shows it")
		case "decline":
			if err := cl.DeclineInvite(args[0]); err != nil {
				return err
			}
			return c.say("declined")
		}
		inv, err := cl.Invitations()
		if err != nil {
			return err
		}
		if c.json {
			return c.printJSON(inv)
		}
		if len(inv) == 0 {
			fmt.Fprintln(c.stdout, "no invitations")
		}
		for _, i := range inv {
			fmt.Fprintf(c.stdout, "%s\t%s invites you to #%s\tuntil %s\n",
				i.ID, safetext.Line(i.From), safetext.Line(i.Name), i.Expires.Format("2006-01-02"))
		}
		return nil
	})
}

func (c *cli) ktCmd(ctx context.Context, args []string) error {
	if len(args) != 1 || args[0] != "check" {
		return usagef("kt check")
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		alarms, err := cl.KTCheck(ctx)
		if err != nil {
			// A failure the server caused may have raised an alarm.
			if c.json {
				if jerr := c.printJSON(map[string]any{"ok": false, "alarms": alarms, "error": err.Error()}); jerr != nil {
					return jerr
				}
			} else {
				for _, a := range alarms {
					fmt.Fprintf(c.stdout, "ALARM %s\n", a)
				}
			}
			return err
		}
		if c.json {
			return c.printJSON(map[string]any{"ok": len(alarms) == 0, "alarms": alarms})
		}
		if len(alarms) == 0 {
			fmt.Fprintln(c.stdout, "key transparency: the log shows only the keys you published")
			return nil
		}
		for _, a := range alarms {
			fmt.Fprintf(c.stdout, "ALARM %s\n", a)
		}
		return fmt.Errorf("key transparency shows %d version(s) of your keys you did not publish", len(alarms))
	})
}

// bucketsCmd shows or changes the pinned padding policy.
func (c *cli) bucketsCmd(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return usagef("buckets [<sizes>|default]")
	}
	var policy padding.Policy
	if len(args) == 1 && args[0] != "default" {
		p, err := padding.ParsePolicy(args[0])
		if err != nil {
			return usagef("buckets: %v", err)
		}
		policy = p
	}
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		if len(args) == 1 {
			if err := cl.PinPolicy(ctx, policy); err != nil {
				return err
			}
		}
		if c.json {
			return c.printJSON(map[string]any{"ok": true, "buckets": cl.Policy().Buckets()})
		}
		_, err := fmt.Fprintf(c.stdout, "padding buckets pinned: %s\n", cl.Policy())
		return err
	})
}

func (c *cli) status(ctx context.Context) error {
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if c.json {
			if st.Alarms == nil {
				st.Alarms = []client.Alarm{}
			}
			return c.printJSON(st)
		}
		w := c.stdout
		fmt.Fprintf(w, "server:        %s (%s)\n", safetext.Line(st.Server), safetext.Line(st.Health))
		fmt.Fprintf(w, "tor:           %v\n", onOff(st.Tor))
		handle := st.Handle
		if handle == "" {
			handle = "(not registered)"
		}
		fmt.Fprintf(w, "handle:        %s\n", safetext.Line(handle))
		session := "no (run qpc login)"
		if st.LoggedIn {
			session = "until " + st.SessionEnds.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "session:       %s\n", session)
		fmt.Fprintf(w, "tokens left:   %d\n", st.Tokens)
		if q := st.TokenQuota; q != nil {
			fmt.Fprintf(w, "token quota:   %s; %d issued this epoch\n", q, q.Issued)
		} else if st.TokenQuotaError != "" {
			fmt.Fprintf(w, "token quota:   unknown (%s)\n", safetext.Line(st.TokenQuotaError))
		}
		printCover(w, st)
		fmt.Fprintf(w, "outbox:        %d queued\n", st.Outbox)
		fmt.Fprintf(w, "conversations: %d\n", st.Conversations)
		fmt.Fprintf(w, "kt tree size:  %d\n", st.KTSize)
		fmt.Fprintf(w, "padding:       %s (pinned)\n", st.Policy)
		printOwnerCheck(w, st)
		fmt.Fprintf(w, "key packages:  %d one-time (private keys kept here)\n", st.OneTimeKeyPackages)
		if len(st.Alarms) == 0 {
			fmt.Fprintln(w, "alarms:        none")
		}
		for _, a := range st.Alarms {
			fmt.Fprintf(w, "ALARM %s  %s\n", a.At.Format(time.RFC3339), a)
		}
		return nil
	})
}

// printOwnerCheck shows how owner monitoring and checkpoint gossip went.
func printOwnerCheck(w io.Writer, st *client.Status) {
	if st.Handle == "" {
		return
	}
	oc := st.OwnerCheck
	last := "never completed"
	if !oc.LastClean.IsZero() {
		last = "last completed " + oc.LastClean.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "owner check:   %s\n", last)
	if oc.Failures > 0 {
		fmt.Fprintf(w, "               %d failure(s) caused by the server since %s\n", oc.Failures, oc.FailingSince.Format(time.RFC3339))
	}
	if oc.LastError != "" {
		fmt.Fprintf(w, "               last error %s: %s\n", oc.LastErrorAt.Format(time.RFC3339), oc.LastError)
	}
	if oc.Stale {
		fmt.Fprintf(w, "WARNING no completed owner check for %d days or more: run qpc kt check\n", int(client.OwnerCheckStale.Hours()/24))
	}
	if st.GossipPending > 0 {
		fmt.Fprintf(w, "kt gossip:     %d checkpoint(s) from contacts not compared yet, since %s\n", st.GossipPending, st.GossipPendingSince.Format(time.RFC3339))
	}
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
