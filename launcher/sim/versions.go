package sim

import (
	"encoding/json"
	"fmt"

	"github.com/wideep/wideep-launch/launcher/deploy"
)

// runVersionProbe stands in for `python3 -c <deploy.VersionProbe>` in the
// simulated image: it answers that one script only (any other is an error,
// as the stand-ins are strict), printing what importlib.metadata would.
func (s *standIn) runVersionProbe(script string) int {
	if script != deploy.VersionProbe {
		fmt.Fprintf(s.stderr, "wideep-launch sim: no stand-in for python3 -c %q (only the launcher's version probe)\n", script)
		return exitUsage
	}
	version := func(env, def string) *string {
		v := s.getenv(env)
		switch v {
		case "":
			v = def
		case "none":
			return nil
		}
		return &v
	}
	b, err := json.Marshal(map[string]*string{
		"sglang":            version(EnvSGLangVersion, deploy.DefaultSGLangVersion),
		"ai-dynamo":         version(EnvDynamoVersion, "0.8.0"),
		"ai-dynamo-runtime": version(EnvDynamoVersion, "0.8.0"),
	})
	if err != nil {
		return exitError
	}
	fmt.Fprintf(s.stdout, "%s\n", b)
	return 0
}
