// Package deploy_test proves the install in deploy/ (kustomize and Helm)
// against a real kube-apiserver: every object accepted by server-side apply,
// re-applies are no-ops, RBAC grants exactly what each component uses, and
// every container is locked down.
package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/netbridge-io/netbridge/internal/testenv"
)

// startAPIServer starts a real API server WITHOUT netbridge's CRDs (unlike
// testenv.Start, which preinstalls them), so that the install under test is
// what creates them. envtest runs the API server with
// --authorization-mode=RBAC (controller-runtime's default), so
// SubjectAccessReviews are answered by the roles the install created; the
// "nobody" row of rbacChecks proves it.
func startAPIServer(t *testing.T) client.Client {
	t.Helper()
	assets, err := testenv.Assets()
	if err != nil {
		t.Fatal(err)
	}
	scheme := testenv.NewScheme()
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		Scheme:                   scheme,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver (assets %s): %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop kube-apiserver: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKustomizeInstall(t *testing.T) {
	objs := renderKustomize(t, repoPath("deploy"))
	env := startAPIServer(t)
	installAndCheckIdempotent(t, env, objs)
	checkRBAC(t, env)

	// The examples must be valid against the installed CRDs and land where
	// the gateways may read them.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var examples []*unstructured.Unstructured
	for _, f := range []string{"bgp-password-secret.yaml", "bridgeconfig.yaml"} {
		examples = append(examples, decodeFile(t, repoPath("deploy", "examples", f))...)
	}
	serverSideApply(ctx, t, env, examples)
	for _, o := range examples {
		if o.GetKind() == "Secret" && o.GetNamespace() != systemNamespace {
			t.Errorf("example %s: BGP password Secrets must be in %s, the only namespace the gateway may read", objKey(o), systemNamespace)
		}
	}
}

func TestHelmInstall(t *testing.T) {
	objs := mustHelmTemplate(t)
	env := startAPIServer(t)
	installAndCheckIdempotent(t, env, objs)
	checkRBAC(t, env)

	// Values an operator sets: BGP passwords and a BridgeConfig whose peers
	// get the chart's peer defaults; all accepted by the CRD's validation.
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, []byte(`
bgp:
  passwords:
    - name: bgp-lab-r1
      password: s3cret
bridgeConfigs:
  - name: lab
    spec:
      gatewaySelector:
        matchLabels:
          netbridge.io/gateway: "true"
      uplink:
        interface: eth1
      segments:
        - name: app
          vlanID: 100
          vni: 10100
          subnets: ["10.20.100.0/24"]
      bgp:
        localASN: 65010
        peers:
          - address: 192.0.2.1
            asn: 65000
            passwordSecretRef:
              name: bgp-lab-r1
          - address: 192.0.2.2
            asn: 65000
            holdTime: 9
            keepalive: 3
`), 0o600); err != nil {
		t.Fatal(err)
	}
	withValues := mustHelmTemplate(t, "--values", values)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serverSideApply(ctx, t, env, withValues)
	bc := byKey(withValues)["BridgeConfig lab"]
	if bc == nil {
		t.Fatal("bridgeConfigs value rendered no BridgeConfig lab")
	}
	peers, _, _ := unstructured.NestedSlice(bc.Object, "spec", "bgp", "peers")
	if len(peers) != 2 {
		t.Fatalf("BridgeConfig lab has %d peers, want 2", len(peers))
	}
	hold := func(p any) any { return p.(map[string]any)["holdTime"] }
	if h := hold(peers[0]); h != int64(90) && h != float64(90) {
		t.Errorf("peer without holdTime: got %v, want the chart default 90", h)
	}
	if h := hold(peers[1]); h != int64(9) && h != float64(9) {
		t.Errorf("peer with holdTime 9: got %v, the default must not override it", h)
	}
	if s := byKey(withValues)["Secret "+systemNamespace+"/bgp-lab-r1"]; s == nil {
		t.Error("bgp.passwords rendered no Secret bgp-lab-r1 in " + systemNamespace)
	}
}

// TestHelmMatchesKustomize keeps the two installs from drifting: the same
// objects, the same RBAC rules, the same pod specs.
func TestHelmMatchesKustomize(t *testing.T) {
	kobjs := renderKustomize(t, repoPath("deploy"))
	hobjs := mustHelmTemplate(t)
	if k, h := keys(kobjs), keys(hobjs); !reflect.DeepEqual(k, h) {
		t.Fatalf("kinds/names differ\nkustomize: %v\nhelm:      %v", k, h)
	}
	hm := byKey(hobjs)
	for _, k := range kobjs {
		h := hm[objKey(k)]
		for _, field := range [][]string{
			{"rules"}, {"roleRef"}, {"subjects"}, // RBAC
			{"spec", "template", "spec"}, {"spec", "selector"}, {"spec", "updateStrategy"}, {"spec", "replicas"}, // workloads
			{"spec", "ports"}, {"spec", "clusterIP"}, // Services
			{"spec", "maxUnavailable"}, // PDB
		} {
			kv, kok, _ := unstructured.NestedFieldNoCopy(k.Object, field...)
			hv, hok, _ := unstructured.NestedFieldNoCopy(h.Object, field...)
			if kok != hok || !reflect.DeepEqual(normalize(kv), normalize(hv)) {
				t.Errorf("%s .%s differs\nkustomize: %v\nhelm:      %v", objKey(k), strings.Join(field, "."), kv, hv)
			}
		}
	}
}

// normalize makes YAML-decoded numbers comparable (helm output and
// kustomize output decode integers differently).
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case int64:
		return float64(x)
	case int:
		return float64(x)
	default:
		return v
	}
}

func TestHelmRefusesShortGracePeriod(t *testing.T) {
	_, err := helmTemplate(t, "--set", "gateway.terminationGracePeriodSeconds=20")
	if err == nil || !strings.Contains(err.Error(), "gracefulShutdownWait") {
		t.Fatalf("a grace period below the graceful shutdown wait must be refused, got %v", err)
	}
}

// TestHelmCRDsAreTheGeneratedOnes: helm installs crds/ from the chart, which
// must be byte-identical copies of deploy/crds (generated from api/). After
// `make generate`, copy them: cp deploy/crds/*.yaml deploy/helm/netbridge/crds/
func TestHelmCRDsAreTheGeneratedOnes(t *testing.T) {
	gen, err := filepath.Glob(repoPath("deploy", "crds", "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs in deploy/crds (%v)", err)
	}
	chart, _ := filepath.Glob(repoPath("deploy", "helm", "netbridge", "crds", "*"))
	base := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		return out
	}
	if !reflect.DeepEqual(base(gen), base(chart)) {
		t.Fatalf("chart crds/ %v != deploy/crds %v: run cp deploy/crds/*.yaml deploy/helm/netbridge/crds/", base(chart), base(gen))
	}
	for _, g := range gen {
		a, _ := os.ReadFile(g)
		b, err := os.ReadFile(repoPath("deploy", "helm", "netbridge", "crds", filepath.Base(g)))
		if err != nil || string(a) != string(b) {
			t.Errorf("deploy/helm/netbridge/crds/%s differs from deploy/crds (%v): run cp deploy/crds/*.yaml deploy/helm/netbridge/crds/", filepath.Base(g), err)
		}
	}
	// The kustomize entry must reference every generated CRD too.
	kobjs := byKey(renderKustomize(t, repoPath("deploy")))
	for _, g := range gen {
		for _, crd := range decodeFile(t, g) {
			if kobjs[objKey(crd)] == nil {
				t.Errorf("deploy/kustomization.yaml does not include %s", filepath.Base(g))
			}
		}
	}
}

func TestServiceMonitorComponent(t *testing.T) {
	// A user's overlay outside deploy/, as the component's comment shows.
	// kustomize wants relative paths to other kustomizations.
	dir := t.TempDir()
	rel := func(elem ...string) string {
		r, err := filepath.Rel(dir, repoPath(elem...))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- "+rel("deploy")+
			"\ncomponents:\n- "+rel("deploy", "components", "servicemonitor")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, objs := range map[string][]*unstructured.Unstructured{
		"kustomize": renderKustomize(t, dir),
		"helm":      mustHelmTemplate(t, "--set", "serviceMonitor.enabled=true"),
	} {
		sm := byKey(objs)["ServiceMonitor "+systemNamespace+"/netbridge"]
		if sm == nil {
			t.Errorf("%s: no ServiceMonitor", name)
			continue
		}
		sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
		matched := 0
		for _, o := range objs {
			if o.GetKind() != "Service" {
				continue
			}
			if !labelsMatch(o.GetLabels(), sel) {
				t.Errorf("%s: ServiceMonitor does not select %s", name, objKey(o))
				continue
			}
			matched++
			ports, _, _ := unstructured.NestedSlice(o.Object, "spec", "ports")
			if !slices.ContainsFunc(ports, func(p any) bool { return p.(map[string]any)["name"] == "metrics" }) {
				t.Errorf("%s: %s has no port named metrics", name, objKey(o))
			}
		}
		if matched != 3 {
			t.Errorf("%s: ServiceMonitor selects %d metrics Services, want 3", name, matched)
		}
	}
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

// rbacCheck is one SubjectAccessReview and its expected answer.
type rbacCheck struct {
	sa          string // ServiceAccount in netbridge-system
	verb        string
	group       string
	resource    string
	subresource string
	namespace   string
	name        string
	allowed     bool
	why         string
}

var rbacChecks = []rbacCheck{
	// gateway: reads desired state
	{"netbridge-gateway", "list", "netbridge.io", "bridgeconfigs", "", "", "", true, "reads the BridgeConfigs that select its node"},
	{"netbridge-gateway", "watch", "netbridge.io", "bridgeendpoints", "", "vms", "", true, "reads the endpoints of its segments"},
	{"netbridge-gateway", "get", "", "nodes", "", "", "edge-1", true, "reads node VTEP addresses"},
	{"netbridge-gateway", "create", "netbridge.io", "bridgegateways", "", "", "", true, "creates its BridgeGateway"},
	{"netbridge-gateway", "patch", "netbridge.io", "bridgegateways", "status", "", "edge-1", true, "writes its BridgeGateway status"},
	{"netbridge-gateway", "create", "coordination.k8s.io", "leases", "", systemNamespace, "", true, "per-segment election"},
	{"netbridge-gateway", "update", "coordination.k8s.io", "leases", "", systemNamespace, "nb-dc1-app", true, "renews its segment leases"},
	{"netbridge-gateway", "delete", "coordination.k8s.io", "leases", "", systemNamespace, "nb-dc1-app", true, "releases a lease on graceful shutdown"},
	{"netbridge-gateway", "get", "", "secrets", "", systemNamespace, "bgp-dc1-core1", true, "BGP MD5 passwords"},
	{"netbridge-gateway", "create", "events.k8s.io", "events", "", systemNamespace, "", true, "reports events"},
	// gateway: nothing else
	{"netbridge-gateway", "get", "", "secrets", "", "default", "", false, "Secrets outside netbridge-system"},
	{"netbridge-gateway", "list", "", "secrets", "", "", "", false, "Secrets cluster-wide"},
	{"netbridge-gateway", "update", "netbridge.io", "bridgeconfigs", "", "", "dc1", false, "BridgeConfigs are written by people"},
	{"netbridge-gateway", "patch", "netbridge.io", "bridgeconfigs", "status", "", "dc1", false, "BridgeConfig status is the controller's"},
	{"netbridge-gateway", "create", "netbridge.io", "bridgeendpoints", "", "vms", "", false, "endpoints are the controller's"},
	{"netbridge-gateway", "delete", "netbridge.io", "bridgeendpoints", "", "vms", "x", false, "endpoints are the controller's"},
	{"netbridge-gateway", "create", "coordination.k8s.io", "leases", "", "kube-system", "", false, "Leases outside netbridge-system"},
	// controller
	{"netbridge-controller", "create", "netbridge.io", "bridgeendpoints", "", "vms", "", true, "derives endpoints"},
	{"netbridge-controller", "delete", "netbridge.io", "bridgeendpoints", "", "vms", "x", true, "removes endpoints of gone VMs"},
	{"netbridge-controller", "update", "netbridge.io", "bridgeendpoints", "status", "vms", "x", true, "endpoint conditions"},
	{"netbridge-controller", "patch", "netbridge.io", "bridgeconfigs", "status", "", "dc1", true, "BridgeConfig conditions"},
	{"netbridge-controller", "watch", "kubevirt.io", "virtualmachineinstances", "", "", "", true, "watches VMIs"},
	{"netbridge-controller", "list", "", "namespaces", "", "", "", true, "segment namespaceSelector"},
	{"netbridge-controller", "create", "", "events", "", "vms", "", true, "events on VMIs"},
	{"netbridge-controller", "patch", "events.k8s.io", "events", "", "vms", "", true, "events on VMIs"},
	{"netbridge-controller", "update", "coordination.k8s.io", "leases", "", systemNamespace, "netbridge-controller", true, "its leader-election lease"},
	{"netbridge-controller", "update", "coordination.k8s.io", "leases", "", systemNamespace, "nb-dc1-app", false, "gateway leases are the gateways'"},
	{"netbridge-controller", "create", "k8s.cni.cncf.io", "network-attachment-definitions", "", "vms", "", true, "a NAD per segment"},
	{"netbridge-controller", "delete", "k8s.cni.cncf.io", "network-attachment-definitions", "", "vms", "dc1.app", true, "NADs of removed segments"},
	{"netbridge-gateway", "create", "k8s.cni.cncf.io", "network-attachment-definitions", "", "vms", "", false, "NADs are the controller's"},
	{"netbridge-controller", "patch", "", "nodes", "", "", "worker-1", true, "segment readiness labels"},
	{"netbridge-controller", "watch", "forklift.konveyor.io", "networkmaps", "", "", "", true, "Forklift NetworkMaps map networks to segments"},
	{"netbridge-controller", "update", "forklift.konveyor.io", "plans", "", "mtv", "wave1", false, "Forklift objects are read-only"},
	{"netbridge-controller", "watch", "forklift.konveyor.io", "migrations", "", "", "", true, "Forklift Migrations drive cutoverPolicy AfterMigration"},
	{"netbridge-controller", "update", "forklift.konveyor.io", "migrations", "status", "mtv", "wave1-run1", false, "Forklift objects are read-only"},
	{"netbridge-controller", "patch", "kubevirt.io", "virtualmachineinstances", "", "vms", "app01", true, "the automatic cutover writes the cutover annotation"},
	{"netbridge-controller", "update", "kubevirt.io", "virtualmachineinstances", "", "vms", "app01", false, "VMIs are KubeVirt's: annotations by patch only"},
	{"netbridge-controller", "delete", "kubevirt.io", "virtualmachineinstances", "", "vms", "app01", false, "VMIs are KubeVirt's"},
	{"netbridge-node", "patch", "", "nodes", "", "", "worker-1", false, "readiness labels are the controller's: an agent cannot label other nodes"},
	{"netbridge-controller", "get", "", "secrets", "", systemNamespace, "bgp-dc1-core1", false, "no Secrets, even its own namespace"},
	{"netbridge-controller", "list", "", "secrets", "", "", "", false, "no Secrets cluster-wide"},
	{"netbridge-controller", "update", "netbridge.io", "bridgeconfigs", "", "", "dc1", false, "BridgeConfig specs are written by people"},
	{"netbridge-controller", "update", "netbridge.io", "bridgegateways", "status", "", "edge-1", false, "BridgeGateways are the gateways'"},
	// node agent: like the gateway, minus BGP secrets and lease writes
	{"netbridge-node", "watch", "coordination.k8s.io", "leases", "", systemNamespace, "", true, "follows the active gateway"},
	{"netbridge-node", "update", "netbridge.io", "bridgegateways", "status", "", "worker-1", true, "writes its BridgeGateway status"},
	{"netbridge-node", "update", "coordination.k8s.io", "leases", "", systemNamespace, "nb-dc1-app", false, "nodes take no part in the election"},
	{"netbridge-node", "get", "", "secrets", "", systemNamespace, "bgp-dc1-core1", false, "nodes speak no BGP"},
	// The authorizer is really RBAC: an unbound ServiceAccount gets nothing.
	{"nobody", "get", "netbridge.io", "bridgeconfigs", "", "", "dc1", false, "sanity: no AlwaysAllow authorizer"},
}

func checkRBAC(t *testing.T, env client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range rbacChecks {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:" + systemNamespace + ":" + c.sa,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNamespace, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: c.namespace, Verb: c.verb, Group: c.group, Resource: c.resource,
				Subresource: c.subresource, Name: c.name,
			},
		}}
		if err := env.Create(ctx, sar); err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if sar.Status.Allowed != c.allowed {
			ns := c.namespace
			if ns == "" {
				ns = "(cluster)"
			}
			t.Errorf("%s %s %s/%s %s in %s: allowed=%v, want %v (%s) %s", c.sa, c.verb, c.resource, c.subresource,
				c.name, ns, sar.Status.Allowed, c.allowed, c.why, sar.Status.Reason)
		}
	}
}

// TestRBACRulesAreExplicit: no wildcard anywhere, and the controller's
// roles never mention Secrets (least privilege is easier to keep than to
// restore).
func TestRBACRulesAreExplicit(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"kustomize": renderKustomize(t, repoPath("deploy")),
		"helm":      mustHelmTemplate(t),
	} {
		for _, o := range objs {
			if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
				continue
			}
			var role rbacv1.ClusterRole // Role has the same rules shape
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &role); err != nil {
				t.Fatalf("%s %s: %v", name, objKey(o), err)
			}
			for _, r := range role.Rules {
				for _, s := range slices.Concat(r.Verbs, r.Resources, r.APIGroups) {
					if strings.Contains(s, "*") {
						t.Errorf("%s %s: wildcard %q in %v", name, objKey(o), s, r)
					}
				}
				if strings.HasPrefix(o.GetName(), "netbridge-controller") && slices.Contains(r.Resources, "secrets") {
					t.Errorf("%s %s: the controller must not touch Secrets: %v", name, objKey(o), r)
				}
			}
		}
	}
}
