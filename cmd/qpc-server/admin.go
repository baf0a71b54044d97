package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/quicprochat/qpc/server"
)

// startAdmin serves /healthz, /readyz and /metrics on admin_listen (TCP),
// unless it is "off". The returned func closes the listener.
func startAdmin(cfg *server.Config, srv *server.Server, log *slog.Logger) (func(), error) {
	if cfg.AdminListen == server.AdminOff {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", cfg.AdminListen)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("admin listen %s: address already in use (choose another with --admin-listen, or off)", cfg.AdminListen)
	}
	if err != nil {
		return nil, fmt.Errorf("admin listen: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.AdminHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	go hs.Serve(ln)
	log.Info("admin listening", "addr", ln.Addr().String(), "paths", "/healthz /readyz /metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	}, nil
}
