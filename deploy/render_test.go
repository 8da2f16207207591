package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/netbridge-io/netbridge/internal/testenv"
)

const (
	systemNamespace = "netbridge-system"
	fieldOwner      = "netbridge-deploy-test"
)

func repoPath(elem ...string) string {
	return filepath.Join(append([]string{testenv.RepoRoot()}, elem...)...)
}

// renderKustomize builds a kustomization the way `kubectl apply -k` does
// (default load restrictions: nothing outside the kustomization's folder).
func renderKustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	// Through YAML and the JSON decoder: kustomize's own maps hold Go ints,
	// which unstructured's deep copy refuses (it wants int64/float64).
	out, err := m.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	objs, err := decodeYAML(out)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	if len(objs) == 0 {
		t.Fatalf("kustomize build %s rendered nothing", dir)
	}
	return objs
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary is the helm that hack/helm.sh builds from its Go module (cached
// under .cache/helm; minutes on a cold cache). HELM overrides it.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		cmd := exec.Command("bash", repoPath("hack", "helm.sh"))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			helmErr = fmt.Errorf("hack/helm.sh: %w: %s", err, stderr.String())
			return
		}
		helmPath = strings.TrimSpace(string(out))
	})
	if helmErr != nil {
		t.Fatalf("build helm: %v", helmErr)
	}
	return helmPath
}

// helmTemplate runs `helm template netbridge deploy/helm/netbridge` with the
// chart's crds/ included, so that its output is a complete install like
// the kustomize one.
func helmTemplate(t *testing.T, extraArgs ...string) ([]*unstructured.Unstructured, error) {
	t.Helper()
	args := append([]string{"template", "netbridge", repoPath("deploy", "helm", "netbridge"),
		"--namespace", systemNamespace, "--include-crds"}, extraArgs...)
	cmd := exec.Command(helmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return decodeYAML(out)
}

func mustHelmTemplate(t *testing.T, extraArgs ...string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := helmTemplate(t, extraArgs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) == 0 {
		t.Fatal("helm template rendered nothing")
	}
	return objs
}

func decodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("decode YAML: %w", err)
		}
		if len(obj) == 0 { // empty document between two "---"
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: obj})
	}
}

func decodeFile(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeYAML(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

// objKey names an object the way the comparisons and failure messages do.
func objKey(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + " " + ns + "/" + u.GetName()
	}
	return u.GetKind() + " " + u.GetName()
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, objKey(o))
	}
	sort.Strings(out)
	return out
}

func byKey(objs []*unstructured.Unstructured) map[string]*unstructured.Unstructured {
	m := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		m[objKey(o)] = o
	}
	return m
}

// applyOrder puts CRDs first and Namespaces second, as an install must:
// custom resources need their CRD established, namespaced objects their
// namespace.
func applyOrder(o *unstructured.Unstructured) int {
	switch o.GetKind() {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	default:
		return 2
	}
}

// serverSideApply applies every object with one field owner and no forced
// ownership (a conflict is an error), waiting for CRDs to be Established
// before anything else, and returns the resourceVersion of each object.
func serverSideApply(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) map[string]string {
	t.Helper()
	sorted := append([]*unstructured.Unstructured(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool { return applyOrder(sorted[i]) < applyOrder(sorted[j]) })
	var crds []string
	for _, o := range sorted {
		if o.GetKind() != "CustomResourceDefinition" && len(crds) > 0 {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := testenv.WaitCRDsEstablished(wctx, c, crds...)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			crds = nil
		}
		if err := applyWithRetry(ctx, c, o.DeepCopy()); err != nil {
			t.Fatalf("server-side apply %s: %v", objKey(o), err)
		}
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o.GetName())
		}
	}
	versions := map[string]string{}
	for _, o := range sorted {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(o.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Fatalf("get %s after apply: %v", objKey(o), err)
		}
		versions[objKey(o)] = got.GetResourceVersion()
	}
	return versions
}

// applyWithRetry retries only "no kind match": the client's REST mapper
// learns a just-established CRD's kind on its next discovery refresh.
func applyWithRetry(ctx context.Context, c client.Client, u *unstructured.Unstructured) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldOwner))
		if err == nil || time.Now().After(deadline) || !(isNoMatch(err) || apierrors.IsNotFound(err)) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func isNoMatch(err error) bool {
	return strings.Contains(err.Error(), "no matches for kind")
}

// installAndCheckIdempotent applies objs twice and fails when the second
// apply changed any object: an install that rewrites itself on every sync
// fights GitOps tools and wakes every watcher for nothing.
func installAndCheckIdempotent(t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first := serverSideApply(ctx, t, c, objs)
	if len(first) != len(objs) {
		t.Fatalf("applied %d objects, read back %d: duplicate names in the render?", len(objs), len(first))
	}
	second := serverSideApply(ctx, t, c, objs)
	for k, rv := range first {
		if second[k] != rv {
			t.Errorf("second apply changed %s: resourceVersion %s -> %s", k, rv, second[k])
		}
	}
}
