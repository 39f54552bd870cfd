package slurm

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseTasksPerNode expands the SLURM_TASKS_PER_NODE format, where a run of
// equal counts is written N(xR): "2(x3),1" gives [2 2 2 1]. It accepts what
// Slurm writes and nothing else: no spaces, no signs, R at least 1.
func ParseTasksPerNode(s string) ([]int, error) {
	if s == "" {
		return nil, fmt.Errorf("tasks per node %q: empty", s)
	}
	var runs []tasksRun
	total := 0
	for pos := 0; pos <= len(s); {
		end := pos + strings.IndexByte(s[pos:], ',')
		if end < pos {
			end = len(s)
		}
		item := s[pos:end]
		r, err := parseTasksItem(item)
		if err != nil {
			return nil, fmt.Errorf("tasks per node %q: item %q at offset %d: %w", s, item, pos, err)
		}
		total += r.repeat
		if total > maxHosts {
			return nil, fmt.Errorf("tasks per node %q: more than %d nodes", s, maxHosts)
		}
		runs = append(runs, r)
		pos = end + 1
	}
	out := make([]int, 0, total)
	for _, r := range runs {
		for range r.repeat {
			out = append(out, r.tasks)
		}
	}
	return out, nil
}

type tasksRun struct{ tasks, repeat int }

// parseTasksItem parses "N" or "N(xR)".
func parseTasksItem(item string) (tasksRun, error) {
	if item == "" {
		return tasksRun{}, fmt.Errorf("empty item")
	}
	count, rest, repeated := strings.Cut(item, "(")
	tasks, err := parseCount(count)
	if err != nil {
		return tasksRun{}, fmt.Errorf("task count: %w", err)
	}
	if !repeated {
		return tasksRun{tasks: tasks, repeat: 1}, nil
	}
	inner, ok := strings.CutSuffix(rest, ")")
	if !ok {
		return tasksRun{}, fmt.Errorf("missing ')' (want N or N(xR))")
	}
	r, ok := strings.CutPrefix(inner, "x")
	if !ok {
		return tasksRun{}, fmt.Errorf("missing 'x' after '(' (want N or N(xR))")
	}
	repeat, err := parseCount(r)
	if err != nil {
		return tasksRun{}, fmt.Errorf("repeat count: %w", err)
	}
	if repeat == 0 {
		return tasksRun{}, fmt.Errorf("repeat count is 0")
	}
	return tasksRun{tasks: tasks, repeat: repeat}, nil
}

// parseCount parses a non-negative decimal number, digits only.
func parseCount(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing number")
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int(n), nil
}
