// Package qemutest boots a Debian kernel with 802.1Q under QEMU and runs
// the vlan data plane's tagged-trunk checks inside it (the host kernel has
// no 8021q). The guest program is ./guest; the kernel comes from
// hack/kernel.sh.
package qemutest

import (
	"compress/gzip"
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

// writeInitramfs writes a gzipped cpio "newc" archive, the format the
// kernel unpacks as its initial root file system.
func writeInitramfs(w io.Writer, entries []cpioEntry) error {
	zw := gzip.NewWriter(w)
	ino := uint32(1)
	write := func(e cpioEntry) error {
		name := e.name + "\x00"
		hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
			ino, e.mode, 0, 0, 1, 0, len(e.data), 0, 0, e.major, e.minor, len(name), 0)
		ino++
		buf := append([]byte(hdr), name...)
		buf = append(buf, make([]byte, pad4(len(buf)))...)
		buf = append(buf, e.data...)
		buf = append(buf, make([]byte, pad4(len(e.data)))...)
		_, err := zw.Write(buf)
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
	return zw.Close()
}

func pad4(n int) int { return (4 - n%4) % 4 }
