package standin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixture is a fresh enroot world: a data path holding the container c1, a
// real squashfs image img.sqsh, a text file that is not one, and a record
// file.
type fixture struct {
	dir, data, image, notImage, record string
	env                                map[string]string
	stdin                              string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		dir: dir, data: filepath.Join(dir, "data"), image: filepath.Join(dir, "img.sqsh"),
		notImage: filepath.Join(dir, "text.sqsh"), record: filepath.Join(dir, "record.jsonl"),
	}
	require.NoError(t, os.MkdirAll(filepath.Join(f.data, "c1"), 0o755))
	src := filepath.Join(dir, "src")
	require.NoError(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "etc", "rc"), []byte("exec \"$@\"\n"), 0o644))
	out, err := exec.Command("mksquashfs", src, f.image, "-noappend", "-no-progress", "-quiet").CombinedOutput()
	require.NoError(t, err, "mksquashfs (Debian package squashfs-tools) is needed: %s", out)
	require.NoError(t, os.WriteFile(f.notImage, []byte("not squashfs"), 0o644))
	f.env = map[string]string{
		"PATH": os.Getenv("PATH"), "ENROOT_DATA_PATH": f.data, "WIDEEP_ENROOT_RECORD": f.record,
		"ENROOT_TEMP_PATH": dir,
	}
	return f
}

// execCall is what start would have exec'd.
type execCall struct {
	path      string
	argv, env []string
}

type result struct {
	code           int
	stdout, stderr string
	exec           *execCall
}

func (f *fixture) run(args ...string) result {
	var out, errOut bytes.Buffer
	var r result
	tl := &tool{
		env:    func(k string) (string, bool) { v, ok := f.env[k]; return v, ok },
		stdin:  strings.NewReader(f.stdin),
		stdout: &out, stderr: &errOut,
		exec: func(path string, argv, env []string) error {
			r.exec = &execCall{path, argv, env}
			return errExecFaked
		},
		chdir: func(string) error { return nil },
		now:   time.Now, pid: 1234,
	}
	r.code = tl.run(args)
	r.stdout, r.stderr = out.String(), errOut.String()
	if r.exec != nil {
		// start ends with the exec; its return is only the fake's.
		r.code = 0
	}
	return r
}

var errExecFaked = os.ErrProcessDone

const usageErr, fail = "usage", "error"

// grammarCase is one command line and what enroot 4.1.2 does with it.
type grammarCase struct {
	args  []string
	code  int
	kind  string // usageErr: usage on stdout; fail: "[ERROR] ..." on stderr
	want  string // in stdout (usage) or stderr (error), with {data}, {dir} expanded
	stdin string
}

var grammarCases = map[string]grammarCase{
	"no command":            {args: nil, code: 1, kind: usageErr, want: "Usage: enroot COMMAND"},
	"unknown command":       {args: []string{"bogus"}, code: 1, kind: usageErr, want: "Usage: enroot COMMAND"},
	"help":                  {args: []string{"help"}, code: 0, want: "Usage: enroot COMMAND"},
	"version":               {args: []string{"version"}, code: 0, want: "4.1.2"},
	"unsimulated command":   {args: []string{"export", "c1"}, code: 1, kind: fail, want: `wideep stand-in: "export"`},
	"import no URI":         {args: []string{"import"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import two URIs":       {args: []string{"import", "docker://a", "docker://b"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import unknown option": {args: []string{"import", "-x", "docker://a"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import flag of create": {args: []string{"import", "--force", "docker://a"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import -o no value":    {args: []string{"import", "-o"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import -o empty":       {args: []string{"import", "-o", "", "docker://a"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import --output=":      {args: []string{"import", "--output=", "docker://a"}, code: 1, kind: usageErr, want: "Usage: enroot import"},
	"import option after URI": {
		args: []string{"import", "docker://a", "-o", "x.sqsh"}, code: 1, kind: usageErr, want: "Usage: enroot import",
	},
	"import --help":       {args: []string{"import", "--help"}, code: 0, want: "Usage: enroot import"},
	"import -h after -o":  {args: []string{"import", "-o", "-h", "x"}, code: 1, kind: fail, want: "Invalid argument: x"},
	"import dash operand": {args: []string{"import", "-"}, code: 1, kind: fail, want: "Invalid argument: -"},
	"import bad scheme":   {args: []string{"import", "http://x"}, code: 1, kind: fail, want: "Invalid argument: http://x"},
	"import dockerd":      {args: []string{"import", "dockerd://x"}, code: 1, kind: fail, want: "Command not found: docker"},
	"import bad ref":      {args: []string{"import", "-o", "{dir}/o.sqsh", "docker://Upper/x"}, code: 1, kind: fail, want: "Invalid image reference: docker://Upper/x"},
	"import existing output": {
		args: []string{"import", "-o", "{dir}/img.sqsh", "docker://ubuntu"}, code: 1, kind: fail, want: "File already exists: {dir}/img.sqsh",
	},
	"import missing dir": {
		args: []string{"import", "-o", "{dir}/no/o.sqsh", "docker://ubuntu"}, code: 1, kind: fail, want: "No such file or directory: {dir}/no/o.sqsh",
	},
	"import":                 {args: []string{"import", "-a", "amd64", "--output={dir}/o.sqsh", "--", "docker://nvcr.io#nvidia/pytorch:25.01-py3"}, code: 0},
	"create no image":        {args: []string{"create"}, code: 1, kind: usageErr, want: "Usage: enroot create"},
	"create -n no value":     {args: []string{"create", "-n"}, code: 1, kind: usageErr, want: "Usage: enroot create"},
	"create option after":    {args: []string{"create", "{dir}/img.sqsh", "-n", "x"}, code: 1, kind: usageErr, want: "Usage: enroot create"},
	"create existing name":   {args: []string{"create", "-n", "c1", "{dir}/img.sqsh"}, code: 1, kind: fail, want: "File already exists: {data}/c1"},
	"create --force":         {args: []string{"create", "--force", "--name=c1", "{dir}/img.sqsh"}, code: 0},
	"create":                 {args: []string{"create", "-n", "c2", "--", "{dir}/img.sqsh"}, code: 0},
	"create default name":    {args: []string{"create", "{dir}/img.sqsh"}, code: 0},
	"create missing image":   {args: []string{"create", "{dir}/none.sqsh"}, code: 1, kind: fail, want: "No such file or directory: {dir}/none.sqsh"},
	"create not squashfs":    {args: []string{"create", "{dir}/text.sqsh"}, code: 1, kind: fail, want: "Invalid image format: {dir}/text.sqsh"},
	"create slash in name":   {args: []string{"create", "-n", "a/b", "{dir}/img.sqsh"}, code: 1, kind: fail, want: "Invalid argument: a/b"},
	"start no name":          {args: []string{"start"}, code: 1, kind: usageErr, want: "Usage: enroot start"},
	"start unknown option":   {args: []string{"start", "--pid", "c1", "true"}, code: 1, kind: usageErr, want: "Usage: enroot start"},
	"start --env no value":   {args: []string{"start", "--env"}, code: 1, kind: usageErr, want: "Usage: enroot start"},
	"start missing":          {args: []string{"start", "nope", "true"}, code: 1, kind: fail, want: "No such file or directory: {data}/nope"},
	"start slash name":       {args: []string{"start", "a/b", "true"}, code: 1, kind: fail, want: "Invalid argument: a/b"},
	"start bad env":          {args: []string{"start", "--env", "1BAD", "c1", "true"}, code: 1, kind: fail, want: "Invalid argument: 1BAD"},
	"start bad mount":        {args: []string{"start", "-m", "/tmp", "c1", "true"}, code: 1, kind: fail, want: "Invalid argument: /tmp"},
	"start mount with space": {args: []string{"start", "-m", "/a b:/x", "c1", "true"}, code: 1, kind: fail, want: "Invalid argument: /a b:/x"},
	"start missing mount source": {
		args: []string{"start", "--mount", "{dir}/none:/mnt", "c1", "true"}, code: 1, want: "enroot-mount: failed to mount: {dir}/none",
	},
	"start no command":    {args: []string{"start", "c1"}, code: 1, kind: fail, want: "wideep stand-in: no command"},
	"start --rc":          {args: []string{"start", "--rc", "{dir}/rc", "c1", "true"}, code: 1, kind: fail, want: "wideep stand-in: --conf and --rc"},
	"start unknown cmd":   {args: []string{"start", "c1", "no-such-command-xyz"}, code: 127, want: "no-such-command-xyz: not found"},
	"start":               {args: []string{"start", "-w", "-r", "--mount={dir}:/mnt:none:bind", "-e", "HOME", "c1", "true"}, code: 0},
	"start image file":    {args: []string{"start", "{dir}/img.sqsh", "true"}, code: 0},
	"remove no name":      {args: []string{"remove"}, code: 1, kind: usageErr, want: "Usage: enroot remove"},
	"remove unknown opt":  {args: []string{"remove", "-n", "c1"}, code: 1, kind: usageErr, want: "Usage: enroot remove"},
	"remove missing":      {args: []string{"remove", "-f", "nope"}, code: 1, kind: fail, want: "No such file or directory: {data}/nope"},
	"remove slash":        {args: []string{"remove", "-f", "a/b"}, code: 1, kind: fail, want: "Invalid argument: a/b"},
	"remove -f":           {args: []string{"remove", "-f", "c1"}, code: 0},
	"remove asks, EOF":    {args: []string{"remove", "c1"}, code: 1},
	"remove asks, yes":    {args: []string{"remove", "c1"}, stdin: "y\n", code: 0},
	"list":                {args: []string{"list"}, code: 0, want: "c1\n"},
	"list --fancy":        {args: []string{"list", "--fancy"}, code: 0, want: "NAME\nc1\n"},
	"list ignores extras": {args: []string{"list", "whatever"}, code: 0, want: "c1\n"},
	"list unknown option": {args: []string{"list", "-x"}, code: 1, kind: usageErr, want: "Usage: enroot list"},
}

// The grammar of enroot 4.1.2 (grammar.go): exit codes, where the message
// goes, and what it says.
func TestGrammar(t *testing.T) {
	for name, tc := range grammarCases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.stdin = tc.stdin
			expand := strings.NewReplacer("{dir}", f.dir, "{data}", f.data)
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				args[i] = expand.Replace(a)
			}
			r := f.run(args...)
			assert.Equal(t, tc.code, r.code, "stdout: %s\nstderr: %s", r.stdout, r.stderr)
			want := expand.Replace(tc.want)
			switch tc.kind {
			case usageErr:
				assert.Contains(t, r.stdout, want)
				assert.NotContains(t, r.stderr, "[ERROR]", "usage errors do not go through common::err")
			case fail:
				assert.Contains(t, r.stderr, "[ERROR] "+want)
				assert.Empty(t, r.stdout)
			default:
				assert.Contains(t, r.stdout+r.stderr, want)
			}
			recs, err := ReadRecords(f.record)
			require.NoError(t, err)
			require.Len(t, recs, 1, "every call is recorded")
			assert.Equal(t, args, recs[0].Args)
		})
	}
}

// What the calls that succeed leave behind.
func TestEffects(t *testing.T) {
	f := newFixture(t)
	out := filepath.Join(f.dir, "o.sqsh")
	r := f.run("import", "-o", out, "docker://nvcr.io/nvidia/pytorch:25.01-py3")
	require.Equal(t, 0, r.code, r.stderr)
	assert.NoError(t, exec.Command("unsquashfs", "-s", out).Run(), "import writes a valid squashfs")
	uri, err := exec.Command("unsquashfs", "-cat", out, "etc/wideep-standin-uri").Output()
	require.NoError(t, err)
	assert.Equal(t, "docker://nvcr.io/nvidia/pytorch:25.01-py3\n", string(uri))

	require.Equal(t, 0, f.run("create", "-n", "c2", out).code)
	marker, err := os.ReadFile(filepath.Join(f.data, "c2", markerFile))
	require.NoError(t, err)
	assert.Contains(t, string(marker), out, "the container names its image")
	assert.FileExists(t, filepath.Join(f.data, "c2", "etc", "rc"), "the image was unpacked")

	require.Equal(t, 0, f.run("create", f.image).code)
	assert.DirExists(t, filepath.Join(f.data, "img"), "the default name is the file name without .sqsh")

	assert.Equal(t, "c1\nc2\nimg\n", f.run("list").stdout)
	require.Equal(t, 0, f.run("remove", "-f", "c1", "c2").code)
	assert.Equal(t, "img\n", f.run("list").stdout)

	f.stdin = "n\n"
	require.Equal(t, 0, f.run("remove", "img").code)
	assert.DirExists(t, filepath.Join(f.data, "img"), "answering no keeps it")
}

// The environment of the started command: only what --env names (values
// from the stand-in's own environment, or inline), ENROOT_* dropped, and
// the login defaults; nothing else of the caller's environment leaks in.
func TestStartEnvironment(t *testing.T) {
	f := newFixture(t)
	f.env["VISIBLE"] = "v"
	f.env["SECRET"] = "s3cr3t"
	f.env["ENROOT_X"] = "x"
	r := f.run("start", "-e", "VISIBLE", "-e", "UNSET", "-e", "ENROOT_X", "--env=INLINE=i", "c1", "printenv", "-0")
	require.NotNil(t, r.exec, r.stderr)
	assert.Equal(t, []string{"printenv", "-0"}, r.exec.argv)
	assert.True(t, filepath.IsAbs(r.exec.path), "looked up in PATH: %s", r.exec.path)
	env := map[string]string{}
	for _, kv := range r.exec.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	assert.Equal(t, "v", env["VISIBLE"])
	assert.Contains(t, env, "UNSET")
	assert.Empty(t, env["UNSET"], "an unset name gets an empty value, as awk's ENVIRON gives")
	assert.Equal(t, "i", env["INLINE"])
	assert.Equal(t, f.env["PATH"], env["PATH"])
	assert.Equal(t, "dumb", env["TERM"])
	for _, k := range []string{"HOME", "SHELL", "USER", "LOGNAME"} {
		assert.NotEmpty(t, env[k], k)
	}
	assert.NotContains(t, env, "SECRET")
	assert.NotContains(t, env, "ENROOT_X")
	assert.NotContains(t, env, "ENROOT_DATA_PATH")
	assert.Len(t, env, 9)

	recs, err := ReadRecords(f.record)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	assert.Equal(t, []string{"VISIBLE", "UNSET", "ENROOT_X"}, recs[0].EnvNames)
	assert.Equal(t, []string{"INLINE"}, recs[0].EnvInline, "a value on the command line is recorded by name")
	assert.Equal(t, f.data, recs[0].Config["ENROOT_DATA_PATH"])
}

func TestParseURI(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for ref, want := range map[string]string{
		"docker://ubuntu":                       "ubuntu+latest.sqsh",
		"docker://ubuntu:22.04":                 "ubuntu+22.04.sqsh",
		"docker://nvidia/cuda:12.4":             "nvidia+cuda+12.4.sqsh",
		"docker://nvcr.io#nvidia/pytorch:25.01": "nvidia+pytorch+25.01.sqsh",
		"docker://nvcr.io/nvidia/pytorch:25.01": "nvidia+pytorch+25.01.sqsh",
		"docker://u@nvcr.io#nvidia/pytorch":     "nvidia+pytorch+latest.sqsh",
		"docker://nvcr.io#a/b:t@" + digest:      "a+b+" + digest + ".sqsh",
		"docker://localhost:5000/img":           "img+latest.sqsh",
		"docker://Upper/x":                      "",
		"docker://nvcr.io#":                     "",
		"docker://x:bad tag":                    "",
		"ubuntu":                                "",
	} {
		t.Run(ref, func(t *testing.T) {
			r, ok := parseURI(ref)
			if want == "" {
				assert.False(t, ok)
				return
			}
			require.True(t, ok)
			assert.Equal(t, want, r.fileName())
		})
	}
}
