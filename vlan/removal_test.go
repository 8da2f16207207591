package vlan

import (
	"context"
	"slices"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

func TestChunkRemovals(t *testing.T) {
	del := func(vni uint32, link string) action { return action{kind: actDeleteLink, vni: vni, link: link} }
	in := []action{del(1, "a"), del(1, "b"), del(2, "c"), del(3, "d"), del(3, "e")}
	got := chunkRemovals(in, 2)
	if len(got) != 2 || len(got[0]) != 3 || len(got[1]) != 2 || got[1][0].vni != 3 {
		t.Fatalf("chunks of 2 segments: %v", got)
	}
	if got := chunkRemovals(nil, 2); len(got) != 0 {
		t.Fatalf("no removals: %v", got)
	}
	rest, rm := splitRemovals([]action{del(1, "x"), {kind: actSetUp, vni: 2, link: "y"}, del(2, "z")}, map[uint32]bool{2: true})
	if len(rm) != 1 || rm[0].vni != 1 || len(rest) != 2 {
		t.Fatalf("split: rest %v removals %v", rest, rm)
	}
}

// TestBatchedRemoval: undesired segments go in one group deletion (writes:
// one tag per link plus one request), their uplinks and a foreign bridge
// stay; through a handle whose namespace the batch cannot reach (New with
// another namespace's handle) removal falls back to one deletion per link
// and still removes everything.
func TestBatchedRemoval(t *testing.T) {
	for _, batched := range []bool{true, false} {
		ns := netnstest.New(t, "nb-rm")
		ns.Run(t, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
		ns.Run(t, "ip", "link", "add", "keep0", "type", "bridge")
		for _, p := range [][2]string{{"up0", "up1"}, {"up2", "up3"}} {
			ns.Run(t, "ip", "link", "add", p[0], "type", "veth", "peer", "name", p[1])
		}
		segs := accessSegments([]string{"up0", "up1", "up2"})
		d := New(ns.Handle, zaptest.NewLogger(t))
		if batched {
			var err error
			if d, err = NewAt(ns.NsHandle, zaptest.NewLogger(t)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(d.Close)
		}
		ctx := context.Background()
		if _, err := d.Reconcile(ctx, segs); err != nil {
			t.Fatal(err)
		}
		res, err := d.Reconcile(ctx, segs[:1])
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Removed, []uint32{10001, 10002}) || res.Changes != 4 {
			t.Fatalf("batched=%t: removed %v with %d changes, want 10001 10002 with 4 (bridge + vxlan each)", batched, res.Removed, res.Changes)
		}
		if want := 4 + 1; batched && res.Writes != want {
			t.Errorf("batched removal wrote %d times, want %d (4 tags, 1 group deletion)", res.Writes, want)
		}
		if want := 4 + 4; !batched && res.Writes != want {
			t.Errorf("fallback removal wrote %d times, want %d (4 tags the batch could not use, one deletion per link)", res.Writes, want)
		}
		links, err := ns.Handle.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		for _, gone := range []string{BridgeName(10001), VXLANName(10001), BridgeName(10002), VXLANName(10002)} {
			if slices.Contains(names, gone) {
				t.Errorf("batched=%t: %s still there: %v", batched, gone, names)
			}
		}
		for _, kept := range []string{"keep0", "up0", "up1", "up2", "up3", BridgeName(10000), VXLANName(10000)} {
			if !slices.Contains(names, kept) {
				t.Errorf("batched=%t: %s went too: %v", batched, kept, names)
			}
		}
	}
}
