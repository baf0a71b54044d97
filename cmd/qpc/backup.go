package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/quicprochat/qpc/client"
	"github.com/quicprochat/qpc/client/backup"
	"github.com/quicprochat/qpc/client/state"
	"golang.org/x/term"
)

// qpc backup export [--history] <file> | qpc backup import <file>
//
// The backup passphrase comes from QPC_BACKUP_PASSPHRASE, else the
// terminal, else one line of standard input. A backup holds the keys and
// conversations but not the account session nor the tokens: after an
// import, `qpc login`. The device the backup came from must not be used
// any more (client.RestoreBackup says why).

const backupUsage = "backup export [--history] <file> | backup import <file>"

// The one-line errors of backup import.
var (
	errBackupPass     = errors.New("wrong passphrase for the backup (QPC_BACKUP_PASSPHRASE)")
	errBackupTries    = fmt.Errorf("wrong passphrase for the backup, %d times: giving up", backup.DefaultMaxTries)
	errBackupCorrupt  = errors.New("the backup file is truncated or was tampered with (or is not a qpc backup): nothing was restored")
	errBackupHasState = errors.New("QPC_HOME already holds a local state: import into a new, empty QPC_HOME")
)

func (c *cli) backupCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef(backupUsage)
	}
	switch args[0] {
	case "export":
		return c.backupExport(ctx, args[1:])
	case "import":
		return c.backupImport(ctx, args[1:])
	}
	return usagef(backupUsage)
}

func (c *cli) backupExport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("qpc backup export", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	history := fs.Bool("history", false, "include the conversation history")
	if err := fs.Parse(args); err != nil {
		return usagef("backup export: %v", err)
	}
	if fs.NArg() != 1 {
		return usagef("backup export [--history] <file>")
	}
	file := fs.Arg(0)
	return c.withClient(ctx, func(ctx context.Context, cl *client.Client) error {
		pass, err := c.backupSecret(true)
		if err != nil {
			return err
		}
		dir := filepath.Dir(file)
		tmp, err := os.CreateTemp(dir, ".qpc-backup-*")
		if err != nil {
			return fmt.Errorf("writing the backup: %w", err)
		}
		defer os.Remove(tmp.Name()) // after the rename, a no-op
		stop := c.wait("encrypting the backup")
		err = cl.ExportBackup(tmp, pass, *history)
		stop()
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), file)
		}
		if err != nil {
			return fmt.Errorf("writing the backup: %w", err)
		}
		what := "without the history"
		if *history {
			what = "with the history"
		}
		return c.say("backup of %s written to %s (%s); it holds your keys: keep it safe. Restore it with `qpc backup import`, then `qpc login`", cl.Handle(), file, what)
	})
}

func (c *cli) backupImport(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return usagef("backup import <file>")
	}
	if _, err := os.Stat(filepath.Join(c.home, state.FileName)); err == nil {
		return errBackupHasState
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fmt.Errorf("reading the backup: %w", err)
	}
	defer f.Close()
	local, err := c.secret("QPC_PASSPHRASE", "New passphrase for the local state: ")
	if err != nil {
		return err
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	stop := func() {}
	defer func() { stop() }()
	prompt := func(attempt int) ([]byte, error) {
		stop() // no progress lines over a prompt
		if attempt > 1 && !c.interactive() {
			return nil, errBackupPass // the same passphrase would fail again
		}
		if attempt > 1 {
			fmt.Fprintf(c.stderr, "qpc: wrong passphrase for the backup, try again (%d of %d)\n", attempt, backup.DefaultMaxTries)
		}
		pass, err := c.backupSecret(false)
		stop = c.wait("decrypting and restoring the backup")
		return pass, err
	}
	cl, err := client.RestoreBackup(ctx, f, prompt, c.options(local))
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errBackupPass):
		return errBackupPass
	case errors.Is(err, backup.ErrTooManyTries):
		return errBackupTries
	case errors.Is(err, client.ErrBackupVersion):
		return fmt.Errorf("%v: nothing was restored", err)
	case errors.Is(err, backup.ErrCorrupt):
		return errBackupCorrupt
	case errors.Is(err, state.ErrExists):
		return errBackupHasState
	default:
		return fmt.Errorf("restoring the backup (nothing was restored): %w", err)
	}
	defer cl.Close()
	who := cl.Handle()
	if who == "" {
		who = "an unregistered device"
	}
	return c.say("restored %s into %s; run `qpc login` before sending (backups hold no session or tokens), and do not use the device the backup came from any more", who, c.home)
}

// interactive reports whether secrets are read from a terminal.
func (c *cli) interactive() bool {
	if c.getenv("QPC_BACKUP_PASSPHRASE") != "" {
		return false
	}
	f, ok := c.stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// backupSecret reads the backup passphrase; confirm asks twice on a
// terminal (for a new backup).
func (c *cli) backupSecret(confirm bool) ([]byte, error) {
	pass, err := c.secret("QPC_BACKUP_PASSPHRASE", "Backup passphrase: ")
	if err != nil || !confirm || !c.interactive() {
		return pass, err
	}
	again, err := c.secret("QPC_BACKUP_PASSPHRASE", "Backup passphrase again: ")
	if err != nil {
		return nil, err
	}
	if string(again) != string(pass) {
		return nil, errors.New("the two backup passphrases differ")
	}
	return pass, nil
}
