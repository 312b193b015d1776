package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that reads from TOML strings such as "30d",
// "12h", "1d12h" or "90s". Days ("d") and weeks ("w") are added to the units
// time.ParseDuration knows, because certificate lifetimes are counted in days.
type Duration struct {
	time.Duration
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(FormatDuration(d.Duration)), nil
}

// ParseDuration parses a duration with the units of time.ParseDuration plus
// "d" (24h) and "w" (7d). Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("empty duration (want e.g. \"30d\", \"12h\", \"90s\")")
	}
	if strings.HasPrefix(in, "-") {
		return 0, fmt.Errorf("bad duration %q: must not be negative", s)
	}
	var total time.Duration
	rest := in
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("bad duration %q: want a number before each unit (e.g. \"30d\", \"12h\", \"1d12h\")", s)
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var mult time.Duration
		switch unit {
		case "w":
			mult = 7 * 24 * time.Hour
		case "d":
			mult = 24 * time.Hour
		case "h":
			mult = time.Hour
		case "m":
			mult = time.Minute
		case "s":
			mult = time.Second
		case "ms":
			mult = time.Millisecond
		case "":
			return 0, fmt.Errorf("bad duration %q: missing unit (one of w, d, h, m, s, ms)", s)
		default:
			return 0, fmt.Errorf("bad duration %q: unknown unit %q (want w, d, h, m, s or ms)", s, unit)
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, fmt.Errorf("bad duration %q: bad number %q", s, num)
		}
		part := time.Duration(f * float64(mult))
		if f > 0 && part <= 0 || total+part < total {
			return 0, fmt.Errorf("bad duration %q: too large", s)
		}
		total += part
	}
	return total, nil
}

// FormatDuration writes d in the units ParseDuration reads, largest first,
// e.g. "1d12h" or "5m30s".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	for _, u := range []struct {
		name string
		size time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}} {
		if n := d / u.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.size
		}
	}
	if b.Len() == 0 || b.String() == "-" {
		return d.String()
	}
	return b.String()
}
