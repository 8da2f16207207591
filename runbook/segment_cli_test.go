package runbook_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/runbook"
)

// segmentFixture is the fixture with the VM cut over, the segment in phase
// with gatewayAddress and aggregate set, and both gateways reporting it.
func segmentFixture(t *testing.T, phase nbv1.SegmentPhase) *fixture {
	f := newFixture(t)
	f.makeActive(true, true)
	f.setPhase(phase, func(bc *nbv1.BridgeConfig) {
		bc.Spec.Segments[0].GatewayAddress = strings.Replace(f.ip, ".10", ".1", 1) + "/24"
		bc.Spec.Advertise = &nbv1.AdvertiseSpec{HostRoutes: true, Aggregate: true}
	})
	f.gatewaysAt(phase)
	return f
}

func (f *fixture) subnet() string { return strings.Replace(f.ip, ".10", ".0", 1) + "/24" }

func (f *fixture) setPhase(phase nbv1.SegmentPhase, mutate func(*nbv1.BridgeConfig)) {
	f.t.Helper()
	must(f.t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var bc nbv1.BridgeConfig
		if err := f.c.Get(context.Background(), types.NamespacedName{Name: f.bc}, &bc); err != nil {
			return err
		}
		bc.Spec.Segments[0].Phase = phase
		if mutate != nil {
			mutate(&bc)
		}
		return f.c.Update(context.Background(), &bc)
	}))
}

func (f *fixture) phase() nbv1.SegmentPhase {
	f.t.Helper()
	var bc nbv1.BridgeConfig
	must(f.t, f.c.Get(context.Background(), types.NamespacedName{Name: f.bc}, &bc))
	return bc.Spec.Segments[0].Phase
}

// gatewaysAt plays both gateways having programmed phase, with its routes.
func (f *fixture) gatewaysAt(phase nbv1.SegmentPhase) {
	for _, gw := range []string{f.gwA, f.gwB} {
		f.gateway(gw, func(s *nbv1.BridgeGatewayStatus) {
			s.Segments[0].Phase = string(phase)
			switch phase {
			case nbv1.PhaseRouted:
				s.Advertised = []string{f.prefix}
			case nbv1.PhaseCompleted:
				s.Advertised = []string{f.subnet()}
				s.Segments[0].LegacySweep = nil
			default:
				s.Advertised = nil
			}
		})
	}
}

// sweep plays the active gateway finishing a sweep now.
func (f *fixture) sweep(answered ...nbv1.SweepAnswer) {
	f.gateway(f.gwA, func(s *nbv1.BridgeGatewayStatus) {
		s.Segments[0].LegacySweep = &nbv1.LegacySweep{At: metav1.Now(), Addresses: 254, Answered: answered}
	})
}

// whenPhase runs react once the BridgeConfig's segment is in phase.
func (f *fixture) whenPhase(ctx context.Context, phase nbv1.SegmentPhase, react func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var bc nbv1.BridgeConfig
			if err := f.c.Get(ctx, types.NamespacedName{Name: f.bc}, &bc); err == nil && bc.Spec.Segments[0].Phase == phase {
				react()
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return done
}

func TestSegmentCompletedRefusedWhileLegacyHostAnswers(t *testing.T) {
	f := segmentFixture(t, nbv1.PhaseRouted)
	// A sweep from before the command does not count: the gateway's next
	// one (a second later) finds a legacy host.
	f.sweep()
	go func() {
		time.Sleep(1500 * time.Millisecond)
		f.sweep(nbv1.SweepAnswer{IP: strings.Replace(f.ip, ".10", ".20", 1), MAC: "52:54:00:00:00:20"})
	}()
	out, stderr, err := run(t, "segment", "advance", f.seg(), "--timeout", "20s", "--poll-interval", "100ms")
	if !errors.Is(err, runbook.ErrSegmentFailed) {
		t.Fatalf("advance error = %v, want ErrSegmentFailed", err)
	}
	legacy := strings.Replace(f.ip, ".10", ".20", 1) + " answered by 52:54:00:00:00:20"
	for _, s := range []string{err.Error(), out} {
		if !strings.Contains(s, runbook.CheckLegacyEmpty) || !strings.Contains(s, legacy) {
			t.Errorf("want %s naming %q in %q", runbook.CheckLegacyEmpty, legacy, s)
		}
	}
	if !strings.Contains(stderr, "waiting for a sweep by "+f.gwA) {
		t.Errorf("progress should show the wait for a fresh sweep: %q", stderr)
	}
	if got := f.phase(); got != nbv1.PhaseRouted {
		t.Errorf("phase = %s after a refused preflight, want Routed", got)
	}
	// plan says the same, changing nothing.
	out, _, err = run(t, "segment", "plan", f.seg())
	if !errors.Is(err, runbook.ErrChecksFailed) || !strings.Contains(out, legacy) || !strings.Contains(out, "step 1: advertise the aggregate "+f.subnet()) {
		t.Errorf("plan: err %v, out %q", err, out)
	}
}

func TestSegmentLifecycle(t *testing.T) {
	f := segmentFixture(t, nbv1.PhaseExtended)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type step struct {
		cmd      string
		from, to nbv1.SegmentPhase
		before   func()
	}
	steps := []step{
		{cmd: runbook.SegmentAdvance, from: nbv1.PhaseExtended, to: nbv1.PhaseRouted},
		{cmd: runbook.SegmentAdvance, from: nbv1.PhaseRouted, to: nbv1.PhaseCompleted, before: func() {
			go func() { time.Sleep(time.Second); f.sweep() }()
		}},
		{cmd: runbook.SegmentRollback, from: nbv1.PhaseCompleted, to: nbv1.PhaseRouted},
		{cmd: runbook.SegmentRollback, from: nbv1.PhaseRouted, to: nbv1.PhaseExtended},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		// The gateways take a second to program the new phase: the
		// command must wait for them.
		var programmedAt time.Time
		reacted := f.whenPhase(ctx, s.to, func() {
			time.Sleep(time.Second)
			programmedAt = time.Now()
			f.gatewaysAt(s.to)
		})
		out, stderr, err := run(t, "segment", s.cmd, f.seg(), "--timeout", "20s", "--poll-interval", "100ms", "-o", "json")
		returned := time.Now()
		<-reacted
		if err != nil {
			t.Fatalf("%s %s → %s: %v", s.cmd, s.from, s.to, err)
		}
		var res runbook.SegmentResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("json: %v\n%s", err, out)
		}
		if res.From != s.from || res.To != s.to || !res.Done || !res.Changed {
			t.Errorf("%s: result %+v, want %s → %s done", s.cmd, res, s.from, s.to)
		}
		if returned.Before(programmedAt) {
			t.Errorf("%s → %s returned before the gateways programmed it", s.from, s.to)
		}
		if !strings.Contains(stderr, "not every gateway has programmed phase "+string(s.to)) {
			t.Errorf("progress should show the wait for the gateways: %q", stderr)
		}
		if got := f.phase(); got != s.to {
			t.Errorf("phase = %s, want %s", got, s.to)
		}
	}
	// Nothing before Extended.
	_, _, err := run(t, "segment", "rollback", f.seg(), "--timeout", "2s")
	if !errors.Is(err, runbook.ErrSegmentFailed) || !strings.Contains(err.Error(), "already Extended") {
		t.Errorf("rollback from Extended: %v", err)
	}
}

func TestSegmentAdvanceRefusesSessionDownAndTimesOut(t *testing.T) {
	f := segmentFixture(t, nbv1.PhaseExtended)
	f.gateway(f.gwB, func(s *nbv1.BridgeGatewayStatus) { s.Peers[0].State = "Connect" })
	_, _, err := run(t, "segment", "advance", f.seg(), "--timeout", "5s")
	if !errors.Is(err, runbook.ErrSegmentFailed) || !strings.Contains(err.Error(), f.gwB+"→192.0.2.1 Connect") {
		t.Errorf("advance with a session down: %v", err)
	}
	if got := f.phase(); got != nbv1.PhaseExtended {
		t.Errorf("phase = %s, want Extended (untouched)", got)
	}
	// Sessions up, but nobody programs Routed: a timeout naming what waits.
	f.gateway(f.gwB, func(s *nbv1.BridgeGatewayStatus) { s.Peers[0].State = "Established" })
	_, _, err = run(t, "segment", "advance", f.seg(), "--timeout", "2s", "--poll-interval", "100ms")
	if !errors.Is(err, runbook.ErrSegmentFailed) || !strings.Contains(err.Error(), "gateways not there after 2s") ||
		!strings.Contains(err.Error(), f.gwA+" programmed phase Extended") {
		t.Errorf("advance nobody programs: %v", err)
	}
	if got := f.phase(); got != nbv1.PhaseRouted {
		t.Errorf("phase = %s, want Routed (written, the gateways are late)", got)
	}
	if _, _, err := run(t, "segment", "advance", "nosuch"); err == nil || !strings.Contains(err.Error(), "BRIDGECONFIG.SEGMENT") {
		t.Errorf("bad argument: %v", err)
	}
}
