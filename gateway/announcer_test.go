package gateway

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

type fakeFrames struct {
	mu      sync.Mutex
	garps   map[string]int
	nas     map[string]int
	rarps   map[string]int
	learned map[string][]net.HardwareAddr
	times   []time.Time
}

func (f *fakeFrames) GratuitousARP(iface string, ip netip.Addr, _ net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.garps[iface+"/"+ip.String()]++
	f.times = append(f.times, time.Now())
	return nil
}

func (f *fakeFrames) UnsolicitedNA(iface string, ip netip.Addr, _ net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nas == nil {
		f.nas = map[string]int{}
	}
	f.nas[iface+"/"+ip.String()]++
	f.times = append(f.times, time.Now())
	return nil
}

func (f *fakeFrames) AnnounceMAC(iface string, mac net.HardwareAddr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rarps[iface+"/"+mac.String()]++
	f.times = append(f.times, time.Now())
	return nil
}

func (f *fakeFrames) LearnedMACs(port string) ([]net.HardwareAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.learned[port], nil
}

// counts returns the address announcements (GARPs and NAs, keyed by
// iface/IP) and the RARPs sent so far.
func (f *fakeFrames) counts() (map[string]int, map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, r := map[string]int{}, map[string]int{}
	for k, v := range f.garps {
		g[k] = v
	}
	for k, v := range f.nas {
		g[k] = v
	}
	for k, v := range f.rarps {
		r[k] = v
	}
	return g, r
}

// TestFrameAnnouncer: a new announcement is sent on every slot of the
// schedule and then stops; one still desired is not restarted by a later
// Set; one removed and desired again (a takeover) starts over; learned
// legacy MACs are announced into the VXLAN side; IPv6 addresses get
// unsolicited NAs on the same schedule; one rate bound holds for all.
func TestFrameAnnouncer(t *testing.T) {
	frames := &fakeFrames{garps: map[string]int{}, rarps: map[string]int{},
		learned: map[string][]net.HardwareAddr{"uplink0": {mustMAC("02:00:00:00:aa:01"), mustMAC("02:00:00:00:aa:02")}}}
	sched := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond}
	an := NewFrameAnnouncer(frames, AnnouncerOptions{Schedule: sched, Rate: 200, Burst: 5}, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go an.Run(ctx)

	ip := netip.MustParseAddr("10.20.100.50")
	ip6 := netip.MustParseAddr("2001:db8:100::50")
	want := Announcements{
		Addresses: []AddressAnnouncement{{Iface: "uplink0", IP: ip, MAC: mustMAC(vm1MAC)}, {Iface: "uplink0", IP: ip6, MAC: mustMAC(vm1MAC)}},
		MACs:      []MACRefresh{{VLANPort: "uplink0", VXLANDevice: "nb-vx-10100"}},
	}
	an.Set(want)
	time.Sleep(60 * time.Millisecond)
	an.Set(want) // still desired: keeps its schedule
	time.Sleep(250 * time.Millisecond)
	g, r := frames.counts()
	if g["uplink0/10.20.100.50"] != len(sched) {
		t.Fatalf("gratuitous ARPs: got %d, want one per slot (%d)", g["uplink0/10.20.100.50"], len(sched))
	}
	frames.mu.Lock()
	garps6, nas6 := frames.garps["uplink0/"+ip6.String()], frames.nas["uplink0/"+ip6.String()]
	frames.mu.Unlock()
	if nas6 != len(sched) || garps6 != 0 {
		t.Fatalf("IPv6 address: %d unsolicited NAs and %d gratuitous ARPs, want %d NAs (one per slot) and none", nas6, garps6, len(sched))
	}
	if r["nb-vx-10100/02:00:00:00:aa:01"] != len(sched) || r["nb-vx-10100/02:00:00:00:aa:02"] != len(sched) {
		t.Fatalf("RARPs of the learned legacy MACs: %v", r)
	}
	an.Set(Announcements{})
	time.Sleep(100 * time.Millisecond)
	an.Set(want) // a takeover: the schedule starts again
	time.Sleep(250 * time.Millisecond)
	if g, _ := frames.counts(); g["uplink0/10.20.100.50"] != 2*len(sched) || g["uplink0/"+ip6.String()] != 2*len(sched) {
		t.Fatalf("after a takeover: got %d gratuitous ARPs and %d NAs, want %d each", g["uplink0/10.20.100.50"], g["uplink0/"+ip6.String()], 2*len(sched))
	}

	// 100 VMs (50 IPv4, 50 IPv6: GARPs and NAs share the bound) at 200
	// frames/s with a burst of 5: the first slot alone takes about 0.5 s,
	// never a storm.
	frames2 := &fakeFrames{garps: map[string]int{}, rarps: map[string]int{}}
	an2 := NewFrameAnnouncer(frames2, AnnouncerOptions{Schedule: []time.Duration{0}, Rate: 200, Burst: 5}, zap.NewNop())
	go an2.Run(ctx)
	var many Announcements
	for i := range 50 {
		many.Addresses = append(many.Addresses,
			AddressAnnouncement{Iface: "uplink0", IP: netip.AddrFrom4([4]byte{10, 20, 100, byte(i + 1)}), MAC: mustMAC(vm1MAC)},
			AddressAnnouncement{Iface: "uplink0", IP: netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)}), MAC: mustMAC(vm1MAC)})
	}
	start := time.Now()
	an2.Set(many)
	deadline := time.Now().Add(5 * time.Second)
	for {
		frames2.mu.Lock()
		n := len(frames2.times)
		frames2.mu.Unlock()
		if n == 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 100 sent", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("50 gratuitous ARPs + 50 unsolicited NAs at 200/s took %s", took)
	if took < 400*time.Millisecond {
		t.Fatalf("100 frames in %s: the rate bound (200/s) did not hold", took)
	}
}
