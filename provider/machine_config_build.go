package provider

// Turning the meshspan_machine_config model into an internal/config.Config,
// tracking which inputs are still unknown at plan time, and mapping the
// config's YAML field paths back to the attributes the user wrote.

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-framework/types/basetypes"

	"github.com/meshspan/terraform-provider-meshspan/internal/clusterkey"
	"github.com/meshspan/terraform-provider-meshspan/internal/config"
	"github.com/meshspan/terraform-provider-meshspan/internal/userdata"
)

// Defaults of the optional+computed inputs.
const defaultPlatform = "generic"

// mcBuild collects a config from the model. Unknown values are left zero and
// their YAML paths recorded, so validation can skip what is not known yet.
type mcBuild struct {
	cfg   config.Config
	agent userdata.Install
	// platform is the user_data target; "" while unknown.
	platform string
	unknown  []string // YAML paths (or "agent_install", "platform") not known yet
	// zero lists numeric fields set explicitly to 0, which the config would
	// otherwise silently replace with their default.
	zero []string
}

func (b *mcBuild) str(v types.String, yamlPath string) string {
	if v.IsUnknown() {
		b.unknown = append(b.unknown, yamlPath)
		return ""
	}
	return v.ValueString()
}

func (b *mcBuild) list(v types.List, yamlPath string) []string {
	if v.IsUnknown() {
		b.unknown = append(b.unknown, yamlPath)
		return nil
	}
	if v.IsNull() {
		return nil
	}
	var out []string
	for i, e := range v.Elements() {
		s, _ := e.(types.String)
		if s.IsUnknown() {
			b.unknown = append(b.unknown, fmt.Sprintf("%s[%d]", yamlPath, i))
		}
		out = append(out, s.ValueString())
	}
	return out
}

// int reads a number; null or unknown is 0, which ApplyDefaults replaces
// with the default.
func (b *mcBuild) int(v types.Int64, yamlPath string) int {
	switch {
	case v.IsUnknown():
		b.unknown = append(b.unknown, yamlPath)
		return 0
	case v.IsNull():
		return 0
	}
	n := v.ValueInt64()
	if n == 0 {
		b.zero = append(b.zero, yamlPath)
	}
	// Where int is 32 bits, a value it cannot hold would wrap, perhaps into
	// range: -1 keeps it visible to the validator. Elsewhere the validator
	// quotes the value as written.
	if int64(int(n)) != n {
		return -1
	}
	return int(n)
}

func (b *mcBuild) bool(v types.Bool, yamlPath string) bool {
	if v.IsUnknown() {
		b.unknown = append(b.unknown, yamlPath)
	}
	return v.ValueBool()
}

func mcObjAttrs(v attr.Value) map[string]attr.Value {
	o, ok := v.(basetypes.ObjectValue)
	if !ok || o.IsNull() || o.IsUnknown() {
		return nil
	}
	return o.Attributes()
}

func mcAttrStr(m map[string]attr.Value, k string) types.String {
	s, _ := m[k].(types.String)
	return s
}

func mcAttrList(m map[string]attr.Value, k string) types.List {
	l, ok := m[k].(types.List)
	if !ok {
		return types.ListNull(types.StringType)
	}
	return l
}

func mcAttrInt(m map[string]attr.Value, k string) types.Int64 {
	v, ok := m[k].(types.Int64)
	if !ok {
		return types.Int64Null()
	}
	return v
}

func mcAttrBool(m map[string]attr.Value, k string) types.Bool {
	v, _ := m[k].(types.Bool)
	return v
}

// filters converts the filters attribute.
func (b *mcBuild) filters(v types.Object) {
	if v.IsUnknown() {
		b.unknown = append(b.unknown, "filters")
		return
	}
	f := mcObjAttrs(v)
	if f == nil {
		return
	}
	c := &b.cfg.Filters
	c.ExcludeAdvertisedNetworks = b.list(mcAttrList(f, "exclude_advertised_networks"), "filters.excludeAdvertisedNetworks")
	c.PeerEndpoints = b.list(mcAttrList(f, "peer_endpoints"), "filters.peerEndpoints")
	routes, _ := f["approved_routes"].(types.List)
	if routes.IsUnknown() {
		b.unknown = append(b.unknown, "filters.approvedRoutes")
	}
	for i, e := range routes.Elements() {
		field := fmt.Sprintf("filters.approvedRoutes[%d]", i)
		a := mcObjAttrs(e)
		if a == nil {
			b.unknown = append(b.unknown, field)
			continue
		}
		c.ApprovedRoutes = append(c.ApprovedRoutes, config.ApprovedRoute{
			PublicKey: b.str(mcAttrStr(a, "public_key"), field+".publicKey"),
			Networks:  b.list(mcAttrList(a, "networks"), field+".networks"),
		})
	}
}

// newMCBuild converts the model. It never fails: problems surface when the
// result is validated.
func newMCBuild(m *machineConfigModel) *mcBuild {
	b := &mcBuild{}
	c := &b.cfg
	c.APIVersion, c.Kind = config.APIVersion, config.Kind
	c.Cluster.ID = b.str(m.ClusterID, "cluster.id")
	c.Cluster.Secret = b.str(m.ClusterSecret, "cluster.secret")
	c.Node.Name = b.str(m.NodeName, "node.name")
	switch {
	case m.Labels.IsUnknown():
		b.unknown = append(b.unknown, "node.labels")
	case !m.Labels.IsNull():
		for k, v := range m.Labels.Elements() {
			s, _ := v.(types.String)
			if s.IsUnknown() {
				b.unknown = append(b.unknown, "node.labels."+k)
			}
			if c.Node.Labels == nil {
				c.Node.Labels = map[string]string{}
			}
			c.Node.Labels[k] = s.ValueString()
		}
	}
	c.Discovery.Endpoints = b.list(m.DiscoveryEndpoints, "discovery.endpoints")
	c.Discovery.CACertificate = b.str(m.DiscoveryCACertificate, "discovery.caCertificate")
	if m.StaticPeers.IsUnknown() {
		b.unknown = append(b.unknown, "staticPeers")
	}
	for i, e := range m.StaticPeers.Elements() {
		field := fmt.Sprintf("staticPeers[%d]", i)
		a := mcObjAttrs(e)
		if a == nil {
			b.unknown = append(b.unknown, field)
			c.StaticPeers = append(c.StaticPeers, config.StaticPeer{})
			continue
		}
		c.StaticPeers = append(c.StaticPeers, config.StaticPeer{
			Name:      b.str(mcAttrStr(a, "name"), field+".name"),
			PublicKey: b.str(mcAttrStr(a, "public_key"), field+".publicKey"),
			Address:   b.str(mcAttrStr(a, "address"), field+".address"),
			Endpoints: b.list(mcAttrList(a, "endpoints"), field+".endpoints"),
			Networks:  b.list(mcAttrList(a, "networks"), field+".networks"),
			RelayPort: b.int(mcAttrInt(a, "relay_port"), field+".relayPort"),
		})
	}
	c.WireGuard.ListenPort = b.int(m.ListenPort, "wireguard.listenPort")
	c.WireGuard.MTU = b.int(m.MTU, "wireguard.mtu")
	c.EndpointFilters = b.list(m.EndpointFilters, "endpointFilters")
	c.ExtraEndpoints = b.list(m.ExtraEndpoints, "extraEndpoints")
	c.AdvertisedNetworks = b.list(m.AdvertisedNetworks, "advertisedNetworks")
	c.LANBypass = b.list(m.LANBypass, "lanBypass")
	c.AllowDownPeerBypass = b.bool(m.AllowDownPeerBypass, "allowDownPeerBypass")
	c.AllowWideAdvertisedNetworks = b.bool(m.AllowWideAdvertised, "allowWideAdvertisedNetworks")
	b.filters(m.Filters)
	c.Relay.Enabled = b.bool(m.Relay, "relay")
	c.Relay.Port = b.int(m.RelayPort, "relay.port")

	if m.Firewall.IsUnknown() {
		b.unknown = append(b.unknown, "firewall")
	} else if fw := mcObjAttrs(m.Firewall); fw != nil {
		c.Firewall.DefaultAction = b.str(mcAttrStr(fw, "default_action"), "firewall.defaultAction")
		rules, _ := fw["rules"].(types.List)
		if rules.IsUnknown() {
			b.unknown = append(b.unknown, "firewall.rules")
		}
		for i, e := range rules.Elements() {
			field := fmt.Sprintf("firewall.rules[%d]", i)
			a := mcObjAttrs(e)
			if a == nil {
				b.unknown = append(b.unknown, field)
				c.Firewall.Rules = append(c.Firewall.Rules, config.FirewallRule{Protocol: "tcp"})
				continue
			}
			c.Firewall.Rules = append(c.Firewall.Rules, config.FirewallRule{
				Name:     b.str(mcAttrStr(a, "name"), field+".name"),
				Protocol: b.str(mcAttrStr(a, "protocol"), field+".protocol"),
				Port:     b.str(mcAttrStr(a, "port"), field+".port"),
				Sources:  b.list(mcAttrList(a, "sources"), field+".sources"),
				Action:   b.str(mcAttrStr(a, "action"), field+".action"),
			})
		}
	}

	switch {
	case m.AgentInstall.IsUnknown():
		b.unknown = append(b.unknown, "agent_install")
		b.agent.Preinstalled = true
	case m.AgentInstall.IsNull():
		b.agent.Preinstalled = true
	default:
		a := mcObjAttrs(m.AgentInstall)
		b.agent.URL = b.str(mcAttrStr(a, "url"), "agent_install")
		b.agent.SHA256 = b.str(mcAttrStr(a, "sha256"), "agent_install")
		b.agent.Preinstalled = b.bool(mcAttrBool(a, "preinstalled"), "agent_install")
	}

	switch {
	case m.Platform.IsUnknown():
		b.unknown = append(b.unknown, "platform")
	case m.Platform.IsNull():
		b.platform = defaultPlatform
	default:
		b.platform = m.Platform.ValueString()
	}
	c.ApplyDefaults()
	return b
}

// isUnknown reports whether field lies at or under an unknown path.
func (b *mcBuild) isUnknown(field string) bool {
	for _, u := range b.unknown {
		if field == u || strings.HasPrefix(field, u+".") || strings.HasPrefix(field, u+"[") {
			return true
		}
	}
	return false
}

// onlySecretsUnknown reports whether everything but the cluster secrets is
// known: their encoded length is fixed, so the user_data size is known too.
func (b *mcBuild) onlySecretsUnknown() bool {
	for _, u := range b.unknown {
		if u != "cluster.id" && u != "cluster.secret" {
			return false
		}
	}
	return true
}

// validate runs the agent's own validator plus the provider's checks and
// reports each problem on the attribute it concerns. Problems on fields that
// are still unknown are left for later.
func (b *mcBuild) validate(diags *diag.Diagnostics) {
	c := &b.cfg
	for _, fe := range config.FieldErrors(c.Validate()) {
		if b.isUnknown(fe.Field) {
			continue
		}
		if fe.Field == "discovery.endpoints" && b.isUnknown("staticPeers") {
			continue
		}
		addFieldError(diags, fe)
	}
	for _, f := range b.zero {
		addFieldError(diags, &config.FieldError{Field: f, Msg: "0 is not allowed; set a value in range, or omit the attribute for its default"})
	}
	if c.Discovery.CACertificate != "" && !b.isUnknown("discovery.caCertificate") {
		if err := checkCAPEM(c.Discovery.CACertificate); err != nil {
			diags.AddAttributeError(path.Root("discovery_ca_certificate"), "Invalid discovery_ca_certificate", err.Error())
		}
	}
	if !b.isUnknown("cluster.id") && config.ValidateClusterID(c.Cluster.ID) == nil {
		prefix := clusterkey.MeshPrefix(c.Cluster.ID)
		for i, p := range c.StaticPeers {
			a, err := netip.ParseAddr(p.Address)
			if err == nil && a.Is6() && !prefix.Contains(a) && !b.isUnknown(fmt.Sprintf("staticPeers[%d].address", i)) {
				diags.AddAttributeError(path.Root("static_peers").AtListIndex(i).AtName("address"), "Invalid static_peers address",
					fmt.Sprintf("%q is outside this cluster's mesh prefix %s; use the address `meshspan-agent identity` prints on that node (it must share cluster_id)", p.Address, prefix))
			}
		}
	}
	if !b.isUnknown("agent_install") {
		if err := b.agent.Validate(); err != nil {
			field, msg, _ := strings.Cut(err.Error(), ": ")
			p := path.Root("agent_install")
			if name, ok := strings.CutPrefix(field, "agent_install."); ok {
				p = p.AtName(name)
			}
			diags.AddAttributeError(p, "Invalid "+p.String(), msg)
		}
	}
	if b.platform != "" {
		if _, ok := userdata.Limit(b.platform); !ok {
			diags.AddAttributeError(path.Root("platform"), "Invalid platform",
				fmt.Sprintf("%q is not a platform; use one of %s (it selects the user_data size limit)", b.platform, strings.Join(userdata.Platforms, ", ")))
		}
	}
}

func checkCAPEM(s string) error {
	rest := []byte(s)
	n := 0
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return fmt.Errorf("holds a %q PEM block; give only CA certificates (-----BEGIN CERTIFICATE-----)", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("certificate %d does not parse (%v); paste the CA certificate in PEM form", n+1, err)
		}
		n++
	}
	if n == 0 || strings.TrimSpace(string(rest)) != "" {
		return fmt.Errorf("is not a PEM certificate bundle; paste the CA certificate(s), e.g. file(\"ca.pem\"), starting with -----BEGIN CERTIFICATE-----")
	}
	return nil
}

// addFieldError reports a config FieldError on the attribute it came from.
func addFieldError(diags *diag.Diagnostics, fe *config.FieldError) {
	p, ok := attrPath(fe.Field)
	if !ok {
		diags.AddError("Invalid machine config", fe.Error())
		return
	}
	msg := fe.Msg
	if fe.Field == "discovery.endpoints" {
		msg = "no discovery endpoint and no static peer: set discovery_endpoints (e.g. [\"https://discovery.talos.dev/\"]) or static_peers, or this node can never find a peer"
	}
	diags.AddAttributeError(p, "Invalid "+p.String(), msg)
}

// yamlToAttr maps config YAML paths to data source attributes, longest first.
var yamlToAttr = []struct{ yaml, attr string }{
	{"discovery.caCertificate", "discovery_ca_certificate"},
	{"discovery.endpoints", "discovery_endpoints"},
	{"wireguard.listenPort", "listen_port"},
	{"wireguard.mtu", "mtu"},
	{"cluster.secret", "cluster_secret"},
	{"cluster.id", "cluster_id"},
	{"node.name", "node_name"},
	{"staticPeers", "static_peers"},
	{"endpointFilters", "endpoint_filters"},
	{"extraEndpoints", "extra_endpoints"},
	{"advertisedNetworks", "advertised_networks"},
	{"lanBypass", "lan_bypass"},
	{"allowDownPeerBypass", "allow_down_peer_bypass"},
	{"allowWideAdvertisedNetworks", "allow_wide_advertised_networks"},
	{"filters", "filters"},
	{"firewall", "firewall"},
}

var fieldStepRe = regexp.MustCompile(`^(?:\[(\d+)\]|\.([A-Za-z0-9]+))`)
var fieldCamelRe = regexp.MustCompile(`([a-z0-9])([A-Z])`)

// attrPath turns a config FieldError path ("firewall.rules[2].port") into the
// attribute path (firewall.rules[2].port, static_peers[0].public_key, ...).
func attrPath(field string) (path.Path, bool) {
	if key, ok := strings.CutPrefix(field, "node.labels."); ok {
		return path.Root("labels").AtMapKey(key), true
	}
	if field == "relay.port" {
		return path.Root("relay_port"), true
	}
	if field == "relay" || strings.HasPrefix(field, "relay.") {
		return path.Root("relay"), true
	}
	for _, m := range yamlToAttr {
		rest, ok := strings.CutPrefix(field, m.yaml)
		if !ok || (rest != "" && rest[0] != '.' && rest[0] != '[') {
			continue
		}
		p := path.Root(m.attr)
		for rest != "" {
			sm := fieldStepRe.FindStringSubmatch(rest)
			if sm == nil {
				return p, true
			}
			if sm[1] != "" {
				i, _ := strconv.Atoi(sm[1])
				p = p.AtListIndex(i)
			} else {
				p = p.AtName(strings.ToLower(fieldCamelRe.ReplaceAllString(sm[2], "${1}_${2}")))
			}
			rest = rest[len(sm[0]):]
		}
		return p, true
	}
	return path.Empty(), false
}
