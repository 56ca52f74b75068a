// Package fulldisk gives tests a small file system of their own to fill up, free, and make
// read-only: a tmpfs mounted for the test and unmounted when it ends. Mounting needs root (or
// CAP_SYS_ADMIN); where it is not permitted, Mount says why and the test falls back or skips.
package fulldisk

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// FS is a mounted tmpfs.
type FS struct {
	t   testing.TB
	Dir string
}

// Mount mounts a tmpfs of size bytes on a new directory and unmounts it when the test ends. It
// returns an error saying why when this process may not mount one.
func Mount(t testing.TB, size int64) (*FS, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "smallfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		return nil, fmt.Errorf("mount a %d-byte tmpfs on %s: %w", size, dir, err)
	}
	fs := &FS{t: t, Dir: dir}
	t.Cleanup(fs.unmount)
	return fs, nil
}

// unmount detaches the file system; a process still holding files in it (a killed agent's
// leftovers) only delays its end, so a busy mount is detached lazily.
func (f *FS) unmount() {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Unmount(f.Dir, 0)
		if err == nil || errors.Is(err, syscall.EINVAL) {
			return
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			if err := syscall.Unmount(f.Dir, syscall.MNT_DETACH); err != nil {
				f.t.Errorf("unmount %s: %v", f.Dir, err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const fillerName = ".filler"

// Fill writes a filler file until the file system has no byte left, and returns its size.
func (f *FS) Fill() int64 {
	f.t.Helper()
	file, err := os.OpenFile(filepath.Join(f.Dir, fillerName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		f.t.Fatalf("fill %s: %v", f.Dir, err)
	}
	defer file.Close()
	var n int64
	for _, chunk := range []int{1 << 16, 1 << 12, 1} {
		buf := make([]byte, chunk)
		for {
			w, err := file.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				f.t.Fatalf("fill %s: %v", f.Dir, err)
			}
		}
	}
	return n
}

// Free removes the filler.
func (f *FS) Free() {
	f.t.Helper()
	if err := os.Remove(filepath.Join(f.Dir, fillerName)); err != nil {
		f.t.Fatalf("free %s: %v", f.Dir, err)
	}
}

// Available is the bytes free on the file system.
func (f *FS) Available() uint64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.Dir, &st); err != nil {
		f.t.Fatal(err)
	}
	return st.Bavail * uint64(st.Bsize)
}

// SetReadOnly remounts the file system read-only (true) or read-write (false). The kernel
// refuses read-only while a file in it is open for writing.
func (f *FS) SetReadOnly(ro bool) error {
	opt := "remount,rw"
	if ro {
		opt = "remount,ro"
	}
	out, err := exec.Command("mount", "-o", opt, f.Dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount -o %s %s: %v: %s", opt, f.Dir, err, out)
	}
	return nil
}
