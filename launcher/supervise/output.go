package supervise

import (
	"bufio"
	"os"
	"slices"
)

// copyOutput copies the process's output verbatim to its log file and, line
// by line with the prefix, to Output, until every writer has closed the pipe.
func (s *Supervisor) copyOutput(p *proc, logFile *os.File) {
	defer close(p.outputDone)
	defer p.out.Close()
	defer func() {
		s.mu.Lock()
		s.outputs = slices.DeleteFunc(s.outputs, func(q *proc) bool { return q == p })
		s.mu.Unlock()
	}()
	var prefix string
	if s.Prefix != "" {
		prefix = "[" + s.Prefix + " " + p.name + "] "
	} else {
		prefix = "[" + p.name + "] "
	}
	br := bufio.NewReaderSize(p.out, 64<<10)
	var line []byte
	logFailed := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if logFile != nil && !logFailed {
				if _, werr := logFile.Write(chunk); werr != nil {
					logFailed = true
					s.Log.Error().Err(werr).Str("process", p.name).Msg("writing the log file failed; the rest goes only to the output")
				}
			}
			if s.Output != nil {
				// A line longer than the buffer is split into prefixed pieces.
				line = append(append(line[:0], prefix...), chunk...)
				if line[len(line)-1] != '\n' {
					line = append(line, '\n')
				}
				s.outMu.Lock()
				s.Output.Write(line)
				s.outMu.Unlock()
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			break
		}
	}
	if logFile != nil {
		if err := logFile.Close(); err != nil && !logFailed {
			s.Log.Error().Err(err).Str("process", p.name).Msg("closing the log file failed")
		}
	}
}
