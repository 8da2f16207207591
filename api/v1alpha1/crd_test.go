package v1alpha1_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/testenv"
)

func loadExample(t *testing.T) *nbv1.BridgeConfig {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "deploy", "examples", "bridgeconfig.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var bc nbv1.BridgeConfig
	if err := yaml.UnmarshalStrict(raw, &bc); err != nil {
		t.Fatalf("parse example: %v", err)
	}
	return &bc
}

// TestCRDs runs every schema check against one real API server; starting it
// is the slow part.
func TestCRDs(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client

	t.Run("Established", func(t *testing.T) {
		if err := testenv.WaitCRDsEstablished(ctx, c,
			"bridgeconfigs.netbridge.io", "bridgeendpoints.netbridge.io", "bridgegateways.netbridge.io"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ValidExampleReadsBackUnchanged", func(t *testing.T) {
		bc := loadExample(t)
		if len(bc.Spec.Segments) != 2 || len(bc.Spec.BGP.Peers) != 2 {
			t.Fatalf("example must have two segments and two peers, has %d and %d", len(bc.Spec.Segments), len(bc.Spec.BGP.Peers))
		}
		want := bc.Spec.DeepCopy()
		if err := c.Create(ctx, bc); err != nil {
			t.Fatalf("create example: %v", err)
		}
		var got nbv1.BridgeConfig
		if err := c.Get(ctx, client.ObjectKey{Name: bc.Name}, &got); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(*want, got.Spec) {
			a, _ := yaml.Marshal(want)
			b, _ := yaml.Marshal(got.Spec)
			t.Fatalf("spec changed on the way through the API server\nsent:\n%s\nread:\n%s", a, b)
		}
	})

	t.Run("InvalidObjectsRejected", func(t *testing.T) {
		for _, tc := range invalidCases() {
			t.Run(tc.name, func(t *testing.T) {
				bc := loadExample(t)
				bc.Name = "invalid-" + strings.ToLower(strings.ReplaceAll(tc.name, "_", "-"))
				tc.mutate(bc)
				err := c.Create(ctx, bc)
				if err == nil {
					_ = c.Delete(ctx, bc)
					t.Fatalf("API server accepted %s", tc.name)
				}
				if !apierrors.IsInvalid(err) {
					t.Fatalf("want Invalid, got %v", err)
				}
				if !strings.Contains(err.Error(), tc.field) {
					t.Fatalf("error does not name field %q: %v", tc.field, err)
				}
			})
		}
	})

	t.Run("BFDDefaultsAndSingleHop", func(t *testing.T) {
		bc := loadExample(t)
		bc.Name = "bfd-defaults"
		bc.Spec.BGP.Peers[0].BFD = &nbv1.BFD{Enabled: true}
		bc.Spec.BGP.Peers[0].EBGPMultihop = 1
		bc.Spec.BGP.Peers[1].BFD = &nbv1.BFD{Enabled: true, MinReceiveMs: 100, MinTransmitMs: 10, Multiplier: 255}
		if err := c.Create(ctx, bc); err != nil {
			t.Fatalf("create: %v", err)
		}
		var got nbv1.BridgeConfig
		if err := c.Get(ctx, client.ObjectKey{Name: bc.Name}, &got); err != nil {
			t.Fatal(err)
		}
		if b := got.Spec.BGP.Peers[0].BFD; b == nil || *b != (nbv1.BFD{Enabled: true, MinReceiveMs: 300, MinTransmitMs: 300, Multiplier: 3}) {
			t.Fatalf("defaults: %+v, want 300 ms x 3", b)
		}
		if b := got.Spec.BGP.Peers[1].BFD; *b != (nbv1.BFD{Enabled: true, MinReceiveMs: 100, MinTransmitMs: 10, Multiplier: 255}) {
			t.Fatalf("explicit values changed: %+v", b)
		}
	})

	t.Run("InlinePasswordRefused", func(t *testing.T) {
		// Passwords exist only as Secret references: an inline "password"
		// field is refused under strict field validation.
		u := &unstructured.Unstructured{}
		bc := loadExample(t)
		bc.Name = "inline-password"
		bc.APIVersion, bc.Kind = nbv1.GroupVersion.String(), "BridgeConfig"
		raw, _ := yaml.Marshal(bc)
		if err := yaml.Unmarshal(raw, &u.Object); err != nil {
			t.Fatal(err)
		}
		peers, _, _ := unstructured.NestedSlice(u.Object, "spec", "bgp", "peers")
		peers[0].(map[string]any)["password"] = "s3cret"
		_ = unstructured.SetNestedSlice(u.Object, peers, "spec", "bgp", "peers")
		err := c.Create(ctx, u, client.FieldValidation(metav1.FieldValidationStrict))
		if err == nil || !strings.Contains(err.Error(), "password") {
			t.Fatalf("inline password accepted or error does not name it: %v", err)
		}
	})

	t.Run("StatusOnlyThroughSubresource", func(t *testing.T) {
		bc := loadExample(t)
		bc.Name = "status-subresource"
		if err := c.Create(ctx, bc); err != nil {
			t.Fatal(err)
		}
		// A spec change sent to /status is ignored, the status change kept.
		bc.Spec.Segments[0].MTU = 1400
		bc.Status.EndpointCount = 7
		bc.Status.ActiveGateways = "gw1"
		if err := c.Status().Update(ctx, bc); err != nil {
			t.Fatalf("status update: %v", err)
		}
		var got nbv1.BridgeConfig
		if err := c.Get(ctx, client.ObjectKeyFromObject(bc), &got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Segments[0].MTU != 1450 {
			t.Fatalf("spec changed through /status: mtu %d", got.Spec.Segments[0].MTU)
		}
		if got.Status.EndpointCount != 7 || got.Status.ActiveGateways != "gw1" {
			t.Fatalf("status not written: %+v", got.Status)
		}
		// And a status change sent to the main resource is ignored.
		got.Status.EndpointCount = 99
		got.Spec.Segments[0].MTU = 1400
		if err := c.Update(ctx, &got); err != nil {
			t.Fatal(err)
		}
		var again nbv1.BridgeConfig
		if err := c.Get(ctx, client.ObjectKeyFromObject(bc), &again); err != nil {
			t.Fatal(err)
		}
		if again.Status.EndpointCount != 7 || again.Spec.Segments[0].MTU != 1400 {
			t.Fatalf("main resource update: status %d (want 7), mtu %d (want 1400)", again.Status.EndpointCount, again.Spec.Segments[0].MTU)
		}
	})

	t.Run("BridgeEndpointAndGateway", func(t *testing.T) {
		be := &nbv1.BridgeEndpoint{
			ObjectMeta: metav1.ObjectMeta{Name: "vm1-eth0", Namespace: "default"},
			Spec: nbv1.BridgeEndpointSpec{BridgeConfig: "dc1", Segment: "app", VMI: "vm1",
				IPs: []string{"10.20.100.10"}, MAC: "52:54:00:00:00:01", NodeName: "node1", VTEP: "172.16.0.11"},
		}
		if err := c.Create(ctx, be); err != nil {
			t.Fatal(err)
		}
		if be.Spec.State != nbv1.StateStaged {
			t.Fatalf("state defaults to Staged, got %q", be.Spec.State)
		}
		be.Spec.State = "Bogus"
		if err := c.Update(ctx, be); err == nil || !strings.Contains(err.Error(), "spec.state") {
			t.Fatalf("bogus state accepted or error does not name spec.state: %v", err)
		}
		gw := &nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: "gw1"},
			Spec: nbv1.BridgeGatewaySpec{NodeName: "gw1", Role: nbv1.RoleGateway}}
		if err := c.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
	})
}

type invalidCase struct {
	name   string
	field  string // the error must name this
	mutate func(*nbv1.BridgeConfig)
}

func i32(v int32) *int32 { return &v }

func invalidCases() []invalidCase {
	return []invalidCase{
		{"vlan_0", "vlanID", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].VLANID = 0 }},
		{"vlan_4095", "vlanID", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].VLANID = 4095 }},
		{"vni_0", "vni", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].VNI = 0 }},
		{"vni_2pow24", "vni", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].VNI = 1 << 24 }},
		{"duplicate_vlan", "vlanID must be unique", func(b *nbv1.BridgeConfig) { b.Spec.Segments[1].VLANID = b.Spec.Segments[0].VLANID }},
		{"duplicate_vni", "vni must be unique", func(b *nbv1.BridgeConfig) { b.Spec.Segments[1].VNI = b.Spec.Segments[0].VNI }},
		{"duplicate_segment_name", "spec.segments[1]", func(b *nbv1.BridgeConfig) { b.Spec.Segments[1].Name = b.Spec.Segments[0].Name }},
		{"bad_segment_name", "name must be a DNS-1123", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Name = "App_VLAN" }},
		{"bad_network_attachment_name", "networkAttachmentName must be a DNS-1123 subdomain", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].NetworkAttachmentName = "Legacy_App" }},
		{"network_attachment_name_dot_end", "networkAttachmentName must be a DNS-1123 subdomain", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].NetworkAttachmentName = "legacy." }},
		{"bad_cutover_policy", "spec.segments[0].cutoverPolicy", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].CutoverPolicy = "Automatic" }},
		{"verify_timeout_1s", "verifyTimeout must be between 5s and 1h", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].VerifyTimeout = &metav1.Duration{Duration: time.Second}
		}},
		{"auto_activate_and_after_migration", "set one of them", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].AutoActivate = true
			b.Spec.Segments[0].CutoverPolicy = nbv1.CutoverAfterMigration
		}},
		{"bad_cidr", "subnets must be CIDRs", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = []string{"10.20.300.0/24"} }},
		{"bad_cidr_v6", "subnets must be CIDRs", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = []string{"2001:db8::/129"} }},
		{"no_subnet", "spec.segments[0].subnets", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = nil }},
		{"mtu_9001", "mtu must be between 1280 and 9000", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].MTU = 9001 }},
		{"mtu_1000", "mtu must be between 1280 and 9000", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].MTU = 1000 }},
		{"local_asn_0", "localASN", func(b *nbv1.BridgeConfig) { b.Spec.BGP.LocalASN = 0 }},
		{"peer_asn_0", "asn must be between", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].ASN = 0 }},
		{"peer_asn_too_big", "asn must be between", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].ASN = 1 << 32 }},
		{"keepalive_ge_hold", "keepalive must be below", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Keepalive = i32(9) }},
		{"hold_1", "holdTime must be 0 or between 3 and 65535", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].HoldTime = i32(1) }},
		{"hold_too_big", "holdTime must be 0 or between 3 and 65535", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].HoldTime = i32(70000) }},
		{"bad_peer_ip", "address must be an IP", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "192.0.2.300" }},
		{"bad_router_id", "routerID must be an IPv4", func(b *nbv1.BridgeConfig) { b.Spec.BGP.RouterID = "2001:db8::1" }},
		{"bad_gateway_address", "gatewayAddress must be an address with prefix", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].GatewayAddress = "10.20.100.1" }},
		{"bad_community", "communities must look like", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Communities = []string{"no-export"} }},
		{"egress_local_no_gateway", "egress Local needs an IPv4 segments[].gatewayAddress", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].GatewayAddress, b.Spec.Segments[0].Egress = "", nbv1.EgressLocal
		}},
		{"egress_local_v6_gateway", "egress Local needs an IPv4 segments[].gatewayAddress", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].Subnets = []string{"2001:db8:100::/64"}
			b.Spec.Segments[0].GatewayAddress, b.Spec.Segments[0].Egress = "2001:db8:100::1/64", nbv1.EgressLocal
		}},
		{"bad_egress", "egress", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Egress = "Anycast" }},
		{"bad_phase", "phase", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Phase = "Done" }},
		{"empty_uplink", "uplink: set interface or address", func(b *nbv1.BridgeConfig) { b.Spec.Uplink = nbv1.UplinkSpec{} }},
		{"no_segments", "spec.segments", func(b *nbv1.BridgeConfig) { b.Spec.Segments = nil }},
		// Meaning, not only syntax: what a network engineer would refuse.
		{"subnet_host_bits", "subnets must not have host bits set", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = []string{"10.20.100.5/24"} }},
		{"subnet_default_route", "must not be a default route", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = []string{"0.0.0.0/0"} }},
		{"subnet_default_route_v6", "must not be a default route", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].Subnets = []string{"::/0"} }},
		{"subnets_overlap_in_segment", "subnets must not overlap", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].Subnets = []string{"10.20.100.0/24", "10.20.100.128/25"}
		}},
		{"subnet_twice_in_segment", "subnets must not overlap", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].Subnets = []string{"10.20.100.0/24", "10.20.100.0/24"}
		}},
		{"gateway_outside_subnet", "gatewayAddress must be an address inside one of segments[].subnets", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].GatewayAddress = "10.99.0.1/24"
		}},
		{"gateway_wrong_prefix_length", "with that subnet's prefix length", func(b *nbv1.BridgeConfig) { b.Spec.Segments[0].GatewayAddress = "10.20.100.1/16" }},
		{"community_out_of_range", "communities must be ASN:value with both parts between 0 and 65535", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].Communities = []string{"65536:1"}
		}},
		{"advertise_community_out_of_range", "advertise.communities must be ASN:value", func(b *nbv1.BridgeConfig) { b.Spec.Advertise.Communities = []string{"1:99999"} }},
		{"large_community_out_of_range", "largeCommunities must be global:local1:local2", func(b *nbv1.BridgeConfig) {
			b.Spec.Advertise.LargeCommunities = []string{"65010:4294967296:1"}
		}},
		{"peer_unspecified", "must be a unicast address a router can have", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "0.0.0.0" }},
		{"peer_loopback", "must be a unicast address a router can have", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "127.0.0.1" }},
		{"peer_multicast", "must be a unicast address a router can have", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "224.0.0.5" }},
		{"peer_broadcast", "must be a unicast address a router can have", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "255.255.255.255" }},
		{"peer_link_local_v6", "must be a unicast address a router can have", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "fe80::1" }},
		{"peer_v4_mapped", "address must be an IP", func(b *nbv1.BridgeConfig) { b.Spec.BGP.Peers[0].Address = "::ffff:192.0.2.9" }},
		{"peer_same_address_two_spellings", "peers[].address must be unique", func(b *nbv1.BridgeConfig) {
			b.Spec.BGP.Peers[0].Address, b.Spec.BGP.Peers[1].Address = "2001:db8::1", "2001:DB8:0::1"
		}},
		{"router_id_zero", "routerID must be a unicast address", func(b *nbv1.BridgeConfig) { b.Spec.BGP.RouterID = "0.0.0.0" }},
		{"router_id_link_local", "routerID must be a unicast address", func(b *nbv1.BridgeConfig) { b.Spec.BGP.RouterID = "169.254.0.1" }},
		{"router_id_multicast", "routerID must be a unicast address", func(b *nbv1.BridgeConfig) { b.Spec.BGP.RouterID = "239.0.0.1" }},
		{"uplink_slash", "uplink.interface must be a Linux interface name", func(b *nbv1.BridgeConfig) { b.Spec.Uplink.Interface = "eth/1" }},
		{"uplink_space", "uplink.interface must be a Linux interface name", func(b *nbv1.BridgeConfig) { b.Spec.Uplink.Interface = "eth 1" }},
		{"uplink_dotdot", "uplink.interface must be a Linux interface name", func(b *nbv1.BridgeConfig) { b.Spec.Uplink.Interface = ".." }},
		{"uplink_too_long", "spec.uplink.interface", func(b *nbv1.BridgeConfig) { b.Spec.Uplink.Interface = "eth0123456789012" }},
		{"uplink_address_host_bits", "uplink.address must not have host bits set", func(b *nbv1.BridgeConfig) {
			b.Spec.Uplink = nbv1.UplinkSpec{Address: "192.0.2.5/24"}
		}},
		{"segment_key_too_long", "must fit the label netbridge.io/segment", func(b *nbv1.BridgeConfig) {
			b.Spec.Segments[0].Name = strings.Repeat("s", 60)
		}},
		{"bfd_interval_too_short", "bfd.minReceiveMs must be between 10 and 60000", func(b *nbv1.BridgeConfig) {
			b.Spec.BGP.Peers[0].BFD = &nbv1.BFD{Enabled: true, MinReceiveMs: 5}
		}},
		{"bfd_interval_too_long", "bfd.minTransmitMs must be between 10 and 60000", func(b *nbv1.BridgeConfig) {
			b.Spec.BGP.Peers[0].BFD = &nbv1.BFD{Enabled: true, MinTransmitMs: 60001}
		}},
		{"bfd_multiplier", "bfd.multiplier must be between 1 and 255", func(b *nbv1.BridgeConfig) {
			b.Spec.BGP.Peers[0].BFD = &nbv1.BFD{Enabled: true, Multiplier: 256}
		}},
		{"bfd_multihop", "bfd is single-hop only", func(b *nbv1.BridgeConfig) {
			b.Spec.BGP.Peers[0].BFD = &nbv1.BFD{Enabled: true}
			b.Spec.BGP.Peers[0].EBGPMultihop = 2
		}},
	}
}
