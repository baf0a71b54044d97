// Package trace is the lab's trace mode: it writes the observer record the
// delivery server would write (lab-common schema v1) straight from a model
// of a scenario, for 10^4 to 10^6 users, without a server, a client or any
// cryptography. It models what the server sees: one mailbox per user
// (naive, Signal-like) or per conversation per user (qpc), which
// connection reads and writes each mailbox (the client SDK's rule: a
// connection per conversation, one for cover traffic), buckets, token
// epochs, deliveries, acks, receipts (off, at once, jittered), replies and
// cover traffic (a Poisson tick per user; a queued real message or a
// dummy to one of the user's conversations). The traffic of Martiny et
// al.'s published simulation, stray receipts and correlated background
// (replies to and repeats of earlier texts), is on when the scenario's
// [traffic] keys say so; the default is every receipt delivered and
// independent background.
//
// Call FromScenario with a scenario (lab/scenario) for the Params, so
// that the trace models the traffic a live run of the same file plays;
// then Generate with them and a function that takes each event; events
// come in time order. Memory is O(users × conversations per user) for the
// graph plus what is in flight, never O(events). Generate returns the
// ground truth the scorer needs (lab/attack/score.Truth).
//
// FromSchedule is trace mode for a scenario file (lab/scenario): it plays
// the schedule a live run plays (Scenario.Generate) and writes the record
// a live run of it gives, holding the events in memory (calibration
// scale); TestLabCalibration checks it against a live run.
//
// docs/research.md, "Trace mode and calibration", says what the model
// leaves out and how it is checked against a live run.
package trace
