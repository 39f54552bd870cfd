package rendezvous

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SecretEnv is the job's shared secret: generated in the batch script
// (srun passes it to every task; /proc/PID/environ is readable by its owner
// only) and never put on a command line.
const SecretEnv = "WIDEEP_SECRET"

// Where a key came from, for the log (never the key).
const (
	KeyFromEnv     = "env " + SecretEnv
	KeyFromFile    = "--secret-file"
	KeyFromJobID   = "derived from the job id (not a secret)"
	minSecretBytes = 16
)

// LoadKey returns the job's rendezvous key and where it came from: the
// secret in WIDEEP_SECRET, else the one in secretFile (which must be
// readable by its owner only), else one derived from the job and step ids.
// The derived key keeps jobs apart but anyone who can run squeue can
// compute it: the caller should warn.
func LoadKey(lookup func(string) (string, bool), secretFile, jobID, stepID string) ([]byte, string, error) {
	if v, ok := lookup(SecretEnv); ok && v != "" {
		if len(v) < minSecretBytes {
			return nil, "", fmt.Errorf("%s is %d characters: use at least %d random ones, e.g. "+
				"export %s=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')", SecretEnv, len(v), minSecretBytes, SecretEnv)
		}
		return deriveKey("secret", v), KeyFromEnv, nil
	}
	if secretFile != "" {
		s, err := readSecretFile(secretFile)
		if err != nil {
			return nil, "", err
		}
		return deriveKey("secret", s), KeyFromFile, nil
	}
	return deriveKey("job", jobID+"."+stepID), KeyFromJobID, nil
}

func readSecretFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("--secret-file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("--secret-file %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("--secret-file %s: mode %04o lets other users read it (chmod 600 %s)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--secret-file %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minSecretBytes {
		return "", fmt.Errorf("--secret-file %s: %d characters; use at least %d random ones", path, len(s), minSecretBytes)
	}
	return s, nil
}

// deriveKey separates keys by purpose, so the same text never keys two
// different things.
func deriveKey(kind, text string) []byte {
	sum := sha256.Sum256([]byte("wideep-rendezvous\x00" + kind + "\x00" + text))
	return sum[:]
}

func newNonce() string {
	b := make([]byte, nonceBytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// sign is the MAC of one side of a handshake; parts are NUL-separated, so
// no two different handshakes sign the same text.
func sign(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// joinMAC proves the joining node holds the key, bound to this connection's
// server nonce (no replay) and to the member it claims to be.
func joinMAC(key []byte, job string, m Member, serverNonce, clientNonce string) string {
	return sign(key, "join", job, strconv.Itoa(m.Index), m.Host, m.Addr, serverNonce, clientNonce)
}

// welcomeMAC proves the server holds the key, bound to the client's nonce.
func welcomeMAC(key []byte, job, serverNonce, clientNonce string) string {
	return sign(key, "welcome", job, serverNonce, clientNonce)
}

func validMAC(got, want string) bool {
	return hmac.Equal([]byte(got), []byte(want))
}
