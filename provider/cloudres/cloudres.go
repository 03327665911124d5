// Package cloudres holds what the cloud firewall resources share beyond
// HTTP: the `timeouts` block with its defaults, the deadline an operation
// runs under, and the check that a planned object is fully known.
package cloudres

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// Defaults of the timeouts block. Create, update and delete wait for the
// cloud to apply a change (actions, a firewall's status), read does not.
const (
	DefaultCreate = 10 * time.Minute
	DefaultRead   = 5 * time.Minute
	DefaultUpdate = 10 * time.Minute
	DefaultDelete = 10 * time.Minute
)

// Op names a CRUD operation.
type Op int

const (
	Create Op = iota
	Read
	Update
	Delete
)

func (op Op) String() string {
	return [...]string{"create", "read", "update", "delete"}[op]
}

// TimeoutsBlock is the `timeouts` block; waiting says what create and update
// wait for ("waiting for Hetzner Cloud actions").
func TimeoutsBlock(ctx context.Context, waiting string) schema.Block {
	return timeouts.Block(ctx, timeouts.Opts{Create: true, Read: true, Update: true, Delete: true,
		CreateDescription: fmt.Sprintf("How long creating the firewall may take, %s, as a Go duration (`30s`, `5m`). Default `%s`.", waiting, DefaultCreate),
		ReadDescription:   fmt.Sprintf("How long reading the firewall may take, as a Go duration. Default `%s`.", DefaultRead),
		UpdateDescription: fmt.Sprintf("How long updating the firewall may take, %s, as a Go duration. Default `%s`.", waiting, DefaultUpdate),
		DeleteDescription: fmt.Sprintf("How long detaching and deleting the firewall may take, as a Go duration. Default `%s`.", DefaultDelete),
	})
}

// Timeout is how long op may take: the configured value or its default.
func Timeout(ctx context.Context, t timeouts.Value, op Op) (time.Duration, diag.Diagnostics) {
	switch op {
	case Create:
		return t.Create(ctx, DefaultCreate)
	case Read:
		return t.Read(ctx, DefaultRead)
	case Update:
		return t.Update(ctx, DefaultUpdate)
	default:
		return t.Delete(ctx, DefaultDelete)
	}
}

// WithTimeout bounds ctx by op's timeout. On an invalid timeout it appends
// the error to diags and returns ctx unchanged with ok false.
func WithTimeout(ctx context.Context, t timeouts.Value, op Op, diags *diag.Diagnostics) (context.Context, context.CancelFunc, bool) {
	d, dd := Timeout(ctx, t, op)
	if diags.Append(dd...); dd.HasError() {
		return ctx, func() {}, false
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, true
}

// HasUnknown reports whether any attribute, or any element of a set
// attribute, is unknown: such a rule cannot be checked before apply.
func HasUnknown(attrs map[string]attr.Value) bool {
	for _, v := range attrs {
		if v.IsUnknown() {
			return true
		}
		if s, ok := v.(types.Set); ok {
			for _, e := range s.Elements() {
				if e.IsUnknown() {
					return true
				}
			}
		}
	}
	return false
}
