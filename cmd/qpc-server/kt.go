package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/tokens"
)

// ktVKey prints what a client pins for this server's key transparency:
// the note verifier key of its checkpoints, then the VRF public key and
// the directory configuration hash, then, with kt_witness_policy, the
// witness policy checkpoints must satisfy (one directive a line: `qpc
// init --kt @file` takes all of it). The keys are created on first use.
func (c *cli) ktVKey(cfg *server.Config) int {
	policy, err := cfg.KTWitnessPolicyParsed()
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	keys, err := server.LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	kc := cfg.KTConfig(keys)
	h := kc.Hash()
	fmt.Fprintln(c.stdout, keys.VKey)
	fmt.Fprintf(c.stdout, "vrf-key %s\n", hex.EncodeToString(kc.VRFPublicKey))
	fmt.Fprintf(c.stdout, "config %s\n", hex.EncodeToString(h[:]))
	if policy.Required() {
		fmt.Fprint(c.stdout, policy.Text())
	}
	return exitOK
}

// tokenKeyWait bounds how long a start waits for the token keys to be
// committed before it serves anyway: with witnesses that do not answer, a
// publish-late log commits nothing, and the clients already registered
// should still reach their mailboxes (/readyz then says why it is not
// ready).
const tokenKeyWait = 30 * time.Second

// startKT opens the key-transparency directory and its read-only HTTP
// listener; stop closes both. With kt off it returns a nil directory.
//
// It returns once the token epoch length and the current token epoch's key
// are committed and served in the log (a new directory needs one KT
// epoch), or after tokenKeyWait: a client refuses tokens under a key it
// cannot find in the log, so a server that served before would fail
// every registration of its first second (issue 24). ready fails while
// the current epoch's key is not served; it is a /readyz check.
func startKT(cfg *server.Config, log *slog.Logger, issuer *tokens.Issuer) (d *kt.Directory, stop func(), ready func(context.Context) error, err error) {
	if !cfg.KT {
		return nil, func() {}, func(context.Context) error { return nil }, nil
	}
	keys, err := server.LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err = server.OpenKT(ctx, cfg, keys, log)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("key transparency: %w", err)
	}
	// The token key of each epoch is committed in the log.
	pubCtx, pubCancel := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	var served atomic.Int64 // the newest token epoch with its key served, +1
	first := make(chan struct{})
	go func() {
		defer close(pubDone)
		server.PublishTokenKeysNotify(pubCtx, d, issuer, cfg.TokenEpoch.Duration, log, func(e uint32) {
			if served.Swap(int64(e)+1) == 0 {
				close(first)
			}
		})
	}()
	closeKT := func() {
		pubCancel()
		<-pubDone
		d.Close()
	}
	ready = func(context.Context) error {
		if cur := issuer.Epoch(); served.Load() < int64(cur)+1 {
			return fmt.Errorf("the token key of epoch %d is not committed yet", cur)
		}
		return nil
	}
	start := time.Now()
	select {
	case <-first:
		log.Debug("kt: token keys committed", "after", time.Since(start))
	case <-time.After(tokenKeyWait):
		log.Warn("kt: the token keys are not committed yet; serving anyway, registrations and token refills fail until they are (are the witnesses reachable?)", "waited", tokenKeyWait)
	}
	if cfg.KTListen == server.AdminOff {
		return d, closeKT, ready, nil
	}
	ln, err := net.Listen("tcp", cfg.KTListen)
	if err != nil {
		closeKT()
		return nil, nil, nil, fmt.Errorf("kt_listen: %w", err)
	}
	srv := &http.Server{Handler: server.KTHandler(d, cfg.KTPrefix), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("key-transparency listener stopped", "err", err)
		}
	}()
	log.Info("key-transparency log (read-only tlog-tiles)", "addr", ln.Addr().String(), "prefix", cfg.KTPrefix, "origin", keys.Signer.Name())
	return d, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		closeKT()
	}, ready, nil
}
