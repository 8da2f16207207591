package qemuguest

import (
	"bufio"
	"fmt"
	"io"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	name string
	mode uint32 // including the file type bits (0o040000 dir, 0o100000 file, 0o020000 char dev)
	data []byte
	// rdev of a device node
	major, minor uint32
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

// writeInitramfs writes an uncompressed cpio "newc" archive, the format the
// kernel unpacks as its initial root file system. Uncompressed because
// under TCG the guest's gunzip of ~60 MB of binaries costs seconds, while
// copying them in costs nothing.
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	ino := uint32(1)
	write := func(e cpioEntry) error {
		name := e.name + "\x00"
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, e.major, e.minor, len(name), 0)
		ino++
		head := append([]byte(hdr), name...)
		head = append(head, make([]byte, pad4(len(head)))...)
		if _, err := bw.Write(head); err != nil {
			return err
		}
		if _, err := bw.Write(e.data); err != nil {
			return err
		}
		_, err := bw.Write(make([]byte, pad4(len(e.data))))
		return err
	}
	for _, e := range entries {
		if err := write(e); err != nil {
			return fmt.Errorf("initramfs %s: %w", e.name, err)
		}
	}
	if err := write(cpioEntry{name: "TRAILER!!!"}); err != nil {
		return fmt.Errorf("initramfs trailer: %w", err)
	}
	return bw.Flush()
}

func pad4(n int) int { return (4 - n%4) % 4 }
