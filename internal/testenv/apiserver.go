package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// APIServer controls the Env's kube-apiserver process for outage tests
// while etcd keeps running: stop it and start it again (same binary, flags,
// port and certificates, so clients keep their configuration), or hang it
// with SIGSTOP and resume it with SIGCONT.
type APIServer struct {
	env  *Env
	path string
	args []string

	mu   sync.Mutex
	pid  int
	cmd  *exec.Cmd     // ours once restarted; nil while envtest's runs
	done chan struct{} // closed when ours has exited
	hung bool
	down bool
}

// APIServer finds the Env's kube-apiserver process (a child of this test
// process serving the Env's port). Call it once and keep the result.
func (e *Env) APIServer() (*APIServer, error) {
	e.apiMu.Lock()
	defer e.apiMu.Unlock()
	if e.api != nil {
		return e.api, nil
	}
	u, err := url.Parse(e.Config.Host)
	if err != nil {
		return nil, fmt.Errorf("api server host %q: %w", e.Config.Host, err)
	}
	pid, args, err := findChild("kube-apiserver", "--secure-port="+u.Port())
	if err != nil {
		return nil, err
	}
	path, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver binary: %w", err)
	}
	e.api = &APIServer{env: e, path: path, args: args, pid: pid}
	return e.api, nil
}

// findChild returns the pid and arguments of this process's child named
// comm whose command line has arg.
func findChild(comm, arg string) (int, []string, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		i := bytes.LastIndexByte(stat, ')')
		j := bytes.IndexByte(stat, '(')
		if i < 0 || j < 0 || string(stat[j+1:i]) != comm {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		for _, a := range args[1:] {
			if a == arg {
				return pid, args[1:], nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no %s child of pid %d with %s", comm, self, arg)
}

// PID of the running kube-apiserver.
func (a *APIServer) PID() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pid
}

// Hang stops the process with SIGSTOP: connections stay open and new ones
// are accepted by the kernel, but nothing answers.
func (a *APIServer) Hang() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down {
		return errors.New("kube-apiserver is stopped")
	}
	if err := syscall.Kill(a.pid, syscall.SIGSTOP); err != nil {
		return fmt.Errorf("SIGSTOP kube-apiserver %d: %w", a.pid, err)
	}
	a.hung = true
	return nil
}

// Resume continues a hung process with SIGCONT.
func (a *APIServer) Resume() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.resumeLocked()
}

func (a *APIServer) resumeLocked() error {
	if !a.hung {
		return nil
	}
	if err := syscall.Kill(a.pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("SIGCONT kube-apiserver %d: %w", a.pid, err)
	}
	a.hung = false
	return nil
}

// Stop terminates the process (SIGTERM, SIGKILL after 20 s) and waits for
// it to be gone; etcd keeps running.
func (a *APIServer) Stop() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopLocked()
}

func (a *APIServer) stopLocked() error { return a.endLocked(syscall.SIGTERM) }

// Kill ends the process with SIGKILL, as a crash or an OOM kill does: no
// graceful shutdown, its port refuses connections at once; etcd keeps
// running. Start runs it again.
func (a *APIServer) Kill() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.endLocked(syscall.SIGKILL)
}

// endLocked sends sig and waits for the process to be gone (SIGKILL after
// 20 s).
func (a *APIServer) endLocked(sig syscall.Signal) error {
	if a.down {
		return nil
	}
	if err := a.resumeLocked(); err != nil {
		return err
	}
	if err := syscall.Kill(a.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%v kube-apiserver %d: %w", sig, a.pid, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !a.exited() {
		if time.Now().After(deadline) {
			_ = syscall.Kill(a.pid, syscall.SIGKILL)
			deadline = time.Now().Add(10 * time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.down = true
	return nil
}

// exited: ours when Wait returned; envtest's when reaped by envtest (a
// zombie still answers kill 0).
func (a *APIServer) exited() bool {
	if a.cmd != nil {
		select {
		case <-a.done:
			return true
		default:
			return false
		}
	}
	return errors.Is(syscall.Kill(a.pid, 0), syscall.ESRCH)
}

// Start runs the server again with the same binary and flags and waits
// until its /readyz answers ok.
func (a *APIServer) Start(ctx context.Context) error {
	a.mu.Lock()
	if !a.down {
		a.mu.Unlock()
		return errors.New("kube-apiserver is running")
	}
	cmd := exec.Command(a.path, a.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.cmd, a.done, a.pid, a.down = cmd, done, cmd.Process.Pid, false
	a.mu.Unlock()
	return a.env.WaitReady(ctx)
}

// WaitReady waits until the API server's /readyz answers ok.
func (e *Env) WaitReady(ctx context.Context) error {
	cfg := rest.CopyConfig(e.Config)
	cfg.Timeout = time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("readyz client: %w", err)
	}
	var last error
	for {
		if last = cs.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// release stops a server that we restarted and resumes a hung one, so
// that envtest's Stop finds what it started gone or running.
func (a *APIServer) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	_ = a.resumeLocked()
	if a.cmd != nil && !a.down {
		_ = a.stopLocked()
	}
}
