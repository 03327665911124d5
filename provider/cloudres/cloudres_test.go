package cloudres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var timeoutTypes = map[string]attr.Type{
	"create": types.StringType, "read": types.StringType, "update": types.StringType, "delete": types.StringType,
}

func value(t *testing.T, create string) timeouts.Value {
	t.Helper()
	obj, d := types.ObjectValue(timeoutTypes, map[string]attr.Value{
		"create": types.StringValue(create), "read": types.StringNull(), "update": types.StringNull(), "delete": types.StringNull(),
	})
	if d.HasError() {
		t.Fatal(d)
	}
	return timeouts.Value{Object: obj}
}

func TestTimeoutDefaultsAndConfigured(t *testing.T) {
	ctx := context.Background()
	null := timeouts.Value{Object: types.ObjectNull(timeoutTypes)}
	for op, want := range map[Op]time.Duration{Create: DefaultCreate, Read: DefaultRead, Update: DefaultUpdate, Delete: DefaultDelete} {
		got, d := Timeout(ctx, null, op)
		if d.HasError() || got != want {
			t.Errorf("%s without a timeouts block: %v %v, want %v", op, got, d, want)
		}
	}
	got, d := Timeout(ctx, value(t, "90s"), Create)
	if d.HasError() || got != 90*time.Second {
		t.Errorf("create = 90s: got %v %v", got, d)
	}
	if got, _ := Timeout(ctx, value(t, "90s"), Read); got != DefaultRead {
		t.Errorf("read falls back to its default when only create is set: got %v", got)
	}
}

func TestWithTimeoutRefusesBadDuration(t *testing.T) {
	var diags diag.Diagnostics
	ctx, cancel, ok := WithTimeout(context.Background(), value(t, "ten minutes"), Create, &diags)
	defer cancel()
	if ok || !diags.HasError() {
		t.Fatalf("a timeout that is not a Go duration was accepted: ok=%v diags=%v", ok, diags)
	}
	if _, has := ctx.Deadline(); has {
		t.Error("the context got a deadline from an invalid timeout")
	}
	diags = nil
	ctx, cancel, ok = WithTimeout(context.Background(), value(t, "2m"), Create, &diags)
	defer cancel()
	dl, has := ctx.Deadline()
	if !ok || !has || time.Until(dl) > 2*time.Minute || time.Until(dl) < time.Minute {
		t.Errorf("create = 2m: ok=%v deadline in %v", ok, time.Until(dl))
	}
}

func TestHasUnknown(t *testing.T) {
	known := map[string]attr.Value{
		"port":   types.StringValue("51820"),
		"source": types.SetValueMust(types.StringType, []attr.Value{types.StringValue("192.0.2.0/24")}),
	}
	if HasUnknown(known) {
		t.Error("known attributes reported unknown")
	}
	for name, v := range map[string]attr.Value{
		"attribute":     types.StringUnknown(),
		"set":           types.SetUnknown(types.StringType),
		"set's element": types.SetValueMust(types.StringType, []attr.Value{types.StringValue("192.0.2.0/24"), types.StringUnknown()}),
	} {
		if !HasUnknown(map[string]attr.Value{"port": types.StringValue("1"), "x": v}) {
			t.Errorf("an unknown %s was not noticed", name)
		}
	}
}

func TestTimeoutsBlockSaysWhatItWaitsFor(t *testing.T) {
	b := TimeoutsBlock(context.Background(), "waiting for Hetzner Cloud actions")
	attrs := b.GetNestedObject().GetAttributes()
	for _, op := range []string{"create", "update"} {
		if d := attrs[op].GetDescription(); !strings.Contains(d, "waiting for Hetzner Cloud actions") || !strings.Contains(d, "10m0s") {
			t.Errorf("%s description %q", op, d)
		}
	}
}
