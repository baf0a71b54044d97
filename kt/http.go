package kt

import (
	"errors"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// TilesHandler serves the epoch log read-only as C2SP tlog-tiles under
// prefix: GET <prefix>/checkpoint, <prefix>/tile/<L>/<N>[.p/<W>] and
// <prefix>/tile/entries/<N>[.p/<W>]. Nothing else in the log directory
// (Tessera's state files) is reachable.
func TilesHandler(logDir, prefix string) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		rel, ok := strings.CutPrefix(r.URL.Path, prefix+"/")
		if !ok || !validResource(rel) {
			http.NotFound(w, r)
			return
		}
		if rel == "checkpoint" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
			if !strings.Contains(rel, ".p/") {
				// Full tiles never change (tlog-tiles: immutable).
				w.Header().Set("Cache-Control", "public, max-age=604800, immutable")
			}
		}
		data, err := ReadLogResource(logDir, rel)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		if r.Method == http.MethodGet {
			w.Write(data)
		}
	})
}

// ErrResource reports a log resource path outside tlog-tiles, or one that
// does not exist.
var ErrResource = errors.New("kt: no such log resource")

// ReadLogResource reads one tlog-tiles resource of the log in logDir:
// "checkpoint", "tile/<L>/<N>[.p/<W>]" or "tile/entries/<N>[.p/<W>]".
// The same bytes are served over HTTP and over QUIC (KTTile).
func ReadLogResource(logDir, rel string) ([]byte, error) {
	if !validResource(rel) {
		return nil, ErrResource
	}
	data, err := os.ReadFile(filepath.Join(logDir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, ErrResource
	}
	return data, nil
}

func validResource(rel string) bool {
	if rel != path.Clean(rel) || strings.Contains(rel, "..") {
		return false
	}
	return rel == "checkpoint" || strings.HasPrefix(rel, "tile/") && validTilePath(rel[len("tile/"):])
}

// validTilePath accepts "<L>/<N>[.p/<W>]" and "entries/<N>[.p/<W>]" where
// N is groups of three digits, all but the last prefixed with "x".
func validTilePath(p string) bool {
	parts := strings.Split(p, "/")
	if len(parts) < 2 {
		return false
	}
	if parts[0] != "entries" && !digits(parts[0], 1, 2) {
		return false
	}
	rest := parts[1:]
	if n := len(rest); n >= 2 && strings.HasSuffix(rest[n-2], ".p") {
		if !digits(rest[n-1], 1, 3) {
			return false
		}
		rest = append(rest[:n-2:n-2], strings.TrimSuffix(rest[n-2], ".p"))
	}
	for i, g := range rest {
		if i < len(rest)-1 {
			if !strings.HasPrefix(g, "x") || !digits(g[1:], 3, 3) {
				return false
			}
		} else if !digits(g, 3, 3) {
			return false
		}
	}
	return true
}

func digits(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
