package bgp

import (
	"net/netip"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"
)

func TestObserverEventsAndErrors(t *testing.T) {
	o := newObserver()
	var got []PeerEvent
	o.subscribe(func(e PeerEvent) { got = append(got, e) })
	a := netip.MustParseAddr("192.0.2.1")
	ev := func(s api.PeerState_SessionState) *api.WatchEventResponse {
		return &api.WatchEventResponse{Event: &api.WatchEventResponse_Peer{Peer: &api.WatchEventResponse_PeerEvent{
			Type: api.WatchEventResponse_PeerEvent_STATE,
			Peer: &api.Peer{State: &api.PeerState{NeighborAddress: a.String(), SessionState: s}},
		}}}
	}
	o.onWatch(ev(api.PeerState_ACTIVE))
	o.onWatch(ev(api.PeerState_ACTIVE)) // no change, no event
	o.onWatch(ev(api.PeerState_ESTABLISHED))
	if len(got) != 2 || got[1].State != StateEstablished || !o.peers[a].ever {
		t.Fatalf("events = %+v", got)
	}

	o.onLog(zapcore.WarnLevel, a, "prefix limit reached", gobgplog.Fields{"Family": "ipv4-unicast", "Pct": 80})
	if o.peers[a].lastError != "" {
		t.Errorf("threshold warning recorded as error: %q", o.peers[a].lastError)
	}
	o.onLog(zapcore.WarnLevel, a, "prefix limit reached", gobgplog.Fields{"Family": "ipv4-unicast"})
	o.onLog(zapcore.InfoLevel, a, "Peer Down", gobgplog.Fields{"Reason": "notification-sent cease/maximum number of prefixes reached"})
	if want := "maximum number of prefixes reached (ipv4-unicast)"; o.peers[a].lastError != want {
		t.Errorf("lastError = %q, want %q", o.peers[a].lastError, want)
	}
	if !o.peers[a].maxPrefix {
		t.Error("maxPrefix not set")
	}
	o.onLog(zapcore.InfoLevel, a, "Peer Down", gobgplog.Fields{"Reason": "read-failed"})
	if want := "maximum number of prefixes reached (ipv4-unicast); then read-failed"; o.peers[a].lastError != want {
		t.Errorf("lastError = %q, want %q", o.peers[a].lastError, want)
	}
	o.onWatch(ev(api.PeerState_IDLE))
	o.onWatch(ev(api.PeerState_ESTABLISHED))
	if o.peers[a].maxPrefix {
		t.Error("maxPrefix not cleared by Established")
	}
	o.onLog(zapcore.InfoLevel, a, "Peer Down", gobgplog.Fields{"Reason": "hold-timer-expired"})
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
	l := &zapLogger{z: zap.New(core), onPeer: func(_ zapcore.Level, a netip.Addr, msg string, _ gobgplog.Fields) {
		hooked = append(hooked, a.String()+" "+msg)
	}}
	if l.GetLevel() != gobgplog.InfoLevel {
		t.Errorf("level = %v", l.GetLevel())
	}
	l.Debug("failed to connect", gobgplog.Fields{"Topic": "Peer", "Key": "192.0.2.1"})
	l.Warn("Peer Down", gobgplog.Fields{"Topic": "Peer", "Key": "192.0.2.1", "Reason": "x"})
	l.Info("server", gobgplog.Fields{"Topic": "Server"})
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
