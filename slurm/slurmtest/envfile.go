package slurmtest

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// EnvFile reads a job environment captured as NAME=value lines (as in
// slurm/testdata/env, dumps of real Slurm tasks); empty lines and lines
// starting with '#' are skipped. Tests feed it to code that reads SLURM_*
// through an injected lookup.
func EnvFile(tb testing.TB, path string) map[string]string {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatalf("slurmtest: %v", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			tb.Fatalf("slurmtest: %s: line without '=': %q", path, line)
		}
		env[k] = v
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("slurmtest: reading %s: %v", path, err)
	}
	return env
}
