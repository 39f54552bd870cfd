package sharedcache

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStagingPath(t *testing.T) {
	for name, tc := range map[string]struct {
		final, job string
		pid        int
		want       string
	}{
		"plain job":       {"/cache/img.sqsh", "1234", 77, "/cache/.img.sqsh.tmp-1234-77"},
		"array task":      {"/cache/img.sqsh", "1234_7", 77, "/cache/.img.sqsh.tmp-1234_7-77"},
		"no job":          {"/cache/img.sqsh", "", 77, "/cache/.img.sqsh.tmp-nojob-77"},
		"hostile job id":  {"/cache/dg", "../x y", 1, "/cache/.dg.tmp-.._x_y-1"},
		"relative finals": {"img.sqsh", "9", 1, ".img.sqsh.tmp-9-1"},
	} {
		t.Run(name, func(t *testing.T) {
			got := StagingPath(tc.final, tc.job, tc.pid)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, filepath.Dir(tc.final), filepath.Dir(got), "staged beside the final name")
			assert.True(t, strings.HasPrefix(filepath.Base(got), "."), "hidden")
		})
	}
}

func TestStagingPathsAreUniquePerJobAndProcess(t *testing.T) {
	seen := map[string]string{}
	for _, job := range []string{"1", "12", "123", "1_2", "12_3"} {
		for _, pid := range []int{1, 2, 23, 123} {
			p := StagingPath("/c/img.sqsh", job, pid)
			who := fmt.Sprintf("job %s pid %d", job, pid)
			if prev, dup := seen[p]; dup {
				t.Errorf("%s and %s share the staging path %s", prev, who, p)
			}
			seen[p] = who
		}
	}
	assert.Len(t, seen, 20)
}

func TestPublishFile(t *testing.T) {
	for name, tc := range map[string]struct {
		existing  bool
		wantErr   error
		wantFinal string
	}{
		"free name":  {wantFinal: "new"},
		"taken name": {existing: true, wantErr: ErrExists, wantFinal: "old"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "img.sqsh")
			staged := StagingPath(final, "1", 2)
			require.NoError(t, os.WriteFile(staged, []byte("new"), 0o644))
			if tc.existing {
				require.NoError(t, os.WriteFile(final, []byte("old"), 0o644))
			}
			err := PublishFile(staged, final)
			got, rerr := os.ReadFile(final)
			require.NoError(t, rerr)
			assert.Equal(t, tc.wantFinal, string(got), "an existing entry is never replaced")
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				assert.Contains(t, err.Error(), final)
				assert.FileExists(t, staged, "left to the caller")
				return
			}
			require.NoError(t, err)
			assert.NoFileExists(t, staged)
		})
	}
}

func TestPublishDir(t *testing.T) {
	for name, tc := range map[string]struct {
		existing func(t *testing.T, final string)
		wantErr  error
	}{
		"free name": {},
		"non-empty dir there": {existing: func(t *testing.T, final string) {
			require.NoError(t, os.MkdirAll(filepath.Join(final, "kernels"), 0o755))
		}},
		"empty dir there": {existing: func(t *testing.T, final string) {
			require.NoError(t, os.Mkdir(final, 0o755))
		}},
		"file there": {existing: func(t *testing.T, final string) {
			require.NoError(t, os.WriteFile(final, nil, 0o644))
		}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "deepgemm")
			staged := StagingPath(final, "1", 2)
			require.NoError(t, os.MkdirAll(staged, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(staged, "k.cubin"), []byte("new"), 0o644))
			var before []os.DirEntry
			if tc.existing != nil {
				tc.existing(t, final)
				before, _ = os.ReadDir(final)
			}
			err := PublishDir(staged, final)
			if tc.existing != nil {
				require.ErrorIs(t, err, ErrExists)
				assert.Contains(t, err.Error(), final)
				after, _ := os.ReadDir(final)
				assert.Equal(t, names(before), names(after), "the existing entry is untouched")
				assert.DirExists(t, staged, "left to the caller")
				return
			}
			require.NoError(t, err)
			got, err := os.ReadFile(filepath.Join(final, "k.cubin"))
			require.NoError(t, err)
			assert.Equal(t, "new", string(got))
			assert.NoDirExists(t, staged)
		})
	}
}

func names(es []os.DirEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestRemoveStaging(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "img.sqsh")
	now := time.Now()
	old, recent := now.Add(-time.Hour), now.Add(-time.Second)
	files := map[string]time.Time{
		StagingPath(final, "1", 10):                            old,    // a killed job's file
		StagingPath(final, "2", 20):                            recent, // maybe a live writer
		StagingPath(filepath.Join(dir, "other.sqsh"), "3", 30): old,
		final: old,
	}
	for p, mt := range files {
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o644))
		require.NoError(t, os.Chtimes(p, mt, mt))
	}
	oldDir := StagingPath(final, "4", 40)
	require.NoError(t, os.MkdirAll(filepath.Join(oldDir, "sub"), 0o755))
	require.NoError(t, os.Chtimes(oldDir, old, old))

	removed, err := RemoveStaging(final, time.Minute, now)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{StagingPath(final, "1", 10), oldDir}, removed)
	assert.NoFileExists(t, StagingPath(final, "1", 10))
	assert.NoDirExists(t, oldDir)
	assert.FileExists(t, StagingPath(final, "2", 20))
	assert.FileExists(t, StagingPath(filepath.Join(dir, "other.sqsh"), "3", 30), "another entry's staging")
	assert.FileExists(t, final)
}

func TestRemoveStagingNamesMissingDir(t *testing.T) {
	final := filepath.Join(t.TempDir(), "gone", "img.sqsh")
	_, err := RemoveStaging(final, time.Minute, time.Now())
	require.Error(t, err)
	assert.Contains(t, err.Error(), final)
}

func TestRemoveDeadStaging(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "image.sqsh")
	dead := StagingPath(final, "41", 100)
	live := StagingPath(final, "42", 200)
	other := filepath.Join(dir, ".other.sqsh.tmp-41-1")
	for _, p := range []string{dead, live, other} {
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o644))
	}
	removed, err := RemoveDeadStaging(final, func(job string) bool { return job == "41" })
	require.NoError(t, err)
	assert.Equal(t, []string{dead}, removed, "only the dead job's staging of this entry, however recent")
	assert.FileExists(t, live)
	assert.FileExists(t, other)
}

func TestReplaceDir(t *testing.T) {
	for name, existing := range map[string]bool{"over an entry": true, "no entry yet": false} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			final := filepath.Join(dir, "prefill-k")
			if existing {
				require.NoError(t, os.MkdirAll(final, 0o755))
				require.NoError(t, os.WriteFile(filepath.Join(final, "old.cubin"), []byte("old"), 0o644))
			}
			staged := StagingPath(final, "7", 3)
			require.NoError(t, os.MkdirAll(staged, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(staged, "new.cubin"), []byte("new"), 0o644))

			require.NoError(t, ReplaceDir(staged, final, "7", 3))
			entries, err := os.ReadDir(final)
			require.NoError(t, err)
			assert.Equal(t, []string{"new.cubin"}, names(entries))
			left, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Equal(t, []string{"prefill-k"}, names(left), "neither the staged nor the old entry is left")
		})
	}
}

func TestReplaceDirWithoutAStagedDirKeepsTheOldEntry(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "prefill-k")
	require.NoError(t, os.MkdirAll(final, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(final, "old.cubin"), []byte("old"), 0o644))
	err := ReplaceDir(filepath.Join(dir, "missing-staging"), final, "7", 3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), final)
	got, err := os.ReadFile(filepath.Join(final, "old.cubin"))
	require.NoError(t, err, "the old entry is still there")
	assert.Equal(t, "old", string(got))
}
