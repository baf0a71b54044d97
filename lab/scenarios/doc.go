// Package scenarios holds the lab's checked-in scenario files (the *.toml
// beside it, docs/research.md "Checked-in scenarios"), embedded, so that
// code that models a scenario (lab/report's trace-mode cases) reads the
// same file a live run (qpc-lab run lab/scenarios/<name>.toml) plays.
//
// Call Load with a file's name without .toml:
//
//	sc, err := scenarios.Load("martiny-naive")
//
// Imports: lab/scenario.
package scenarios
