package v1alpha1_test

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

func TestParseSegmentKey(t *testing.T) {
	for in, want := range map[string]nbv1.SegmentKey{
		"dc1.app":        {BridgeConfig: "dc1", Segment: "app"},
		"dc1.example.db": {BridgeConfig: "dc1.example", Segment: "db"},
		"a-b.c":          {BridgeConfig: "a-b", Segment: "c"},
	} {
		got, err := nbv1.ParseSegmentKey(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v %v", in, got, err)
		}
		if got.String() != in {
			t.Errorf("%q: String() = %q, not the inverse", in, got.String())
		}
	}
	long := strings.Repeat("a", 40) + "." + strings.Repeat("b", 23) // 64 characters
	for _, bad := range []string{"", "app", ".app", "dc1.", "DC1.app", "dc1.App", "dc1.a_b", "dc1..app", long} {
		if k, err := nbv1.ParseSegmentKey(bad); err == nil {
			t.Errorf("%q accepted as %+v", bad, k)
		}
	}
	// 63 characters is the most a label value holds, and is accepted.
	edge := strings.Repeat("a", 40) + "." + strings.Repeat("b", 22)
	if _, err := nbv1.ParseSegmentKey(edge); err != nil {
		t.Errorf("63-character key refused: %v", err)
	}
	if errs := validation.IsValidLabelValue(edge); len(errs) > 0 {
		t.Errorf("63-character key is no label value: %v", errs)
	}
}

func TestLeaseName(t *testing.T) {
	// The old form "nb-a-b-c" made these two one Lease: two gateways of two
	// segments would have elected with each other.
	a := nbv1.SegmentKey{BridgeConfig: "a-b", Segment: "c"}
	b := nbv1.SegmentKey{BridgeConfig: "a", Segment: "b-c"}
	if nbv1.LeaseName(a) == nbv1.LeaseName(b) {
		t.Fatalf("LeaseName(%v) == LeaseName(%v) == %q", a, b, nbv1.LeaseName(a))
	}
	if got := nbv1.LeaseName(nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "app"}); got != "nb-dc1.app" {
		t.Errorf("LeaseName(dc1.app) = %q", got)
	}
	keys := []nbv1.SegmentKey{a, b,
		{BridgeConfig: "a.b", Segment: "c"}, {BridgeConfig: "a", Segment: "bc"}, {BridgeConfig: "ab", Segment: "c"},
		{BridgeConfig: strings.Repeat("x", 40), Segment: strings.Repeat("y", 22)},
	}
	seen := map[string]nbv1.SegmentKey{}
	for _, k := range keys {
		n := nbv1.LeaseName(k)
		if other, dup := seen[n]; dup {
			t.Errorf("%v and %v share Lease %q", k, other, n)
		}
		seen[n] = k
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("LeaseName(%v) = %q is no object name: %v", k, n, errs)
		}
		back, err := nbv1.ParseLeaseName(n)
		if err != nil || back != k {
			t.Errorf("ParseLeaseName(%q) = %+v, %v; want %+v", n, back, err, k)
		}
	}
	// Keys the API refuses (too long for a label, bad characters) still get
	// distinct valid names that no valid key can produce.
	over := []nbv1.SegmentKey{
		{BridgeConfig: strings.Repeat("x", 253), Segment: strings.Repeat("y", 63)},
		{BridgeConfig: strings.Repeat("x", 253), Segment: strings.Repeat("y", 62)},
		{BridgeConfig: "Bad_Name", Segment: "app"},
	}
	for _, k := range over {
		n := nbv1.LeaseName(k)
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 || len(n) > validation.DNS1123SubdomainMaxLength {
			t.Errorf("LeaseName(%d+%d chars) = %q (%d): %v", len(k.BridgeConfig), len(k.Segment), n, len(n), errs)
		}
		if _, dup := seen[n]; dup {
			t.Errorf("hashed Lease name %q collides", n)
		}
		seen[n] = k
		if _, err := nbv1.ParseLeaseName(n); err == nil {
			t.Errorf("hashed Lease name %q parsed as a valid key", n)
		}
	}
	for _, bad := range []string{"dc1.app", "nb-", "nb-dc1", "other-dc1.app"} {
		if _, err := nbv1.ParseLeaseName(bad); err == nil {
			t.Errorf("ParseLeaseName(%q) accepted", bad)
		}
	}
}

func TestEndpointName(t *testing.T) {
	// Readable where it cannot collide: KubeVirt's default interface names.
	for _, c := range []struct{ vmi, iface, want string }{
		{"vm1", "default", "vm1-default"},
		{"web1", "eth0", "web1-eth0"},
		{"web.1", "nic1", "web.1-nic1"},
	} {
		if got := nbv1.EndpointName(c.vmi, c.iface); got != c.want {
			t.Errorf("EndpointName(%q, %q) = %q, want %q", c.vmi, c.iface, got, c.want)
		}
	}
	// Each group joined with '-' would give one name.
	pairs := [][2]string{
		{"a-b", "c"}, {"a", "b-c"},
		{"vm", "x-default"}, {"vm-x", "default"},
		{"vm", "Eth0"}, {"vm", "eth0"}, {"vm", "ETH0"},
		{"vm", "eth_0"}, {"vm", "eth.0"}, {"vm", "eth-0"},
		{"vm.a", "b"}, {"vm", "a.b"},
		{strings.Repeat("v", 250), "nic"}, {strings.Repeat("v", 250), "nid"},
		{strings.Repeat("v", 253), "default"}, {strings.Repeat("v", 253), "defaulu"},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		n := nbv1.EndpointName(p[0], p[1])
		if other, dup := seen[n]; dup {
			t.Errorf("%q and %q both name endpoint %q", p, other, n)
		}
		seen[n] = p
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("EndpointName(%q) = %q (%d chars) is no object name: %v", p, n, len(n), errs)
		}
	}
}

func node(ann map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: ann}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func TestNodeVTEP(t *testing.T) {
	internal := corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "172.16.0.11"}
	hostname := corev1.NodeAddress{Type: corev1.NodeHostName, Address: "n1"}
	tests := []struct {
		name    string
		node    *corev1.Node
		want    string // "" = zero Addr
		wantErr string
	}{
		{"internal IP", node(nil, hostname, internal), "172.16.0.11", ""},
		{"annotation wins", node(map[string]string{nbv1.AnnotationVTEP: "192.0.2.7"}, internal), "192.0.2.7", ""},
		{"annotation v4-mapped is one spelling", node(map[string]string{nbv1.AnnotationVTEP: "::ffff:192.0.2.7"}, internal), "192.0.2.7", ""},
		{"annotation IPv6", node(map[string]string{nbv1.AnnotationVTEP: " 2001:db8::7 "}), "2001:db8::7", ""},
		{"unparsable annotation is an error, not a fall-back", node(map[string]string{nbv1.AnnotationVTEP: "192.0.2.300"}, internal), "", `annotation netbridge.io/vtep="192.0.2.300"`},
		{"empty annotation", node(map[string]string{nbv1.AnnotationVTEP: ""}, internal), "", `netbridge.io/vtep=""`},
		{"CIDR annotation", node(map[string]string{nbv1.AnnotationVTEP: "192.0.2.7/24"}, internal), "", "192.0.2.7/24"},
		{"unspecified", node(map[string]string{nbv1.AnnotationVTEP: "0.0.0.0"}, internal), "", "not a unicast address"},
		{"multicast", node(map[string]string{nbv1.AnnotationVTEP: "239.1.1.1"}, internal), "", "not a unicast address"},
		{"loopback", node(map[string]string{nbv1.AnnotationVTEP: "127.0.0.1"}, internal), "", "not a unicast address"},
		{"no address yet", node(nil, hostname), "", ""},
		{"bad InternalIP skipped", node(nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "x"}, internal), "172.16.0.11", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := nbv1.NodeVTEP(tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "node n1") {
					t.Fatalf("err %v, want one naming node n1 and %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if got.IsValid() {
					t.Fatalf("got %s, want none", got)
				}
				return
			}
			if got != netip.MustParseAddr(tc.want) {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNetworkAttachmentName(t *testing.T) {
	k := nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	if got := nbv1.NetworkAttachmentName(k, &nbv1.Segment{Name: "app"}); got != "dc1.app" {
		t.Errorf("default = %q, want the segment key dc1.app", got)
	}
	if got := nbv1.NetworkAttachmentName(k, &nbv1.Segment{Name: "app", NetworkAttachmentName: "legacy-app"}); got != "legacy-app" {
		t.Errorf("configured = %q", got)
	}
	if got := nbv1.SegmentBridgeName(1020); got != "nb-br-1020" {
		t.Errorf("bridge = %q", got)
	}
}

func TestSegmentReadyLabel(t *testing.T) {
	k := nbv1.SegmentKey{BridgeConfig: "dc1", Segment: "app"}
	if got := nbv1.SegmentReadyLabel(k); got != "netbridge.io/segment.dc1.app" {
		t.Errorf("label = %q", got)
	}
	long := nbv1.SegmentKey{BridgeConfig: strings.Repeat("b", 40), Segment: strings.Repeat("s", 20)}
	seen := map[string]bool{}
	for _, k := range []nbv1.SegmentKey{k, long, {BridgeConfig: long.BridgeConfig, Segment: "t" + long.Segment[1:]}, {BridgeConfig: "Bad_Name", Segment: "x"}} {
		l := nbv1.SegmentReadyLabel(k)
		if errs := validation.IsQualifiedName(l); len(errs) > 0 {
			t.Errorf("%v: label %q is not a valid label key: %v", k, l, errs)
		}
		if !nbv1.IsSegmentReadyLabel(l) {
			t.Errorf("%q not recognised", l)
		}
		if seen[l] {
			t.Errorf("%v: label %q taken by another key", k, l)
		}
		seen[l] = true
	}
	if nbv1.IsSegmentReadyLabel(nbv1.LabelSegment) {
		t.Errorf("the VMI label %s is not a readiness label", nbv1.LabelSegment)
	}
}
