// Package app composes Portico from its modules: the YAML root config, the
// logger, and the fx options `portico serve` runs. It is importable so the
// demo and the integration tests start exactly what the binary starts.
package app
