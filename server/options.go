package server

import (
	"fmt"

	"github.com/quicprochat/qpc/padding"
	"github.com/quicprochat/qpc/server/config"
	"github.com/quicprochat/qpc/server/store"
)

// OptionsFromConfig turns the configuration into server and store options.
// The caller adds Identity, Store and Logger to the first; Run adds the
// rest.
func OptionsFromConfig(c *config.Config) (Options, store.Options, error) {
	if err := c.Validate(); err != nil {
		return Options{}, store.Options{}, err
	}
	policy, err := padding.NewPolicy(c.Buckets...)
	if err != nil { // unreachable after Validate, but never ignore an error
		return Options{}, store.Options{}, fmt.Errorf("config: buckets: %w", err)
	}
	so := Options{
		Policy:              policy,
		Quota:               store.Quota{MaxMessages: c.QuotaMessages, MaxBytes: c.QuotaBytes},
		TTL:                 c.MessageTTL.Duration,
		MailboxTTL:          c.MailboxTTL.Duration,
		PurgeInterval:       c.PurgeInterval.Duration,
		MaxStreams:          c.MaxStreams,
		MaxConns:            c.MaxConns,
		MaxConnsPerAddr:     c.MaxConnsPerAddr,
		MaxConnsPerNet:      c.MaxConnsPerNet,
		MaxConnsTor:         c.MaxConnsTor,
		DeliveryBytes:       c.DeliveryBytes,
		DeliveryConnBytes:   c.DeliveryConnBytes,
		DeliverySourceBytes: c.DeliverySrcBytes,
		MaxStreamsPerAddr:   c.MaxStreamsPerAddr,
		MaxStreamsTotal:     c.MaxStreamsTotal,
		RequestBytes:        c.RequestBytes,
		RequestConnBytes:    c.RequestConnBytes,
		RequestSourceBytes:  c.RequestSrcBytes,
		RequestRate:         c.RequestRate,
		RequestBurst:        c.RequestBurst,
		HandshakeTimeout:    c.HandshakeTimeout.Duration,
		IdleTimeout:         c.IdleTimeout.Duration,
		RequestTimeout:      c.RequestTimeout.Duration,
		TokenEpoch:          c.TokenEpoch.Duration,
		TokenQuota:          c.TokenQuota,
		KeyPackagePool:      c.KeyPackagePool,
		KTLimits:            ktLimits(c),
	}
	if !c.RequireTokens {
		so.Authorizer = OpenAccess{}
	}
	sto := store.Options{
		MaxBatch: c.StoreMaxBatch,
		// The server enforces the exact Send limit before the store sees
		// an envelope; the store's limit is what the policy can still
		// deliver, so a store filled under a larger policy is refused at
		// open instead of stranding its envelopes.
		MaxEnvelope: MaxDeliverable(policy),
	}
	return so, sto, nil
}

// ktLimits are the server's KT budgets of the configuration.
func ktLimits(c *config.Config) KTLimits {
	k := c.KTSettings
	return KTLimits{
		KTPublishRate: k.KTPublishRate, KTPublishBurst: k.KTPublishBurst,
		KTProofRate: k.KTProofRate, KTProofBurst: k.KTProofBurst,
		KTProofRateTotal: k.KTProofRateTotal, KTProofBurstTotal: k.KTProofBurstTotal,
	}
}
