package supervise

import (
	"io"
	"sync"
	"time"
)

const (
	// outputQueueBytes bounds the lines waiting for Output. The writer holds
	// one more batch of at most this size while it writes it, so the
	// Supervisor holds at most twice this for a stalled stdout.
	outputQueueBytes = 2 << 20
	// outputFlushTimeout bounds how long Shutdown waits for the queued lines
	// to reach Output. A stdout that takes longer is stalled; every line is
	// in the log files anyway, and the node's stop must fit in KillWait.
	outputFlushTimeout = 2 * time.Second
)

// outQueue serialises whole lines from every process's copy to Output
// through one writer goroutine. put never blocks on Output: it refuses
// lines once limit bytes are waiting. The writer takes everything waiting
// in one batch (double buffering: no allocation once both buffers have
// grown), so a slow Output also gets fewer, larger writes.
type outQueue struct {
	w     io.Writer
	limit int

	mu      sync.Mutex
	pending []byte          // whole lines, in the order put
	spare   []byte          // the writer's buffer, between batches
	writing int             // bytes of the batch being written
	marks   []chan struct{} // closed once what was put before them is written
	closed  bool            // no more puts; the writer ends when all is written
	abandon bool            // Shutdown gave up: the writer drops what is left
	ready   chan struct{}   // cap 1: something to write, or closed
	done    chan struct{}   // closed when the writer has ended
	failed  bool            // Output returned an error; logged once
	onError func(error)
}

func newOutQueue(w io.Writer, limit int, onError func(error)) *outQueue {
	q := &outQueue{w: w, limit: limit, ready: make(chan struct{}, 1), done: make(chan struct{}), onError: onError}
	go q.run()
	return q
}

// put appends the concatenation of parts, which must be whole lines, unless
// that would pass the limit and force is false; it reports whether it did.
func (q *outQueue) put(force bool, parts ...[]byte) bool {
	n := 0
	for _, b := range parts {
		n += len(b)
	}
	q.mu.Lock()
	if q.closed || (!force && len(q.pending)+n > q.limit) {
		q.mu.Unlock()
		return false
	}
	for _, b := range parts {
		q.pending = append(q.pending, b...)
	}
	q.mu.Unlock()
	q.wake()
	return true
}

// mark returns a channel that is closed once everything put so far has
// been written (or dropped by Shutdown).
func (q *outQueue) mark() <-chan struct{} {
	c := make(chan struct{})
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		close(c)
		return c
	}
	q.marks = append(q.marks, c)
	q.mu.Unlock()
	q.wake()
	return c
}

func (q *outQueue) wake() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *outQueue) run() {
	defer close(q.done)
	for {
		q.mu.Lock()
		batch := q.pending
		q.pending = q.spare[:0]
		marks := q.marks
		q.marks = nil
		closed, abandon := q.closed, q.abandon
		q.writing = len(batch)
		q.mu.Unlock()
		if len(batch) > 0 && !abandon {
			if _, err := q.w.Write(batch); err != nil && !q.failed {
				q.failed = true
				q.onError(err)
			}
		}
		for _, c := range marks {
			close(c)
		}
		q.mu.Lock()
		q.spare = batch
		q.writing = 0
		q.mu.Unlock()
		if len(batch) == 0 && len(marks) == 0 {
			if closed {
				return
			}
			<-q.ready
		}
	}
}

// close stops taking lines and waits up to timeout for the waiting ones to
// be written. It reports how many bytes it gave up on (with the write under
// way); the writer drops the waiting ones once its current write returns (a write to a stalled stdout
// may never return: that goroutine is left behind).
func (q *outQueue) close(timeout time.Duration) (abandoned int) {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-q.done:
		return 0
	case <-t.C:
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.abandon = true
	return q.writing + len(q.pending)
}
