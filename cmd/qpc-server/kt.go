package main

import (
	"encoding/hex"
	"fmt"
	"os"

	"github.com/quicprochat/qpc/server"
	"github.com/quicprochat/qpc/server/config"
)

// ktVKey prints what a client pins for this server's key transparency:
// the note verifier key of its checkpoints, then the VRF public key and
// the directory configuration hash, then, with kt_witness_policy, the
// witness policy checkpoints must satisfy (one directive a line: `qpc
// init --kt @file` takes all of it). The keys are created on first use.
func (c *cli) ktVKey(cfg *config.Config) int {
	policy, err := cfg.KTWitnessPolicyParsed()
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	keys, err := server.LoadOrCreateKTKeys(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(c.stderr, "qpc-server kt-vkey: %v\n", err)
		return exitError
	}
	kc := server.KTConfig(cfg, keys)
	h := kc.Hash()
	fmt.Fprintln(c.stdout, keys.VKey)
	fmt.Fprintf(c.stdout, "vrf-key %s\n", hex.EncodeToString(kc.VRFPublicKey))
	fmt.Fprintf(c.stdout, "config %s\n", hex.EncodeToString(h[:]))
	if policy.Required() {
		fmt.Fprint(c.stdout, policy.Text())
	}
	return exitOK
}
