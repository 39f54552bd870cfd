package rendezvous

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fuzzMaxLine stands in for maxServerLine/maxAuthLine: small, so the fuzzer
// reaches the too-long path; fuzzBuf is smaller still, so long lines come in
// several bufio chunks as they do from a real connection.
const (
	fuzzMaxLine = 256
	fuzzBuf     = 16
)

// FuzzReadMessages feeds arbitrary bytes to the read loop every connection
// runs (readLine, the ping fast path, json.Unmarshal into message). It must
// never panic; no line returned is longer than the limit, so what one peer
// can make a launcher hold is bounded, and the lines are exactly the input's;
// a decoded message re-encodes to a fixed point no more than a bounded
// factor larger than its line.
func FuzzReadMessages(f *testing.F) {
	for _, s := range []string{
		string(pingLine),
		`{"type":"join","job":"7","nonce":"ab","mac":"cd","member":{"index":3,"host":"n4","addr":"10.0.0.4","facts":{"gpu":"H100"}}}` + "\n",
		`{"type":"release","barrier":"infra","payload":{"a":[1, 2]}}` + "\n" + string(pingLine),
		`{"type":"abort","node":5,"error":"process decode exited with code 3","lost":true}` + "\n",
		`{"type":"table","members":[{},null,{"index":-1}]}` + "\n",
		`{"type":"ping"}{"type":"bye"}` + "\n", "{\n}\n", "not json\n", "\n\n", `{"timeout_ns":1e99}` + "\n",
		string(bytes.Repeat([]byte("x"), fuzzMaxLine+1)) + "\n", `{"type":"notice","payload":` + "\xff\"\u2028\"}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), fuzzBuf)
		var consumed []byte
		for {
			line, err := readLine(br, fuzzMaxLine)
			if err != nil {
				break
			}
			require.LessOrEqual(t, len(line), fuzzMaxLine)
			require.NotContains(t, string(line), "\n")
			consumed = append(append(consumed, line...), '\n')
			require.True(t, bytes.HasPrefix(data, consumed), "lines are not the input's")
			checkDecode(t, line)
		}
	})
}

// checkDecode decodes line as the server and client loops do.
func checkDecode(t *testing.T, line []byte) {
	var m message
	if isPing(line) {
		require.NoError(t, json.Unmarshal(line, &m))
		require.Equal(t, msgPing, m.Type, "the ping fast path took %q", line)
		return
	}
	if json.Unmarshal(line, &m) != nil {
		return
	}
	enc := encode(m)
	// Escapes (\u003c for '<') and zero values written in full ("{}" in
	// members becomes {"index":0,"host":"","addr":""}) grow a message, by
	// a bounded factor.
	require.LessOrEqual(t, len(enc), 16*len(line)+64, "%q re-encodes to %q", line, enc)
	var again message
	require.NoError(t, json.Unmarshal(enc, &again), "re-encoded %q", enc)
	require.Equal(t, string(enc), string(encode(again)), "not a fixed point: %q", line)
}

// pingLine is written out by hand; it must stay what encode sends, or
// readers would decode every heartbeat as JSON (or miss them).
func TestPingLineIsEncodedPing(t *testing.T) {
	assert.Equal(t, string(encode(message{Type: msgPing})), string(pingLine))
	assert.True(t, isPing(bytes.TrimSuffix(encode(message{Type: msgPing}), []byte("\n"))))
}
