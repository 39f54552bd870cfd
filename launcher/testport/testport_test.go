package testport_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/testport"
	"github.com/wideep/wideep-launch/launcher/testproc"
)

var helpers = testproc.New("WIDEEP_TESTPORT_HELPER")

func init() {
	// hold takes n windows, prints their bases and keeps them until its
	// stdin closes.
	helpers.Register("hold", func(args []string) int {
		n, _ := strconv.Atoi(args[0])
		t := &holder{}
		for range n {
			fmt.Println(testport.Window(t, testport.BlockSize))
		}
		bufio.NewReader(os.Stdin).ReadString('\n')
		return 0
	})
}

// holder is the testing.TB a helper process needs: failing ends it.
type holder struct{ testing.TB }

func (*holder) Helper()        {}
func (*holder) Cleanup(func()) {}
func (*holder) Fatalf(f string, a ...any) {
	fmt.Fprintf(os.Stderr, f+"\n", a...)
	os.Exit(1)
}

func TestMain(m *testing.M) { helpers.Main(m) }

func TestWindowsOfOneProcessDoNotOverlap(t *testing.T) {
	seen := map[int]bool{}
	for range 40 {
		base := testport.Window(t, testport.BlockSize)
		for p := base; p < base+testport.BlockSize; p++ {
			require.False(t, seen[p], "port %d handed out twice", p)
			seen[p] = true
		}
	}
}

// The case the package exists for: another test binary running at the same
// time never gets a window this one holds.
func TestWindowsOfTwoProcessesDoNotOverlap(t *testing.T) {
	const held = 100
	cmd := helpers.Command(t, "hold", strconv.Itoa(held))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	theirs := map[int]bool{}
	sc := bufio.NewScanner(out)
	for len(theirs) < held && sc.Scan() {
		base, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		require.NoError(t, err, "helper said %q", sc.Text())
		theirs[base] = true
	}
	require.Len(t, theirs, held, "the helper took its windows")
	for range 100 {
		base := testport.Window(t, 8)
		assert.False(t, theirs[base], "window %d is held by the other process", base)
	}
}

func TestWindowIsFree(t *testing.T) {
	base := testport.Window(t, 16)
	for p := base; p < base+16; p++ {
		ln, err := net.Listen("tcp", "127.0.0.8:"+strconv.Itoa(p))
		require.NoError(t, err, "port %d", p)
		ln.Close()
	}
}
