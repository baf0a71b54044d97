package population

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/quicprochat/qpc/client/protocol"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/accounts"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
	"github.com/quicprochat/qpc/tokens"
)

// labServer is a real qpc server assembled in process as qpc-server
// assembles it (bbolt store, OPAQUE accounts, delivery tokens required,
// a key-transparency directory), with the limits a population of
// hundreds of users on 127.0.0.1 needs raised.
type labServer struct {
	dir    string
	id     *server.Identity
	srv    *server.Server
	bolt   *store.Bolt
	accts  *accounts.Service
	kt     *kt.Directory
	ktKeys *server.KTKeys
	addr   string // qpc:// address
	host   string // its host:port
	policy padding.Policy
	obs    *server.Observer

	cancel  context.CancelFunc
	serving sync.WaitGroup
	keys    chan struct{}
}

// tokenEpoch is the token epoch of a lab server: longer than any run, so
// a run never crosses one (a real epoch is a day; time compression
// does not apply to it).
const tokenEpoch = time.Hour

// startServer runs the server in dir on 127.0.0.1; observer, if not nil,
// receives the observer record.
func startServer(dir string, observer io.Writer, log *slog.Logger) (_ *labServer, err error) {
	s := &labServer{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if _, err := server.CreateIdentity(dir); err != nil {
		return nil, err
	}
	if s.id, err = server.LoadIdentity(dir); err != nil {
		return nil, err
	}
	if s.bolt, err = store.Open(filepath.Join(dir, "qpc.db"), store.Options{}); err != nil {
		return nil, err
	}
	pin := s.id.Pin()
	akeys, err := accounts.LoadOrCreateKeys(dir, pin[:])
	if err != nil {
		return nil, err
	}
	ao := accounts.Options{}
	// Every simulated user registers and logs in from 127.0.0.1.
	ao.SourceRate, ao.SourceBurst = 100_000, 100_000
	ao.RegisterRate, ao.RegisterBurst = 100_000, 100_000
	ao.RegisterSourceRate, ao.RegisterSourceBurst = 100_000, 100_000
	if s.accts, err = accounts.Open(dir, akeys, ao); err != nil {
		return nil, err
	}
	secret, err := server.LoadOrCreateTokenSecret(dir)
	if err != nil {
		return nil, err
	}
	issuer, err := tokens.NewIssuer(secret, tokens.WithEpochLength(tokenEpoch))
	if err != nil {
		return nil, err
	}
	ktDir := filepath.Join(dir, "kt")
	if err := os.MkdirAll(ktDir, 0o700); err != nil {
		return nil, err
	}
	if s.ktKeys, err = server.LoadOrCreateKTKeys(ktDir); err != nil {
		return nil, err
	}
	s.kt, err = kt.OpenDirectory(context.Background(), kt.DirectoryOptions{
		Dir: ktDir, LogSigner: s.ktKeys.Signer, LogVerifier: s.ktKeys.Verifier, VRFKey: s.ktKeys.VRF,
		EpochInterval: 250 * time.Millisecond, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	s.kt.Start()
	s.policy = padding.Default
	so := server.Options{
		Identity: s.id, Store: s.bolt, Accounts: s.accts, Tokens: issuer, TokenEpoch: tokenEpoch, KT: s.kt,
		Policy: s.policy, Logger: log,
		// Tokens stay required (every create and send pays one); only
		// the per-account quota is raised: compressed time spends a
		// day's tokens in minutes.
		TokenQuota:      1_000_000,
		MaxConns:        100_000,
		MaxConnsPerAddr: 100_000,
		MaxConnsPerNet:  100_000,
		RequestRate:     10_000,
		RequestBurst:    10_000,
		MaxSubsPerConn:  1024,
		// Every user holds subscription streams (a Follow), all from
		// 127.0.0.1: the defaults (256 per address, 2,048 in all) end
		// the Follow loops of a population of a few hundred.
		MaxStreamsPerAddr: 1_000_000,
		MaxStreamsTotal:   1_000_000,
		// One source may hold the whole delivery and request memory.
		DeliverySourceBytes: config.DefaultDeliveryBytes,
		RequestSourceBytes:  32 << 20,
	}
	if s.obs, err = setObserver(&so, observer); err != nil {
		return nil, err
	}
	if s.srv, err = server.New(so); err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.host = pc.LocalAddr().String()
	s.addr = s.id.Address(s.host).String()
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := s.srv.Serve(pc); err != nil {
			log.Error("lab server", "err", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.keys = make(chan struct{})
	go func() {
		defer close(s.keys)
		server.PublishTokenKeys(ctx, s.kt, issuer, tokenEpoch, log)
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	if err := protocol.WaitTokenKey(wctx, s.addr, s.pin(), protocol.Options{Policy: s.policy}, 50*time.Millisecond); err != nil {
		return nil, fmt.Errorf("waiting for the token key in key transparency: %w", err)
	}
	return s, nil
}

func (s *labServer) pin() protocol.KTPin {
	cfg := s.kt.Config()
	return protocol.KTPin{VKey: s.ktKeys.VKey, VRFKey: cfg.VRFPublicKey, ConfigHash: cfg.Hash()}
}

// close shuts the server down and closes what it holds.
func (s *labServer) close() error {
	var first error
	if s.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		first = s.srv.Shutdown(ctx)
		cancel()
		s.serving.Wait()
	}
	if s.cancel != nil {
		s.cancel()
		<-s.keys
	}
	if s.kt != nil {
		s.kt.Close()
	}
	if s.accts != nil {
		s.accts.Close()
	}
	if s.bolt != nil {
		if err := s.bolt.Close(); err != nil && first == nil {
			first = err
		}
	}
	if s.obs != nil {
		if err := s.obs.Flush(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
