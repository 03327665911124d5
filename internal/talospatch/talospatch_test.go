package talospatch

import (
	"strings"
	"testing"
)

const (
	testID     = "8XuV9TZHW08DOk3bVxQjH9ih_TBKjnh-j44tsCLSBzo="
	testSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

func TestFormFor(t *testing.T) {
	for v, want := range map[string]Form{
		"v1.11.5": FormLegacy, "1.12": FormLegacy, "v1.10.0": FormLegacy,
		"v1.13.0": FormDocument, "v1.13.0-beta.1": FormDocument, "1.14": FormDocument,
	} {
		got, err := FormFor(v)
		if err != nil || got != want {
			t.Errorf("FormFor(%q) = %q, %v; want %q", v, got, err, want)
		}
	}
	for _, bad := range []string{"", "latest", "v2.0.0", "1", "v1.x", "1.2.3.4"} {
		if _, err := FormFor(bad); err == nil {
			t.Errorf("FormFor(%q) accepted", bad)
		}
	}
}

func TestValidateNamesTheAttribute(t *testing.T) {
	cases := []struct {
		name string
		o    Options
		attr string
	}{
		{"version", Options{TalosVersion: "latest"}, "talos_version"},
		{"id", Options{ClusterID: "short"}, "cluster_id"},
		{"secret", Options{ClusterSecret: "c2hvcnQ="}, "cluster_secret"},
		{"scheme", Options{DiscoveryEndpoint: "grpc://d.example.com:3000"}, "discovery_endpoint"},
		{"path", Options{DiscoveryEndpoint: "https://d.example.com/api"}, "discovery_endpoint"},
		{"mtu", Options{MTU: 1200}, "mtu"},
		{"filter", Options{EndpointFilters: []string{"0.0.0.0/0", "!10.0.0/8"}}, "endpoint_filters[1]"},
		{"exclude", Options{TalosVersion: "v1.13.0", ExcludeAdvertisedNetworks: []string{"10.0.0.1/8"}}, "exclude_advertised_networks[0]"},
		{"exclude on legacy", Options{ExcludeAdvertisedNetworks: []string{"10.0.0.0/8"}}, "exclude_advertised_networks"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			if o.TalosVersion == "" {
				o.TalosVersion = "v1.11.5"
			}
			if o.ClusterID == "" {
				o.ClusterID = testID
			}
			if o.ClusterSecret == "" {
				o.ClusterSecret = testSecret
			}
			errs := Validate(o)
			if len(errs) != 1 || errs[0].Attribute != c.attr {
				t.Fatalf("Validate = %v, want one error on %s", errs, c.attr)
			}
			if _, err := Render(o); err == nil {
				t.Fatal("Render accepted what Validate refused")
			}
		})
	}
}

func TestRenderForms(t *testing.T) {
	o := Options{TalosVersion: "v1.11.5", ClusterID: testID, ClusterSecret: testSecret,
		DiscoveryEndpoint: "http://192.0.2.10:3000/", MTU: 1400, EndpointFilters: []string{"0.0.0.0/0", "!192.168.0.0/16", "::/0"}}
	p, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Form != FormLegacy || strings.Contains(p.YAML, "---") || !strings.Contains(p.YAML, "kubespan:") ||
		!strings.Contains(p.YAML, "endpoint: http://192.0.2.10:3000/") || !strings.Contains(p.YAML, "mtu: 1400") {
		t.Fatalf("legacy patch:\n%s", p.YAML)
	}
	o.TalosVersion, o.ExcludeAdvertisedNetworks = "v1.13.0", []string{"192.168.1.0/24"}
	p, err = Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Form != FormDocument || !strings.Contains(p.YAML, "---\napiVersion: v1alpha1\nkind: KubeSpanConfig\n") ||
		strings.Contains(p.YAML, "machine:") || !strings.Contains(p.YAML, "- 192.168.1.0/24") {
		t.Fatalf("document patch:\n%s", p.YAML)
	}
	o.DiscoveryEndpoint = ""
	if p, _ = Render(o); !strings.Contains(p.YAML, "endpoint: "+SideroDiscoveryEndpoint) {
		t.Fatalf("default endpoint missing:\n%s", p.YAML)
	}
}
