package kube

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/internal/kubeclient"
)

// Source serves Inputs from informer caches. When the API server goes
// away the caches keep their last content: the agent keeps its state
// (fail static) and catches up when the watches resume.
type Source struct {
	api       *kubeclient.Reachability
	cache     cache.Cache
	namespace string
	nodeName  string
}

// NewSource builds the caches: cluster-wide BridgeConfigs,
// BridgeEndpoints and Nodes; Leases and Secrets only in the netbridge
// namespace (the gateway may read Secrets nowhere else).
//
// api gates the informers on the API server's reachability: a watch that
// fails while the server is away waits for it instead of growing client-go's
// back-off (30-60 s), so the caches catch up within a second of its return.
func NewSource(cfg *rest.Config, scheme *runtime.Scheme, namespace, nodeName string, api *kubeclient.Reachability) (*Source, error) {
	c, err := cache.New(cfg, cache.Options{
		Scheme:      scheme,
		NewInformer: api.NewInformer,
		ByObject: map[client.Object]cache.ByObject{
			&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{namespace: {}}},
			&corev1.Secret{}:        {Namespaces: map[string]cache.Config{namespace: {}}},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("informer cache: %w", err)
	}
	return &Source{cache: c, namespace: namespace, nodeName: nodeName, api: api}, nil
}

// Start runs the informers and waits for their first sync; every change
// afterwards calls onChange.
// onLeaseChange, when set, is called too with the name of a changed Lease
// (a released lease is taken over without waiting for the next retry; only
// that segment's elector needs to look).
func (k *Source) Start(ctx context.Context, onChange func(), onLeaseChange func(name string), log *zap.Logger) error {
	handler := func(also func(name string)) toolscache.ResourceEventHandlerFuncs {
		fire := func(obj any) {
			onChange()
			if also == nil {
				return
			}
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if l, ok := obj.(*coordinationv1.Lease); ok {
				also(l.Name)
			}
		}
		return toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { fire(obj) },
			UpdateFunc: func(_, obj any) { fire(obj) },
			DeleteFunc: func(obj any) { fire(obj) },
		}
	}
	// GetInformer needs discovery: wait for the API server rather than
	// fail at start-up while it is away.
	if err := k.api.WaitReachable(ctx); err != nil {
		return fmt.Errorf("api server %s: %w", k.api.Host(), err)
	}
	// When the API server comes back, reconcile everything once: what
	// changed meanwhile is in the caches by then.
	k.api.OnReturn(ctx, onChange)
	for _, obj := range []client.Object{&nbv1.BridgeConfig{}, &nbv1.BridgeEndpoint{}, &corev1.Node{}, &coordinationv1.Lease{}, &corev1.Secret{}} {
		inf, err := k.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer %T: %w", obj, err)
		}
		var also func(string)
		if _, isLease := obj.(*coordinationv1.Lease); isLease {
			also = onLeaseChange
		}
		if _, err := inf.AddEventHandler(handler(also)); err != nil {
			return fmt.Errorf("informer %T handler: %w", obj, err)
		}
	}
	go func() {
		if err := k.cache.Start(ctx); err != nil {
			log.Error("informer cache stopped", zap.Error(err))
		}
	}()
	if !k.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("informer caches did not sync: %w", ctx.Err())
	}
	return nil
}

// Inputs implements Source.
func (k *Source) Inputs(ctx context.Context) (gateway.Inputs, error) {
	var in gateway.Inputs
	var bcs nbv1.BridgeConfigList
	if err := k.cache.List(ctx, &bcs); err != nil {
		return in, fmt.Errorf("list bridgeconfigs: %w", err)
	}
	in.Configs = bcs.Items
	var eps nbv1.BridgeEndpointList
	if err := k.cache.List(ctx, &eps); err != nil {
		return in, fmt.Errorf("list bridgeendpoints: %w", err)
	}
	in.Endpoints = eps.Items
	var nodes corev1.NodeList
	if err := k.cache.List(ctx, &nodes); err != nil {
		return in, fmt.Errorf("list nodes: %w", err)
	}
	in.Nodes = map[string]gateway.NodeInfo{}
	for _, n := range nodes.Items {
		// An unusable VTEP annotation is an error, not a fallback: the
		// node gets no VTEP (its segments cannot be built) and the
		// controller reports it on the node's endpoints.
		vtep, err := nbv1.NodeVTEP(&n)
		if err != nil {
			in.Problems = append(in.Problems, fmt.Sprintf("node %s: %v", n.Name, err))
		}
		in.Nodes[n.Name] = gateway.NodeInfo{Labels: n.Labels, VTEP: vtep}
		if n.Name == k.nodeName {
			in.NodeLabels = n.Labels
			in.LocalVTEP = vtep
		}
	}
	var leases coordinationv1.LeaseList
	if err := k.cache.List(ctx, &leases, client.InNamespace(k.namespace)); err != nil {
		return in, fmt.Errorf("list leases: %w", err)
	}
	holders := map[string]string{}
	for _, l := range leases.Items {
		if l.Spec.HolderIdentity != nil {
			holders[l.Name] = *l.Spec.HolderIdentity
		}
	}
	in.LeaseHolders = map[gateway.SegmentKey]string{}
	for _, bc := range bcs.Items {
		for _, s := range bc.Spec.Segments {
			key := gateway.SegmentKey{BridgeConfig: bc.Name, Segment: s.Name}
			if h := holders[nbv1.LeaseName(key)]; h != "" {
				in.LeaseHolders[key] = h
			}
		}
	}
	in.Password = func(ref nbv1.SecretKeyRef) (string, error) {
		var s corev1.Secret
		if err := k.cache.Get(ctx, client.ObjectKey{Namespace: k.namespace, Name: ref.Name}, &s); err != nil {
			return "", fmt.Errorf("secret %s/%s: %w", k.namespace, ref.Name, err)
		}
		key := ref.Key
		if key == "" {
			key = "password"
		}
		v, ok := s.Data[key]
		if !ok {
			return "", fmt.Errorf("secret %s/%s has no key %q", k.namespace, ref.Name, key)
		}
		return string(v), nil
	}
	return in, nil
}
