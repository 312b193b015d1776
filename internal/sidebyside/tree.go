package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// cloneLineages makes n certbot lineages in the certbot configuration
// directory dst from the lineages in src, in turn: issuing a thousand
// certificates with certbot would take an hour, while what renew and
// certificates do with a lineage (read its renewal file, its live links
// and its certificate) does not depend on where the certificate came from.
// Clone i is named name(i): renewal/NAME.conf with its paths rewritten,
// live/NAME/ with links into archive/NAME/, a copy of the source's
// archive. The account and the hook directories are copied as they are.
// It returns the lineage each clone was made from.
func cloneLineages(src, dst string, n int, name func(int) string) ([]string, error) {
	confs, err := filepath.Glob(filepath.Join(src, "renewal", "*.conf"))
	if err != nil {
		return nil, err
	}
	if len(confs) == 0 {
		return nil, fmt.Errorf("%s: no lineages to clone", src)
	}
	slices.Sort(confs)
	for _, d := range []string{"renewal", "live", "archive"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o700); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{"accounts", "renewal-hooks"} {
		if err := copyTree(filepath.Join(src, d), filepath.Join(dst, d)); err != nil && !os.IsNotExist(err) {
			return nil, err
		}
	}
	if readme, err := os.ReadFile(filepath.Join(src, "live", "README")); err == nil {
		if err := os.WriteFile(filepath.Join(dst, "live", "README"), readme, 0o644); err != nil {
			return nil, err
		}
	}
	var sources []string
	for i := range n {
		conf := confs[i%len(confs)]
		from := strings.TrimSuffix(filepath.Base(conf), ".conf")
		to := name(i)
		sources = append(sources, from)
		if err := copyTree(filepath.Join(src, "archive", from), filepath.Join(dst, "archive", to)); err != nil {
			return nil, err
		}
		if err := cloneLive(filepath.Join(src, "live", from), filepath.Join(dst, "live", to), to); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(conf)
		if err != nil {
			return nil, err
		}
		out, err := rewriteRenewal(data, dst, to)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", conf, err)
		}
		if err := os.WriteFile(filepath.Join(dst, "renewal", to+".conf"), out, 0o644); err != nil {
			return nil, err
		}
	}
	return sources, nil
}

// cloneLive makes a lineage's live directory: the same links, into the
// archive of lineage name; anything else (certbot's README) copied.
func cloneLive(src, dst, name string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if e.Type()&fs.ModeSymlink == 0 {
			if err := copyFile(from, to); err != nil {
				return err
			}
			continue
		}
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		// certbot's links are ../../archive/LINEAGE/FILE.
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, filepath.Base(target)), to); err != nil {
			return err
		}
	}
	return nil
}

// rewriteRenewal points a renewal file's paths (the settings before its
// first section) at lineage name in the configuration directory dir.
func rewriteRenewal(data []byte, dir, name string) ([]byte, error) {
	var out bytes.Buffer
	seen := map[string]bool{}
	top := true
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "[") {
			top = false
		}
		key, value, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if top && ok {
			switch key {
			case "archive_dir":
				line = key + " = " + filepath.Join(dir, "archive", name)
				seen[key] = true
			case "cert", "privkey", "chain", "fullchain":
				line = key + " = " + filepath.Join(dir, "live", name, filepath.Base(strings.TrimSpace(value)))
				seen[key] = true
			}
		}
		out.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, key := range []string{"archive_dir", "cert", "privkey", "chain", "fullchain"} {
		if !seen[key] {
			return nil, fmt.Errorf("no %s", key)
		}
	}
	return out.Bytes(), nil
}

// copyTree copies a directory with its modes and symlinks.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.MkdirAll(to, info.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		default:
			return copyFile(path, to)
		}
	})
}

func copyFile(src, dst string) error {
	info, err := os.Lstat(src)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, info.Mode().Perm())
}

// stamp is what changes when a file or directory is written: a directory's
// times change when an entry is created, renamed or removed in it.
type stamp struct {
	mode         fs.FileMode
	size         int64
	ino          uint64
	mtime, ctime int64 // nanoseconds
}

// stamps is the stamp of everything under root, by path relative to it;
// symlinks are not followed.
func stamps(root string) (map[string]stamp, error) {
	out := map[string]stamp{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		s := stamp{mode: info.Mode(), size: info.Size(), mtime: info.ModTime().UnixNano()}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			s.ino = st.Ino
			s.ctime = st.Ctim.Nano()
		}
		rel, _ := filepath.Rel(root, path)
		out[rel] = s
		return nil
	})
	return out, err
}

// diffStamps names what was added, removed or changed between two stamp
// sets, sorted.
func diffStamps(before, after map[string]stamp) []string {
	var out []string
	for path, s := range after {
		if b, ok := before[path]; !ok {
			out = append(out, path+" (new)")
		} else if b != s {
			out = append(out, path)
		}
	}
	for path := range before {
		if _, ok := after[path]; !ok {
			out = append(out, path+" (removed)")
		}
	}
	slices.Sort(out)
	return out
}

// describeChanges says how many files changed, naming a few.
func describeChanges(paths []string) string {
	for i, p := range paths {
		if p == "." {
			// Its times change when an entry is added or removed, such as
			// a lock file made and removed again.
			paths[i] = "the directory itself"
		}
	}
	switch len(paths) {
	case 0:
		return "no file or directory written"
	case 1:
		return "1 written (" + paths[0] + ")"
	}
	shown := paths[:min(len(paths), 3)]
	more := ""
	if len(paths) > len(shown) {
		more = ", …"
	}
	return fmt.Sprintf("%d written (%s%s)", len(paths), strings.Join(shown, ", "), more)
}
