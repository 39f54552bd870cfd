package testport

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
			fmt.Println(Window(t, BlockSize))
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
	for range 10 {
		base := Window(t, BlockSize)
		for p := base; p < base+BlockSize; p++ {
			require.False(t, seen[p], "port %d handed out twice", p)
			seen[p] = true
		}
	}
}

// The case the package exists for: while another test process holds its
// windows, this one cannot lock them; once that process is gone (its locks
// die with it, whatever its end), they are free again.
func TestWindowsOfAnotherProcess(t *testing.T) {
	const held = 4
	cmd := helpers.Command(t, "hold", strconv.Itoa(held))
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	var theirs []int
	sc := bufio.NewScanner(out)
	for len(theirs) < held && sc.Scan() {
		base, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		require.NoError(t, err, "helper said %q", sc.Text())
		theirs = append(theirs, base)
	}
	require.Len(t, theirs, held, "the helper took its windows")

	dir, err := lockDir()
	require.NoError(t, err)
	for _, base := range theirs {
		f, err := lock(dir, base)
		require.NoError(t, err)
		assert.Nil(t, f, "block %d is held by the other process", base)
	}

	require.NoError(t, cmd.Process.Kill())
	cmd.Wait()
	for _, base := range theirs {
		f, err := lock(dir, base)
		require.NoError(t, err)
		if assert.NotNil(t, f, "block %d is free once its holder is gone", base) {
			f.Close()
		}
	}
}

func TestWindowIsFree(t *testing.T) {
	base := Window(t, 16)
	for p := base; p < base+16; p++ {
		ln, err := net.Listen("tcp", "127.0.0.8:"+strconv.Itoa(p))
		require.NoError(t, err, "port %d", p)
		ln.Close()
	}
}

// The lock directory is shared by every user: world-writable and sticky.
func TestLockDirIsShared(t *testing.T) {
	dir, err := lockDir()
	require.NoError(t, err)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.ModeDir|os.ModeSticky|0o777, st.Mode())
}
