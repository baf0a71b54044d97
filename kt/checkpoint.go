package kt

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a C2SP tlog-checkpoint: the origin, tree size and root
// hash of the epoch log, in a signed note.
//
//	<origin>
//	<size, decimal>
//	<root hash, base64>
//	[extension lines]
//
//	— <key name> <base64 signature>
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	Raw    []byte // the whole signed note
}

// ErrCheckpoint reports a checkpoint that does not parse or verify.
var ErrCheckpoint = errors.New("kt: bad checkpoint")

// OpenCheckpoint verifies the note signature with v and parses the body.
func OpenCheckpoint(raw []byte, v note.Verifier) (*Checkpoint, error) {
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	cp, err := parseCheckpointBody(n.Text)
	if err != nil {
		return nil, err
	}
	if cp.Origin != v.Name() {
		return nil, fmt.Errorf("%w: origin %q, want %q", ErrCheckpoint, cp.Origin, v.Name())
	}
	cp.Raw = bytes.Clone(raw)
	return cp, nil
}

func parseCheckpointBody(text string) (*Checkpoint, error) {
	lines := strings.SplitN(text, "\n", 4)
	if len(lines) < 4 || lines[0] == "" {
		return nil, fmt.Errorf("%w: too few lines", ErrCheckpoint)
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return nil, fmt.Errorf("%w: bad size", ErrCheckpoint)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return nil, fmt.Errorf("%w: bad root hash", ErrCheckpoint)
	}
	cp := &Checkpoint{Origin: lines[0], Size: size}
	copy(cp.Root[:], root)
	return cp, nil
}
