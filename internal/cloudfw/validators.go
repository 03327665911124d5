package cloudfw

import (
	"context"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
)

// PortValidator checks a rule's port attribute with ValidatePort, so both
// clouds' schemas refuse the same spellings with the same message.
func PortValidator() validator.String { return portValidator{} }

// CIDRValidator checks one address with ParseCIDR; use it inside
// setvalidator.ValueStringsAre.
func CIDRValidator() validator.String { return cidrValidator{} }

type portValidator struct{}

func (portValidator) Description(context.Context) string {
	return `a port ("6443"), a range ("30000-32767"), or omitted for all ports`
}

func (v portValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (portValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := ValidatePort(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid port", err.Error())
	}
}

type cidrValidator struct{}

func (cidrValidator) Description(context.Context) string {
	return "a CIDR with no host bits, or a bare IP address"
}

func (v cidrValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (cidrValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if _, err := ParseCIDR(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid CIDR", err.Error())
	}
}
