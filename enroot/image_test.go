package enroot

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const hexDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseImage(t *testing.T) {
	for ref, want := range map[string]Image{
		"/images/sglang.sqsh": {Path: "/images/sglang.sqsh"},
		"./sglang.sqsh":       {Path: "./sglang.sqsh"},
		"../img/sglang.sqsh":  {Path: "../img/sglang.sqsh"},
		"nvcr.io#nvidia/pytorch:25.01-py3": {
			Registry: "nvcr.io", Repository: "nvidia/pytorch", Tag: "25.01-py3",
		},
		"docker://nvcr.io#nvidia/pytorch:25.01-py3": {
			Registry: "nvcr.io", Repository: "nvidia/pytorch", Tag: "25.01-py3",
		},
		"nvcr.io/nvidia/pytorch:25.01-py3": {
			Registry: "nvcr.io", Repository: "nvidia/pytorch", Tag: "25.01-py3",
		},
		"docker://$oauthtoken@nvcr.io#nvidia/pytorch": {
			User: "$oauthtoken", Registry: "nvcr.io", Repository: "nvidia/pytorch", Tag: "latest",
		},
		"ubuntu": {Registry: dockerHub, Repository: "library/ubuntu", Tag: "latest"},
		"lmsysorg/sglang:v0.4.9-cu126": {
			Registry: dockerHub, Repository: "lmsysorg/sglang", Tag: "v0.4.9-cu126",
		},
		"localhost:5000/team/img:1": {Registry: "localhost:5000", Repository: "team/img", Tag: "1"},
		"nvcr.io#nvidia/pytorch@sha256:" + hexDigest: {
			Registry: "nvcr.io", Repository: "nvidia/pytorch", Digest: "sha256:" + hexDigest,
		},
		"nvcr.io/nvidia/pytorch:25.01-py3@sha256:" + hexDigest: {
			Registry: "nvcr.io", Repository: "nvidia/pytorch", Tag: "25.01-py3", Digest: "sha256:" + hexDigest,
		},
		"user@registry.example.com:443#a/b.c_d-e:T.1@sha256:" + hexDigest: {
			User: "user", Registry: "registry.example.com:443", Repository: "a/b.c_d-e", Tag: "T.1", Digest: "sha256:" + hexDigest,
		},
	} {
		t.Run(ref, func(t *testing.T) {
			got, err := ParseImage(ref)
			require.NoError(t, err)
			want.Ref = ref
			assert.Equal(t, want, got)
			assert.Equal(t, want.Path != "", got.IsFile())
		})
	}
}

func TestParseImageRejects(t *testing.T) {
	for ref, why := range map[string]string{
		"":                                  "empty",
		"nvcr.io#nvidia/pytorch:25.01 py3":  "white space",
		"dockerd://ubuntu":                  "scheme dockerd://",
		"podman://ubuntu":                   "scheme podman://",
		"nvcr.io#Nvidia/pytorch":            `image name "Nvidia/pytorch"`,
		"nvcr.io#nvidia//pytorch":           `image name "nvidia//pytorch"`,
		"nvcr.io#":                          `image name ""`,
		"#nvidia/pytorch":                   `registry ""`,
		"bad_host#nvidia/pytorch":           `registry "bad_host"`,
		"nvcr.io#nvidia/pytorch:":           `tag ""`,
		"nvcr.io#nvidia/pytorch:-x":         `tag "-x"`,
		"nvcr.io#nvidia/pytorch@sha256:abc": "digest sha256:abc",
		"nvcr.io#nvidia/pytorch@sha256:" + strings.ToUpper(hexDigest): "digest",
		"nvcr.io#nvidia/pytorch@sha512:" + hexDigest:                  "login",
		"@nvcr.io#nvidia/pytorch":                                     `login ""`,
	} {
		t.Run(ref, func(t *testing.T) {
			_, err := ParseImage(ref)
			require.Error(t, err)
			assert.Contains(t, err.Error(), `image "`+ref+`"`, "the error names the reference")
			assert.Contains(t, err.Error(), why)
		})
	}
}

func TestImageURIIsEnrootsOwnForm(t *testing.T) {
	for ref, want := range map[string]string{
		"nvcr.io/nvidia/pytorch:25.01-py3":           "docker://nvcr.io#nvidia/pytorch:25.01-py3",
		"ubuntu":                                     "docker://registry-1.docker.io#library/ubuntu:latest",
		"u@nvcr.io#a/b@sha256:" + hexDigest:          "docker://u@nvcr.io#a/b@sha256:" + hexDigest,
		"docker://nvcr.io#a/b:t@sha256:" + hexDigest: "docker://nvcr.io#a/b:t@sha256:" + hexDigest,
	} {
		im, err := ParseImage(ref)
		require.NoError(t, err)
		assert.Equal(t, want, im.URI(), ref)
	}
}

func TestCacheName(t *testing.T) {
	// Stable across runs: these are fixed strings, not recomputed.
	for ref, want := range map[string]string{
		"nvcr.io#nvidia/pytorch@sha256:" + hexDigest: "nvcr.io+nvidia+pytorch@sha256-" + hexDigest + ".sqsh",
		"nvcr.io#nvidia/pytorch:25.01-py3":           "nvcr.io+nvidia+pytorch+25.01-py3-4def6a1cfffc6775.sqsh",
		"localhost:5000/img":                         "localhost_5000+img+latest-892a0f1f4127f26e.sqsh",
	} {
		im, err := ParseImage(ref)
		require.NoError(t, err)
		assert.Equal(t, want, im.CacheName(), ref)
	}
}

// Different images never share a cache name; spellings of one image do.
func TestCacheNamesDistinctAndShared(t *testing.T) {
	other := strings.Repeat("f", 64)
	distinct := []string{
		"nvcr.io#nvidia/pytorch:25.01-py3",
		"nvcr.io#nvidia/pytorch:25.02-py3",
		"nvcr.io#nvidia/pytorch",
		"nvcr.io#nvidia/pytorch-x:25.01-py3",
		"nvcr.io#nvidia/py/torch:25.01-py3",
		"docker.io#nvidia/pytorch:25.01-py3",
		"nvidia/pytorch:25.01-py3",
		"localhost:5000/img",
		"localhost-5000#library/img",
		"nvcr.io#nvidia/pytorch@sha256:" + hexDigest,
		"nvcr.io#nvidia/pytorch@sha256:" + other,
		"nvcr.io#nvidia/other@sha256:" + hexDigest,
		"nvcr.io#" + strings.Repeat("a", 150) + "/" + strings.Repeat("b", 150) + ":1",
		"nvcr.io#" + strings.Repeat("a", 150) + "/" + strings.Repeat("b", 150) + ":2",
	}
	seen := map[string]string{}
	for _, ref := range distinct {
		im, err := ParseImage(ref)
		require.NoError(t, err, ref)
		name := im.CacheName()
		assert.LessOrEqual(t, len(name), 255, ref)
		assert.NotContains(t, name, "/", ref)
		assert.False(t, strings.HasPrefix(name, "."), ref)
		if prev, dup := seen[name]; dup {
			t.Errorf("%s and %s share the cache name %s", prev, ref, name)
		}
		seen[name] = ref
	}
	for _, same := range [][]string{
		{"nvcr.io#nvidia/pytorch:25.01-py3", "docker://nvcr.io#nvidia/pytorch:25.01-py3", "nvcr.io/nvidia/pytorch:25.01-py3", "u@nvcr.io#nvidia/pytorch:25.01-py3"},
		{"ubuntu", "ubuntu:latest", "library/ubuntu", "docker://registry-1.docker.io#library/ubuntu:latest"},
		// enroot >= 4.0 ignores the tag when a digest is given: same bytes.
		{"nvcr.io#a/b@sha256:" + hexDigest, "nvcr.io#a/b:x@sha256:" + hexDigest},
	} {
		var names []string
		for _, ref := range same {
			im, err := ParseImage(ref)
			require.NoError(t, err, ref)
			names = append(names, im.CacheName())
		}
		for _, n := range names[1:] {
			assert.Equal(t, names[0], n, "%v", same)
		}
	}
}
