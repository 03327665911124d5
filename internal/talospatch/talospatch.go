// Package talospatch renders the Talos machine-config patch that puts a Talos
// node into a meshspan mesh: KubeSpan on, the service discovery registry
// pointed at the cluster's discovery service, and the cluster ID and secret
// meshspan nodes use. It is pure: no I/O, and it does not link Talos's
// machinery (tests/talos checks its output with machinery's loader, patcher
// and validator).
//
// Talos has two spellings of the KubeSpan settings. Up to Talos 1.12 they live
// in the v1alpha1 document under machine.network.kubespan; Talos 1.13 added
// the KubeSpanConfig document (machinery v1.13.0, config/types/network) and
// rejects a config that sets both. Discovery and the cluster identity stay in
// the v1alpha1 document (cluster.discovery, cluster.id, cluster.secret) in
// both.
package talospatch

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshspan/terraform-provider-meshspan/internal/config"
)

// SideroDiscoveryEndpoint is the discovery service Sidero Labs runs, the
// Talos default.
const SideroDiscoveryEndpoint = "https://discovery.talos.dev/"

// DocumentMinor is the first Talos 1.x minor release with the KubeSpanConfig
// document.
const DocumentMinor = 13

// Form is the spelling of the KubeSpan settings in the patch.
type Form string

const (
	// FormLegacy is machine.network.kubespan in the v1alpha1 document.
	FormLegacy Form = "machine.network.kubespan"
	// FormDocument is the KubeSpanConfig document (Talos >= 1.13).
	FormDocument Form = "KubeSpanConfig"
)

// Options are the inputs, named after the data source's attributes.
type Options struct {
	TalosVersion      string
	ClusterID         string
	ClusterSecret     string
	DiscoveryEndpoint string // "": SideroDiscoveryEndpoint
	MTU               int    // 0: config.DefaultMTU (Talos's default too)
	// EndpointFilters is KubeSpan's filters.endpoints: which of this node's
	// addresses it advertises as WireGuard endpoints.
	EndpointFilters []string
	// ExcludeAdvertisedNetworks is filters.excludeAdvertisedNetworks
	// (KubeSpanConfig document only): networks peers must not route to
	// this node.
	ExcludeAdvertisedNetworks   []string
	AllowDownPeerBypass         bool
	AdvertiseKubernetesNetworks bool
	HarvestExtraEndpoints       bool
}

// FieldError is a problem with one input, named by its attribute.
type FieldError struct {
	Attribute string
	Detail    string
}

func (e FieldError) Error() string { return e.Attribute + ": " + e.Detail }

// Patch is the rendered result.
type Patch struct {
	Form Form
	// YAML is the patch: one v1alpha1 strategic-merge document, followed by
	// a KubeSpanConfig document in FormDocument.
	YAML string
}

// ParseVersion reads a Talos version such as "v1.11.5", "1.13" or
// "v1.13.0-beta.1" and returns its major and minor numbers.
func ParseVersion(v string) (major, minor int, err error) {
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexAny(s, "-+"); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, fmt.Errorf("%q is not a Talos version; write it as talosctl version prints it, e.g. \"v1.11.5\" or \"v1.13\"", v)
	}
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("%q is not a Talos version; write it as talosctl version prints it, e.g. \"v1.11.5\" or \"v1.13\"", v)
		}
		nums[i] = n
	}
	if nums[0] != 1 {
		return 0, 0, fmt.Errorf("%q: only Talos 1.x is known (the patch forms were checked against Talos machinery v1.9.2, v1.11.5 and v1.13.0)", v)
	}
	return nums[0], nums[1], nil
}

// FormFor returns the form a Talos version takes.
func FormFor(talosVersion string) (Form, error) {
	_, minor, err := ParseVersion(talosVersion)
	if err != nil {
		return "", err
	}
	if minor >= DocumentMinor {
		return FormDocument, nil
	}
	return FormLegacy, nil
}

// Validate checks every input and returns one error per bad attribute.
func Validate(o Options) []FieldError {
	var errs []FieldError
	add := func(attr, format string, args ...any) {
		errs = append(errs, FieldError{Attribute: attr, Detail: fmt.Sprintf(format, args...)})
	}
	form, err := FormFor(o.TalosVersion)
	if err != nil {
		add("talos_version", "%v", err)
	}
	if err := config.ValidateClusterID(o.ClusterID); err != nil {
		add("cluster_id", "%v", err)
	}
	if err := config.ValidateClusterSecret(o.ClusterSecret); err != nil {
		add("cluster_secret", "%v", err)
	}
	if o.DiscoveryEndpoint != "" {
		if err := validateEndpoint(o.DiscoveryEndpoint); err != nil {
			add("discovery_endpoint", "%v", err)
		}
	}
	if o.MTU != 0 && (o.MTU < config.MinMTU || o.MTU > config.MaxMTU) {
		add("mtu", "%d is out of range; use %d..%d (Talos's minimum is %d; default %d)", o.MTU, config.MinMTU, config.MaxMTU, config.MinMTU, config.DefaultMTU)
	}
	for i, f := range o.EndpointFilters {
		if _, _, err := config.ParseEndpointFilter(f); err != nil {
			add(fmt.Sprintf("endpoint_filters[%d]", i), "%v", err)
		}
	}
	for i, n := range o.ExcludeAdvertisedNetworks {
		if _, err := config.ParsePrefix(n); err != nil {
			add(fmt.Sprintf("exclude_advertised_networks[%d]", i), "%v", err)
		}
	}
	if len(o.ExcludeAdvertisedNetworks) > 0 && form == FormLegacy {
		add("exclude_advertised_networks", "needs talos_version v1.%d or later: Talos %s's machine.network.kubespan.filters has only endpoints (excludeAdvertisedNetworks came with the KubeSpanConfig document); remove it or upgrade Talos", DocumentMinor, o.TalosVersion)
	}
	return errs
}

// validateEndpoint accepts what Talos accepts (a request URI whose path is
// empty or "/") and what the meshspan client can dial (http or https).
func validateEndpoint(raw string) error {
	u, err := url.ParseRequestURI(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL; use https://host[:port]/ (or http:// for a plaintext service)", raw)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("%q has scheme %q; use https:// (or http:// for a plaintext service)", raw, u.Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("%q has the path %q; Talos wants none: use %s://%s/", raw, u.Path, u.Scheme, u.Host)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q carries a query, fragment or user; use %s://%s/", raw, u.Scheme, u.Host)
	}
	return nil
}

// The YAML shapes, in the field order Talos documents them.
type v1alpha1Doc struct {
	Machine *machine `yaml:"machine,omitempty"`
	Cluster cluster  `yaml:"cluster"`
}

type machine struct {
	Network network `yaml:"network"`
}

type network struct {
	KubeSpan kubeSpan `yaml:"kubespan"`
}

type kubeSpan struct {
	APIVersion                  string   `yaml:"apiVersion,omitempty"`
	Kind                        string   `yaml:"kind,omitempty"`
	Enabled                     bool     `yaml:"enabled"`
	AdvertiseKubernetesNetworks bool     `yaml:"advertiseKubernetesNetworks"`
	AllowDownPeerBypass         bool     `yaml:"allowDownPeerBypass"`
	HarvestExtraEndpoints       bool     `yaml:"harvestExtraEndpoints"`
	MTU                         int      `yaml:"mtu"`
	Filters                     *filters `yaml:"filters,omitempty"`
}

type filters struct {
	Endpoints                 []string `yaml:"endpoints,omitempty"`
	ExcludeAdvertisedNetworks []string `yaml:"excludeAdvertisedNetworks,omitempty"`
}

type cluster struct {
	ID        string    `yaml:"id"`
	Secret    string    `yaml:"secret"`
	Discovery discovery `yaml:"discovery"`
}

type discovery struct {
	Enabled    bool       `yaml:"enabled"`
	Registries registries `yaml:"registries"`
}

type registries struct {
	Kubernetes registry `yaml:"kubernetes"`
	Service    registry `yaml:"service"`
}

type registry struct {
	Disabled bool   `yaml:"disabled"`
	Endpoint string `yaml:"endpoint,omitempty"`
}

// Render validates o and renders the patch.
func Render(o Options) (Patch, error) {
	if errs := Validate(o); len(errs) > 0 {
		return Patch{}, errs[0]
	}
	form, _ := FormFor(o.TalosVersion)
	endpoint := o.DiscoveryEndpoint
	if endpoint == "" {
		endpoint = SideroDiscoveryEndpoint
	}
	mtu := o.MTU
	if mtu == 0 {
		mtu = config.DefaultMTU
	}
	ks := kubeSpan{
		Enabled:                     true,
		AdvertiseKubernetesNetworks: o.AdvertiseKubernetesNetworks,
		AllowDownPeerBypass:         o.AllowDownPeerBypass,
		HarvestExtraEndpoints:       o.HarvestExtraEndpoints,
		MTU:                         mtu,
	}
	if len(o.EndpointFilters) > 0 || len(o.ExcludeAdvertisedNetworks) > 0 {
		ks.Filters = &filters{Endpoints: o.EndpointFilters}
		for _, n := range o.ExcludeAdvertisedNetworks {
			p, _ := config.ParsePrefix(n)
			ks.Filters.ExcludeAdvertisedNetworks = append(ks.Filters.ExcludeAdvertisedNetworks, p.String())
		}
	}
	base := v1alpha1Doc{
		Cluster: cluster{
			ID:     o.ClusterID,
			Secret: o.ClusterSecret,
			Discovery: discovery{
				Enabled: true,
				// meshspan nodes find members only through the service
				// registry; the Kubernetes registry also breaks KubeSpan
				// when the API endpoint is itself reached over KubeSpan
				// (the KubeSpan guide turns it off for that reason).
				Registries: registries{
					Kubernetes: registry{Disabled: true},
					Service:    registry{Endpoint: endpoint},
				},
			},
		},
	}
	var docs []any
	if form == FormLegacy {
		base.Machine = &machine{Network: network{KubeSpan: ks}}
		docs = append(docs, base)
	} else {
		ks.APIVersion, ks.Kind = "v1alpha1", string(FormDocument)
		docs = append(docs, base, ks)
	}
	var b strings.Builder
	for i, d := range docs {
		if i > 0 {
			b.WriteString("---\n")
		}
		out, err := yaml.Marshal(d)
		if err != nil {
			return Patch{}, fmt.Errorf("talospatch: render: %w", err)
		}
		b.Write(out)
	}
	return Patch{Form: form, YAML: b.String()}, nil
}
