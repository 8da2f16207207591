package kubevirt

import (
	"context"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// PatchAnnotations sets annotations on a VMI with one merge patch, which
// touches nothing else of the object (KubeVirt owns the rest of it). Both
// `netbridgectl cutover` and the controller's automatic cutover write the
// cutover annotation through it.
func PatchAnnotations(ctx context.Context, c client.Client, vm types.NamespacedName, annotations map[string]string) error {
	u := NewObject()
	u.SetNamespace(vm.Namespace)
	u.SetName(vm.Name)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return fmt.Errorf("annotation patch for virtualmachineinstance %s: %w", vm, err)
	}
	return c.Patch(ctx, u, client.RawPatch(types.MergePatchType, patch))
}
