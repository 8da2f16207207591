package v1alpha1

import (
	"encoding/json"
	"fmt"
	"time"
)

// Automatic cutover (segments[].cutoverPolicy AfterMigration). The
// controller activates and rolls back through the same annotation as
// `netbridgectl cutover` (AnnotationCutover), and records what it did in
// AnnotationAutoCutover on the VMI, from which the BridgeEndpoints'
// ConditionAutoCutover is derived (the endpoints keep one writer).
const (
	// AnnotationAutoCutover on a VMI holds the controller's AutoCutoverRecord
	// (JSON). Only the controller writes it; a VMI whose cutover annotation
	// was set without it is a person's decision and left alone.
	AnnotationAutoCutover = "netbridge.io/auto-cutover"

	// ConditionAutoCutover on a BridgeEndpoint whose VM the controller
	// activated: False while verify's checks are awaited
	// (ReasonAwaitingVerify) and after a rollback (the reason names the
	// first check that failed), True once verified.
	ConditionAutoCutover = "AutoCutover"

	ReasonAwaitingVerify = "AwaitingVerify"
	ReasonVerified       = "Verified"
	// ReasonRouteNotAdvertised: the active gateway did not advertise the
	// VM's host routes.
	ReasonRouteNotAdvertised = "RouteNotAdvertised"
	// ReasonFDBNotProgrammed: the active gateway has no FDB entry for the
	// VM's MAC towards its node.
	ReasonFDBNotProgrammed = "FDBNotProgrammed"
	// ReasonNotReachable: the VM did not answer the active gateway's ARP
	// (NDP) probe across the segment.
	ReasonNotReachable = "NotReachable"
	// ReasonNotReported: no active gateway, or it does not report the
	// endpoint at all.
	ReasonNotReported = "NotReported"

	// Event reasons on the VMI.
	EventAutoCutoverActivated  = "AutoCutoverActivated"
	EventAutoCutoverVerified   = "AutoCutoverVerified"
	EventAutoCutoverRolledBack = "AutoCutoverRolledBack"
)

// AutoCutoverState is where the controller's automatic cutover of a VM is.
type AutoCutoverState string

const (
	// AutoActivated: the controller set cutover=active at At and waits
	// for verify's checks until At + verifyTimeout.
	AutoActivated AutoCutoverState = "Activated"
	// AutoVerified: every check passed; the controller is done.
	AutoVerified AutoCutoverState = "Verified"
	// AutoRolledBack: the checks did not pass in time; the controller set
	// cutover=rollback and is done.
	AutoRolledBack AutoCutoverState = "RolledBack"
)

// AutoCutoverRecord is the value of AnnotationAutoCutover.
// +kubebuilder:object:generate=false
type AutoCutoverRecord struct {
	State AutoCutoverState `json:"state"`
	// At is when State was entered (RFC 3339).
	At time.Time `json:"at"`
	// Migration is the Forklift Migration ("namespace/name") that reported
	// the VM migrated.
	Migration string `json:"migration,omitempty"`
	// Deadline is when the checks must have passed (state Activated).
	Deadline *time.Time `json:"deadline,omitempty"`
	// Reason and Message say why (a ConditionAutoCutover reason).
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// ParseAutoCutover reads an AnnotationAutoCutover value; "" is no record.
func ParseAutoCutover(s string) (*AutoCutoverRecord, error) {
	if s == "" {
		return nil, nil
	}
	var r AutoCutoverRecord
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationAutoCutover, err)
	}
	switch r.State {
	case AutoActivated, AutoVerified, AutoRolledBack:
	default:
		return nil, fmt.Errorf("annotation %s: unknown state %q", AnnotationAutoCutover, r.State)
	}
	return &r, nil
}

// String is the annotation value.
func (r AutoCutoverRecord) String() string {
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return string(b)
}
