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

// startKT opens the key-transparency directory and its read-only HTTP
// listener; stop closes both. With kt off it returns a nil directory.
func startKT(cfg *server.Config, log *slog.Logger, issuer *tokens.Issuer) (d *kt.Directory, stop func(), err error) {
	if !cfg.KT {
		return nil, func() {}, nil
	}
	keys, err := server.LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err = server.OpenKT(ctx, cfg, keys, log)
	if err != nil {
		return nil, nil, fmt.Errorf("key transparency: %w", err)
	}
	// The token key of each epoch is committed in the log.
	pubCtx, pubCancel := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		server.PublishTokenKeys(pubCtx, d, issuer, cfg.TokenEpoch.Duration, log)
	}()
	closeKT := func() {
		pubCancel()
		<-pubDone
		d.Close()
	}
	if cfg.KTListen == server.AdminOff {
		return d, closeKT, nil
	}
	ln, err := net.Listen("tcp", cfg.KTListen)
	if err != nil {
		closeKT()
		return nil, nil, fmt.Errorf("kt_listen: %w", err)
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
	}, nil
}
