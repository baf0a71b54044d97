package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quicprochat/qpc/server/metrics"
	"github.com/quicprochat/qpc/server/store"
)

// readyCheck is one extra condition of Ready, added by a subsystem.
type readyCheck struct {
	name  string
	check func(context.Context) error
}

// AddReadyCheck adds a condition to Ready and /readyz: the onion service
// adds "tor" (published when enabled), for example. check must be quick.
func (s *Server) AddReadyCheck(name string, check func(context.Context) error) {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.readyCheck = append(s.readyCheck, readyCheck{name, check})
}

// ErrDraining is Ready's answer once Shutdown has begun.
var ErrDraining = errors.New("draining: shutting down")

// Ready reports whether the server should receive traffic: not draining,
// at least one listener up, the store answering reads, and every check
// added with AddReadyCheck passing. The error says which failed.
func (s *Server) Ready(ctx context.Context) error {
	err := s.ready(ctx)
	s.opts.Metrics.SetReady(err == nil)
	return err
}

func (s *Server) ready(ctx context.Context) error {
	s.mu.RLock()
	draining, listeners := s.draining, len(s.listeners)
	s.mu.RUnlock()
	if draining {
		return ErrDraining
	}
	if listeners == 0 {
		return errors.New("listeners: none up yet")
	}
	// A read of a mailbox that cannot exist (all-zero ID) touches the
	// store without writing: NotFound means it answers.
	if _, err := s.opts.Store.Mailbox(ctx, [store.MailboxIDSize]byte{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("store: %w", err)
	}
	s.readyMu.Lock()
	checks := append([]readyCheck(nil), s.readyCheck...)
	s.readyMu.Unlock()
	for _, c := range checks {
		if err := c.check(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// AdminHandler serves the operator endpoints, for a listener that must
// not face the public (cmd/qpc-server binds it to 127.0.0.1:9090):
//
//	/healthz  200 while the process runs and answers HTTP
//	/readyz   200 when Ready, else 503 with the reason; 503 from the
//	          first moment of a drain, so load balancers stop sending
//	/metrics  Prometheus exposition of Options.Metrics (404 without it)
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := s.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if s.opts.Metrics != nil {
		h := s.opts.Metrics.Handler()
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
			// Gauges read at scrape time: one small read each.
			if s.opts.KT != nil {
				if lag, err := s.opts.KT.EpochLag(); err == nil {
					s.opts.Metrics.SetKTEpochLag(int(lag))
				}
				st := s.opts.KT.PublishStats()
				s.opts.Metrics.SetKTPublish(metrics.KTPublish{
					WitnessedSize: st.WitnessedSize, WitnessRequests: st.WitnessRequests,
					WitnessFailures: st.WitnessFailures, Unwitnessed: st.Unwitnessed, Latency: st.LastLatency,
				})
			}
			s.Ready(r.Context())
			h.ServeHTTP(w, r)
		})
	}
	return mux
}

// contextWithTimeout derives a context from the connection's, so that it
// ends with the connection too.
func contextWithTimeout(conn *quic.Conn, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(conn.Context(), d)
}
