// Package kubevirt reads the few KubeVirt VirtualMachineInstance fields
// netbridge needs from unstructured objects: kubevirt.io/api is not served
// here, and a small local struct keeps the dependency surface tiny.
package kubevirt

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// GroupVersionKind of VirtualMachineInstance.
var (
	GroupVersion = schema.GroupVersion{Group: "kubevirt.io", Version: "v1"}
	VMIGVK       = GroupVersion.WithKind("VirtualMachineInstance")
	VMIListGVK   = GroupVersion.WithKind("VirtualMachineInstanceList")
	VMIGVR       = GroupVersion.WithResource("virtualmachineinstances")
)

// DefaultInterface is the interface name KubeVirt gives the pod network.
const DefaultInterface = "default"

// InterfaceStatus is one entry of status.interfaces.
type InterfaceStatus struct {
	Name          string   `json:"name,omitempty"`
	InterfaceName string   `json:"interfaceName,omitempty"`
	MAC           string   `json:"mac,omitempty"`
	IPAddress     string   `json:"ipAddress,omitempty"`
	IPAddresses   []string `json:"ipAddresses,omitempty"`
	InfoSource    string   `json:"infoSource,omitempty"`
}

// MigrationState is status.migrationState.
type MigrationState struct {
	SourceNode string `json:"sourceNode,omitempty"`
	TargetNode string `json:"targetNode,omitempty"`
	Completed  bool   `json:"completed,omitempty"`
	Failed     bool   `json:"failed,omitempty"`
}

// Status is the part of status netbridge reads.
type Status struct {
	NodeName       string            `json:"nodeName,omitempty"`
	Phase          string            `json:"phase,omitempty"`
	Interfaces     []InterfaceStatus `json:"interfaces,omitempty"`
	MigrationState *MigrationState   `json:"migrationState,omitempty"`
}

// NamedItem is a spec list entry (network or interface) of which only the
// name, the MAC and a network's Multus reference matter here.
type NamedItem struct {
	Name       string `json:"name,omitempty"`
	MacAddress string `json:"macAddress,omitempty"`
	// Multus is a network's spec.networks[].multus.
	Multus *MultusNetwork `json:"multus,omitempty"`
}

// MultusNetwork names a NetworkAttachmentDefinition: "name" (in the VMI's
// namespace) or "namespace/name".
type MultusNetwork struct {
	NetworkName string `json:"networkName,omitempty"`
}

// Spec is the part of spec netbridge reads.
type Spec struct {
	Networks []NamedItem `json:"networks,omitempty"`
	Domain   struct {
		Devices struct {
			Interfaces []NamedItem `json:"interfaces,omitempty"`
		} `json:"devices,omitempty"`
	} `json:"domain,omitempty"`
}

// VMI is a typed view of a VirtualMachineInstance.
type VMI struct {
	Namespace         string
	Name              string
	UID               types.UID
	CreationTimestamp metav1.Time
	Labels            map[string]string
	Annotations       map[string]string
	Spec              Spec
	Status            Status
	// SegmentInterface, when set, is the interface that joins the segment
	// (resolved from a Forklift NetworkMap) instead of PrimaryInterface's.
	SegmentInterface string
}

// FromUnstructured converts spec and status of u; unknown fields are ignored.
func FromUnstructured(u *unstructured.Unstructured) (*VMI, error) {
	v := &VMI{
		Namespace:         u.GetNamespace(),
		Name:              u.GetName(),
		UID:               u.GetUID(),
		CreationTimestamp: u.GetCreationTimestamp(),
		Labels:            u.GetLabels(),
		Annotations:       u.GetAnnotations(),
	}
	if m, ok := u.Object["spec"].(map[string]interface{}); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &v.Spec); err != nil {
			return nil, fmt.Errorf("vmi %s/%s: read spec: %w", v.Namespace, v.Name, err)
		}
	}
	if m, ok := u.Object["status"].(map[string]interface{}); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &v.Status); err != nil {
			return nil, fmt.Errorf("vmi %s/%s: read status: %w", v.Namespace, v.Name, err)
		}
	}
	return v, nil
}

// PrimaryInterface is the interface the segment label applies to:
// SegmentInterface when set, else the first interface named in the spec, else the first reported in the status, else
// KubeVirt's "default".
func (v *VMI) PrimaryInterface() string {
	if v.SegmentInterface != "" {
		return v.SegmentInterface
	}
	if ifs := v.Spec.Domain.Devices.Interfaces; len(ifs) > 0 && ifs[0].Name != "" {
		return ifs[0].Name
	}
	if n := v.Spec.Networks; len(n) > 0 && n[0].Name != "" {
		return n[0].Name
	}
	if s := v.Status.Interfaces; len(s) > 0 && s[0].Name != "" {
		return s[0].Name
	}
	return DefaultInterface
}

// InterfaceStatus returns the status of the named interface. A VMI with a
// single unnamed (or differently named) status entry yields that entry:
// older guest agents report no name.
func (v *VMI) InterfaceStatus(name string) (InterfaceStatus, bool) {
	for _, s := range v.Status.Interfaces {
		if s.Name == name {
			return s, true
		}
	}
	if len(v.Status.Interfaces) == 1 && v.Status.Interfaces[0].Name == "" {
		return v.Status.Interfaces[0], true
	}
	return InterfaceStatus{}, false
}

// ToUnstructured builds a VMI object (for tests, labs and tools that create
// VMIs without kubevirt.io/api). Status is included; the API server ignores
// it on create because of the status subresource.
func ToUnstructured(v *VMI) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{Object: map[string]interface{}{}}
	u.SetGroupVersionKind(VMIGVK)
	u.SetNamespace(v.Namespace)
	u.SetName(v.Name)
	u.SetLabels(v.Labels)
	u.SetAnnotations(v.Annotations)
	spec, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&v.Spec)
	if err != nil {
		return nil, fmt.Errorf("vmi %s/%s: spec: %w", v.Namespace, v.Name, err)
	}
	u.Object["spec"] = spec
	if err := SetStatus(u, v.Status); err != nil {
		return nil, err
	}
	return u, nil
}

// SetStatus replaces the status of u.
func SetStatus(u *unstructured.Unstructured, s Status) error {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&s)
	if err != nil {
		return fmt.Errorf("vmi %s/%s: status: %w", u.GetNamespace(), u.GetName(), err)
	}
	u.Object["status"] = m
	return nil
}

// NewList returns an empty VMI list for client.List.
func NewList() *unstructured.UnstructuredList {
	l := &unstructured.UnstructuredList{}
	l.SetGroupVersionKind(VMIListGVK)
	return l
}

// NewObject returns an empty VMI for client.Get and watches.
func NewObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(VMIGVK)
	return u
}
