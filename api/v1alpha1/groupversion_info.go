// Package v1alpha1 holds the netbridge.io/v1alpha1 API: BridgeConfig (written
// by people), BridgeEndpoint (written only by the controller) and
// BridgeGateway (written only by the gateway it describes).
//
// +kubebuilder:object:generate=true
// +groupName=netbridge.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every type in this package.
var GroupVersion = schema.GroupVersion{Group: "netbridge.io", Version: "v1alpha1"}

// AddToScheme registers the types of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&BridgeConfig{}, &BridgeConfigList{},
		&BridgeEndpoint{}, &BridgeEndpointList{},
		&BridgeGateway{}, &BridgeGatewayList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
