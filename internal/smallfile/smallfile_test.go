package smallfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := Read(file, 10)
	if err != nil || string(data) != "0123456789" {
		t.Fatalf("Read at the limit = %q, %v", data, err)
	}

	_, err = Read(file, 9)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Limit != 9 || !strings.Contains(err.Error(), file+": larger than 9 bytes") {
		t.Errorf("Read over the limit: %v", err)
	}

	_, err = Read(dir, 1<<20)
	if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), dir+": not a regular file") {
		t.Errorf("Read of a directory: %v", err)
	}

	_, err = Read(filepath.Join(dir, "missing"), 10)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read of a missing file: %v", err)
	}
}

// A FIFO nobody writes to would block an ordinary open for ever.
func TestReadFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, err := Read(fifo, 10); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Read of a FIFO: %v", err)
	}
}

// A device never ends; /dev/zero would fill memory.
func TestReadDevice(t *testing.T) {
	if _, err := Read("/dev/zero", 10); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Read of /dev/zero: %v", err)
	}
}

func TestReadCheckedRefusesFirst(t *testing.T) {
	file := filepath.Join(t.TempDir(), "conf")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused")
	_, err := ReadChecked(file, 10, func(fi fs.FileInfo) error {
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("check saw mode %v", fi.Mode())
		}
		return refused
	})
	if err != refused {
		t.Errorf("ReadChecked = %v, want the check's error as it is", err)
	}
}

func TestTooLargeUnits(t *testing.T) {
	for limit, want := range map[int64]string{1 << 20: "larger than 1 MiB", 256 << 10: "larger than 256 KiB", 1000: "larger than 1000 bytes", 3 << 19: "larger than 1536 KiB"} {
		if got := (&TooLargeError{Limit: limit}).Error(); got != want {
			t.Errorf("TooLargeError{%d} = %q, want %q", limit, got, want)
		}
	}
}
