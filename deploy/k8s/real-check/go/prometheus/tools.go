//go:build tools

// The binaries this module builds for the stand-in of prom/prometheus: the server and promtool.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
