package controller

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/vlan"
)

func nadBC(segs ...nbv1.Segment) *nbv1.BridgeConfig {
	return &nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: "bc", UID: types.UID("uid-bc")}, Spec: nbv1.BridgeConfigSpec{Segments: segs}}
}

func ids(us []*unstructured.Unstructured) []string {
	out := []string{}
	for _, u := range us {
		out = append(out, u.GetNamespace()+"/"+u.GetName())
	}
	return out
}

// existingNAD is a NAD as planNADs would have created it for s in ns, or
// with a foreign owner when owner is not "bc".
func existingNAD(bc *nbv1.BridgeConfig, s nbv1.Segment, ns, owner string) *unstructured.Unstructured {
	name := nbv1.NetworkAttachmentName(SegmentKey{BridgeConfig: bc.Name, Segment: s.Name}, &s)
	u := desiredNAD(bc, &s, ns, name)
	u.SetUID(types.UID("uid-" + ns + "-" + name))
	switch owner {
	case "bc":
	case "":
		u.SetOwnerReferences(nil)
		u.SetLabels(nil)
	default:
		other := *bc
		other.Name = owner
		u.SetOwnerReferences([]metav1.OwnerReference{nadOwner(&other)})
		u.SetLabels(map[string]string{nbv1.LabelBridgeConfig: owner, nbv1.LabelSegmentName: s.Name})
	}
	return u
}

func TestPlanNADs(t *testing.T) {
	app := nbv1.Segment{Name: "app", VNI: 1020, MTU: 1450}
	app9000 := app
	app9000.MTU = 9000
	db := nbv1.Segment{Name: "db", VNI: 1030, NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"db": "yes"}}}
	renamed := app
	renamed.NetworkAttachmentName = "legacy-app"
	clash := db
	clash.NamespaceSelector = nil
	clash.NetworkAttachmentName = "bc.app"
	badSel := db
	badSel.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "db", Operator: "Bogus"}}}
	nss := map[string]labels.Set{"vms": nil, "dbs": {"db": "yes"}}
	bc := nadBC(app, db)

	tests := []struct {
		name                   string
		in                     NADInput
		create, update, delete []string
		conflicts              []string // substrings, one per conflict
	}{
		{name: "every allowed namespace gets one per segment",
			in:     NADInput{Name: "bc", Config: bc, Namespaces: nss},
			create: []string{"dbs/bc.app", "dbs/bc.db", "vms/bc.app"}},
		{name: "in sync: nothing",
			in: NADInput{Name: "bc", Config: bc, Namespaces: nss, Existing: map[string]*unstructured.Unstructured{
				"dbs/bc.app": existingNAD(bc, app, "dbs", "bc"), "dbs/bc.db": existingNAD(bc, db, "dbs", "bc"), "vms/bc.app": existingNAD(bc, app, "vms", "bc")}}},
		{name: "MTU change updates",
			in: NADInput{Name: "bc", Config: nadBC(app9000), Namespaces: map[string]labels.Set{"vms": nil}, Existing: map[string]*unstructured.Unstructured{
				"vms/bc.app": existingNAD(bc, app, "vms", "bc")}},
			update: []string{"vms/bc.app"}},
		{name: "segment removed deletes its NADs",
			in: NADInput{Name: "bc", Config: nadBC(app), Namespaces: nss, Existing: map[string]*unstructured.Unstructured{
				"dbs/bc.app": existingNAD(bc, app, "dbs", "bc"), "vms/bc.app": existingNAD(bc, app, "vms", "bc"), "dbs/bc.db": existingNAD(bc, db, "dbs", "bc")}},
			delete: []string{"dbs/bc.db"}},
		{name: "namespace no longer allowed deletes there",
			in: NADInput{Name: "bc", Config: nadBC(db), Namespaces: map[string]labels.Set{"dbs": nil}, Existing: map[string]*unstructured.Unstructured{
				"dbs/bc.db": existingNAD(bc, db, "dbs", "bc")}},
			delete: []string{"dbs/bc.db"}},
		{name: "BridgeConfig gone deletes all it owns, not the foreign",
			in: NADInput{Name: "bc", Existing: map[string]*unstructured.Unstructured{
				"vms/bc.app": existingNAD(bc, app, "vms", "bc"), "dbs/bc.app": existingNAD(bc, app, "dbs", "other")}},
			delete: []string{"vms/bc.app"}},
		{name: "foreign NAD with the name is reported, not touched",
			in: NADInput{Name: "bc", Config: nadBC(app), Namespaces: map[string]labels.Set{"vms": nil, "dbs": nil}, Existing: map[string]*unstructured.Unstructured{
				"vms/bc.app": existingNAD(bc, app, "vms", "")}},
			create: []string{"dbs/bc.app"}, conflicts: []string{"vms/bc.app: exists and is not owned by BridgeConfig bc"}},
		{name: "another BridgeConfig's NAD is foreign too",
			in: NADInput{Name: "bc", Config: nadBC(app), Namespaces: map[string]labels.Set{"vms": nil}, Existing: map[string]*unstructured.Unstructured{
				"vms/bc.app": existingNAD(bc, app, "vms", "other")}},
			conflicts: []string{"vms/bc.app: exists and is not owned"}},
		{name: "configured name: new created, old deleted",
			in: NADInput{Name: "bc", Config: nadBC(renamed), Namespaces: map[string]labels.Set{"vms": nil}, Existing: map[string]*unstructured.Unstructured{
				"vms/bc.app": existingNAD(bc, app, "vms", "bc")}},
			create: []string{"vms/legacy-app"}, delete: []string{"vms/bc.app"}},
		{name: "two segments wanting one name: first wins, clash reported",
			in:        NADInput{Name: "bc", Config: nadBC(app, clash), Namespaces: map[string]labels.Set{"vms": nil}},
			create:    []string{"vms/bc.app"},
			conflicts: []string{"vms/bc.app: wanted by segments app and db"}},
		{name: "unreadable selector keeps that segment's NADs",
			in: NADInput{Name: "bc", Config: nadBC(app, badSel), Namespaces: map[string]labels.Set{"dbs": {"db": "yes"}}, Existing: map[string]*unstructured.Unstructured{
				"dbs/bc.app": existingNAD(bc, app, "dbs", "bc"), "dbs/bc.db": existingNAD(bc, db, "dbs", "bc")}},
			conflicts: []string{"segment db: namespaceSelector"}},
		{name: "adopted after the BridgeConfig was created again (new UID)",
			in: NADInput{Name: "bc", Config: &nbv1.BridgeConfig{ObjectMeta: metav1.ObjectMeta{Name: "bc", UID: "uid-new"}, Spec: nbv1.BridgeConfigSpec{Segments: []nbv1.Segment{app}}},
				Namespaces: map[string]labels.Set{"vms": nil}, Existing: map[string]*unstructured.Unstructured{"vms/bc.app": existingNAD(bc, app, "vms", "bc")}},
			update: []string{"vms/bc.app"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planNADs(tc.in)
			for _, c := range []struct {
				what      string
				got, want []string
			}{{"create", ids(p.Create), tc.create}, {"update", ids(p.Update), tc.update}, {"delete", ids(p.Delete), tc.delete}} {
				if !slices.Equal(c.got, append([]string{}, c.want...)) {
					t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
				}
			}
			if len(p.Conflicts) != len(tc.conflicts) {
				t.Fatalf("conflicts = %q, want %d like %q", p.Conflicts, len(tc.conflicts), tc.conflicts)
			}
			for i, want := range tc.conflicts {
				if !strings.Contains(p.Conflicts[i], want) {
					t.Errorf("conflict %d = %q, want it to contain %q", i, p.Conflicts[i], want)
				}
			}
		})
	}
}

func TestPlanNADsUpdateKeepsOthersFields(t *testing.T) {
	app := nbv1.Segment{Name: "app", VNI: 1020, MTU: 1450}
	bc := nadBC(app)
	cur := existingNAD(bc, app, "vms", "bc")
	cur.SetAnnotations(map[string]string{"k8s.v1.cni.cncf.io/resourceName": "x"})
	cur.SetLabels(map[string]string{nbv1.LabelBridgeConfig: "bc", nbv1.LabelSegmentName: "app", "team": "a"})
	app.MTU = 9000
	p := planNADs(NADInput{Name: "bc", Config: nadBC(app), Namespaces: map[string]labels.Set{"vms": nil},
		Existing: map[string]*unstructured.Unstructured{"vms/bc.app": cur}})
	if len(p.Update) != 1 {
		t.Fatalf("update %v", ids(p.Update))
	}
	u := p.Update[0]
	if u.GetAnnotations()["k8s.v1.cni.cncf.io/resourceName"] != "x" || u.GetLabels()["team"] != "a" || u.GetUID() != cur.GetUID() {
		t.Errorf("update lost fields: %v %v %s", u.GetAnnotations(), u.GetLabels(), u.GetUID())
	}
	conf, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	if !strings.Contains(conf, `"mtu":9000`) {
		t.Errorf("config %s", conf)
	}
	if c, _, _ := unstructured.NestedString(cur.Object, "spec", "config"); strings.Contains(c, "9000") {
		t.Errorf("input modified: %s", c)
	}
}

// TestNADConfig pins the CNI configuration KubeVirt's bridge binding
// needs: the node's segment bridge, the MTU, no IPAM, no spoof check, the
// mac capability for the preserved MAC.
func TestNADConfig(t *testing.T) {
	conf := nadConfig("bc.app", &nbv1.Segment{Name: "app", VNI: 1020, MTU: 1450})
	var got map[string]any
	if err := json.Unmarshal([]byte(conf), &got); err != nil {
		t.Fatalf("config %s: %v", conf, err)
	}
	want := map[string]any{
		"cniVersion": "1.0.0", "name": "bc.app", "type": "bridge", "bridge": "nb-br-1020", "mtu": float64(1450),
		"isGateway": false, "ipMasq": false, "macspoofchk": false, "preserveDefaultVlan": false,
		"capabilities": map[string]any{"mac": true},
	}
	for k, v := range want {
		if gv, ok := got[k]; !ok || !jsonEqual(gv, v) {
			t.Errorf("%s = %v, want %v (config %s)", k, gv, v, conf)
		}
	}
	if _, ok := got["ipam"]; ok {
		t.Errorf("config has ipam: %s", conf)
	}
	if len(got) != len(want) {
		t.Errorf("config has %d keys, want %d: %s", len(got), len(want), conf)
	}
	if c := nadConfig("x", &nbv1.Segment{VNI: 7}); strings.Contains(c, "mtu") {
		t.Errorf("MTU 0 (kernel default) written out: %s", c)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestSegmentBridgeNameIsVLANs: the NAD names the bridge the node agent
// builds; two names for one bridge would attach VMs to nothing.
func TestSegmentBridgeNameIsVLANs(t *testing.T) {
	for _, vni := range []uint32{1, 1020, 16777215} {
		if a, b := nbv1.SegmentBridgeName(vni), vlan.BridgeName(vni); a != b {
			t.Errorf("vni %d: api %q, vlan %q", vni, a, b)
		}
	}
}
