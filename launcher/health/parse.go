package health

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// Status is a parsed /health body.
type Status struct {
	Status  string // as reported: "healthy", "unhealthy", "not_ready", "shutting_down", ...
	Prefill int    // distinct instances with endpoint "generate" and component "prefill"
	Decode  int    // distinct instances with endpoint "generate" and component "decode" or "backend"
	// Instances are all instances listed, whatever their endpoint.
	Instances []Instance
}

// Instance is one entry of /health's instances.
type Instance struct {
	Component  string
	Endpoint   string
	Namespace  string
	InstanceID string // a u64 in Dynamo: kept as text so no precision is lost
	// Host is the host the instance advertises when the body tells it (a
	// "host" field, or the host of a host:port transport address).
	Host string
}

// Parse parses the body of the frontend's /health. It counts what is
// registered and does not judge the "status" field: "healthy" says the
// frontend discovered its instances, not that every planned worker is there
// (testdata/dynamo has real bodies, with their Dynamo versions).
func Parse(body []byte) (Status, error) {
	var raw struct {
		Status    *string                      `json:"status"`
		Instances []map[string]json.RawMessage `json:"instances"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Status{}, fmt.Errorf("/health body is not a JSON object: %v (body %.200q)", err, body)
	}
	if raw.Status == nil && raw.Instances == nil {
		return Status{}, fmt.Errorf("/health body has neither status nor instances (body %.200q)", body)
	}
	var hs Status
	if raw.Status != nil {
		hs.Status = *raw.Status
	}
	seen := map[string]bool{}
	for _, m := range raw.Instances {
		in := Instance{
			Component:  jsonText(m["component"]),
			Endpoint:   jsonText(m["endpoint"]),
			Namespace:  jsonText(m["namespace"]),
			InstanceID: jsonText(m["instance_id"]),
			Host:       instanceHost(m),
		}
		hs.Instances = append(hs.Instances, in)
		if in.Endpoint != "generate" {
			continue
		}
		key := in.Namespace + "/" + in.Component + "/" + in.InstanceID
		if in.InstanceID != "" && seen[key] {
			continue
		}
		seen[key] = true
		switch healthRole(in.Component) {
		case deploy.RolePrefill:
			hs.Prefill++
		case deploy.RoleDecode:
			hs.Decode++
		}
	}
	return hs, nil
}

// healthRole maps a Dynamo component to the role it counts for.
func healthRole(component string) deploy.Role {
	switch component {
	case "prefill":
		return deploy.RolePrefill
	case "decode", "backend":
		return deploy.RoleDecode
	}
	return ""
}

// jsonText is a JSON string's value, or a number's text.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

func instanceHost(m map[string]json.RawMessage) string {
	if h := jsonText(m["host"]); h != "" {
		return h
	}
	var transport map[string]json.RawMessage
	if json.Unmarshal(m["transport"], &transport) != nil {
		return ""
	}
	for _, v := range transport {
		addr, _, _ := strings.Cut(strings.TrimPrefix(jsonText(v), "tcp://"), "/")
		if host, _, err := net.SplitHostPort(addr); err == nil && host != "" {
			return host
		}
	}
	return ""
}
