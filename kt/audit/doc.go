// Package audit checks that a key-transparency log's prefix tree only
// ever grows: each epoch's tree must be the previous epoch's tree with
// that epoch's published leaves added, nothing removed and nothing
// replaced (docs/key-transparency.md §8). Clients check each answer
// against one epoch's root; only an auditor, replaying every epoch, can
// tell that a log whose epochs alternate two maps is lying.
//
// Open an Auditor over the log's public base URL (HTTP, the server's
// kt_listen) and the log's note verifier key:
//
//	a, err := audit.Open(path, audit.Options{Log: audit.HTTPLog(baseURL, nil), Verifier: v})
//	defer a.Close()
//	cp, err := a.Follow(ctx)           // fetch the newest checkpoint and audit up to it
//	err = a.Audit(ctx, signedCheckpoint) // or audit up to a checkpoint one was given
//
// A witness cosigns only what the auditor accepted when its log's Check
// hook calls CheckTree. Every refusal is an *Error naming the epoch and the check
// (Check… constants); any other error (the log unreachable, a missing
// resource) is not evidence of misbehaviour, and the next call retries.
//
// The auditor keeps its own copy of the tree (kt.ReplayTree) and its
// position in the log in one bbolt file, updated in one transaction per
// epoch, so it resumes where it stopped. It imports kt only.
package audit
