// Package population runs a scenario (lab/scenario) on a live qpc server:
// the real server.Server over bbolt, in process on 127.0.0.1, with
// delivery tokens required and its observer record on, and one real
// client.Client messenger per simulated user, so that every message is
// sealed, padded, paid with a token and sent over QUIC as in production.
// Time is compressed by the scenario's speed factor.
//
// Call Run:
//
//	sc, _ := scenario.Load("lab/scenarios/qpc-default.toml")
//	m, err := population.Run(ctx, population.Options{Scenario: sc, Seed: 1, Out: "runs/x"})
//
// It writes into Out the server's observer record (observer.jsonl), the
// ground truth (truth.jsonl), with Options.Network the network record of
// a UDP relay between clients and server (network.jsonl; lab/record
// defines the three) and the run's manifest (run.json, Manifest), and
// stops by itself
// once the schedule is done and the last receipts had time to leave.
//
// A run has two phases: the setup (users register, every conversation is
// started and joined) and the schedule, from Manifest.RunStartNS. The
// clients themselves add receipts and cover traffic as the scenario
// configures them; the ground truth records every envelope of those the
// server stored, through client.Options.SentEnvelope.
//
// Martiny et al.'s simulated traffic ([traffic]) is played for real: the
// correlated background is in the schedule, and stray receipts are
// receipts the clients drop (client.Options.KeepReceipt) while a
// random user sends a real one to a random peer in their place
// (Client.StrayReceipt); the truth marks those strays (record.StrayPrefix).
//
// Naive mode (and mailboxes.per_conversation = false) sets
// client.Options.SingleMailbox, which weakens privacy on purpose:
// it exists to measure what qpc's per-conversation mailboxes buy.
//
// Imports: client, server (and the stores, accounts, tokens and KT it is
// assembled from, as cmd/qpc-server assembles them), lab/netrecord,
// lab/record, lab/scenario.
package population
