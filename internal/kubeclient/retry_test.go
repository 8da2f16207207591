package kubeclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func urlErr(err error) error {
	return &url.Error{Op: "Get", URL: "https://127.0.0.1:6443/api", Err: err}
}

// TestUnanswered: which failed calls are retried inside the ListerWatcher
// (no answer from the server) and which go to the reflector.
func TestUnanswered(t *testing.T) {
	refused := urlErr(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	reset := urlErr(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})
	gr := schema.GroupResource{Resource: "nodes"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"refused", refused, true},
		{"refusedWrapped", fmt.Errorf("list: %w", refused), true},
		{"reset", reset, true},
		{"eof", urlErr(io.EOF), true},
		{"unexpectedEOF", io.ErrUnexpectedEOF, true},
		{"dialTimeout", urlErr(timeoutErr{}), true},
		{"notSent", urlErr(fmt.Errorf("GET /api: %w", ErrUnreachable)), true},
		{"gone", apierrors.NewResourceExpired("too old"), false},
		{"forbidden", apierrors.NewForbidden(gr, "", errors.New("rbac")), false},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), false},
		{"canceled", urlErr(context.Canceled), false},
		{"deadline", context.DeadlineExceeded, false},
		{"other", errors.New("decode: bad json"), false},
	} {
		if got := unanswered(tc.err); got != tc.want {
			t.Errorf("%s: unanswered(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

func TestNextPause(t *testing.T) {
	p, got := 250*time.Millisecond, []time.Duration{}
	for range 4 {
		got = append(got, p)
		p = nextPause(p, time.Second)
	}
	if fmt.Sprint(got) != "[250ms 500ms 1s 1s]" {
		t.Errorf("pauses %v, want [250ms 500ms 1s 1s]", got)
	}
}

// TestSucceededWakesOncePerReturn: an informer's first success after each
// return wakes OnResumed; start-up and later successes do not.
func TestSucceededWakesOncePerReturn(t *testing.T) {
	r, err := NewReachability(&rest.Config{Host: "https://127.0.0.1:1"}, ReachabilityOptions{})
	if err != nil {
		t.Fatal(err)
	}
	woke := func(step func()) bool {
		ch := r.resumedChan()
		step()
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	a, b := &atomic.Uint64{}, &atomic.Uint64{}
	r.set(true, nil) // first verdict: not a return
	steps := []struct {
		name string
		step func()
		want bool
	}{
		{"startupListA", func() { r.succeeded(a) }, false},
		{"startupListB", func() { r.succeeded(b) }, false},
		{"down", func() { r.set(false, errors.New("refused")) }, false},
		{"back", func() { r.set(true, nil) }, false},
		{"firstAfterReturnA", func() { r.succeeded(a) }, true},
		{"againA", func() { r.succeeded(a) }, false},
		{"firstAfterReturnB", func() { r.succeeded(b) }, true},
		{"down2", func() { r.set(false, errors.New("refused")) }, false},
		{"back2", func() { r.set(true, nil) }, false},
		{"firstAfterReturn2A", func() { r.succeeded(a) }, true},
	}
	for _, s := range steps {
		if got := woke(s.step); got != s.want {
			t.Errorf("%s: woke %v, want %v", s.name, got, s.want)
		}
	}
}
