package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/tor"
)

const onionUsage = `Usage:
  qpc-server onion add-client NAME [--key KEY] [flags]
      authorize a client of the onion service (takes effect at the next start).
      Without --key a key pair is made and the client's credential printed:
      give it to the client (tor's <onion>:descriptor:x25519:<key> format).
      With --key descriptor:x25519:<base32 public key> the client keeps its
      private key to itself.
  qpc-server onion remove-client NAME [flags]
  qpc-server onion list-clients [flags]

Client authorization is on when onion_client_auth = true (--onion-client-auth).
`

// onion runs `qpc-server onion ...`, which manages the keys of clients
// authorized to reach the onion service.
func (c *cli) onion(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(c.stdout, onionUsage)
		return exitOK
	}
	sub, args := args[0], args[1:]
	var name string
	if sub == "add-client" || sub == "remove-client" {
		// The name may come before or after the flags.
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			name, args = args[0], args[1:]
		}
	} else if sub != "list-clients" {
		fmt.Fprintf(c.stderr, "qpc-server onion: unknown command %q\n\n%s", sub, onionUsage)
		return exitUsage
	}
	fset := flag.NewFlagSet("qpc-server onion "+sub, flag.ContinueOnError)
	fset.SetOutput(io.Discard)
	flags := config.Flags{}
	flags.Register(fset)
	key := fset.String("key", "", "the client's public key, descriptor:x25519:<base32> (add-client)")
	// Flags may surround the name: parse, take a positional, go on.
	for {
		if err := fset.Parse(args); err != nil {
			fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
			return exitUsage
		}
		if fset.NArg() == 0 {
			break
		}
		if name != "" || sub == "list-clients" {
			fmt.Fprintf(c.stderr, "qpc-server onion %s: unexpected argument %q\n", sub, fset.Arg(0))
			return exitUsage
		}
		name, args = fset.Arg(0), fset.Args()[1:]
	}
	if name == "" && sub != "list-clients" {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: a client name is required\n\n%s", sub, onionUsage)
		return exitUsage
	}
	cfg, err := config.Load(flags, c.lookupEnv)
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
		return exitError
	}
	switch sub {
	case "add-client":
		err = c.addClient(cfg, name, *key)
	case "remove-client":
		err = tor.RemoveClient(cfg.OnionClientsDir(), name)
		if err == nil {
			fmt.Fprintf(c.stderr, "removed %s; it loses access at the next start of the server\n", name)
		}
	case "list-clients":
		var clients []tor.AuthorizedClient
		clients, err = tor.Clients(cfg.OnionClientsDir())
		for _, cl := range clients {
			fmt.Fprintf(c.stdout, "%s\t%s\n", cl.Name, cl.Key)
		}
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server onion %s: %v\n", sub, err)
		return exitError
	}
	return exitOK
}

func (c *cli) addClient(cfg *config.Config, name, keyText string) error {
	onionKey, err := tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	if err != nil {
		return err
	}
	id := tor.OnionID(onionKey.Public().(ed25519.PublicKey))
	if keyText != "" {
		k, err := tor.ParseClientKey(keyText)
		if err != nil {
			return err
		}
		if err := tor.AddClient(cfg.OnionClientsDir(), name, k); err != nil {
			return err
		}
		fmt.Fprintf(c.stderr, "authorized %s; it gains access at the next start of the server\n", name)
		return nil
	}
	cred, err := tor.NewClientCredential(id)
	if err != nil {
		return err
	}
	if err := tor.AddClient(cfg.OnionClientsDir(), name, cred.Public()); err != nil {
		return err
	}
	// The private key goes to stdout once and is not kept: the server
	// needs only the public half.
	fmt.Fprintln(c.stdout, cred.String())
	fmt.Fprintf(c.stderr, "authorized %s; give the line above to the client (keep it secret: it is the client's key); it works from the next start of the server\n", name)
	if !cfg.OnionClientAuth {
		fmt.Fprintf(c.stderr, "note: client authorization is off; turn it on with onion_client_auth = true or --onion-client-auth\n")
	}
	return nil
}

// onionAddress prints the onion form of the address if there is an onion
// key, creating it when the configuration serves an onion, and returns it
// ("" when there is none).
func (c *cli) onionAddress(cfg *config.Config, id *server.Identity) (string, error) {
	var key ed25519.PrivateKey
	var err error
	if cfg.ServesOnion() {
		key, err = tor.LoadOrCreateOnionKey(cfg.OnionKeyPath())
	} else {
		key, err = tor.LoadOnionKey(cfg.OnionKeyPath())
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil // never served as an onion: nothing to print
		}
	}
	if err != nil {
		return "", err
	}
	host := net.JoinHostPort(tor.OnionID(key.Public().(ed25519.PublicKey))+".onion", strconv.Itoa(cfg.OnionPort))
	addr := id.Address(host).String()
	fmt.Fprintln(c.stdout, addr)
	return addr, nil
}

// progressBar draws tor's progress on a terminal as one line redrawn in
// place, and elsewhere (logs, pipes) as a line per step of 10%; each stage
// (bootstrap, publication) gets a bar of its own.
type progressBar struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	stage tor.Stage
	last  int
	drew  bool
}

func newProgressBar(w io.Writer) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty, last: -10}
}

func (b *progressBar) report(p tor.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Stage != b.stage {
		if b.tty && b.drew {
			fmt.Fprintln(b.w)
		}
		b.stage, b.last, b.drew = p.Stage, -10, false
	}
	label := map[tor.Stage]string{tor.StageBootstrap: "tor bootstrap", tor.StagePublish: "onion service", tor.StageConnect: "circuit"}[p.Stage]
	const width = 30
	filled := p.Percent * width / 100
	line := fmt.Sprintf("%-13s [%s%s] %3d%%  %s (%s)", label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		p.Percent, p.Summary, p.Elapsed.Round(time.Second))
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
		b.drew = true
		return
	}
	if p.Percent >= b.last+10 || p.Percent == 100 && b.last != 100 {
		fmt.Fprintln(b.w, line)
		b.last = p.Percent
	}
}

func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.drew {
		fmt.Fprintln(b.w)
	}
}
