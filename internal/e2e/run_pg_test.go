package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/internal/pgtest"
	"github.com/quicprochat/qpc/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestRunPostgres: qpc-server run --store postgres://... (the path of the
// binary: flags, config.Load, server.Run) keeps mailboxes, messages,
// spent tokens, accounts and the KT directory in a real PostgreSQL and
// neither qpc.db, accounts.db, kt.db nor kt-log in the data directory; a
// real client registers, creates a mailbox and sends, paying with
// tokens; after a restart of the server the
// message is still there, the tokens it spent are still spent, the session
// still works, the token quota counts what was issued before the restart
// and refuses past it, and a login works; /readyz checks the database.
func TestRunPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.DB(t)
	dir := filepath.Join(t.TempDir(), "data")
	args := []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s", "--store", url, "--token-quota", "5"}
	r := startRun(t, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	for _, f := range []string{"qpc.db", "accounts.db", "kt.db", "kt-log"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a server on PostgreSQL made the bbolt file %s: %v", f, err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, body := httpGet(t, "http://"+r.admin+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	conn, err := protocol.Dial(ctx, r.addr, protocol.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", r.addr, err)
	}
	first := sendFirst(t, ctx, conn, "pg-operator", 3)
	device, sess, keys, toks := first.device, first.sess, first.keys, first.toks
	mb, msgID, sendTok := first.mb, first.msgID, first.sendTok
	// A retry of the same message (the answer was lost) is acknowledged
	// again, not refused for its spent token, and not stored twice.
	if _, err := conn.Send(ctx, mb.SendID, msgID, []byte("an opaque envelope"), sendTok); err != nil {
		t.Fatalf("retry of an acknowledged send: %v", err)
	}
	conn.Close()

	// It is all in PostgreSQL.
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	var mailboxes, messages, spent int
	if err := db.QueryRow(ctx, "SELECT (SELECT count(*) FROM mailboxes), (SELECT count(*) FROM messages), (SELECT count(*) FROM spent)").
		Scan(&mailboxes, &messages, &spent); err != nil {
		t.Fatal(err)
	}
	// The key-transparency log too (kt/ktpg): the token keys' epochs.
	var ktEpochs int64
	if err := db.QueryRow(ctx, "SELECT size FROM ktlog_head").Scan(&ktEpochs); err != nil || ktEpochs < 2 {
		t.Fatalf("the KT log in PostgreSQL: %d epochs, %v", ktEpochs, err)
	}
	if mailboxes != 1 || messages != 1 || spent != 2 {
		t.Fatalf("PostgreSQL holds %d mailboxes, %d messages, %d spent tokens; want 1, 1, 2", mailboxes, messages, spent)
	}
	var accts, devices, sessions, quotaRows int
	var epoch, used int64
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM account_devices),
		(SELECT count(*) FROM account_sessions), (SELECT count(*) FROM account_quota),
		(SELECT coalesce(max(epoch), -1) FROM account_quota), (SELECT coalesce(sum(used), 0) FROM account_quota)`).
		Scan(&accts, &devices, &sessions, &quotaRows, &epoch, &used); err != nil {
		t.Fatal(err)
	}
	if accts != 1 || devices != 1 || sessions != 1 || quotaRows != 1 || used != 3 {
		t.Fatalf("PostgreSQL holds %d accounts, %d devices, %d sessions, %d quota counts using %d; want 1, 1, 1, 1 using 3",
			accts, devices, sessions, quotaRows, used)
	}

	// A restart: the message waits in the database, the spent token is
	// still spent, and the next token still pays.
	if err := r.stop(); err != nil {
		t.Fatalf("Run after the drain: %v", err)
	}
	r = startRun(t, args...)
	conn, err = protocol.Dial(ctx, r.addr, protocol.Options{})
	if err != nil {
		t.Fatalf("dial after the restart: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("again"), sendTok); !errors.Is(err, &wire.Error{Code: wire.CodeTokenSpent}) {
		t.Fatalf("a spent token on another message after the restart: %v, want TOKEN_SPENT", err)
	}
	nextTok, _ := toks[2].MarshalBinary()
	if _, err := conn.Send(ctx, mb.SendID, protocol.NewMessageID(), []byte("a second envelope"), nextTok); err != nil {
		t.Fatal(err)
	}
	// The session issued before the restart is in the database, and so
	// is the quota it used: 2 more tokens are within the quota of 5, a
	// sixth is not.
	if _, err := conn.IssueTokens(ctx, sess, keys.Keys[keys.Current], 2); err != nil {
		t.Fatalf("issue tokens with the session of before the restart: %v", err)
	}
	if _, err := conn.IssueTokens(ctx, sess, keys.Keys[keys.Current], 1); !errors.Is(err, &wire.Error{Code: wire.CodeQuota}) {
		// Only an epoch that ended between the issues resets the count.
		var now int64
		if qerr := db.QueryRow(ctx, "SELECT max(epoch) FROM account_quota").Scan(&now); qerr != nil || now == epoch {
			t.Fatalf("a token past the quota of 5, 3 of them issued before the restart: %v, want QUOTA", err)
		}
		t.Logf("the token epoch ended during the test (%d, then %d): the quota check did not apply", epoch, now)
	}
	// A login on the restarted server finds the account, and replaces
	// the device's session (one per device).
	if _, err := conn.Login(ctx, "pg-operator", []byte("a long passphrase"), device, "test",
		account.WithKSF(account.KSFParams{Time: 1, MemoryKiB: 1024, Threads: 1})); err != nil {
		t.Fatalf("login after the restart: %v", err)
	}
	if err := db.QueryRow(ctx, "SELECT count(*) FROM account_sessions").Scan(&sessions); err != nil || sessions != 1 {
		t.Fatalf("%d sessions after a login of the same device, %v; want 1", sessions, err)
	}
	msgs, _, err := conn.Fetch(ctx, mb, 0, 10)
	if err != nil || len(msgs) != 2 || string(msgs[0].Envelope) != "an opaque envelope" || msgs[0].ID != msgID {
		t.Fatalf("fetch after the restart: %d messages, %v", len(msgs), err)
	}
	if n, err := conn.Ack(ctx, mb, []wire.MessageID{msgID, msgs[1].ID}); err != nil || n != 2 {
		t.Fatalf("ack: %d, %v", n, err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run after the drain: %v", err)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "PostgreSQL") {
		t.Errorf("the log does not say the store is in PostgreSQL:\n%s", logs)
	}
}
