package sharedcache

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"
)

// ErrPublished is what Acquire returns when LockOptions.Done reports, while
// waiting, that the holder has published the entry: the caller reuses it
// instead of doing the work again.
var ErrPublished = errors.New("the lock holder published the entry")

// ErrLost is what Release returns when the lock stopped being ours while we
// held it: another process judged it stale and broke it (our job was
// suspended, or the filesystem stalled for three intervals). The file that
// is there now belongs to someone else and is left alone.
var ErrLost = errors.New("the lock was broken by another process")

const (
	defaultInterval      = 30 * time.Second
	defaultProgressEvery = 30 * time.Second
	// staleIntervals is how many refresh intervals a holder may miss before
	// its lock is stale: one missed refresh can be a slow NFS server, three
	// in a row is a dead holder.
	staleIntervals = 3
)

// Owner identifies the holder of a lock. It is the lock file's content, so
// that whoever waits can say whom they wait for and ask whether that job
// still runs.
type Owner struct {
	JobID string    `json:"job_id"`
	Host  string    `json:"host"`
	PID   int       `json:"pid"`
	Time  time.Time `json:"time"`
	// Token tells apart two acquisitions by one process, so that a lock
	// broken and taken again by the same job is not mistaken for ours.
	Token string `json:"token"`
}

func (o Owner) String() string {
	if o.JobID == "" && o.Host == "" && o.PID == 0 {
		return "an unknown holder"
	}
	return fmt.Sprintf("job %s (pid %d on %s)", o.JobID, o.PID, o.Host)
}

// LockOptions configures Acquire. Only Owner is required; everything timed
// goes through Now and the intervals so tests can run in milliseconds.
type LockOptions struct {
	// Owner is written into the lock; Acquire fills in Time and Token.
	Owner Owner
	// Interval is how often the holder touches the lock (default 30 s); a
	// lock untouched for three intervals is stale. A waiter judges with its
	// own Interval, so every user of one lock must use the same value.
	Interval time.Duration
	// PollInterval is how often a waiter looks at the lock again (default
	// a quarter of Interval, at most 1 s).
	PollInterval time.Duration
	// ProgressEvery bounds the time between two OnWait calls (default 30 s).
	ProgressEvery time.Duration
	// Now is the clock (default time.Now). The holder stamps the lock's
	// mtime with it, and waiters compare against it.
	Now func() time.Time
	// Alive, when set, says whether the holder's job still runs; known is
	// false when it cannot tell (squeue failed). A holder known to be gone
	// makes its lock stale at once.
	Alive func(holder Owner) (alive, known bool)
	// Done, when set, is polled while waiting: true means the holder has
	// published the entry, and Acquire returns ErrPublished.
	Done func() (bool, error)
	// OnWait is called when waiting starts and then at least every
	// ProgressEvery, with the holder and the time waited so far.
	OnWait func(holder Owner, waited time.Duration)
	// OnBreak is called once for every stale lock this caller broke, with
	// its holder and how long it had gone untouched.
	OnBreak func(holder Owner, age time.Duration)
}

func (o LockOptions) withDefaults() LockOptions {
	if o.Interval <= 0 {
		o.Interval = defaultInterval
	}
	if o.PollInterval <= 0 {
		o.PollInterval = min(time.Second, o.Interval/4)
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = defaultProgressEvery
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Lock is a held lock. Its refresher keeps it fresh until Release.
type Lock struct {
	path    string
	content []byte
	owner   Owner
	opts    LockOptions

	stop     chan struct{}
	done     chan struct{}
	lost     chan struct{}
	stopOnce sync.Once
	lostOnce sync.Once
}

// Path is the lock file.
func (l *Lock) Path() string { return l.path }

// Owner is what the lock file says about us.
func (l *Lock) Owner() Owner { return l.owner }

// Lost is closed when the refresher finds that the lock file is no longer
// ours: someone broke it. Work done under it may now race with the new
// holder; publishing still never overwrites, so the cost is duplicate work.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Acquire takes the lock at path, waiting while someone else holds a fresh
// one and breaking stale ones. It returns ErrPublished (wrapped) when
// opts.Done reports the entry published while waiting, and the context's
// cause when ctx ends first.
func Acquire(ctx context.Context, path string, opts LockOptions) (*Lock, error) {
	o := opts.withDefaults()
	owner := o.Owner
	owner.Token = newToken()
	w := &waiter{path: path, opts: o, start: o.Now()}
	for {
		// Stamped at each attempt: a lock taken after a long wait must
		// not look as old as the wait to the next waiter.
		owner.Time = o.Now()
		content, err := json.Marshal(owner)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		content = append(content, '\n')
		err = createExclusive(path, content, owner.Time)
		if err == nil {
			return startLock(path, content, owner, o), nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if o.Done != nil {
			done, err := o.Done()
			if err != nil {
				return nil, fmt.Errorf("lock %s: checking whether the entry was published: %w", path, err)
			}
			if done {
				return nil, fmt.Errorf("lock %s: %w", path, ErrPublished)
			}
		}
		retry, err := w.step()
		if err != nil {
			return nil, err
		}
		if retry {
			continue
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for lock %s held by %s: %w", path, w.seen.owner, context.Cause(ctx))
		case <-time.After(o.PollInterval):
		}
	}
}

// Release stops the refresher and removes the lock if it is still ours. A
// lock that was broken and taken by someone else is left to them, and
// ErrLost says so.
func (l *Lock) Release() error {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	ours, err := removeIfSame(l.path, func(st lockState) bool { return bytes.Equal(st.content, l.content) })
	if err != nil {
		return fmt.Errorf("releasing lock %s: %w", l.path, err)
	}
	if !ours {
		return fmt.Errorf("releasing lock %s: %w", l.path, ErrLost)
	}
	return nil
}

func startLock(path string, content []byte, owner Owner, o LockOptions) *Lock {
	l := &Lock{
		path:    path,
		content: content,
		owner:   owner,
		opts:    o,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		lost:    make(chan struct{}),
	}
	go l.refresh()
	return l
}

// lookAgain is how long refresh waits before it believes a missing lock file.
const lookAgain = 50 * time.Millisecond

// refresh touches the lock every interval while it is still ours. It only
// touches the mtime: rewriting the content would let a reader see a
// half-written file, while utimes(2) is atomic.
func (l *Lock) refresh() {
	defer close(l.done)
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		select {
		case <-l.lost:
			continue // never touch a lock that is not ours
		default:
		}
		got, err := os.ReadFile(l.path)
		if errors.Is(err, fs.ErrNotExist) {
			// A waiter checking whether our lock is stale moves it aside
			// for a moment and links it back: look again before calling it
			// lost.
			time.Sleep(lookAgain)
			got, err = os.ReadFile(l.path)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist), err == nil && !bytes.Equal(got, l.content):
			l.lostOnce.Do(func() { close(l.lost) })
			continue
		case err != nil:
			continue // a passing NFS error; the next tick tries again
		}
		now := l.opts.Now()
		_ = os.Chtimes(l.path, now, now) // a failed touch is retried next tick
	}
}

// createExclusive creates the lock file with its content and mtime in one
// go: the file is made whole under a private name and then linked to path,
// which fails if path exists (link(2) is atomic on NFS too). Creating path
// itself and then writing it would let a breaker of the previous lock move
// our half-made file aside in between and leave us without it (a lock we
// would then never refresh). The mtime is set from the injected clock so
// that holders and waiters agree on what "untouched for three intervals"
// means.
func createExclusive(path string, content []byte, now time.Time) error {
	tmp := fmt.Sprintf("%s.new-%d-%s", path, os.Getpid(), newToken())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	_, werr := f.Write(content)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chtimes(tmp, now, now)
	}
	if werr != nil {
		return werr
	}
	return os.Link(tmp, path)
}

// lockState is one observed version of a lock file: its content and mtime.
type lockState struct {
	content []byte
	mtime   time.Time
	owner   Owner
	known   bool // content parsed as an Owner
}

func (s lockState) same(o lockState) bool {
	return bytes.Equal(s.content, o.content) && s.mtime.Equal(o.mtime)
}

// readState reads the content before the mtime, so the mtime seen is never
// older than the content: a refresh in between makes the lock look fresher,
// never staler.
func readState(path string) (lockState, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return lockState{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return lockState{}, err
	}
	st := lockState{content: content, mtime: fi.ModTime()}
	st.known = json.Unmarshal(content, &st.owner) == nil
	return st, nil
}

// waiter is the state of one Acquire call waiting for someone else's lock.
type waiter struct {
	path     string
	opts     LockOptions
	start    time.Time
	lastWait time.Time
	seen     lockState // the version being watched
	seenAt   time.Time // when we first saw it, on our own clock
	aliveAt  time.Time // when Alive was last asked about it
}

// step looks at the lock once: it breaks it if stale and reports waiting
// otherwise. retry means "try to create the lock again now".
func (w *waiter) step() (retry bool, err error) {
	st, err := readState(w.path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil // released in the meantime
	}
	if err != nil {
		return false, fmt.Errorf("reading lock %s: %w", w.path, err)
	}
	now := w.opts.Now()
	stale, age := w.judge(st, now)
	if !stale {
		if w.lastWait.IsZero() || now.Sub(w.lastWait) >= w.opts.ProgressEvery {
			w.lastWait = now
			if w.opts.OnWait != nil {
				w.opts.OnWait(st.owner, now.Sub(w.start))
			}
		}
		return false, nil
	}
	broke, err := removeIfSame(w.path, func(got lockState) bool { return got.same(st) })
	if err != nil {
		return false, fmt.Errorf("breaking stale lock %s of %s: %w", w.path, st.owner, err)
	}
	if broke && w.opts.OnBreak != nil {
		w.opts.OnBreak(st.owner, age)
	}
	return true, nil
}

// judge says whether the observed version is stale. Its age is the larger
// of what the mtime says and how long we have watched it unchanged: the
// mtime lets a job arriving long after a crash break the lock at once, and
// the observation still works when the holder's clock runs ahead of ours.
func (w *waiter) judge(st lockState, now time.Time) (stale bool, age time.Duration) {
	if !st.same(w.seen) {
		w.seen, w.seenAt, w.aliveAt = st, now, time.Time{}
	}
	age = max(now.Sub(st.mtime), now.Sub(w.seenAt))
	if age > staleIntervals*w.opts.Interval {
		return true, age
	}
	// Asking about the holder can mean running squeue; once per interval
	// per lock version is plenty.
	if st.known && w.opts.Alive != nil && (w.aliveAt.IsZero() || now.Sub(w.aliveAt) >= w.opts.Interval) {
		w.aliveAt = now
		if alive, known := w.opts.Alive(st.owner); known && !alive {
			return true, age
		}
	}
	return false, age
}

// removeIfSame removes the lock at path if match accepts it, without ever
// removing a lock that someone else created in the meantime. The lock is
// first renamed to a name only this call uses: of two processes doing this
// at once, exactly one gets the file. It is then read again under that name;
// if it is not the one expected (it was refreshed, or it is a new holder's),
// it is linked back under its name unless yet another lock took its place,
// whose holder then sees its lock lost on its next refresh.
func removeIfSame(path string, match func(lockState) bool) (removed bool, err error) {
	aside := fmt.Sprintf("%s.aside-%d-%s", path, os.Getpid(), newToken())
	if err := os.Rename(path, aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	got, err := readState(aside)
	if err == nil && match(got) {
		if err := os.Remove(aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return true, err
		}
		return true, nil
	}
	if err := os.Link(aside, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("putting back %s: %w", path, err)
	}
	if err := os.Remove(aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return false, nil
}

func newToken() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on Linux; a clock-based token is still
		// unique enough to tell our lock from another.
		return fmt.Sprintf("%x", time.Now().UnixNano())
	}
	return hex.EncodeToString(b[:])
}
