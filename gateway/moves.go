package gateway

import (
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/vlan"
)

// A live-migrated VM announces itself from its new node (QEMU's
// announce-self RARP, the guest's GARP) long before the VMI, the
// controller and the BridgeEndpoint say where it is. The agent believes
// such an announcement for its own kernel only: a managed VM's MAC, on
// its VNI, from the VTEP of a known node, points that VM's FDB entry at
// the new node until the BridgeEndpoint catches up (or the hint ages
// out). No API object is written: the controller stays the one writer of
// the endpoint, and the next announcement corrects a wrong hint.

// moveHintTTL bounds how long an announcement outranks the endpoint: the
// controller follows a real move within seconds; a hint it never confirms
// falls back to the endpoint.
const moveHintTTL = time.Minute

// moveKey is a VM interface on a segment.
type moveKey struct {
	vni uint32
	mac string
}

type moveHint struct {
	vtep netip.Addr
	at   time.Time
}

// live is the one TTL rule: the plan uses a hint only while it is live,
// and observe drops it once it is not.
func (h moveHint) live(now time.Time) bool { return now.Sub(h.at) < moveHintTTL }

// moveHints is fed by the underlay watcher and read by the plan.
type moveHints struct {
	mu      sync.Mutex
	fire    func()
	log     *zap.Logger
	now     func() time.Time
	planned map[moveKey]netip.Addr // where the last plan sends each VM
	nodes   map[netip.Addr]bool    // VTEPs a VM may run behind
	hints   map[moveKey]moveHint
}

func newMoveHints(fire func(), log *zap.Logger) *moveHints {
	return &moveHints{fire: fire, log: log, now: time.Now, hints: map[moveKey]moveHint{}}
}

// sighted records an announcement that moves a managed VM to another
// known node, and asks for a reconcile; every other announcement (the VM
// where we already send it, an unknown MAC, a VTEP that is not a node)
// changes nothing.
func (m *moveHints) sighted(s vlan.Sighting) {
	k := moveKey{vni: s.VNI, mac: s.MAC.String()}
	m.mu.Lock()
	cur, managed := m.planned[k]
	move := managed && cur != s.VTEP && m.nodes[s.VTEP]
	if move {
		m.hints[k] = moveHint{vtep: s.VTEP, at: m.now()}
	} else if h, ok := m.hints[k]; ok && h.vtep == s.VTEP {
		// Seen again where we already send it: keep the hint fresh.
		m.hints[k] = moveHint{vtep: s.VTEP, at: m.now()}
	}
	m.mu.Unlock()
	if move {
		m.log.Info("VM announced itself from another node", zap.String("event", "vmMoveSighted"),
			zap.Uint32("vni", s.VNI), zap.String("mac", k.mac), zap.String("from", cur.String()), zap.String("to", s.VTEP.String()))
		m.fire()
	}
}

// view is the hints the plan may use now.
func (m *moveHints) view() map[moveKey]netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := make(map[moveKey]netip.Addr, len(m.hints))
	for k, h := range m.hints {
		if h.live(now) {
			out[k] = h.vtep
		}
	}
	return out
}

// observe learns what the plan programmed and which VTEPs are nodes, and
// drops the hints the endpoints have caught up with or that aged out.
func (m *moveHints) observe(d Desired, p hostPlan) {
	planned := map[moveKey]netip.Addr{}
	for _, s := range p.Segments {
		for _, e := range s.Endpoints {
			planned[moveKey{vni: s.VNI, mac: e.MAC.String()}] = e.VTEP
		}
	}
	nodes := make(map[netip.Addr]bool, len(d.NodeVTEPs))
	for _, v := range d.NodeVTEPs {
		nodes[v] = true
	}
	vniOf := map[SegmentKey]uint32{}
	for _, s := range d.Segments {
		vniOf[s.Key] = s.VNI
	}
	declared := map[moveKey]netip.Addr{}
	for _, e := range d.Endpoints {
		if e.MAC != nil {
			declared[moveKey{vni: vniOf[e.Segment], mac: e.MAC.String()}] = e.VTEP
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.planned, m.nodes = planned, nodes
	now := m.now()
	for k, h := range m.hints {
		if declared[k] == h.vtep || !h.live(now) {
			delete(m.hints, k)
		}
	}
}

// movedVTEP is where the plan sends endpoint e of a segment with vni:
// the endpoint's VTEP, unless the VM announced itself from another node.
func movedVTEP(v runtimeView, vni uint32, e Endpoint) netip.Addr {
	if h, ok := v.Moved[moveKey{vni: vni, mac: e.MAC.String()}]; ok && h.IsValid() {
		return h
	}
	return e.VTEP
}
