package bgp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/internal/frrtest"
)

// childEnv carries a JSON Desired to a re-executed test binary that runs
// only a speaker (see TestMain), so that it can be killed with SIGKILL.
const childEnv = "NB_BGP_SPEAKER_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChildSpeaker(spec))
	}
	os.Exit(m.Run())
}

func runChildSpeaker(spec string) int {
	var d Desired
	if err := json.Unmarshal([]byte(spec), &d); err != nil {
		fmt.Fprintln(os.Stderr, "child: bad spec:", err)
		return 2
	}
	log, _ := zap.NewDevelopment()
	s := New(log)
	if _, err := s.Apply(context.Background(), d); err != nil {
		fmt.Fprintln(os.Stderr, "child: apply:", err)
		return 1
	}
	fmt.Println("READY")
	select {} // until killed
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// startChild runs a speaker process with d applied; it is SIGKILLed at the
// latest in cleanup.
func startChild(t *testing.T, d Desired) *exec.Cmd {
	t.Helper()
	spec, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child speaker: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child speaker %d stderr:\n%s", cmd.Process.Pid, stderr.String())
		}
	})
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "READY" {
				ready <- nil
				return
			}
		}
		ready <- fmt.Errorf("child exited before READY")
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%v; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("child speaker not ready after 20s; stderr:\n%s", stderr.String())
	}
	return cmd
}

func TestGracefulRestart(t *testing.T) {
	parallel(t)
	o := frrOpts{}
	l := newLab(t, o)
	p := l.peer(o)
	p.GracefulRestart = true
	p.RestartTime = 60 * time.Second
	route := Route{Prefix: l.host(30), Communities: []Community{NewCommunity(65000, 30)}}
	d := l.desired([]Peer{p}, route)

	first := startChild(t, d)
	l.waitKernel(t, route.Prefix, true)
	frrtest.Eventually(t, 20*time.Second, func() error {
		n, err := l.frr.Neighbors()
		if err != nil {
			return err
		}
		if s := n[l.hostV4.String()].State; s != "Established" {
			return fmt.Errorf("FRR neighbour state %q", s)
		}
		return nil
	})

	// Sample the dc kernel table every 50 ms for the whole restart.
	var (
		mu      sync.Mutex
		samples int
		gaps    []time.Time
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			ok, err := l.frr.HasKernelRoute(route.Prefix)
			mu.Lock()
			samples++
			if err != nil || !ok {
				gaps = append(gaps, time.Now())
			}
			mu.Unlock()
		}
	}()

	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	killed := time.Now()

	// FRR keeps the route, marked stale.
	frrtest.Eventually(t, 10*time.Second, func() error {
		paths, err := l.frr.Route(route.Prefix)
		if err != nil {
			return err
		}
		if len(paths) == 0 || !paths[0].Stale {
			return fmt.Errorf("FRR paths %+v, want one stale path", paths)
		}
		return nil
	})
	t.Logf("route stale at FRR %s after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second) // a gateway takes a while to come back

	startChild(t, d)
	frrtest.Eventually(t, 30*time.Second, func() error {
		paths, err := l.frr.Route(route.Prefix)
		if err != nil {
			return err
		}
		if len(paths) == 0 || paths[0].Stale {
			return fmt.Errorf("FRR paths %+v, want one fresh path", paths)
		}
		return nil
	})
	t.Logf("route refreshed %s after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if samples < 40 {
		t.Fatalf("only %d samples", samples)
	}
	if len(gaps) > 0 {
		t.Fatalf("route absent from the %s kernel table in %d of %d samples (first at %s after the kill)", l.ns, len(gaps), samples, gaps[0].Sub(killed))
	}
	t.Logf("route present in all %d samples (every 50 ms) across the restart", samples)
}

func TestGracefulShutdown(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	l := newLab(t, frrOpts{})
	s := newSpeaker(t)
	route := Route{Prefix: l.host(40), Communities: []Community{NewCommunity(65000, 40)}}
	if _, err := s.Apply(ctx, l.desired([]Peer{l.peer(frrOpts{})}, route)); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, l.dcV4)
	l.waitKernel(t, route.Prefix, true)

	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- s.GracefulShutdown(ctx, 3*time.Second) }()

	// FRR prints 65535:0 as "graceful-shutdown".
	frrtest.Eventually(t, 3*time.Second, func() error {
		p := l.frrPath(t, route.Prefix)
		if !strings.Contains(p.Community.String, "graceful-shutdown") && !strings.Contains(p.Community.String, "65535:0") {
			return fmt.Errorf("community at FRR %q", p.Community.String)
		}
		if !strings.Contains(p.Community.String, "65000:40") {
			return fmt.Errorf("community at FRR %q lost the route's own community", p.Community.String)
		}
		return nil
	})
	seen := time.Since(start)
	if st, _ := s.Status(ctx); !st.Draining {
		t.Errorf("status does not say draining")
	}
	l.waitFRRAbsent(t, route.Prefix)
	l.waitKernel(t, route.Prefix, false)
	gone := time.Since(start)
	if err := <-errc; err != nil {
		t.Fatalf("GracefulShutdown: %v", err)
	}
	if gone < 3*time.Second {
		t.Errorf("route withdrawn %s after the drain started, before the 3s wait", gone)
	}
	t.Logf("GRACEFUL_SHUTDOWN seen at FRR after %s, withdrawn after %s", seen.Round(time.Millisecond), gone.Round(time.Millisecond))
	if st, _ := s.Status(ctx); st.Running {
		t.Errorf("speaker still running after graceful shutdown")
	}
}
