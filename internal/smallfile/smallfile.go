// Package smallfile reads the small files an operator names outside
// daneroll's state directory: the configuration, a token or TSIG secret, a
// bundle of CA roots, a crontab, a certbot credentials file.
//
// A name given by mistake must not hang or exhaust daneroll: a FIFO would
// block an ordinary open until a writer comes, a device or a huge file would
// be read without end. Read opens without blocking, refuses anything but a
// regular file and reads at most a limit.
package smallfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// ErrNotRegular is the error (inside an *fs.PathError) for a directory, a
// FIFO, a device or a socket.
var ErrNotRegular = errors.New("not a regular file")

// TooLargeError is the error (inside an *fs.PathError) for a file longer
// than the limit.
type TooLargeError struct {
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Limit >= 1<<20 && e.Limit%(1<<20) == 0 {
		return fmt.Sprintf("larger than %d MiB", e.Limit>>20)
	}
	if e.Limit >= 1<<10 && e.Limit%(1<<10) == 0 {
		return fmt.Sprintf("larger than %d KiB", e.Limit>>10)
	}
	return fmt.Sprintf("larger than %d bytes", e.Limit)
}

// Read reads the regular file at path, of at most limit bytes. Its errors
// are *fs.PathError, as os.ReadFile's are.
func Read(path string, limit int64) ([]byte, error) {
	return ReadChecked(path, limit, nil)
}

// ReadChecked is Read with check, when not nil, called on what the open file
// is before anything is read; an error from check is returned as it is.
func ReadChecked(path string, limit int64, check func(fs.FileInfo) error) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(fi); err != nil {
			return nil, err
		}
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: path, Err: ErrNotRegular}
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: &TooLargeError{Limit: limit}}
	}
	return data, nil
}
