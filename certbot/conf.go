package certbot

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// Conf is a parsed file in the syntax of Python's configobj, which certbot
// uses for its renewal configuration files (renewal/NAME.conf) and its DNS
// plugins use for their credentials files.
//
// The parser follows configobj 5 as certbot calls it (UTF-8, list values
// on, no interpolation applied): "key = value" lines, values quoted with '
// or " or triple quotes (which may span lines), unquoted values ending at
// '#', comma-separated lists ("a, b" and "a," are lists; "," is the empty
// one), sections "[name]" and subsections "[[name]]" one level deeper than
// their parent, comment lines. Like configobj, it refuses duplicate keys
// and sections, a section more than one level deeper than the one before,
// and lines it cannot read; the error names the file and the line.
type Conf struct {
	// Name is the section's name ("" for the file itself).
	Name string
	// Line is where the section starts (0 for the file itself).
	Line int
	// Values are the section's keys, in file order.
	Values []*Value
	// Sections are its subsections, in file order.
	Sections []*Conf

	depth  int
	parent *Conf
}

// Value is one key of a Conf.
type Value struct {
	Key  string
	Line int
	// List says whether the value was written as a list ("a, b", "a,"
	// or ","); a plain value has exactly one item.
	List  bool
	Items []string
}

// String returns a plain value, or a list's items joined by ", ".
func (v *Value) String() string {
	if v == nil {
		return ""
	}
	return strings.Join(v.Items, ", ")
}

// Get returns the value of key in c, or nil.
func (c *Conf) Get(key string) *Value {
	if c == nil {
		return nil
	}
	for _, v := range c.Values {
		if v.Key == key {
			return v
		}
	}
	return nil
}

// Str returns the plain value of key, or "" when it is missing.
func (c *Conf) Str(key string) string { return c.Get(key).String() }

// Section returns the subsection called name, or nil.
func (c *Conf) Section(name string) *Conf {
	if c == nil {
		return nil
	}
	for _, s := range c.Sections {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (c *Conf) has(name string) bool { return c.Get(name) != nil || c.Section(name) != nil }

// ConfError is a line of a configobj file that cannot be read.
type ConfError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// ws is what Python's \s and str.strip() take as white space (str.isspace).
const ws = `\t\n\v\f\r \x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}`

// configobj's own regular expressions, with Python's \s spelled out. Go's
// regexp prefers submatches the way Python's backtracking does
// (leftmost-first), so the captures are the same. They are compiled on
// first use: compiling them takes milliseconds that every daneroll
// command would pay at start-up, and only import-certbot parses
// certbot's files.
type confRegexps struct {
	keyword, section, value, listItem *regexp.Regexp
	// tripleSingle matches a value that opens and closes with the quote
	// (the map key), tripleEnd the line that closes it.
	tripleSingle, tripleEnd map[string]*regexp.Regexp
}

var confRE = sync.OnceValue(func() *confRegexps {
	return &confRegexps{
		keyword: regexp.MustCompile(`^([` + ws + `]*)("[^\n]*?"|'[^\n]*?'|[^'"=][^\n]*?)[` + ws + `]*=[` + ws + `]*([^\n]*)$`),
		section: regexp.MustCompile(`^([` + ws + `]*)((?:\[[` + ws + `]*)+)` +
			`("[` + ws + `]*[^` + ws + `][^\n]*?[` + ws + `]*"|'[` + ws + `]*[^` + ws + `][^\n]*?[` + ws + `]*'|[^'"` + ws + `][^\n]*?)` +
			`((?:[` + ws + `]*\])+)[` + ws + `]*(#[^\n]*)?$`),
		// configobj's value expression has, as the last alternative of
		// the final item, an empty match that may not follow a comma; Go
		// has no look-behind, so parseValue makes up for it.
		value: regexp.MustCompile(`^(?:(?:((?:(?:"[^\n]*?"|'[^\n]*?'|[^'",#][^,#]*?)[` + ws + `]*,[` + ws + `]*)*)` +
			`("[^\n]*?"|'[^\n]*?'|[^'",#` + ws + `][^,]*?)?)|(,))[` + ws + `]*(#[^\n]*)?$`),
		listItem: regexp.MustCompile(`("[^\n]*?"|'[^\n]*?'|(?:[^'",#]?[^\n]*?))[` + ws + `]*,[` + ws + `]*`),
		tripleSingle: map[string]*regexp.Regexp{
			`'''`: regexp.MustCompile(`^'''([^\n]*?)'''[` + ws + `]*(#[^\n]*)?$`),
			`"""`: regexp.MustCompile(`^"""([^\n]*?)"""[` + ws + `]*(#[^\n]*)?$`),
		},
		tripleEnd: map[string]*regexp.Regexp{
			`'''`: regexp.MustCompile(`^([^\n]*?)'''[` + ws + `]*(#[^\n]*)?$`),
			`"""`: regexp.MustCompile(`^([^\n]*?)"""[` + ws + `]*(#[^\n]*)?$`),
		},
	}
})

func isSpace(r rune) bool {
	switch {
	case r >= '\t' && r <= '\r', r == ' ', r >= 0x1c && r <= 0x1f, r == 0x85, r == 0xa0, r == 0x1680,
		r >= 0x2000 && r <= 0x200a, r == 0x2028, r == 0x2029, r == 0x202f, r == 0x205f, r == 0x3000:
		return true
	}
	return false
}

// ParseConf reads data, the contents of the configobj file name (name is
// used in errors only).
func ParseConf(name string, data []byte) (*Conf, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	// configobj splits the file at "\n" and strips every trailing "\r"
	// and "\n" from each line.
	raw := bytes.Split(data, []byte("\n"))
	if len(data) == 0 {
		raw = nil
	} else if len(raw[len(raw)-1]) == 0 {
		raw = raw[:len(raw)-1]
	}
	lines := make([]string, len(raw))
	for i, l := range raw {
		if !utf8.Valid(l) {
			return nil, &ConfError{File: name, Line: i + 1, Msg: "not UTF-8 text"}
		}
		lines[i] = strings.TrimRight(string(l), "\r\n")
	}
	p := &confParser{file: name, lines: lines}
	return p.parse()
}

type confParser struct {
	file  string
	lines []string
}

func (p *confParser) errorf(i int, format string, args ...any) error {
	return &ConfError{File: p.file, Line: i + 1, Msg: fmt.Sprintf(format, args...)}
}

func (p *confParser) parse() (*Conf, error) {
	root := &Conf{}
	root.parent = root
	cur := root
	for i := 0; i < len(p.lines); i++ {
		line := p.lines[i]
		s := strings.TrimFunc(line, isSpace)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if m := confRE().section.FindStringSubmatch(line); m != nil {
			depth := strings.Count(m[2], "[")
			if depth != strings.Count(m[4], "]") {
				return nil, p.errorf(i, "section %s: unbalanced brackets", quoteForError(m[3]))
			}
			var parent *Conf
			switch {
			case depth < cur.depth:
				anc := cur
				for anc.depth > depth {
					anc = anc.parent
				}
				parent = anc.parent
			case depth == cur.depth:
				parent = cur.parent
			case depth == cur.depth+1:
				parent = cur
			default:
				return nil, p.errorf(i, "section %s is nested more than one level below the one before", quoteForError(m[3]))
			}
			sname := unquote(m[3])
			if parent.has(sname) {
				return nil, p.errorf(i, "duplicate section or key %s", quoteForError(sname))
			}
			sec := &Conf{Name: sname, Line: i + 1, depth: depth, parent: parent}
			parent.Sections = append(parent.Sections, sec)
			cur = sec
			continue
		}
		m := confRE().keyword.FindStringSubmatch(line)
		if m == nil {
			return nil, p.errorf(i, "cannot read %s: neither a section nor key = value", quoteForError(s))
		}
		key, rawValue := unquote(m[2]), m[3]
		v := &Value{Key: key, Line: i + 1}
		if q := rawValue[:min(3, len(rawValue))]; q == `"""` || q == `'''` {
			value, end, err := p.multiline(i, q, rawValue)
			if err != nil {
				return nil, err
			}
			v.Items = []string{value}
			i = end
		} else {
			items, list, ok := parseValue(rawValue)
			if !ok {
				return nil, p.errorf(i, "%s: cannot read the value %s (unbalanced quotes, or an empty list item?)", quoteForError(key), quoteForError(rawValue))
			}
			v.Items, v.List = items, list
		}
		if cur.has(key) {
			// configobj names the last line of a value that spans lines.
			return nil, p.errorf(i, "duplicate key %s", quoteForError(key))
		}
		cur.Values = append(cur.Values, v)
	}
	return root, nil
}

// multiline reads a triple-quoted value that starts on line i, and returns
// it with the index of its last line.
func (p *confParser) multiline(i int, quote, rawValue string) (string, int, error) {
	if m := confRE().tripleSingle[quote].FindStringSubmatch(rawValue); m != nil {
		return m[1], i, nil
	}
	value := rawValue[3:]
	if strings.Contains(value, quote) {
		return "", 0, p.errorf(i, "text after the closing %s", quote)
	}
	for j := i + 1; j < len(p.lines); j++ {
		if !strings.Contains(p.lines[j], quote) {
			value += "\n" + p.lines[j]
			continue
		}
		m := confRE().tripleEnd[quote].FindStringSubmatch(p.lines[j])
		if m == nil {
			return "", 0, p.errorf(i, "text after the closing %s on line %d", quote, j+1)
		}
		return value + "\n" + m[1], j, nil
	}
	return "", 0, p.errorf(i, "no closing %s", quote)
}

// parseValue is configobj's _handle_value with list values on.
func parseValue(s string) (items []string, list, ok bool) {
	m := confRE().value.FindStringSubmatchIndex(s)
	if m == nil {
		return nil, false, false
	}
	group := func(n int) (string, bool) {
		if m[2*n] < 0 {
			return "", false
		}
		return s[m[2*n]:m[2*n+1]], true
	}
	listPart, _ := group(1)
	single, haveSingle := group(2)
	if _, emptyList := group(3); emptyList {
		return []string{}, true, true
	}
	if !haveSingle && listPart == "" {
		// configobj's empty alternative: "key =" is the empty string.
		single, haveSingle = `""`, true
	}
	if listPart == "" {
		return []string{unquote(single)}, false, true
	}
	for _, it := range confRE().listItem.FindAllStringSubmatch(listPart, -1) {
		if it[1] == "" {
			return nil, false, false
		}
		items = append(items, unquote(it[1]))
	}
	if haveSingle {
		items = append(items, unquote(single))
	}
	if items == nil {
		items = []string{}
	}
	return items, true, true
}

// unquote is configobj's: one pair of matching quotes around the whole
// value is removed, nothing inside is unescaped.
func unquote(s string) string {
	if len(s) >= 1 && s[0] == s[len(s)-1] && (s[0] == '"' || s[0] == '\'') {
		if len(s) == 1 {
			return ""
		}
		return s[1 : len(s)-1]
	}
	return s
}

// quoteForError shows a piece of a file in a one-line message: quoted,
// control characters escaped, cut after 80 bytes.
func quoteForError(s string) string {
	const maxShown = 80
	cut := ""
	if len(s) > maxShown {
		n := maxShown
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s, cut = s[:n], "…"
	}
	s = strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`)
	return `"` + escapeControls(s) + `"` + cut
}

// escapeControls keeps text on one line: control characters (line
// separators included) and invalid UTF-8 are shown as \uXXXX.
func escapeControls(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || r == utf8.RuneError:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
