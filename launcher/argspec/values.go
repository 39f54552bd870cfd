package argspec

import (
	"encoding/json"
	"errors"
	"math/big"
	"strconv"
	"strings"
)

var errBadValue = errors.New("bad value")

// checkType is Python's int(), float() or json.loads() acceptance test, the
// type functions the grammars hand to argparse.
func checkType(typ, v string) error {
	switch typ {
	case "int":
		if _, ok := pyInt(v); !ok {
			return errBadValue
		}
	case "float":
		if !pyFloat(v) {
			return errBadValue
		}
	case "json":
		if !json.Valid([]byte(v)) {
			return errBadValue
		}
	}
	return nil
}

// pyInt parses like Python's int(str): surrounding whitespace, a sign,
// decimal digits with single underscores between them.
func pyInt(v string) (*big.Int, bool) {
	s := strings.TrimSpace(v)
	sign := ""
	if s != "" && (s[0] == '+' || s[0] == '-') {
		sign, s = s[:1], s[1:]
	}
	digits, ok := pyDigits(s)
	if !ok {
		return nil, false
	}
	n, ok := new(big.Int).SetString(sign+digits, 10)
	return n, ok
}

// pyDigits drops the underscores Python allows between digits and reports
// whether s is a non-empty digit string.
func pyDigits(s string) (string, bool) {
	if s == "" || s[0] == '_' || s[len(s)-1] == '_' || strings.Contains(s, "__") {
		return "", false
	}
	s = strings.ReplaceAll(s, "_", "")
	for _, c := range s {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return s, s != ""
}

// pyFloat accepts what Python's float(str) accepts: decimal and exponent
// forms, inf/infinity/nan in any case, underscores between digits. Go's
// ParseFloat also takes hex floats, which Python refuses.
func pyFloat(v string) bool {
	s := strings.TrimSpace(v)
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 || body == "" {
		return false
	}
	switch strings.ToLower(body) {
	case "inf", "infinity", "nan":
		return true
	}
	if strings.ContainsAny(body, "xXpP") {
		return false
	}
	clean := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		if body[i] == '_' {
			if i == 0 || i == len(body)-1 || !isDigit(body[i-1]) || !isDigit(body[i+1]) {
				return false
			}
			continue
		}
		clean = append(clean, body[i])
	}
	_, err := strconv.ParseFloat(string(clean), 64)
	return err == nil || errors.Is(err, strconv.ErrRange)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// pyTypeName is the __name__ of the Python callable argparse names in an
// "invalid <name> value" message. SGLang's JSON flags use either json.loads
// or its own json_list_type; the data file's note says which.
func pyTypeName(f Flag) string {
	if f.Type != "json" {
		return f.Type
	}
	if strings.Contains(f.Note, "json_list_type") {
		return "json_list_type"
	}
	return "loads"
}

// inChoices compares after conversion, as argparse does: for an int flag
// "01" is the choice 1.
func inChoices(f Flag, v string) bool {
	if f.Type == "int" {
		n, ok := pyInt(v)
		if !ok {
			return false
		}
		for _, c := range f.Choices {
			if m, ok := pyInt(c); ok && m.Cmp(n) == 0 {
				return true
			}
		}
		return false
	}
	for _, c := range f.Choices {
		if c == v {
			return true
		}
	}
	return false
}

// choiceRepr prints a value the way argparse's message does: Python repr of
// the converted value (ints bare, strings quoted).
func choiceRepr(typ, v string) string {
	if typ == "int" {
		if n, ok := pyInt(v); ok {
			return n.String()
		}
	}
	return pyRepr(v)
}

// pyRepr is Python's repr() of a str, enough for messages: single quotes
// unless the text holds a single quote and no double quote.
func pyRepr(s string) string {
	q := "'"
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		q = `"`
	}
	var b strings.Builder
	b.WriteString(q)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case string(r) == q:
			b.WriteString(`\` + q)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\x` + strconv.FormatInt(int64(r)+0x100, 16)[1:])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString(q)
	return b.String()
}
