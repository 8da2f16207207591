package labnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
)

// APIForwarder makes the API server (listening on the host's loopback)
// reachable at the same address inside a lab namespace: it listens on
// that address inside the namespace and forwards each connection to the
// host. Processes in the namespace then use the host's kubeconfig as is
// (same URL, same certificate names). Stop cuts the namespace off the API
// server (connections reset, new ones refused) — how the tests make one
// gateway lose the API while the others keep it.
type APIForwarder struct {
	ns     string
	addr   string // host:port, same inside and outside
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	closed bool
}

// ForwardAPI starts a forwarder for addr (e.g. "127.0.0.1:6443") inside
// the namespace ns.
func ForwardAPI(ns, addr string) (*APIForwarder, error) {
	f := &APIForwarder{ns: ns, addr: addr, conns: map[net.Conn]bool{}}
	if err := f.Start(); err != nil {
		return nil, err
	}
	return f, nil
}

// Start (re)opens the listener inside the namespace.
func (f *APIForwarder) Start() error {
	ln, err := listenIn(f.ns, f.addr)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.ln, f.closed = ln, false
	f.mu.Unlock()
	go f.serve(ln)
	return nil
}

// Stop closes the listener and every forwarded connection.
func (f *APIForwarder) Stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	if f.ln != nil {
		_ = f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		_ = c.Close()
	}
	f.conns = map[net.Conn]bool{}
}

func (f *APIForwarder) serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go f.forward(c)
	}
}

func (f *APIForwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	for _, c := range cs {
		f.conns[c] = true
	}
	return true
}

func (f *APIForwarder) forward(in net.Conn) {
	// Dialled from an ordinary goroutine: the host namespace.
	out, err := net.Dial("tcp", f.addr)
	if err != nil {
		_ = in.Close()
		return
	}
	if !f.track(in, out) {
		_ = in.Close()
		_ = out.Close()
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
	f.mu.Lock()
	delete(f.conns, in)
	delete(f.conns, out)
	f.mu.Unlock()
}

// listenIn opens a TCP listener inside namespace ns: the socket belongs
// to the namespace of the thread that creates it, for its whole life.
func listenIn(ns, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", ns, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("enter netns %s: %w", ns, err)
	}
	ln, lerr := net.Listen("tcp", addr)
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the lab namespace: never reuse it.
		if ln != nil {
			_ = ln.Close()
		}
		return nil, errors.Join(fmt.Errorf("leave netns %s: %w", ns, err), lerr)
	}
	if lerr != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, ns, lerr)
	}
	return ln, nil
}
