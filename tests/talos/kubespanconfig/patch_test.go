package kubespanconfig

import (
	"strings"
	"testing"
	"time"

	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/configpatcher"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/constants"

	"github.com/meshspan/terraform-provider-meshspan/internal/talospatch"
)

type metal struct{}

func (metal) String() string        { return "metal" }
func (metal) RequiresInstall() bool { return true }
func (metal) InContainer() bool     { return false }

func workerConfig(t *testing.T) (talosconfig.Provider, *secrets.Bundle) {
	t.Helper()
	contract, err := talosconfig.ParseContractFromVersion("v1.13.0")
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), contract)
	if err != nil {
		t.Fatal(err)
	}
	in, err := generate.NewInput("hybrid", "https://192.0.2.10:6443", constants.DefaultKubernetesVersion,
		generate.WithSecretsBundle(bundle), generate.WithVersionContract(contract), generate.WithInstallDisk("/dev/sda"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := in.Config(machine.TypeWorker)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, bundle
}

func apply(cfg talosconfig.Provider, patch string) (talosconfig.Provider, error) {
	patches, err := configpatcher.LoadPatches([]string{patch})
	if err != nil {
		return nil, err
	}
	out, err := configpatcher.Apply(configpatcher.WithConfig(cfg), patches)
	if err != nil {
		return nil, err
	}
	patched, err := out.Config()
	if err != nil {
		return nil, err
	}
	if _, err := patched.Validate(metal{}); err != nil {
		return nil, err
	}
	raw, err := patched.EncodeBytes()
	if err != nil {
		return nil, err
	}
	return configloader.NewFromBytes(raw)
}

// TestKubeSpanConfigDocument: machinery v1.13.0's generator, patcher and
// validator take the document-form patch, and the KubeSpan settings Talos
// reads are the ones we rendered.
func TestKubeSpanConfigDocument(t *testing.T) {
	cfg, bundle := workerConfig(t)
	o := talospatch.Options{TalosVersion: "v1.13.0", ClusterID: bundle.Cluster.ID, ClusterSecret: bundle.Cluster.Secret,
		DiscoveryEndpoint: "https://discovery.example.com:3000/", MTU: 1380,
		EndpointFilters:           []string{"0.0.0.0/0", "!192.168.0.0/16", "::/0"},
		ExcludeAdvertisedNetworks: []string{"10.244.0.0/16", "2001:db8:1::/48"},
		AllowDownPeerBypass:       true, AdvertiseKubernetesNetworks: true,
	}
	p, err := talospatch.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Form != talospatch.FormDocument {
		t.Fatalf("form %q for v1.13.0", p.Form)
	}
	res, err := apply(cfg, p.YAML)
	if err != nil {
		t.Fatalf("machinery v1.13.0 refused the patched config: %v\n%s", err, p.YAML)
	}
	ks := res.NetworkKubeSpanConfig()
	if ks == nil {
		t.Fatal("no KubeSpan config after the patch")
	}
	var excluded []string
	for _, n := range ks.Filters().ExcludeAdvertisedNetworks() {
		excluded = append(excluded, n.String())
	}
	if !ks.Enabled() || ks.ForceRouting() || !ks.AdvertiseKubernetesNetworks() || ks.HarvestExtraEndpoints() || ks.MTU() != 1380 ||
		strings.Join(ks.Filters().Endpoints(), ",") != strings.Join(o.EndpointFilters, ",") ||
		strings.Join(excluded, ",") != strings.Join(o.ExcludeAdvertisedNetworks, ",") {
		t.Fatalf("KubeSpan after patch: enabled %v force %v advertise %v harvest %v mtu %d filters %v exclude %v",
			ks.Enabled(), ks.ForceRouting(), ks.AdvertiseKubernetesNetworks(), ks.HarvestExtraEndpoints(), ks.MTU(), ks.Filters().Endpoints(), excluded)
	}
	c := res.Cluster()
	if c.ID() != o.ClusterID || c.Secret() != o.ClusterSecret || c.Discovery().Registries().Service().Endpoint() != o.DiscoveryEndpoint {
		t.Fatalf("cluster after patch: id %q endpoint %q", c.ID(), c.Discovery().Registries().Service().Endpoint())
	}
}

// TestLegacyFormStillAccepted: a Talos 1.13 node also takes the legacy form
// (what a talos_version below v1.13 renders), so a mixed-version cluster can
// share one patch until every node is on 1.13.
func TestLegacyFormStillAccepted(t *testing.T) {
	cfg, bundle := workerConfig(t)
	p, err := talospatch.Render(talospatch.Options{TalosVersion: "v1.12", ClusterID: bundle.Cluster.ID, ClusterSecret: bundle.Cluster.Secret})
	if err != nil {
		t.Fatal(err)
	}
	res, err := apply(cfg, p.YAML)
	if err != nil {
		t.Fatalf("machinery v1.13.0 refused the legacy form: %v", err)
	}
	if ks := res.NetworkKubeSpanConfig(); ks == nil || !ks.Enabled() {
		t.Fatal("KubeSpan not enabled by the legacy form on v1.13")
	}
}
