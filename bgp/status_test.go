package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

func TestObserverEventsAndErrors(t *testing.T) {
	o := newObserver()
	var got []PeerEvent
	o.subscribe(func(e PeerEvent) { got = append(got, e) })
	a := netip.MustParseAddr("192.0.2.1")
	ev := func(s bgppkt.FSMState) (*apiutil.WatchEventMessage_PeerEvent, time.Time) {
		return &apiutil.WatchEventMessage_PeerEvent{
			Type: apiutil.PEER_EVENT_STATE,
			Peer: apiutil.Peer{State: apiutil.PeerState{NeighborAddress: a, SessionState: s}},
		}, time.Now()
	}
	o.onWatch(ev(bgppkt.BGP_FSM_ACTIVE))
	o.onWatch(ev(bgppkt.BGP_FSM_ACTIVE)) // no change, no event
	o.onWatch(ev(bgppkt.BGP_FSM_ESTABLISHED))
	if len(got) != 2 || got[1].State != StateEstablished || !o.peers[a].ever {
		t.Fatalf("events = %+v", got)
	}

	o.onLog(zapcore.WarnLevel, a, "prefix limit reached", logFields{"Family": "ipv4-unicast", "Pct": 80})
	if o.peers[a].lastError != "" {
		t.Errorf("threshold warning recorded as error: %q", o.peers[a].lastError)
	}
	o.onLog(zapcore.WarnLevel, a, "prefix limit reached", logFields{"Family": "ipv4-unicast"})
	o.onLog(zapcore.InfoLevel, a, "Peer Down", logFields{"Reason": "notification-sent cease/maximum number of prefixes reached"})
	if want := "maximum number of prefixes reached (ipv4-unicast)"; o.peers[a].lastError != want {
		t.Errorf("lastError = %q, want %q", o.peers[a].lastError, want)
	}
	if !o.peers[a].maxPrefix {
		t.Error("maxPrefix not set")
	}
	o.onLog(zapcore.InfoLevel, a, "Peer Down", logFields{"Reason": "read-failed"})
	if want := "maximum number of prefixes reached (ipv4-unicast); then read-failed"; o.peers[a].lastError != want {
		t.Errorf("lastError = %q, want %q", o.peers[a].lastError, want)
	}
	o.onWatch(ev(bgppkt.BGP_FSM_IDLE))
	o.onWatch(ev(bgppkt.BGP_FSM_ESTABLISHED))
	if o.peers[a].maxPrefix {
		t.Error("maxPrefix not cleared by Established")
	}
	o.onLog(zapcore.InfoLevel, a, "Peer Down", logFields{"Reason": "hold-timer-expired"})
	if o.peers[a].lastError != "hold-timer-expired" {
		t.Errorf("lastError = %q", o.peers[a].lastError)
	}
	o.onLog(zapcore.InfoLevel, a, "Peer Up", nil)
	if o.peers[a].lastError != "hold-timer-expired" {
		t.Errorf("an info message overwrote lastError: %q", o.peers[a].lastError)
	}
}

func TestZapAdapter(t *testing.T) {
	core, logs := zapobserver.New(zapcore.InfoLevel)
	var hooked []string
	h := newZapHandler(zap.New(core), func(_ zapcore.Level, a netip.Addr, msg string, _ logFields) {
		hooked = append(hooked, a.String()+" "+msg)
	})
	ctx := context.Background()
	if h.Enabled(ctx, slog.LevelDebug) || !h.Enabled(ctx, slog.LevelInfo) {
		t.Errorf("level: debug enabled %v, info enabled %v", h.Enabled(ctx, slog.LevelDebug), h.Enabled(ctx, slog.LevelInfo))
	}
	// GoBGP's peer loggers carry Topic and Key as attributes (logger.With).
	peer := slog.New(h).With(slog.String("Topic", "Peer"), slog.String("Key", "192.0.2.1"))
	peer.Debug("failed to connect")
	peer.Warn("Peer Down", slog.String("Reason", "x"))
	slog.New(h).Info("server", slog.String("Topic", "Server"))
	if logs.Len() != 2 {
		t.Fatalf("zap got %d entries, want 2 (debug filtered)", logs.Len())
	}
	e := logs.All()[0]
	if e.Level != zapcore.WarnLevel || e.ContextMap()["reason"] != "x" || e.ContextMap()["topic"] != "Peer" {
		t.Errorf("entry = %+v", e)
	}
	// The hook sees peer messages whatever the zap level.
	if len(hooked) != 2 {
		t.Errorf("hooked = %v", hooked)
	}
}
