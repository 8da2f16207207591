package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller"
)

func nadObject(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("k8s.cni.cncf.io/v1")
	u.SetKind("NetworkAttachmentDefinition")
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

// nadConf reads a NAD's CNI configuration; err when it does not exist.
func nadConf(ns, name string) (map[string]any, *unstructured.Unstructured, error) {
	u := nadObject(ns, name)
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(u), u); err != nil {
		return nil, nil, err
	}
	raw, _, _ := unstructured.NestedString(u.Object, "spec", "config")
	var c map[string]any
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return nil, u, fmt.Errorf("nad %s/%s config %q: %w", ns, name, raw, err)
	}
	return c, u, nil
}

func nadGone(ns, name string) error {
	_, _, err := nadConf(ns, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("nad %s/%s still exists", ns, name)
}

// wantNAD: the NAD exists, is the controller's, and its config attaches
// to bridge with mtu.
func wantNAD(ns, name, bridge string, mtu float64) func() error {
	return func() error {
		c, u, err := nadConf(ns, name)
		if err != nil {
			return err
		}
		if c["type"] != "bridge" || c["bridge"] != bridge || c["mtu"] != mtu || c["macspoofchk"] != false || c["ipam"] != nil {
			return fmt.Errorf("nad %s/%s config %v", ns, name, c)
		}
		if refs := u.GetOwnerReferences(); len(refs) != 1 || refs[0].Kind != "BridgeConfig" || refs[0].Controller == nil || !*refs[0].Controller {
			return fmt.Errorf("nad %s/%s owners %+v", ns, name, refs)
		}
		return nil
	}
}

func conflictCondition(name string, status metav1.ConditionStatus, contains string) func() error {
	return func() error {
		var bc nbv1.BridgeConfig
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &bc); err != nil {
			return err
		}
		c := meta.FindStatusCondition(bc.Status.Conditions, nbv1.ConditionNetworkAttachmentConflict)
		if c == nil || c.Status != status || !strings.Contains(c.Message, contains) {
			return fmt.Errorf("bridgeconfig %s condition %s = %+v, want %s containing %q", name, nbv1.ConditionNetworkAttachmentConflict, c, status, contains)
		}
		return nil
	}
}

// TestNetworkAttachments drives the NAD controller on a real API server:
// one NAD per segment in every allowed namespace, kept in step with the
// segment, deleted with it, and a foreign NAD reported, never overwritten.
func TestNetworkAttachments(t *testing.T) {
	ctx := context.Background()
	team := map[string]string{"t16-team": "vm"}
	createNamespace(t, "t16-a", team)
	createNamespace(t, "t16-b", team)
	createNamespace(t, "t16-c", nil)
	sel := &metav1.LabelSelector{MatchLabels: team}
	bc := bridgeConfig("t16", map[string]string{"netbridge.io/gateway": "t16"},
		nbv1.Segment{Name: "app", VLANID: 1601, VNI: 16016, MTU: 1450, Subnets: []string{"10.160.0.0/24"}, NamespaceSelector: sel},
		nbv1.Segment{Name: "db", VLANID: 1602, VNI: 16017, Subnets: []string{"10.161.0.0/24"}, NamespaceSelector: sel, NetworkAttachmentName: "t16-db-net"},
	)
	// Someone else's NAD under the name the app segment wants in t16-b.
	foreign := nadObject("t16-b", "t16.app")
	foreign.Object["spec"] = map[string]any{"config": `{"cniVersion":"0.3.1","name":"theirs","type":"macvlan","master":"eth0"}`}
	mustCreate(t, foreign)
	mustCreate(t, bc)
	deleteOnCleanup(t, bc)

	startManager(t, controller.Config{NetworkAttachments: true})

	t.Run("CreatedInEveryAllowedNamespace", func(t *testing.T) {
		took := eventually(t, 10*time.Second, "app NAD in t16-a", wantNAD("t16-a", "t16.app", "nb-br-16016", 1450))
		eventually(t, 2*time.Second, "db NAD in t16-a", func() error {
			c, _, err := nadConf("t16-a", "t16-db-net")
			if err != nil {
				return err
			}
			if c["bridge"] != "nb-br-16017" || c["mtu"] != nil {
				return fmt.Errorf("config %v", c)
			}
			return nil
		})
		eventually(t, 2*time.Second, "db NAD in t16-b", wantNADExists("t16-b", "t16-db-net"))
		t.Logf("first NAD after %s (includes cache start)", took)
		for _, n := range []string{"t16.app", "t16-db-net"} {
			if err := nadGone("t16-c", n); err != nil {
				t.Errorf("namespace not allowed: %v", err)
			}
		}
	})

	t.Run("ForeignNADReportedNotOverwritten", func(t *testing.T) {
		eventually(t, 5*time.Second, "conflict condition", conflictCondition("t16", metav1.ConditionTrue, "t16-b/t16.app"))
		c, u, err := nadConf("t16-b", "t16.app")
		if err != nil {
			t.Fatal(err)
		}
		if c["type"] != "macvlan" || len(u.GetOwnerReferences()) != 0 || u.GetLabels()[nbv1.LabelBridgeConfig] != "" {
			t.Errorf("foreign NAD was touched: config %v owners %v labels %v", c, u.GetOwnerReferences(), u.GetLabels())
		}
		eventually(t, 5*time.Second, "warning event on the BridgeConfig", func() error {
			var evs eventsv1.EventList
			if err := env.Client.List(ctx, &evs); err != nil {
				return err
			}
			for _, e := range evs.Items {
				if e.Regarding.Kind == "BridgeConfig" && e.Regarding.Name == "t16" && e.Type == corev1.EventTypeWarning &&
					e.Reason == nbv1.ReasonForeignNetworkAttachment && strings.Contains(e.Note, "t16-b/t16.app") {
					return nil
				}
			}
			return fmt.Errorf("no %s event on bridgeconfig t16", nbv1.ReasonForeignNetworkAttachment)
		})
	})

	t.Run("UpdatedOnMTUChange", func(t *testing.T) {
		updateBC(t, "t16", func(bc *nbv1.BridgeConfig) { bc.Spec.Segments[0].MTU = 9000 })
		took := eventually(t, 2*time.Second, "MTU 9000", wantNAD("t16-a", "t16.app", "nb-br-16016", 9000))
		t.Logf("nad_update_ms=%d", took.Milliseconds())
	})

	t.Run("NamespaceLabelledLater", func(t *testing.T) {
		var ns corev1.Namespace
		if err := env.Client.Get(ctx, client.ObjectKey{Name: "t16-c"}, &ns); err != nil {
			t.Fatal(err)
		}
		ns.Labels = team
		if err := env.Client.Update(ctx, &ns); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "app NAD in t16-c", wantNAD("t16-c", "t16.app", "nb-br-16016", 9000))
	})

	t.Run("ForeignGoneOursCreated", func(t *testing.T) {
		if err := env.Client.Delete(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "ours in t16-b", wantNAD("t16-b", "t16.app", "nb-br-16016", 9000))
		eventually(t, 2*time.Second, "conflict cleared", conflictCondition("t16", metav1.ConditionFalse, ""))
	})

	t.Run("DeletedWithTheSegment", func(t *testing.T) {
		updateBC(t, "t16", func(bc *nbv1.BridgeConfig) { bc.Spec.Segments = bc.Spec.Segments[:1] })
		for _, ns := range []string{"t16-a", "t16-b", "t16-c"} {
			eventually(t, 2*time.Second, "db NAD gone from "+ns, func() error { return nadGone(ns, "t16-db-net") })
		}
		if err := wantNAD("t16-a", "t16.app", "nb-br-16016", 9000)(); err != nil {
			t.Errorf("the remaining segment's NAD: %v", err)
		}
	})

	t.Run("DeletedWithTheBridgeConfig", func(t *testing.T) {
		if err := env.Client.Delete(ctx, bc); err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"t16-a", "t16-b", "t16-c"} {
			eventually(t, 2*time.Second, "app NAD gone from "+ns, func() error { return nadGone(ns, "t16.app") })
		}
	})
}

func wantNADExists(ns, name string) func() error {
	return func() error { _, _, err := nadConf(ns, name); return err }
}

func updateBC(t *testing.T, name string, mutate func(*nbv1.BridgeConfig)) {
	t.Helper()
	for range 10 {
		var bc nbv1.BridgeConfig
		if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, &bc); err != nil {
			t.Fatal(err)
		}
		mutate(&bc)
		err := env.Client.Update(context.Background(), &bc)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) {
			t.Fatalf("update bridgeconfig %s: %v", name, err)
		}
	}
	t.Fatalf("update bridgeconfig %s: conflicts", name)
}
