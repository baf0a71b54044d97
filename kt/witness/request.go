package witness

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// MaxProofLines is the most consistency proof lines a request may carry
// (c2sp.org/tlog-witness § add-checkpoint).
const MaxProofLines = 63

// ErrMalformed reports a request body that is not an add-checkpoint
// request (answered 400).
var ErrMalformed = errors.New("witness: malformed request")

// Request is a decoded add-checkpoint request body:
//
//	old <size>
//	<base64 hash>        (0 to 63 consistency proof lines)
//	<empty line>
//	<signed checkpoint>
type Request struct {
	OldSize    uint64
	Proof      [][]byte // 32-byte RFC 6962 hashes
	Checkpoint []byte   // the signed note, as sent
}

// ParseRequest decodes an add-checkpoint request body. It checks the
// framing only; the checkpoint is neither parsed nor verified here.
func ParseRequest(body []byte) (*Request, error) {
	line, rest, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return nil, fmt.Errorf("%w: no old size line", ErrMalformed)
	}
	num, ok := bytes.CutPrefix(line, []byte("old "))
	if !ok {
		return nil, fmt.Errorf("%w: first line is not \"old <size>\"", ErrMalformed)
	}
	old, err := parseSize(num)
	if err != nil {
		return nil, fmt.Errorf("%w: old size: %v", ErrMalformed, err)
	}
	r := &Request{OldSize: old}
	for {
		line, rest, ok = bytes.Cut(rest, []byte("\n"))
		if !ok {
			return nil, fmt.Errorf("%w: no empty line before the checkpoint", ErrMalformed)
		}
		if len(line) == 0 {
			break
		}
		if len(r.Proof) == MaxProofLines {
			return nil, fmt.Errorf("%w: more than %d proof lines", ErrMalformed, MaxProofLines)
		}
		// A 32-byte hash is exactly 44 base64 characters; checking the
		// length first bounds the work on junk.
		if len(line) != 44 {
			return nil, fmt.Errorf("%w: proof line %d is not a base64 hash", ErrMalformed, len(r.Proof)+1)
		}
		h, err := base64.StdEncoding.Strict().DecodeString(string(line))
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("%w: proof line %d is not a base64 hash", ErrMalformed, len(r.Proof)+1)
		}
		r.Proof = append(r.Proof, h)
	}
	if len(rest) == 0 {
		return nil, fmt.Errorf("%w: no checkpoint", ErrMalformed)
	}
	r.Checkpoint = rest
	return r, nil
}

// parseSize reads an ASCII decimal without leading zeroes ("0" for zero).
func parseSize(b []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, errors.New("not a decimal number")
	}
	if strconv.FormatUint(n, 10) != string(b) {
		return 0, errors.New("not in canonical decimal")
	}
	return n, nil
}

// Marshal encodes the request body (the inverse of ParseRequest).
func (r *Request) Marshal() []byte {
	b := fmt.Appendf(nil, "old %d\n", r.OldSize)
	for _, h := range r.Proof {
		b = base64.StdEncoding.AppendEncode(b, h)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, r.Checkpoint...)
}
