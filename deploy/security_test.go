package deploy_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/netbridge-io/netbridge/internal/testenv"
)

// rootAgents may run as uid 0, and what each may add back. uid 0 because
// capabilities added to a container are effective for a root process only;
// netlink changes need CAP_NET_ADMIN in effect.
var rootAgents = map[string][]corev1.Capability{
	"netbridge-gateway": {"NET_ADMIN", "NET_RAW"}, // netlink + ARP probes/GARP
	"netbridge-node":    {"NET_ADMIN", "NET_RAW"}, // netlink + VM announcements off the underlay
}

func podSpecOf(t *testing.T, o *unstructured.Unstructured) (*corev1.PodTemplateSpec, bool) {
	t.Helper()
	switch o.GetKind() {
	case "Deployment":
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			t.Fatalf("%s: %v", objKey(o), err)
		}
		return &d.Spec.Template, true
	case "DaemonSet":
		var d appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			t.Fatalf("%s: %v", objKey(o), err)
		}
		return &d.Spec.Template, true
	case "StatefulSet", "ReplicaSet", "Job", "CronJob", "Pod":
		t.Fatalf("%s: kind not walked by this test yet, add it", objKey(o))
	}
	return nil, false
}

func TestContainersAreLockedDown(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"kustomize": renderKustomize(t, repoPath("deploy")),
		"helm":      mustHelmTemplate(t),
	} {
		workloads := 0
		for _, o := range objs {
			tpl, ok := podSpecOf(t, o)
			if !ok {
				continue
			}
			workloads++
			checkPod(t, name+" "+objKey(o), o.GetName(), &tpl.Spec)
		}
		if workloads != 3 {
			t.Errorf("%s: %d workloads, want 3 (controller, gateway, node)", name, workloads)
		}
	}
}

func checkPod(t *testing.T, where, name string, spec *corev1.PodSpec) {
	allowedCaps, rootAgent := rootAgents[name]
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if spec.HostNetwork && !rootAgent {
		t.Errorf("%s: hostNetwork is for the data-plane agents only", where)
	}
	if spec.HostPID || spec.HostIPC {
		t.Errorf("%s: hostPID/hostIPC", where)
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		w := where + " container " + c.Name
		if spec.HostNetwork {
			// In the host's namespace an empty host is every address of
			// the node: bind the node's internal address instead.
			for _, a := range c.Args {
				for _, flag := range []string{"--metrics-bind-address=", "--health-probe-bind-address="} {
					if v, ok := strings.CutPrefix(a, flag); ok && strings.HasPrefix(v, ":") {
						t.Errorf("%s: %s%s listens on every address of the node; bind $(HOST_IP)", w, flag, v)
					}
				}
			}
		}
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s: no securityContext", w)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", w)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", w)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem must be read-only", w)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: must drop ALL capabilities", w)
		} else {
			for _, add := range sc.Capabilities.Add {
				if !slices.Contains(allowedCaps, add) {
					t.Errorf("%s: adds %s, allowed %v", w, add, allowedCaps)
				}
			}
			if rootAgent && !slices.Equal(sc.Capabilities.Add, allowedCaps) {
				t.Errorf("%s: adds %v, needs exactly %v", w, sc.Capabilities.Add, allowedCaps)
			}
		}
		seccomp := psc.SeccompProfile
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: seccomp profile must be RuntimeDefault", w)
		}
		nonRoot, uid := psc.RunAsNonRoot, psc.RunAsUser
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if rootAgent {
			// Explicit, so that nobody "fixes" it into a silent EPERM.
			if uid == nil || *uid != 0 {
				t.Errorf("%s: the agent must say runAsUser: 0 explicitly", w)
			}
		} else if nonRoot == nil || !*nonRoot || uid == nil || *uid == 0 {
			t.Errorf("%s: must run as non-root with a non-zero runAsUser", w)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: cpu/memory requests and a memory limit are required", w)
		}
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			t.Errorf("%s: liveness and readiness probes are required", w)
		}
	}
}

// TestGatewayDaemonSet checks what a graceful BGP shutdown and the election
// depend on.
func TestGatewayDaemonSet(t *testing.T) {
	for name, objs := range map[string][]*unstructured.Unstructured{
		"kustomize": renderKustomize(t, repoPath("deploy")),
		"helm":      mustHelmTemplate(t),
	} {
		o := byKey(objs)["DaemonSet "+systemNamespace+"/netbridge-gateway"]
		if o == nil {
			t.Fatalf("%s: no gateway DaemonSet", name)
		}
		var ds appsv1.DaemonSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ds); err != nil {
			t.Fatal(err)
		}
		spec := ds.Spec.Template.Spec
		if spec.NodeSelector["netbridge.io/gateway"] != "true" {
			t.Errorf("%s: gateway nodeSelector %v", name, spec.NodeSelector)
		}
		c := spec.Containers[0]
		var wait time.Duration
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--graceful-shutdown-wait="); ok {
				d, err := time.ParseDuration(v)
				if err != nil {
					t.Fatalf("%s: %s: %v", name, a, err)
				}
				wait = d
			}
		}
		if wait == 0 {
			t.Errorf("%s: no --graceful-shutdown-wait", name)
		}
		if spec.TerminationGracePeriodSeconds == nil || time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second <= wait {
			t.Errorf("%s: terminationGracePeriodSeconds %v must exceed --graceful-shutdown-wait %v", name, spec.TerminationGracePeriodSeconds, wait)
		}
		ru := ds.Spec.UpdateStrategy.RollingUpdate
		if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 1 || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 0 {
			t.Errorf("%s: rolling update must be maxUnavailable 1, maxSurge 0: %+v", name, ru)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) || !slices.Contains(c.Args, "--node-name=$(NODE_NAME)") {
			t.Errorf("%s: NODE_NAME must come from the downward API and reach --node-name", name)
		}
		if !spec.HostNetwork {
			t.Errorf("%s: gateway must use the host network", name)
		}
	}
}

// TestDockerfile: no Docker engine runs here, so check that the image's
// build stages name real paths, and that every package of ours the three
// binaries import is inside a folder the Dockerfile copies.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(repoPath("Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var froms, copied, built []string
	var text strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		text.WriteString(line + "\n")
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(line, "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			froms = append(froms, fields[1])
		case "COPY":
			if strings.HasPrefix(fields[1], "--from=") {
				continue
			}
			copied = append(copied, fields[1:len(fields)-1]...)
		}
	}
	for _, m := range regexp.MustCompile(`\./cmd/[a-z-]+`).FindAllString(text.String(), -1) {
		built = append(built, m)
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:1.26") {
		t.Errorf("want a golang:1.26 build stage and a runtime stage, got %v", froms)
	}
	if last := froms[len(froms)-1]; !strings.HasPrefix(last, "gcr.io/distroless/static") && last != "scratch" {
		t.Errorf("runtime base %s: want distroless static or scratch", last)
	}
	df := text.String()
	for _, want := range []string{"CGO_ENABLED=0", "USER 65532", "/netbridge-controller", "/netbridge-gateway", "/netbridgectl"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	for _, p := range copied {
		if _, err := os.Stat(repoPath(p)); err != nil {
			t.Errorf("COPY %s: %v", p, err)
		}
	}
	for _, want := range []string{"./cmd/netbridge-controller", "./cmd/netbridge-gateway", "./cmd/netbridgectl"} {
		if !slices.Contains(built, want) {
			t.Errorf("Dockerfile does not build %s", want)
		}
		if _, err := os.Stat(repoPath(want, "main.go")); err != nil {
			t.Errorf("Dockerfile builds %s: %v", want, err)
		}
	}
	// -e: list imports even while a package does not compile; what matters
	// here is where our imported packages live.
	cmd := exec.Command("go", "list", "-e", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./cmd/...")
	cmd.Dir = testenv.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./cmd/...: %v", err)
	}
	const module = "github.com/netbridge-io/netbridge/"
	for _, pkg := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(pkg, module)
		if !ok {
			continue
		}
		top := strings.SplitN(rel, "/", 2)[0] + "/"
		if !slices.Contains(copied, top) && !slices.Contains(copied, strings.TrimSuffix(top, "/")) {
			t.Errorf("the binaries import %s, but the Dockerfile does not COPY %s", pkg, filepath.Clean(top))
		}
	}
}

// TestOperationsDocListsMetrics: the metric names are a contract between
// the gateway, the controller and the dashboards; docs/operations.md is
// where they are written down.
func TestOperationsDocListsMetrics(t *testing.T) {
	doc, err := os.ReadFile(repoPath("docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	for metric, typ := range map[string]string{
		"netbridge_gateway_segments_programmed":        "gauge",
		"netbridge_gateway_endpoints":                  "gauge",
		"netbridge_gateway_bgp_session_up":             "gauge",
		"netbridge_gateway_bgp_prefixes_advertised":    "gauge",
		"netbridge_gateway_reconcile_duration_seconds": "histogram",
		"netbridge_gateway_reconcile_errors_total":     "counter",
		"netbridge_gateway_lease_transitions_total":    "counter",
		"netbridge_gateway_duplicate_address_total":    "counter",
		"netbridge_gateway_degraded":                   "gauge",
		"netbridge_controller_endpoints":               "gauge",
		"netbridge_controller_endpoint_conflicts":      "gauge",
		"netbridge_controller_bridgeconfig_ready":      "gauge",
		"netbridge_controller_reconcile_errors_total":  "counter",
		"netbridge_controller_writes_total":            "counter",
	} {
		row := regexp.MustCompile("(?m)^\\| `" + metric + "` \\| " + typ + " \\|")
		if !row.Match(doc) {
			t.Errorf("docs/operations.md has no table row for %s (%s)", metric, typ)
		}
	}
}
