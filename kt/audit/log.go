package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"

	"github.com/quicprochat/qpc/kt"
	"github.com/transparency-dev/tessera/api/layout"
)

// Log is where an auditor reads a key-transparency log: its public
// resources by path relative to the log's base, "checkpoint", the
// tlog-tiles "tile/…" paths and kt.UpdatesResource(epoch). A resource the
// log does not have is an error wrapping fs.ErrNotExist.
type Log interface {
	ReadResource(ctx context.Context, rel string) ([]byte, error)
}

// maxResource bounds what the auditor reads of one resource: the largest
// update list (tiles and entry bundles are far smaller).
const maxResource = kt.MaxUpdateListSize

// HTTPLog reads the log served at base (the server's kt_listen and
// prefix, e.g. "http://127.0.0.1:4480/kt") with c (nil:
// http.DefaultClient).
func HTTPLog(base string, c *http.Client) Log {
	if c == nil {
		c = http.DefaultClient
	}
	return httpLog{base: strings.TrimSuffix(base, "/"), c: c}
}

type httpLog struct {
	base string
	c    *http.Client
}

func (h httpLog) ReadResource(ctx context.Context, rel string) ([]byte, error) {
	u := h.base + "/" + rel
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("audit: GET %s: %w", u, err)
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("audit: GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("audit: GET %s: %w", u, fs.ErrNotExist)
	default:
		return nil, fmt.Errorf("audit: GET %s: HTTP %d", u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResource+1))
	if err != nil {
		return nil, fmt.Errorf("audit: GET %s: %w", u, err)
	}
	if len(b) > maxResource {
		return nil, fmt.Errorf("audit: GET %s: more than %d bytes", u, maxResource)
	}
	return b, nil
}

// DirectoryLog reads a kt.Directory in the same process: the same
// resources its HTTP handler serves.
func DirectoryLog(d *kt.Directory) Log { return dirLog{d} }

type dirLog struct{ d *kt.Directory }

func (l dirLog) ReadResource(_ context.Context, rel string) ([]byte, error) {
	var b []byte
	var err error
	if e, ok := kt.ParseUpdatesPath(rel); ok {
		b, err = l.d.UpdateList(e)
	} else {
		b, err = l.d.LogResource(rel)
	}
	if errors.Is(err, kt.ErrResource) {
		return nil, fmt.Errorf("audit: %s: %w", rel, fs.ErrNotExist)
	}
	return b, err
}

// partialOrFull reads a tile or entry bundle at partial width p, falling
// back to the full one once the log has completed it (tlog-tiles).
func partialOrFull(ctx context.Context, l Log, path func(p uint8) string, p uint8) ([]byte, error) {
	b, err := l.ReadResource(ctx, path(p))
	if p != 0 && errors.Is(err, fs.ErrNotExist) {
		return l.ReadResource(ctx, path(0))
	}
	return b, err
}

func tileFetcher(l Log) func(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return func(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
		return partialOrFull(ctx, l, func(p uint8) string { return layout.TilePath(level, index, p) }, p)
	}
}

func bundleFetcher(l Log) func(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	return func(ctx context.Context, index uint64, p uint8) ([]byte, error) {
		return partialOrFull(ctx, l, func(p uint8) string { return layout.EntriesPath(index, p) }, p)
	}
}
