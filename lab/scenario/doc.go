// Package scenario reads the traffic-analysis lab's scenario files and
// turns one, with a seed, into a schedule: who is in the population, who
// talks with whom, and every message with its (simulated) time, sender,
// conversation and size. The same scenario and seed give the same
// schedule, byte for byte (Schedule.Hash).
//
// Call Parse (or Load) first, then Generate:
//
//	sc, err := scenario.Load("lab/scenarios/qpc-default.toml")
//	sched, err := sc.Generate(seed)
//
// The file format is TOML; docs/research.md ("Scenarios and runs") lists
// every key. Durations are simulated time: lab/population runs a schedule
// faster than real time by a speed factor, so a simulated day takes a
// minute or two.
//
// What a schedule does not fix is what the clients add by themselves:
// receipts (their delay is drawn by the client from the scenario's
// distribution) and cover traffic (the client's own Poisson schedule).
// lab/population writes those to the ground truth as they happen.
//
// Imports: the standard library and github.com/BurntSushi/toml.
package scenario
