package enroot

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// dockerHub is the registry enroot uses when a reference names none
// (docker::_parse_uri in src/docker.sh).
const dockerHub = "registry-1.docker.io"

// Image is a container image as the launcher was given it: either a
// squashfs file already on disk, or a registry image that must be imported.
type Image struct {
	// Ref is the reference exactly as given, for messages.
	Ref string
	// Path is the squashfs file when the image is one; it is used as is.
	Path string

	User       string // registry login, when given as USER@
	Registry   string // e.g. nvcr.io, or registry-1.docker.io
	Repository string // e.g. nvidia/pytorch, or library/ubuntu
	Tag        string // "latest" when neither a tag nor a digest was given
	Digest     string // "sha256:<64 hex>", or empty
}

// IsFile says whether the image is a squashfs file (no import needed).
func (im Image) IsFile() bool { return im.Path != "" }

func (im Image) String() string { return im.Ref }

// URI is the reference in enroot's own form,
// docker://[USER@]REGISTRY#IMAGE[:TAG][@sha256:HEX]. The '#' form means the
// same to every enroot version, whereas the slash form nvcr.io/org/image
// was read as a Docker Hub namespace before 4.0.
func (im Image) URI() string {
	var b strings.Builder
	b.WriteString("docker://")
	if im.User != "" {
		b.WriteString(im.User + "@")
	}
	b.WriteString(im.Registry + "#" + im.Repository)
	if im.Tag != "" {
		b.WriteString(":" + im.Tag)
	}
	if im.Digest != "" {
		b.WriteString("@" + im.Digest)
	}
	return b.String()
}

// CacheName is the file name of the image in the shared image cache. It is
// derived from what decides the image's bytes, so it is stable across runs
// and never shared by two different images:
//   - with a digest, the registry, repository and digest (enroot >= 4.0
//     ignores the tag then, and the login does not change the bytes), e.g.
//     nvcr.io+nvidia+pytorch@sha256-<hex>.sqsh;
//   - without, the registry, repository and tag, plus 16 hex digits of the
//     SHA-256 of them, which keeps the name unique even where a character
//     had to be replaced (a registry port), e.g.
//     nvcr.io+nvidia+pytorch+25.01-py3-<16 hex>.sqsh.
//
// A tag is cached as it was when first imported; pin a digest to follow a
// moving tag.
func (im Image) CacheName() string {
	base := im.Registry + "+" + strings.ReplaceAll(im.Repository, "/", "+")
	var name, key string
	if im.Digest != "" {
		name = base + "@" + strings.Replace(im.Digest, ":", "-", 1)
		key = im.Registry + "#" + im.Repository + "@" + im.Digest
	} else {
		key = im.Registry + "#" + im.Repository + ":" + im.Tag
		name = base + "+" + im.Tag + "-" + shortHash(key)
	}
	name = strings.Map(func(r rune) rune {
		if isAlnum(r) || strings.ContainsRune("._+@-", r) {
			return r
		}
		return '_'
	}, name)
	// File names are limited to 255 bytes; repositories can be long.
	if len(name) > 200 {
		name = name[:180] + "-" + shortHash(key)
	}
	return name + ".sqsh"
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// ParseImage reads an image reference: a squashfs path (starting with '/',
// './' or '../'; used as is), or a registry image in any form enroot 4.x
// accepts: docker://[USER@][REGISTRY#]IMAGE[:TAG][@sha256:HEX], the same
// without docker://, or the Docker slash form REGISTRY/IMAGE (the first
// component is a registry when it holds a '.' or a ':', as enroot decides).
func ParseImage(ref string) (Image, error) {
	im := Image{Ref: ref}
	bad := func(format string, a ...any) (Image, error) {
		return Image{}, fmt.Errorf("image %q: %s", ref, fmt.Sprintf(format, a...))
	}
	switch {
	case ref == "":
		return bad("empty image reference")
	case strings.ContainsAny(ref, " \t\n\r"):
		return bad("contains white space")
	case strings.HasPrefix(ref, "/"), strings.HasPrefix(ref, "./"), strings.HasPrefix(ref, "../"):
		im.Path = ref
		return im, nil
	}
	rest := ref
	if i := strings.Index(rest, "://"); i >= 0 {
		if scheme := rest[:i]; scheme != "docker" {
			return bad("scheme %s:// is not supported (a registry image docker://..., or a squashfs path starting with / or ./)", scheme)
		}
		rest = rest[i+len("://"):]
	}
	if i := strings.LastIndex(rest, "@sha256:"); i >= 0 {
		hexDigest := rest[i+len("@sha256:"):]
		if !isDigestHex(hexDigest) {
			return bad("digest sha256:%s is not 64 lower-case hex digits", hexDigest)
		}
		im.Digest, rest = "sha256:"+hexDigest, rest[:i]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		im.User, rest = rest[:i], rest[i+1:]
		if im.User == "" || strings.ContainsAny(im.User, "/#") {
			return bad("login %q before '@' is not a user name (only sha256 digests are supported after '@')", im.User)
		}
	}
	if i := strings.Index(rest, "#"); i >= 0 {
		im.Registry, rest = rest[:i], rest[i+1:]
	} else if i := strings.Index(rest, "/"); i >= 0 && strings.ContainsAny(rest[:i], ".:") {
		im.Registry, rest = rest[:i], rest[i+1:]
	} else {
		im.Registry = dockerHub
		if !strings.Contains(rest, "/") {
			rest = "library/" + rest
		}
	}
	if i := strings.Index(rest, ":"); i >= 0 {
		im.Repository, im.Tag = rest[:i], rest[i+1:]
		if !isTag(im.Tag) {
			return bad("tag %q: letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-'", im.Tag)
		}
	} else {
		im.Repository = rest
	}
	if !isRegistry(im.Registry) {
		return bad("registry %q is not a host name with an optional :port", im.Registry)
	}
	if !isRepository(im.Repository) {
		return bad("image name %q: lower-case letters, digits, '.', '_', '-' in '/'-separated parts", im.Repository)
	}
	if im.Tag == "" && im.Digest == "" {
		im.Tag = "latest"
	}
	return im, nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func isDigestHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

func isTag(s string) bool {
	if s == "" || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, r := range s {
		if !isAlnum(r) && r != '_' && r != '.' && r != '-' {
			return false
		}
	}
	return true
}

func isRegistry(s string) bool {
	host, port, hasPort := strings.Cut(s, ":")
	if host == "" || hasPort && port == "" {
		return false
	}
	for _, r := range host {
		if !isAlnum(r) && r != '.' && r != '-' {
			return false
		}
	}
	for _, r := range port {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// isRepository follows enroot's image pattern [a-z0-9/._-]+, with no empty
// path component.
func isRepository(s string) bool {
	for _, part := range strings.Split(s, "/") {
		if part == "" {
			return false
		}
		for _, r := range part {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				return false
			}
		}
	}
	return true
}
