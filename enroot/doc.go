// Package enroot knows containers: how to run a process inside the job's
// container image with enroot when the launcher manages it, and how to tell
// that pyxis already placed the launcher inside one.
package enroot
