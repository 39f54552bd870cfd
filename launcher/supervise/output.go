package supervise

import (
	"bufio"
	"os"
	"slices"
	"strconv"
)

// copyOutput copies the process's output verbatim to its log file and, line
// by line with the prefix, to Output, until every writer has closed the pipe.
//
// The log file is written here, synchronously: it is the complete record.
// Output (the job's stdout, srun's pipe) goes through the Supervisor's
// bounded queue, because a stalled reader there would otherwise stall this
// copy, fill the process's pipe and block the process itself on a write.
// When the queue is full, lines are dropped for Output only and counted; a
// notice says how many, and where they are, once the queue has room again.
func (s *Supervisor) copyOutput(p *proc, logFile *os.File, logPath string) {
	defer close(p.outputDone)
	defer p.out.Close()
	defer func() {
		s.mu.Lock()
		s.outputs = slices.DeleteFunc(s.outputs, func(q *proc) bool { return q == p })
		s.mu.Unlock()
	}()
	var prefix []byte
	if s.Prefix != "" {
		prefix = []byte("[" + s.Prefix + " " + p.name + "] ")
	} else {
		prefix = []byte("[" + p.name + "] ")
	}
	q := s.outQ
	unreported := 0 // lines dropped since the last notice
	notice := func() []byte {
		where := "there is no log file"
		if logPath != "" {
			where = "the log file " + logPath + " has them"
		}
		return []byte("... " + strconv.Itoa(unreported) + " lines dropped from this output (stdout stalled); " + where + "\n")
	}
	br := bufio.NewReaderSize(p.out, 64<<10)
	logFailed := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && s.OnLine != nil {
			s.OnLine(p.pid, p.name, chunk)
		}
		if len(chunk) > 0 {
			if logFile != nil && !logFailed {
				if _, werr := logFile.Write(chunk); werr != nil {
					logFailed = true
					s.Log.Error().Err(werr).Str("process", p.name).Msg("writing the log file failed; the rest goes only to the output")
				}
			}
			if q != nil {
				// A line longer than the buffer is split into prefixed pieces.
				var eol []byte
				if chunk[len(chunk)-1] != '\n' {
					eol = []byte{'\n'}
				}
				var queued bool
				if unreported > 0 {
					queued = q.put(false, prefix, notice(), prefix, chunk, eol)
				} else {
					queued = q.put(false, prefix, chunk, eol)
				}
				if queued {
					unreported = 0
				} else {
					unreported++
					p.dropped.Add(1)
				}
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
	p.flushed = closedChan
	if q != nil {
		if unreported > 0 {
			// Over the limit if need be: one short line per process.
			q.put(true, prefix, notice())
		}
		p.flushed = q.mark()
	}
	if n := p.dropped.Load(); n > 0 {
		s.Log.Warn().Str("process", p.name).Int64("lines_dropped", n).Str("log", logPath).
			Msg("output lines dropped from the job's output (stdout stalled); the log file has every line")
	}
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
