package slurm

import (
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unsafe"
)

// Hostlist semantics follow Slurm's src/common/hostlist.c as `scontrol show
// hostnames` / `scontrol show hostlist` of Slurm 22.05 behave (the
// differential tests in hostlist_oracle_test.go compare byte for byte), with
// deliberate differences where 22.05 is older or wrong:
//   - text after the last bracket group (gpu[0-1]-ib) is accepted, as Slurm
//     does since 23.02.5;
//   - a newline separates names, as in newer Slurm (22.05 keeps it in a name);
//   - malformed input that 22.05 mangles is rejected: node[1-2 (22.05 prints
//     "node]"), node[ 1] ("node01"), node[1-] ("node1"), numbers beyond 64
//     bits (clamped);
//   - numbers up to 2^64-1 work (22.05 drops 2^64-1 and loops forever on a
//     prefix group ending there);
//   - one expression expands to at most 4,194,304 names (22.05: ~2^31);
//   - ASCII control characters (NUL, escape, CR, ...) are refused: 22.05
//     keeps them in a name.
//
// Grammar (separators only count outside brackets):
//
//	hostlist := sep* token (sep+ token)* sep*     sep := ',' | ' ' | '\t' | '\n'
//	token    := text? ('[' items ']' text?)*      text: no separators, '[', ']' or control characters
//	items    := item (',' item)*                  item := DIGITS | DIGITS '-' DIGITS
const (
	// maxRangeHosts is Slurm's MAX_RANGE: one lo-hi item names at most this
	// many hosts. Compress splits longer runs so its output stays readable.
	maxRangeHosts = 64 * 1024
	// maxPrefixHosts is Slurm's MAX_PREFIX_CNT: a bracket group that is not the
	// last one of its token names at most this many numbers.
	maxPrefixHosts = 64 * 1024
	// maxGroupItems bounds the items of one bracket group (Slurm's MAX_RANGES).
	// A command-line argument cannot even hold that many.
	maxGroupItems = 64 * 1024
	// maxHosts and maxBytes bound the whole expansion. Slurm stops near 2^31
	// hosts; no cluster gets anywhere near this, and it keeps a typo like
	// a[0-65535]b[0-65535] from exhausting memory.
	maxHosts = 1 << 22
	maxBytes = 1 << 28
	// maxErrText keeps error messages readable when the culprit is long.
	maxErrText = 64
)

// HostlistError is a malformed hostlist expression.
type HostlistError struct {
	Expr string // the whole expression
	Pos  int    // byte offset of the offending text in Expr
	Text string // the offending text (possibly shortened)
	Msg  string
}

func (e *HostlistError) Error() string {
	expr := e.Expr
	if len(expr) > 2*maxErrText {
		expr = expr[:2*maxErrText] + "..."
	}
	if e.Text == "" {
		return fmt.Sprintf("invalid hostlist %q: %s", expr, e.Msg)
	}
	return fmt.Sprintf("invalid hostlist %q: %q at offset %d: %s", expr, e.Text, e.Pos, e.Msg)
}

// Expand expands a Slurm hostlist expression in Slurm's order, keeping
// duplicates: "rack[1-2]-n[01-02],login" gives rack1-n01 rack1-n02 rack2-n01
// rack2-n02 login. Errors are *HostlistError. The names share one backing
// buffer, so keeping any of them keeps the whole expansion alive.
func Expand(expr string) ([]string, error) {
	return ExpandAppend(nil, expr)
}

// ExpandAppend is Expand appending to dst. On error dst is returned unchanged.
func ExpandAppend(dst []string, expr string) ([]string, error) {
	p, err := parseHostlist(expr)
	if err != nil {
		return dst, err
	}
	return p.appendNames(dst), nil
}

// WriteHostnames writes the names of the expressions to w, one per line, as
// `scontrol show hostnames` prints them. Every expression is checked before
// anything is written, so on a *HostlistError w gets nothing. The names are
// streamed through a small buffer: printing a million of them needs neither
// a []string nor memory in proportion to them.
func WriteHostnames(w io.Writer, exprs ...string) error {
	parsed := make([]*parsedHostlist, len(exprs))
	var size uint64 // at least the output: plain names are in expr
	for i, expr := range exprs {
		p, err := parseHostlist(expr)
		if err != nil {
			return err
		}
		parsed[i] = p
		size += p.bytes + p.hosts + uint64(len(expr))
	}
	// 64 KiB: a pipe's buffer; a larger chunk only costs page faults, which
	// for one short range weighed as much as the names.
	chunk := make([]byte, 0, min(size, 64<<10))
	for _, p := range parsed {
		var err error
		if chunk, err = p.writeNames(w, chunk); err != nil {
			return err
		}
	}
	if len(chunk) > 0 {
		_, err := w.Write(chunk)
		return err
	}
	return nil
}

type numRange struct {
	lo, hi uint64
	width  int // printed with at least this many digits (the low bound's length)
}

type bracketGroup struct {
	open, close int    // offsets of '[' and ']' in the expression
	r0, r1      int    // its items are ranges[r0:r1]
	count       uint64 // numbers it names
	digits      uint64 // total printed length of those numbers
}

type hostToken struct {
	start, end int // expr[start:end]
	g0, g1     int // its bracket groups are groups[g0:g1]
}

// parsedHostlist is a validated expression together with the exact size of
// its expansion, so expansion can allocate once.
type parsedHostlist struct {
	expr   string
	tokens []hostToken
	groups []bracketGroup
	ranges []numRange
	hosts  uint64 // names in the expansion
	bytes  uint64 // bytes of the names built from bracket groups
	depth  int    // most bracket groups in one token
}

func isSep(c byte) bool { return c == ',' || c == ' ' || c == '\t' || c == '\n' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isControl is an ASCII control character ('\t' and '\n' too, but those
// are separators, taken before a name is scanned).
func isControl(c byte) bool { return c < ' ' || c == 0x7f }

func (p *parsedHostlist) errorf(pos int, text, format string, a ...any) *HostlistError {
	if len(text) > maxErrText {
		text = text[:maxErrText] + "..."
	}
	return &HostlistError{Expr: p.expr, Pos: pos, Text: text, Msg: fmt.Sprintf(format, a...)}
}

func parseHostlist(expr string) (*parsedHostlist, error) {
	p := &parsedHostlist{expr: expr}
	i := 0
	for {
		for i < len(expr) && isSep(expr[i]) {
			i++
		}
		if i == len(expr) {
			break
		}
		t := hostToken{start: i, g0: len(p.groups)}
		for i < len(expr) && !isSep(expr[i]) {
			switch expr[i] {
			case '[':
				next, err := p.parseGroup(i)
				if err != nil {
					return nil, err
				}
				i = next
			case ']':
				return nil, p.errorf(i, "]", "unmatched ']'")
			default:
				if isControl(expr[i]) {
					// A NUL or an escape sequence in a name is never a host
					// (and a NUL cannot be passed on to any program).
					return nil, p.errorf(i, expr[i:i+1], "control character in a host name")
				}
				i++
			}
		}
		t.end, t.g1 = i, len(p.groups)
		if err := p.addToken(t); err != nil {
			return nil, err
		}
	}
	if len(p.tokens) == 0 {
		return nil, &HostlistError{Expr: expr, Msg: "empty hostlist"}
	}
	return p, nil
}

// parseGroup parses the bracket group opening at expr[open] and returns the
// offset just after its ']'.
func (p *parsedHostlist) parseGroup(open int) (int, error) {
	expr := p.expr
	close := open + 1
	for close < len(expr) && expr[close] != ']' && expr[close] != '[' {
		close++
	}
	switch {
	case close == len(expr):
		return 0, p.errorf(open, expr[open:], "unterminated '[' (no matching ']')")
	case expr[close] == '[':
		return 0, p.errorf(open, expr[open:close+1], "'[' inside brackets (missing ']'?)")
	case close == open+1:
		return 0, p.errorf(open, "[]", "empty brackets")
	}
	g := bracketGroup{open: open, close: close, r0: len(p.ranges)}
	for start := open + 1; start <= close; {
		end := start
		for end < close && expr[end] != ',' {
			end++
		}
		if g.r1-g.r0 == maxGroupItems {
			return 0, p.errorf(open, expr[open:close+1], "more than %d items in brackets", maxGroupItems)
		}
		r, err := p.parseItem(open, close, start, end)
		if err != nil {
			return 0, err
		}
		p.ranges = append(p.ranges, r)
		g.r1 = len(p.ranges)
		n := r.hi - r.lo + 1 // at most maxRangeHosts: no overflow
		g.count += n
		g.digits = satAdd(g.digits, printedDigits(r))
		start = end + 1
	}
	p.groups = append(p.groups, g)
	return close + 1, nil
}

// parseItem parses expr[start:end], one "N" or "N-M" item of the bracket group
// expr[open:close+1].
func (p *parsedHostlist) parseItem(open, close, start, end int) (numRange, error) {
	item := p.expr[start:end]
	if item == "" {
		return numRange{}, p.errorf(open, p.expr[open:close+1], "empty item in brackets")
	}
	loText, hiText, isRange := strings.Cut(item, "-")
	switch {
	case isRange && loText == "" && hiText != "" && isDigit(hiText[0]),
		isRange && strings.HasPrefix(hiText, "-"):
		return numRange{}, p.errorf(start, item, "negative numbers are not allowed")
	case isRange && hiText == "" && loText != "":
		return numRange{}, p.errorf(start, item, "range has no upper bound")
	case !isRange:
		hiText = loText
	}
	lo, err := p.parseNumber(start, item, loText)
	if err != nil {
		return numRange{}, err
	}
	hi, err := p.parseNumber(start, item, hiText)
	if err != nil {
		return numRange{}, err
	}
	if lo > hi {
		return numRange{}, p.errorf(start, item, "range is decreasing (%d > %d)", lo, hi)
	}
	if hi-lo >= maxRangeHosts {
		return numRange{}, p.errorf(start, item, "too many hosts in range (more than %d)", maxRangeHosts)
	}
	return numRange{lo: lo, hi: hi, width: len(loText)}, nil
}

func (p *parsedHostlist) parseNumber(pos int, item, s string) (uint64, error) {
	if s == "" {
		return 0, p.errorf(pos, item, "not a number or range (want N or N-M)")
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) {
			return 0, p.errorf(pos, item, "not a number or range (want N or N-M, digits only)")
		}
		hi, lo := bits.Mul64(n, 10)
		lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
		if hi != 0 || carry != 0 {
			return 0, p.errorf(pos, item, "number too large (max %d)", uint64(math.MaxUint64))
		}
		n = lo
	}
	return n, nil
}

// addToken checks the token's Slurm limits and adds its size to the totals.
func (p *parsedHostlist) addToken(t hostToken) error {
	text := p.expr[t.start:t.end]
	gs := p.groups[t.g0:t.g1]
	count := uint64(1)
	textLen := uint64(t.end - t.start)
	for i, g := range gs {
		if i < len(gs)-1 && g.count > maxPrefixHosts {
			return p.errorf(g.open, p.expr[g.open:g.close+1],
				"too many hosts in a bracket group before the last one (more than %d)", maxPrefixHosts)
		}
		count = satMul(count, g.count)
		textLen -= uint64(g.close - g.open + 1)
	}
	p.hosts = satAdd(p.hosts, count)
	if p.hosts > maxHosts {
		return p.errorf(t.start, text, "hostlist expands to more than %d hosts", maxHosts)
	}
	if len(gs) == 0 {
		// Plain names are substrings of the expression: no bytes to build.
		p.tokens = append(p.tokens, t)
		return nil
	}
	bytes := satMul(count, textLen)
	for _, g := range gs {
		bytes = satAdd(bytes, satMul(g.digits, count/g.count))
	}
	p.bytes = satAdd(p.bytes, bytes)
	if p.bytes > maxBytes {
		return p.errorf(t.start, text, "hostlist expands to more than %d bytes", maxBytes)
	}
	p.depth = max(p.depth, len(gs))
	p.tokens = append(p.tokens, t)
	return nil
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

func satMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}

// numDigits is the length of n in decimal.
func numDigits(n uint64) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// printedDigits is the total length of the numbers of r as printed, each
// zero-padded to r.width.
func printedDigits(r numRange) uint64 {
	var total uint64
	lo := r.lo
	for {
		d := numDigits(lo)
		end := r.hi
		if d < 20 {
			if top := pow10(d) - 1; top < end {
				end = top
			}
		}
		total = satAdd(total, satMul(end-lo+1, uint64(max(d, r.width))))
		if end == r.hi {
			return total
		}
		lo = end + 1
	}
}

func pow10(n int) uint64 {
	p := uint64(1)
	for ; n > 0; n-- {
		p *= 10
	}
	return p
}

// appendNames writes the expansion into one buffer of exactly the
// precomputed size and appends strings that point into it.
func (p *parsedHostlist) appendNames(dst []string) []string {
	if need := int(p.hosts); cap(dst)-len(dst) < need {
		grown := make([]string, len(dst), len(dst)+need)
		copy(grown, dst)
		dst = grown
	}
	b := p.newBuilder()
	b.dst, b.buf = dst, make([]byte, p.bytes)
	b.run()
	return b.dst
}

// writeNames writes the expansion to w, each name followed by a newline,
// through a buffer of a fixed size.
func (p *parsedHostlist) writeNames(w io.Writer, chunk []byte) ([]byte, error) {
	b := p.newBuilder()
	b.w, b.chunk, b.term = w, chunk, "\n"
	b.run()
	return b.chunk, b.err
}

func (p *parsedHostlist) newBuilder() *nameBuilder {
	return &nameBuilder{p: p, vals: make([]uint64, p.depth), widths: make([]int, p.depth)}
}

// nameBuilder generates the names of a parsed hostlist, either into strings
// (dst, buf) or as lines to a writer (w, chunk).
type nameBuilder struct {
	p      *parsedHostlist
	dst    []string
	buf    []byte // every built name, back to back; never rewritten
	off    int    // bytes of buf used so far
	w      io.Writer
	chunk  []byte // lines not yet written to w
	err    error  // first error from w
	term   string // after each name: "" for strings, "\n" for lines
	head   []byte // scratch: the current name up to its last number
	tok    hostToken
	groups []bracketGroup // the current token's
	vals   []uint64       // current number of each group but the last
	widths []int
}

func (b *nameBuilder) run() {
	p := b.p
	for _, t := range p.tokens {
		if b.err != nil {
			return
		}
		if t.g0 == t.g1 {
			if b.w == nil {
				b.dst = append(b.dst, p.expr[t.start:t.end])
			} else {
				b.emit(p.expr[t.start:t.end])
			}
			continue
		}
		b.tok = t
		b.groups = p.groups[t.g0:t.g1]
		b.outer(len(b.groups) - 2)
	}
}

// emit adds the line of a plain name for w.
func (b *nameBuilder) emit(name string) {
	if len(b.chunk)+len(name)+len(b.term) > cap(b.chunk) {
		b.flush()
	}
	b.chunk = append(append(b.chunk, name...), b.term...)
}

func (b *nameBuilder) flush() {
	if len(b.chunk) > 0 && b.err == nil {
		_, b.err = b.w.Write(b.chunk)
	}
	b.chunk = b.chunk[:0]
}

// outer walks the bracket groups before the last one in Slurm's order: the
// rightmost of them varies slowest, the leftmost fastest, and the last group
// (in inner) fastest of all. a[1-2]b[1-2]c[1-2] gives a1b1c1 a1b1c2 a2b1c1
// a2b1c2 a1b2c1 ...
func (b *nameBuilder) outer(level int) {
	if level < 0 {
		b.inner()
		return
	}
	g := b.groups[level]
	for _, r := range b.p.ranges[g.r0:g.r1] {
		b.widths[level] = r.width
		for v := r.lo; ; v++ {
			b.vals[level] = v
			b.outer(level - 1)
			if v == r.hi || b.err != nil {
				break
			}
		}
	}
}

// inner emits the names for the current values of the outer groups, one per
// number of the last group.
func (b *nameBuilder) inner() {
	expr := b.p.expr
	last := len(b.groups) - 1
	b.head = b.head[:0]
	from := b.tok.start
	for i, g := range b.groups[:last] {
		b.head = append(b.head, expr[from:g.open]...)
		b.head = appendPadded(b.head, b.vals[i], b.widths[i])
		from = g.close + 1
	}
	g := b.groups[last]
	b.head = append(b.head, expr[from:g.open]...)
	numAt := len(b.head)
	tail := expr[g.close+1:b.tok.end] + b.term // suffix, then newline for w
	for _, r := range b.p.ranges[g.r0:g.r1] {
		if b.err != nil {
			return
		}
		// name is the current name; its number is incremented in place as
		// decimal text, so each name costs one copy.
		name := append(appendPadded(b.head, r.lo, r.width), tail...)
		numEnd := len(name) - len(tail)
		for v := r.lo; ; v++ {
			if b.w == nil {
				start := b.off
				b.off += copy(b.buf[start:], name)
				// The bytes of this name are final: buf is only ever appended to.
				b.dst = append(b.dst, unsafe.String(&b.buf[start], len(name)))
			} else {
				if len(b.chunk)+len(name) > cap(b.chunk) {
					b.flush()
				}
				b.chunk = append(b.chunk, name...)
			}
			if v == r.hi {
				break
			}
			i := numEnd - 1
			for i >= numAt && name[i] == '9' {
				name[i] = '0'
				i--
			}
			if i >= numAt {
				name[i]++
			} else { // 99 -> 100: one more digit
				name = append(appendPadded(b.head[:numAt], v+1, r.width), tail...)
				numEnd = len(name) - len(tail)
			}
		}
		b.head = name[:numAt]
	}
}

// appendPadded appends n zero-padded to width digits, like printf("%0*lu").
func appendPadded(dst []byte, n uint64, width int) []byte {
	for z := numDigits(n); z < width; z++ {
		dst = append(dst, '0')
	}
	return strconv.AppendUint(dst, n, 10)
}

// hostRange is a run of names, as `scontrol show hostlist` keeps them: a
// prefix and consecutive numbers printed with at least width digits, or a
// single name without a trailing number.
type hostRange struct {
	prefix string
	lo, hi uint64
	width  int
	single bool
}

// Compress is the inverse of Expand and prints what `scontrol show hostlist`
// prints: only the trailing number of a name is grouped, a name joins the
// previous run only when it continues it (same prefix, next number,
// compatible zero-padding), and adjacent runs with the same prefix share
// brackets. Order and duplicates are kept: n1,n2,n3,n2 gives n[1-3,2];
// node01,node02,node3 gives node[01-02,3]; gpu0-ib,gpu1-ib stays as it is.
// Unlike Slurm, no run is longer than 65,536 names, so Expand accepts every
// result, and a trailing number too large for 64 bits leaves its name as it
// is (22.05 clamps it). Names must not contain separators or brackets; empty
// names are skipped.
func Compress(hosts []string) string {
	c := compressor{}
	// The output is at most about the names joined by commas, usually far less.
	c.out.Grow(min(len(hosts)*8, 64<<10))
	var tail hostRange // the run being extended
	have := false
	for _, h := range hosts {
		if h == "" {
			continue
		}
		r := splitHostname(h)
		if have && !tail.single && !r.single && r.lo > 0 && tail.hi == r.lo-1 && tail.prefix == r.prefix &&
			tail.hi-tail.lo+1 < maxRangeHosts && widthEquiv(tail.lo, &tail.width, r.lo, &r.width) {
			tail.hi = r.hi
			continue
		}
		if have {
			c.write(tail, &r)
		}
		tail, have = r, true
	}
	if have {
		c.write(tail, nil)
	}
	return c.out.String()
}

// compressor prints finished runs as `scontrol show hostlist` does: runs
// next to each other with the same prefix share one pair of brackets, which
// a group needs when it has more than one number.
type compressor struct {
	out     strings.Builder
	started bool // something was written
	inGroup bool // the last run written opened or continued a group
	bracket bool // that group has brackets
	num     []byte
}

// write prints run r, which next follows (nil at the end).
func (c *compressor) write(r hostRange, next *hostRange) {
	if c.inGroup {
		c.out.WriteByte(',')
	} else {
		if c.started {
			c.out.WriteByte(',')
		}
		c.started = true
		c.out.WriteString(r.prefix)
		if r.single {
			return
		}
		c.bracket = r.hi > r.lo || (next != nil && sameBrackets(r, *next))
		if c.bracket {
			c.out.WriteByte('[')
		}
	}
	c.num = appendPadded(c.num[:0], r.lo, r.width)
	if r.hi > r.lo {
		c.num = appendPadded(append(c.num, '-'), r.hi, r.width)
	}
	c.out.Write(c.num)
	c.inGroup = next != nil && sameBrackets(r, *next)
	if !c.inGroup && c.bracket {
		c.out.WriteByte(']')
	}
}

// splitHostname splits a name into prefix and trailing number. A name
// without one, or whose number does not fit in 64 bits, is a single name.
func splitHostname(h string) hostRange {
	i := len(h)
	for i > 0 && isDigit(h[i-1]) {
		i--
	}
	if i == len(h) {
		return hostRange{prefix: h, single: true}
	}
	var n uint64
	for j := i; j < len(h); j++ {
		hi, lo := bits.Mul64(n, 10)
		lo, carry := bits.Add64(lo, uint64(h[j]-'0'), 0)
		if hi != 0 || carry != 0 {
			return hostRange{prefix: h, single: true}
		}
		n = lo
	}
	return hostRange{prefix: h[:i], lo: n, hi: n, width: len(h) - i}
}

// sameBrackets tells whether two adjacent runs print inside one pair of
// brackets: same prefix, both numbered. Their widths may differ
// (node[01,1]).
func sameBrackets(a, b hostRange) bool {
	return !a.single && !b.single && a.prefix == b.prefix
}

// widthEquiv reports whether numbers n (printed with *wn digits) and m (*wm
// digits) can share one width: true when the widths are equal or when using
// either width for both changes neither number's zero-padding. When true it
// makes the widths equal, as Slurm does, keeping the one that matters.
func widthEquiv(n uint64, wn *int, m uint64, wm *int) bool {
	if *wn == *wm {
		return true
	}
	npad, nmpad := zeroPad(n, *wn), zeroPad(n, *wm)
	mpad, mnpad := zeroPad(m, *wm), zeroPad(m, *wn)
	switch {
	case npad != nmpad && mpad != mnpad:
		return false
	case npad != nmpad:
		*wm = *wn
	default:
		*wn = *wm
	}
	return true
}

// zeroPad is the number of zeros printing n with width digits adds.
func zeroPad(n uint64, width int) int {
	return max(width-numDigits(n), 0)
}
