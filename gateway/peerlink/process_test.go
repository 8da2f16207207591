package peerlink

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The child process of TestStoppedAndKilledAgent: one Link configured from the
// environment, running until it is killed. It is this test binary,
// re-executed with PEERLINK_CHILD set.
const childEnv = "PEERLINK_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := runChild(); err != nil {
			fmt.Fprintln(os.Stderr, "peerlink child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild() error {
	key, err := hex.DecodeString(os.Getenv("PEERLINK_KEY"))
	if err != nil {
		return fmt.Errorf("PEERLINK_KEY: %w", err)
	}
	bind, err := netip.ParseAddr(os.Getenv("PEERLINK_BIND"))
	if err != nil {
		return fmt.Errorf("PEERLINK_BIND: %w", err)
	}
	peers := map[string]netip.AddrPort{}
	for _, p := range strings.Split(os.Getenv("PEERLINK_PEERS"), ",") {
		name, addr, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("PEERLINK_PEERS entry %q is not name=addr:port", p)
		}
		if peers[name], err = netip.ParseAddrPort(addr); err != nil {
			return fmt.Errorf("PEERLINK_PEERS %q: %w", p, err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := Start(ctx, Config{Name: os.Getenv("PEERLINK_NAME"), BindAddr: bind, Key: key,
		HeartbeatInterval: testHeartbeat, DeadAfter: testDeadAfter})
	if err != nil {
		return err
	}
	if err := l.SetPeers(peers); err != nil {
		return err
	}
	if err := l.SetClaims(map[string]Claim{"s1": {Holding: true, Epoch: 4}}); err != nil {
		return err
	}
	<-ctx.Done()
	return l.Close()
}

func TestStoppedAndKilledAgent(t *testing.T) {
	gws := underlay(t, "a", "b", "c")
	a := gws[0]
	var peerList []string
	for n, ap := range peersOf(a, gws) {
		peerList = append(peerList, n+"="+ap.String())
	}
	cmd := a.ns.Start(t, "env", childEnv+"=1", "PEERLINK_NAME=a", "PEERLINK_BIND="+a.addr.String(),
		"PEERLINK_KEY="+hex.EncodeToString(testKey), "PEERLINK_PEERS="+strings.Join(peerList, ","), os.Args[0])
	links := map[string]*Link{}
	for _, g := range gws[1:] {
		links[g.name] = g.start(t, Config{})
		if err := links[g.name].SetPeers(peersOf(g, gws)); err != nil {
			t.Fatal(err)
		}
	}
	seesA := func(alive bool) func() bool {
		return func() bool {
			for _, l := range links {
				v := l.Peers()["a"]
				if v.Alive != alive || (alive && (!v.AcksMe || !v.Claims["s1"].Holding)) {
					return false
				}
			}
			return true
		}
	}
	if _, ok := waitFor(10*time.Second, seesA(true)); !ok {
		t.Fatalf("child a never seen alive: %+v", links["b"].Peers()["a"])
	}
	// `env` execs the test binary, so the process we started is the agent.
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	took, ok := waitFor(5*time.Second, seesA(false))
	if !ok {
		t.Fatalf("stopped a still alive after %s", took)
	}
	t.Logf("scenario=sigstop detect_ms=%d goal_ms=%d", took.Milliseconds(), testDeadAfter.Milliseconds())
	if took > 2*testDeadAfter {
		t.Errorf("detection took %s, more than 2x DeadAfter %s", took, testDeadAfter)
	}
	// Its last claim is still reported (the agent decides with Alive).
	if c := links["b"].Peers()["a"].Claims["s1"]; c != (Claim{Holding: true, Epoch: 4}) {
		t.Errorf("b lost a's last claim: %+v", c)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT: %v", err)
	}
	took, ok = waitFor(5*time.Second, seesA(true))
	if !ok {
		t.Fatalf("a not alive again after SIGCONT (%s)", took)
	}
	t.Logf("scenario=sigcont recover_ms=%d", took.Milliseconds())

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL: %v", err)
	}
	took, ok = waitFor(5*time.Second, seesA(false))
	if !ok {
		t.Fatalf("killed a still alive after %s", took)
	}
	t.Logf("scenario=kill9 detect_ms=%d goal_ms=%d", took.Milliseconds(), testDeadAfter.Milliseconds())
	if took > 2*testDeadAfter {
		t.Errorf("detection took %s, more than 2x DeadAfter %s", took, testDeadAfter)
	}
}
