package cli

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runCLIStdin is runCLI with standard input read from stdin and no environment.
func runCLIStdin(t *testing.T, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	sys := System{
		Stdin:      stdin,
		Stdout:     &out,
		Stderr:     &errb,
		LookupEnv:  func(string) (string, bool) { return "", false },
		Environ:    func() []string { return nil },
		Now:        func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
		Executable: func() (string, error) { return "/usr/bin/wideep-launch", nil },
	}
	return Main(args, sys), out.String(), errb.String()
}

func lines(names ...string) string { return strings.Join(names, "\n") + "\n" }

func TestHostnames(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"ranges and padding":  {[]string{"node[1-3],gpu[01-02]"}, lines("node1", "node2", "node3", "gpu01", "gpu02")},
		"several expressions": {[]string{"n[3-4]", "login", "n[1-2]"}, lines("n3", "n4", "login", "n1", "n2")},
		"duplicates kept":     {[]string{"n[1-2],n1", "n2"}, lines("n1", "n2", "n1", "n2")},
		"padding from low":    {[]string{"node[08-10]", "x[1-010]"}, lines("node08", "node09", "node10", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10")},
		"mixed ranges":        {[]string{"n[1-3,5,07-09]"}, lines("n1", "n2", "n3", "n5", "n07", "n08", "n09")},
		// Slurm's order: the last bracket group does not vary fastest.
		"several groups": {[]string{"a[1-2]b[1-2]c[1-2]"}, lines("a1b1c1", "a1b1c2", "a2b1c1", "a2b1c2", "a1b2c1", "a1b2c2", "a2b2c1", "a2b2c2")},
		"suffix":         {[]string{"gpu[0-1]-ib"}, lines("gpu0-ib", "gpu1-ib")},
		"white space":    {[]string{"n1 n2\tn3\nn4"}, lines("n1", "n2", "n3", "n4")},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLIStdin(t, strings.NewReader(""), append([]string{"hostnames"}, tc.args...)...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, tc.want, out)
			assert.Empty(t, errOut)
		})
	}
}

func TestHostnamesErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"decreasing range": {[]string{"node[3-1]"}, `invalid hostlist "node[3-1]": "3-1" at offset 5: range is decreasing`},
		"unterminated":     {[]string{"node[1-2"}, `invalid hostlist "node[1-2": "[1-2" at offset 4: unterminated '['`},
		"empty":            {[]string{""}, `invalid hostlist "": empty hostlist`},
		"no arguments":     {nil, "hostnames: no hostlist given"},
		// Every expression is checked before anything is printed.
		"bad after good argument": {[]string{"node[1-3]", "gpu[]"}, `invalid hostlist "gpu[]": "[]" at offset 3`},
		"bad after good in one":   {[]string{"node[1-3],gpu[2-1]"}, `invalid hostlist "node[1-3],gpu[2-1]": "2-1" at offset 14`},
		"unknown flag":            {[]string{"--sorted", "n1"}, "hostnames: unknown flag: --sorted"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLIStdin(t, strings.NewReader(""), append([]string{"hostnames"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out, "nothing on stdout")
			assert.Contains(t, errOut, tc.want)
		})
	}
}

func TestHostlist(t *testing.T) {
	for name, tc := range map[string]struct {
		args  []string
		stdin string
		want  string
	}{
		"order and duplicates kept": {[]string{"n1", "n2", "n3", "n2"}, "", "n[1-3,2]\n"},
		"padding kept":              {[]string{"node01,node02,node3"}, "", "node[01-02,3]\n"},
		"arguments are hostlists":   {[]string{"node[1-3]", "node5", "login"}, "", "node[1-3,5],login\n"},
		"one name":                  {[]string{"login"}, "", "login\n"},
		"stdin":                     {[]string{"-"}, "n1 n2\nn3\t n2\n", "n[1-3,2]\n"},
		"stdin hostlists":           {[]string{"-"}, "n[1-2] n3\n", "n[1-3]\n"},
		"stdin between arguments":   {[]string{"a1", "-", "a9"}, "a2\na3\n", "a[1-3,9]\n"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLIStdin(t, strings.NewReader(tc.stdin), append([]string{"hostlist"}, tc.args...)...)
			require.Equal(t, 0, code, errOut)
			assert.Equal(t, tc.want, out)
			assert.Empty(t, errOut)
		})
	}
}

func TestHostlistErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		args  []string
		stdin io.Reader
		code  int
		want  string
	}{
		"no arguments":      {nil, strings.NewReader("n1"), 2, "hostlist: no host names given"},
		"bad argument":      {[]string{"n1", "n[3-1]"}, strings.NewReader(""), 2, `invalid hostlist "n[3-1]": "3-1" at offset 2`},
		"empty stdin":       {[]string{"-"}, strings.NewReader(" \n\t"), 2, "hostlist: no host names on standard input"},
		"bad name on stdin": {[]string{"-"}, strings.NewReader("n1 n[2\n"), 2, `invalid hostlist "n[2": "[2" at offset 1: unterminated`},
		"unreadable stdin": {[]string{"-"}, iotest.ErrReader(errors.New("input/output error")), 125,
			"hostlist: reading standard input: input/output error"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLIStdin(t, tc.stdin, append([]string{"hostlist"}, tc.args...)...)
			assert.Equal(t, tc.code, code)
			assert.Empty(t, out, "nothing on stdout")
			assert.Contains(t, errOut, tc.want)
		})
	}
}
