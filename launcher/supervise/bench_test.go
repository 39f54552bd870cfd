package supervise

import (
	"context"
	"io"
	"os/exec"
	"testing"

	"github.com/rs/zerolog"
)

// The launcher's overhead per supervised process is the difference between
// BenchmarkSuperviseTrue and BenchmarkExecTrue (target: ≤ 5 ms added).

func benchTrue(b *testing.B) string {
	path, err := exec.LookPath("true")
	if err != nil {
		b.Skipf("needs true: %v", err)
	}
	return path
}

// BenchmarkSuperviseTrue runs /bin/true under supervision: "new" is what the
// launcher does once per node (a fresh Supervisor, SuperviseOne: start, wait,
// shutdown with the orphan sweep); "reuse" is one more process on a running
// Supervisor (RunOneshot).
func BenchmarkSuperviseTrue(b *testing.B) {
	spec := ProcSpec{Name: "true", Argv: []string{benchTrue(b)}, Oneshot: true}
	b.Run("new", func(b *testing.B) {
		for b.Loop() {
			s := &Supervisor{Log: zerolog.Nop(), Output: io.Discard, Prefix: "bench", Reaper: testReaper}
			if code := SuperviseOne(context.Background(), s, spec, nil); code != 0 {
				b.Fatalf("exit code %d", code)
			}
		}
	})
	b.Run("reuse", func(b *testing.B) {
		s := &Supervisor{Log: zerolog.Nop(), Output: io.Discard, Prefix: "bench", Reaper: testReaper}
		defer s.Shutdown("done")
		for b.Loop() {
			if e, err := s.RunOneshot(context.Background(), spec); err != nil || ExitCodeOf(e) != 0 {
				b.Fatalf("%v: %v", e, err)
			}
		}
	})
}

func BenchmarkExecTrue(b *testing.B) {
	path := benchTrue(b)
	for b.Loop() {
		if err := exec.Command(path).Run(); err != nil {
			b.Fatal(err)
		}
	}
}
