package kt

import (
	"errors"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Handler serves the directory's public log read-only under prefix: the
// tlog-tiles resources of TilesHandler, and GET <prefix>/updates/<epoch>
// (decimal, no leading zeros), the update list of a committed epoch (§1.5),
// at most MaxUpdateListSize bytes.
func (d *Directory) Handler(prefix string) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	tiles := tilesHandler(d.LogResource, prefix)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, prefix+"/"+UpdatesPath)
		if !ok {
			tiles.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		e, ok := ParseUpdatesPath(UpdatesPath + rest)
		if !ok {
			http.NotFound(w, r)
			return
		}
		data, err := d.UpdateList(e)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		// A served epoch's list never changes.
		w.Header().Set("Cache-Control", "public, max-age=604800, immutable")
		if r.Method == http.MethodGet {
			w.Write(data)
		}
	})
}

// UpdatesPath is the resource prefix of update lists: UpdatesPath +
// decimal epoch, relative to the log's base URL.
const UpdatesPath = "updates/"

// UpdatesResource is the resource path of epoch e's update list.
func UpdatesResource(e uint64) string { return UpdatesPath + strconv.FormatUint(e, 10) }

// ParseUpdatesPath parses a resource path made by UpdatesResource.
func ParseUpdatesPath(rel string) (uint64, bool) {
	s, ok := strings.CutPrefix(rel, UpdatesPath)
	if !ok || s == "" || len(s) > 20 {
		return 0, false
	}
	e, err := strconv.ParseUint(s, 10, 64)
	if err != nil || strconv.FormatUint(e, 10) != s {
		return 0, false
	}
	return e, true
}

// TilesHandler serves the epoch log read-only as C2SP tlog-tiles under
// prefix: GET <prefix>/checkpoint, <prefix>/tile/<L>/<N>[.p/<W>] and
// <prefix>/tile/entries/<N>[.p/<W>]. Nothing else in the log directory
// (Tessera's state files) is reachable.
func TilesHandler(logDir, prefix string) http.Handler {
	return tilesHandler(func(rel string) ([]byte, error) { return ReadLogResource(logDir, rel) }, prefix)
}

// tilesHandler is TilesHandler over read (ReadLogResource's contract).
func tilesHandler(read func(rel string) ([]byte, error), prefix string) http.Handler {
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
		data, err := read(rel)
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
