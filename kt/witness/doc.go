// Package witness is a C2SP tlog-witness: it cosigns checkpoints of the
// transparency logs it is told to trust, only after checking that each one
// is consistent with everything it cosigned for that log before.
//
// Call Open first, with the data directory and the logs to trust (see Log);
// it creates the witness key on first start. Serve the returned *Witness as
// an http.Handler (it answers POST /add-checkpoint) and Close it when done.
package witness
