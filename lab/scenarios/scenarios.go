package scenarios

import (
	"embed"
	"fmt"

	"github.com/quicprochat/qpc/lab/scenario"
)

//go:embed *.toml
var files embed.FS

// Load parses the checked-in scenario name (martiny-naive,
// qpc-default, ...).
func Load(name string) (*scenario.Scenario, error) {
	raw, err := files.ReadFile(name + ".toml")
	if err != nil {
		return nil, fmt.Errorf("scenarios: no checked-in scenario %q", name)
	}
	sc, err := scenario.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("scenarios: %s.toml: %w", name, err)
	}
	return sc, nil
}
