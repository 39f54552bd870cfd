package dgcache

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// CompleteFile marks a published entry. It is written into the staging
// directory before the rename, so it is there from the first moment the
// entry is visible; an entry without it is not ours.
const CompleteFile = "COMPLETE.json"

// Complete is the content of COMPLETE.json: what the entry holds and who
// made it, so that an operator can tell entries apart and judge one that
// was published despite a known failure.
type Complete struct {
	Format int    `json:"format"`
	Key    string `json:"key"`
	Role   string `json:"role"`
	// Inputs are the key's inputs in readable form (KeyInputs.Describe).
	Inputs map[string]string `json:"inputs,omitempty"`
	JobID  string            `json:"job_id"`
	Host   string            `json:"host"`
	Image  string            `json:"image"`
	// Duration is how long the compile took.
	Duration time.Duration `json:"-"`
	Kernels  int           `json:"kernels"`
	// SGLangVersion and DeepGEMMVersion are "" when unknown.
	SGLangVersion   string `json:"sglang_version"`
	DeepGEMMVersion string `json:"deepgemm_version"`
	// Warning says why the entry was published although the compile did
	// not succeed cleanly (Judge); "" for a clean compile.
	Warning string    `json:"warning,omitempty"`
	Created time.Time `json:"created"`
}

// completeJSON spells Duration as "12m3.5s": COMPLETE.json is read by people.
type completeJSON struct {
	completeAlias
	Duration string `json:"duration"`
}

type completeAlias Complete // without the methods, so no recursion

// MarshalJSON writes Duration as a Go duration string.
func (c Complete) MarshalJSON() ([]byte, error) {
	return json.Marshal(completeJSON{completeAlias: completeAlias(c), Duration: c.Duration.String()})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (c *Complete) UnmarshalJSON(b []byte) error {
	var j completeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*c = Complete(j.completeAlias)
	if j.Duration != "" {
		d, err := time.ParseDuration(j.Duration)
		if err != nil {
			return fmt.Errorf("duration: %w", err)
		}
		c.Duration = d
	}
	return nil
}

// ReadComplete reads dir's COMPLETE.json. A missing file is an error that
// matches fs.ErrNotExist; one without a key is an error too, since nothing
// could match it.
func ReadComplete(dir string) (Complete, error) {
	path := filepath.Join(dir, CompleteFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return Complete{}, err // names the path already
	}
	var c Complete
	if err := json.Unmarshal(b, &c); err != nil {
		return Complete{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if c.Key == "" {
		return Complete{}, fmt.Errorf("reading %s: no key", path)
	}
	return c, nil
}

// writeComplete writes c as dir's COMPLETE.json and flushes it: the rename
// that publishes dir must not make visible a marker whose content is still
// in this node's page cache.
func writeComplete(dir string, c Complete) error {
	path := filepath.Join(dir, CompleteFile)
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
