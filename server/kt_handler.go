package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/quicprochat/qpc/account"
	"github.com/quicprochat/qpc/kt"
	"github.com/quicprochat/qpc/wire"
)

// ktRequest answers the key-transparency records (docs/protocol.md
// §4.11); handled is false for any other record.
func (s *Server) ktRequest(ctx context.Context, m wire.Message) (resp wire.Message, handled bool, err error) {
	switch m.(type) {
	case *wire.KTPublish, *wire.KTLookup, *wire.KTHistory, *wire.KTConsistency, *wire.KTCheckpoint, *wire.KTTile:
	default:
		return nil, false, nil
	}
	d := s.opts.KT
	if d == nil {
		return nil, true, wire.Errorf(wire.CodeUnavailable, "this server keeps no key-transparency log")
	}
	switch m := m.(type) {
	case *wire.KTPublish:
		resp, err = s.ktPublish(ctx, d, m)
	case *wire.KTLookup:
		var p *kt.LookupProof
		if p, err = d.Lookup(ctx, m.Label, m.KnownSize); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTHistory:
		if err = s.ktOwner(ctx, m.Session, m.Label); err != nil {
			return nil, true, err
		}
		var p *kt.HistoryProof
		if p, err = d.History(ctx, m.Label, m.Since, m.KnownSize); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTConsistency:
		var p *kt.ConsistencyProof
		if p, err = d.Consistency(ctx, m.Old); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	case *wire.KTTile:
		var data []byte
		if data, err = d.LogResource(m.Path); err == nil {
			resp = &wire.KTTileData{Data: data}
		} else {
			err = wire.Errorf(wire.CodeNotFound, "no such log resource")
		}
	case *wire.KTCheckpoint:
		var p *kt.ConsistencyProof
		if p, err = d.Consistency(ctx, 0); err == nil {
			resp = &wire.KTProof{Proof: p.Marshal()}
		}
	}
	return resp, true, ktError(err)
}

// ktOwner checks that the session belongs to the account registered as label.
func (s *Server) ktOwner(ctx context.Context, session [wire.SessionSize]byte, label string) error {
	if s.opts.Accounts == nil {
		return wire.Errorf(wire.CodeUnavailable, "this server has no accounts")
	}
	if _, err := s.opts.Accounts.AuthenticateUsername(ctx, account.Token(session), label); err != nil {
		return accountError(err)
	}
	return nil
}

// ktPublish publishes a binding under the session's own username. The
// binding must name the label and carry a valid signature by its identity
// key: the server publishes nothing a client could not have signed.
func (s *Server) ktPublish(ctx context.Context, d *kt.Directory, m *wire.KTPublish) (wire.Message, error) {
	if err := s.ktOwner(ctx, m.Session, m.Label); err != nil {
		return nil, err
	}
	b, err := kt.ParseBinding(m.Value)
	if err != nil || b.Verify(m.Label) != nil {
		return nil, wire.Errorf(wire.CodeProtocol, "binding does not verify for this label")
	}
	p, err := d.Publish(ctx, m.Label, m.Value)
	if err != nil {
		return nil, ktError(err)
	}
	return &wire.KTPublished{Version: p.Version, Epoch: p.Epoch}, nil
}

func ktError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kt.ErrLabel), errors.Is(err, kt.ErrValue):
		return wire.Errorf(wire.CodeProtocol, "invalid label or value")
	case errors.Is(err, kt.ErrTooManyVersions):
		return wire.Errorf(wire.CodeQuota, "label has too many versions")
	case errors.Is(err, kt.ErrClosed), errors.Is(err, kt.ErrNoEpoch),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return errors.Join(wire.Errorf(wire.CodeUnavailable, "key transparency unavailable, retry later"), err)
	}
	if _, ok := wire.CodeOf(err); ok {
		return err
	}
	return err
}

// KTHandler serves the key-transparency log read-only over HTTP as C2SP
// tlog-tiles under prefix (GET <prefix>/checkpoint, <prefix>/tile/...).
// Mount it on its own public listener, never on the admin one.
func KTHandler(d *kt.Directory, prefix string) http.Handler {
	return kt.TilesHandler(d.LogDir(), prefix)
}
