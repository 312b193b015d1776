package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/daneroll/daneroll/internal/smallfile"
)

// Error is one problem in a configuration file.
type Error struct {
	File       string
	Line       int // 0 when unknown
	Msg        string
	Suggestion string // may be empty
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Hint returns advice on fixing the problem, or "".
func (e *Error) Hint() string { return e.Suggestion }

// Errors is every problem found in one file, in line order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// Path picks the configuration file: the flag, then $DANEROLL_CONFIG, then
// the default.
func Path(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(EnvConfig); env != "" {
		return env
	}
	return DefaultPath
}

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := readConfig(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, &Error{File: path, Msg: "no such configuration file",
				Suggestion: "copy config.example.toml there, or name another file with -c or $" + EnvConfig}
		}
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
			return nil, ce
		}
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", unwrapPath(err))}
	}
	return parse(path, abs, string(data))
}

// maxConfig bounds the configuration file; a real one is a few KiB.
const maxConfig = 4 << 20

// Limits on the files a configuration names, checked here and again when
// daneroll reads them: a bundle of PEM certificates (ca_roots) and a token
// or TSIG secret.
const (
	MaxPEMFile    = 1 << 20
	MaxSecretFile = 64 << 10
)

// readConfig reads the configuration after checking that only the user
// daneroll runs as, or root, can change it: it names the commands daneroll
// runs, typically as root.
func readConfig(path string) ([]byte, error) {
	data, err := smallfile.ReadChecked(path, maxConfig, func(fi fs.FileInfo) error {
		if fi.IsDir() {
			return &Error{Msg: "is a directory, not a configuration file"}
		}
		if uid, ok := fileOwner(fi); ok && uid != 0 && uid != os.Geteuid() {
			return &Error{Msg: fmt.Sprintf("owned by uid %d, who could make daneroll run any command: it must belong to root or to the user daneroll runs as (uid %d)", uid, os.Geteuid()),
				Suggestion: fmt.Sprintf("chown root %s", path)}
		}
		if perm := fi.Mode().Perm(); perm&0o022 != 0 {
			return &Error{Msg: fmt.Sprintf("writable by group or others (mode %04o): whoever can change it can make daneroll run any command", perm),
				Suggestion: fmt.Sprintf("chmod go-w %s", path)}
		}
		return nil
	})
	var ce *Error
	if err != nil && !errors.As(err, &ce) && !errors.Is(err, os.ErrNotExist) {
		return nil, &Error{Msg: unwrapPath(err).Error()}
	}
	return data, err
}

// Parse is Load for a configuration held in memory; name is used in messages
// and relative paths are taken from the current directory.
func Parse(name, src string) (*Config, error) {
	abs, err := filepath.Abs(name)
	if err != nil {
		return nil, err
	}
	return parse(name, abs, src)
}

func parse(name, abs, src string) (*Config, error) {
	cfg := &Config{File: name, pos: scanPositions(src)}
	md, err := toml.Decode(src, cfg)
	if err != nil {
		return nil, decodeError(name, cfg.pos, err)
	}
	var errs Errors
	reported := map[string]bool{}
	for _, key := range md.Undecoded() {
		k := key.String()
		if reported[k] {
			continue // the same key in several [[certificate]] tables
		}
		reported[k] = true
		lines := cfg.pos.genericLines(k)
		if len(lines) == 0 {
			lines = []int{0}
		}
		for _, l := range lines {
			errs = append(errs, &Error{File: name, Line: l, Msg: fmt.Sprintf("unknown key %q", k),
				Suggestion: suggest(key)})
		}
	}
	v := &validator{cfg: cfg, dir: filepath.Dir(abs)}
	v.run()
	errs = append(errs, v.errs...)
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	cfg.Warnings = v.warnings
	sort.SliceStable(cfg.Warnings, func(i, j int) bool { return cfg.Warnings[i].Line < cfg.Warnings[j].Line })
	return cfg, nil
}

var decoderLine = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// decodeError turns the decoder's error into one of ours, with the line.
func decodeError(name string, pos positions, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = pe.LastKey + ": " + msg
		}
		return Errors{{File: name, Line: pe.Position.Line, Msg: visible(msg)}}
	}
	if m := decoderLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Errors{{File: name, Line: line, Msg: visible(m[2] + ": " + typeWords(m[3])), Suggestion: typeHint(m[2], m[3])}}
	}
	return Errors{{File: name, Msg: visible(strings.TrimPrefix(err.Error(), "toml: "))}}
}

// visible keeps a message that quotes the file on one line: control
// characters from the file are shown escaped.
func visible(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f || (0x80 <= r && r < 0xa0) || r == 0x2028 || r == 0x2029:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// known lists the keys of each table, for "did you mean" hints.
var known = map[string][]string{
	"":                {"state_dir", "concurrency", "acme", "dns", "certificate", "service", "metrics", "notify", "store"},
	"store":           {"type", "endpoints", "ca_file", "cert_file", "key_file", "prefix", "fleet_key_file", "host", "lock_ttl", "report_timeout"},
	"metrics":         {"textfile"},
	"notify":          {"command", "timeout", "stuck_after"},
	"acme":            {"directory", "email", "accept_tos", "ca_roots", "profile", "key_type", "renew_before", "eab_kid", "eab_hmac_key_file", "eab_hmac_key_env", "preferred_chain"},
	"dns":             {"resolver", "hold_factor", "confirm_timeout", "max_hold", "publisher"},
	"dns.publisher.*": {"type", "api_token_file", "api_token_env", "api_url", "server", "tsig_name", "tsig_algorithm", "tsig_secret_file", "tsig_secret_env", "nameservers"},
	"certificate": {"name", "domains", "challenge", "publisher", "http01_listen", "http01_webroot", "tls_alpn01_listen",
		"key_type", "profile", "key_policy", "rekey_after", "renew_before", "tlsa", "tlsa_ttl", "tlsa_params", "services",
		"stale_records", "allow_unverified_deploy", "preferred_chain", "keep_sets"},
	"service.*": {"reload", "reload_timeout", "probe"},
}

func suggest(key toml.Key) string {
	table := strings.Join(key[:len(key)-1], ".")
	if len(key) == 4 && key[0] == "dns" && key[1] == "publisher" {
		table = "dns.publisher.*"
	}
	if len(key) == 3 && key[0] == "service" {
		table = "service.*"
	}
	last := key[len(key)-1]
	best, bestDist := "", 3
	for _, k := range known[table] {
		if d := editDistance(last, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	if opts, ok := known[table]; ok {
		return "known keys here: " + strings.Join(opts, ", ")
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var decoderTypes = regexp.MustCompile(`^incompatible types: TOML value has type (.+); destination has type (.+)$`)

// typeWords turns the decoder's Go types into TOML words: "wrong type: the
// file has a string, the key takes an array".
func typeWords(msg string) string {
	m := decoderTypes.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	word := func(t string) string {
		switch {
		case strings.HasPrefix(t, "[]"), t == "slice", t == "array":
			return "an array"
		case strings.HasPrefix(t, "map"), t == "struct", strings.HasPrefix(t, "config."):
			return "a table"
		case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
			return "an integer"
		case strings.HasPrefix(t, "float"):
			return "a number"
		case t == "bool", t == "boolean":
			return "true or false"
		case t == "integer":
			return "an integer"
		case t == "float":
			return "a number"
		case t == "table", t == "inline table":
			return "a table"
		case t == "string":
			return "a string"
		}
		return t
	}
	return fmt.Sprintf("wrong type: the file has %s, the key takes %s", word(m[1]), word(m[2]))
}

// typeHint suggests the array form for argv keys written as one string.
func typeHint(key, msg string) string {
	m := decoderTypes.FindStringSubmatch(msg)
	if m == nil || m[1] != "string" || !strings.HasSuffix(key, "reload") {
		return ""
	}
	return `commands are argv arrays, never split on spaces: reload = ["postfix", "reload"]`
}
