package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wideep/wideep-launch/launcher/sim/simtest"
)

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

func post(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, data
}

func health(t *testing.T, base string) HealthResponse {
	t.Helper()
	code, body := get(t, base+"/health")
	require.Equal(t, http.StatusOK, code, "healthy once the initial discovery completed: %s", body)
	var h HealthResponse
	require.NoError(t, json.Unmarshal(body, &h), "%s", body)
	return h
}

func modelIDs(t *testing.T, base string) []string {
	t.Helper()
	code, body := get(t, base+"/v1/models")
	require.Equal(t, http.StatusOK, code)
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	require.NoError(t, json.Unmarshal(body, &list))
	assert.Equal(t, "list", list.Object)
	ids := []string{}
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

const chatBody = `{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"user","content":"hello"}]}`

func TestFrontendFollowsRegistrations(t *testing.T) {
	etcd := simtest.StartEtcd(t)
	port := simtest.FreePort(t)
	fe := startStandIn(t, []string{"python3", "-m", "dynamo.frontend", "--http-port=" + strconv.Itoa(port)},
		envMap("ETCD_ENDPOINTS", etcd.URL, "SLURMD_NODENAME", "gpu01"))
	rec := fe.waitServing()
	assert.Equal(t, "0.0.0.0:"+strconv.Itoa(port), rec.Listen["http"])
	base := "http://127.0.0.1:" + strconv.Itoa(port)

	code, body := get(t, base+"/live")
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"live","message":"Service is live"}`, string(body))

	// Dynamo's newest /health: healthy as soon as the initial discovery is
	// done, workers or not; the instances say who registered.
	h := health(t, base)
	assert.Equal(t, "healthy", h.Status)
	assert.Equal(t, "Service is healthy", h.Message)
	assert.True(t, h.InitialDiscoveryComplete)
	assert.Nil(t, h.InitialDiscoveryError)
	assert.Empty(t, h.Instances)
	_, raw := get(t, base+"/health")
	assert.Contains(t, string(raw), `"instances":[]`, "an empty list, not null")
	assert.Contains(t, string(raw), `"initial_discovery_error":null`)
	assert.Empty(t, modelIDs(t, base))
	code, _, _ = post(t, base+"/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusServiceUnavailable, code, "no model ready yet")

	env := envMap("ETCD_ENDPOINTS", etcd.URL, "SLURMD_NODENAME", "gpu01")
	prefill := startStandIn(t, workerArgv("prefill", 1, 0, freeAddr(t)), env)
	prefillRec := prefill.waitServing()
	assert.Empty(t, modelIDs(t, base), "a prefill worker alone does not serve the model")
	code, _, _ = post(t, base+"/v1/chat/completions", chatBody)
	assert.Equal(t, http.StatusServiceUnavailable, code)

	decode := startStandIn(t, workerArgv("decode", 1, 0, freeAddr(t)), envMap("ETCD_ENDPOINTS", etcd.URL, "SLURMD_NODENAME", "gpu05"))
	decodeRec := decode.waitServing()

	h = health(t, base)
	assert.Equal(t, "healthy", h.Status)
	require.Len(t, h.Instances, 2)
	byComponent := map[string]HealthInstance{}
	for _, in := range h.Instances {
		byComponent[in.Component] = in
		assert.Equal(t, "generate", in.Endpoint)
	}
	assert.Equal(t, prefillRec.Instance.InstanceID, byComponent["prefill"].InstanceID)
	assert.Equal(t, decodeRec.Instance.InstanceID, byComponent["backend"].InstanceID)
	assert.Equal(t, "gpu05", byComponent["backend"].Host)
	assert.Equal(t, []string{"dyn://dynamo.backend.generate", "dyn://dynamo.prefill.generate"}, h.Endpoints, "sorted")
	assert.Equal(t, []string{"deepseek-ai/DeepSeek-R1"}, modelIDs(t, base))

	code, _, body = post(t, base+"/v1/chat/completions", chatBody)
	require.Equal(t, http.StatusOK, code, "%s", body)
	var reply struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	require.NoError(t, json.Unmarshal(body, &reply))
	assert.Equal(t, "chat.completion", reply.Object)
	assert.Equal(t, "deepseek-ai/DeepSeek-R1", reply.Model)
	require.Len(t, reply.Choices, 1)
	assert.Equal(t, "assistant", reply.Choices[0].Message.Role)
	assert.Equal(t, simReply, reply.Choices[0].Message.Content)
	assert.Equal(t, "stop", reply.Choices[0].FinishReason)

	code, hdr, body := post(t, base+"/v1/chat/completions", strings.Replace(chatBody, `"messages"`, `"stream":true,"messages"`, 1))
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "text/event-stream", hdr.Get("Content-Type"))
	assert.Contains(t, string(body), `"object":"chat.completion.chunk"`)
	assert.True(t, strings.HasSuffix(string(body), "data: [DONE]\n\n"))

	code, _, body = post(t, base+"/v1/chat/completions", strings.Replace(chatBody, "deepseek-ai/DeepSeek-R1", "gpt-2", 1))
	assert.Equal(t, http.StatusNotFound, code)
	assert.Contains(t, string(body), `model \"gpt-2\" not found`)
	code, _, _ = post(t, base+"/v1/chat/completions", `{"model":`)
	assert.Equal(t, http.StatusBadRequest, code)

	assert.Equal(t, 0, decode.terminate())
	assert.Empty(t, modelIDs(t, base), "the model goes away with its decode worker")
	assert.Len(t, health(t, base).Instances, 1)
	assert.Equal(t, 0, prefill.terminate())
	assert.Equal(t, 0, fe.terminate())
}

func TestFrontendStartupErrors(t *testing.T) {
	tests := map[string]struct {
		argv     []string
		env      map[string]string
		wantCode int
		want     string
	}{
		// main.py @ed34fa25 parses with parse_known_args and refuses the
		// left-overs itself: exit 1, not argparse's 2.
		"unknown flag": {
			argv:     []string{"python3", "-m", "dynamo.frontend", "--http-port=8000", "--grpc-port=9000", "x y"},
			wantCode: 1, want: "Unknown arguments specified: ['--grpc-port=9000', 'x y']",
		},
		"flag of another Dynamo component": {
			argv:     []string{"python3", "-m", "dynamo.frontend", "--response-plane", "tcp"},
			wantCode: 1, want: "Unknown arguments specified: ['--response-plane', 'tcp']",
		},
		"bad choice": {
			argv:     []string{"python3", "-m", "dynamo.frontend", "--router-mode", "least-loaded"},
			wantCode: 2, want: "python3 -m dynamo.frontend: error: argument --router-mode: invalid choice: 'least-loaded' (choose from 'round-robin', 'random', 'kv', 'direct')",
		},
		"bad port": {
			argv:     []string{"python3", "-m", "dynamo.frontend", "--http-port=http"},
			wantCode: 2, want: "argument --http-port: invalid int value: 'http'",
		},
		"injected": {
			argv:     []string{"python3", "-m", "dynamo.frontend", "--http-port=8000"},
			env:      envMap(EnvFail, "gpu01/frontend:startup:9", "SLURMD_NODENAME", "gpu01"),
			wantCode: 9, want: "injected failure",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, r := run(t, tc.argv, tc.env)
			assert.Equal(t, tc.wantCode, code)
			assert.Contains(t, r.stderr.String(), tc.want)
		})
	}
}

// Before the initial model discovery has completed (etcd unreachable), the
// frontend is not ready: HTTP 503 and the reason, as health.rs @0ab2b3f5.
func TestFrontendNotReadyUntilDiscovery(t *testing.T) {
	port := simtest.FreePort(t)
	dead := "http://127.0.0.1:" + strconv.Itoa(simtest.FreePort(t))
	fe := startStandIn(t, []string{"python3", "-m", "dynamo.frontend", "--http-port", strconv.Itoa(port)},
		envMap("ETCD_ENDPOINTS", dead, "SLURMD_NODENAME", "gpu01"))
	fe.waitServing()
	code, body := get(t, "http://127.0.0.1:"+strconv.Itoa(port)+"/health")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	var h HealthResponse
	require.NoError(t, json.Unmarshal(body, &h), "%s", body)
	assert.Equal(t, "not_ready", h.Status)
	assert.False(t, h.InitialDiscoveryComplete)
	require.NotNil(t, h.InitialDiscoveryError)
	assert.Equal(t, "Initial model discovery failed: "+*h.InitialDiscoveryError, h.Message)
	assert.Empty(t, h.Instances)
	assert.Equal(t, 0, fe.terminate())
}
