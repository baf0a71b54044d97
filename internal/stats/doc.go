// Package stats holds the statistical tests the timing tests use: the
// one- and two-sample Kolmogorov–Smirnov tests with the asymptotic
// p-value from the Kolmogorov distribution. It imports only the standard
// library.
package stats
