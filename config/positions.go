package config

import (
	"fmt"
	"strconv"
	"strings"
)

// positions remembers on which line each key was set. The TOML decoder keeps
// this to itself and, for arrays of tables, does not tell the tables apart, so
// a light scan of the file rebuilds it: table headers, array-of-table headers
// (counted, so "certificate.1.domains" is the second [[certificate]]'s
// domains) and "key =" lines, skipping the insides of multi-line strings.
type positions []position

type position struct {
	path    string // "certificate.1.domains"
	generic string // "certificate.domains", as the decoder names it
	line    int
}

func scanPositions(src string) positions {
	var (
		out      positions
		table    []string // current table path, with array indices
		generic  []string // the same without indices
		arrays   = map[string]int{}
		inMulti  string // the delimiter of the multi-line string we are in
		lineNo   int
		unquoted = func(parts []string) []string {
			for i, p := range parts {
				p = strings.TrimSpace(p)
				if s, err := strconv.Unquote(p); err == nil {
					p = s
				} else if len(p) >= 2 && p[0] == '\'' && p[len(p)-1] == '\'' {
					p = p[1 : len(p)-1]
				}
				parts[i] = p
			}
			return parts
		}
	)
	for _, raw := range strings.Split(src, "\n") {
		lineNo++
		line := strings.TrimSpace(raw)
		if inMulti != "" {
			if strings.Count(line, inMulti)%2 == 1 {
				inMulti = ""
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		switch {
		case strings.HasPrefix(line, "[["):
			end := strings.Index(line, "]]")
			if end < 0 {
				continue
			}
			g := unquoted(splitKey(line[2:end]))
			name := strings.Join(g, ".")
			idx := arrays[name]
			arrays[name] = idx + 1
			generic = g
			table = append(append([]string{}, g...), strconv.Itoa(idx))
			out = append(out, position{path: strings.Join(table, "."), generic: name, line: lineNo})
		case line[0] == '[':
			end := strings.Index(line, "]")
			if end < 0 {
				continue
			}
			g := unquoted(splitKey(line[1:end]))
			generic = g
			table = g
			out = append(out, position{path: strings.Join(g, "."), generic: strings.Join(g, "."), line: lineNo})
		default:
			eq := keyEnd(line)
			if eq < 0 {
				continue
			}
			key := unquoted(splitKey(line[:eq]))
			val := strings.TrimSpace(line[eq+1:])
			for _, d := range []string{`"""`, `'''`} {
				if strings.HasPrefix(val, d) && strings.Count(val, d)%2 == 1 {
					inMulti = d
				}
			}
			out = append(out, position{
				path:    strings.Join(append(append([]string{}, table...), key...), "."),
				generic: strings.Join(append(append([]string{}, generic...), key...), "."),
				line:    lineNo,
			})
		}
	}
	return out
}

// keyEnd returns the index of the '=' that ends the key of a key/value line,
// or -1 when the line is not one (an array element, a closing bracket).
func keyEnd(line string) int {
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		case c == ' ' || c == '\t' || c == '.' || c == '-' || c == '_' ||
			c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
		default:
			return -1
		}
	}
	return -1
}

// splitKey splits a dotted key, leaving dots inside quotes alone.
func splitKey(s string) []string {
	var (
		parts []string
		quote byte
		start int
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// line returns the line of path, or 0.
func (p positions) line(path string) int {
	for _, pos := range p {
		if pos.path == path {
			return pos.line
		}
	}
	return 0
}

// genericLines returns the lines of every key the decoder would name generic.
func (p positions) genericLines(generic string) []int {
	var lines []int
	for _, pos := range p {
		if pos.generic == generic {
			lines = append(lines, pos.line)
		}
	}
	return lines
}

// where returns "file:line" for path, falling back to its table's line and
// then to the file alone.
func (p positions) where(file, path string) string {
	for q := path; q != ""; {
		if l := p.line(q); l > 0 {
			return fmt.Sprintf("%s:%d", file, l)
		}
		i := strings.LastIndexByte(q, '.')
		if i < 0 {
			break
		}
		q = q[:i]
	}
	return file
}

func certPath(index int, key string) string {
	if key == "" {
		return "certificate." + strconv.Itoa(index)
	}
	return "certificate." + strconv.Itoa(index) + "." + key
}
