package node

import (
	"errors"
	"os"
	"path/filepath"
)

// writeFiles publishes the files a process needs (the NATS config) by
// write-temp-and-rename, so a process never reads a half-written file.
func writeFiles(files map[string]string) error {
	for path, content := range files {
		if err := publishFile(path, []byte(content)); err != nil {
			return err
		}
	}
	return nil
}

// publishFile writes path atomically: readers see the old file or the whole
// new one, never a part.
func publishFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	// CreateTemp makes 0600 files; these are for the job's users to read.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp)
		return errors.Join(werr, cerr)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
