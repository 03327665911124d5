package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"

	"gopkg.in/yaml.v3"
)

// MaxSize bounds a config document; real ones are a few KiB.
const MaxSize = 1 << 20

// Parse decodes one YAML document strictly (unknown fields are errors),
// applies defaults and validates the result.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config: document is %d bytes, larger than the %d byte limit", len(data), MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: document is empty; write a meshspan/v1 MachineConfig (the provider's machine_config output)")
		}
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) == nil {
			if ke := unknownKey(&doc, reflect.TypeFor[Config]()); ke != nil {
				return nil, ke
			}
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document; keep exactly one MachineConfig per file")
	}
	if c.APIVersion != APIVersion {
		return nil, fmt.Errorf("config: apiVersion is %q; set apiVersion: %s", c.APIVersion, APIVersion)
	}
	c.normalize()
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Render writes the config as YAML, defaults filled in, after validating it.
// Parse(Render(c)) yields c again.
func Render(c *Config) ([]byte, error) {
	out := c.clone()
	out.normalize()
	out.ApplyDefaults()
	if err := out.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&out); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: render: %w", err)
	}
	return buf.Bytes(), nil
}

// normalize makes empty lists and maps nil, as the YAML encoder omits them,
// so that Parse(Render(c)) equals c whether a list was written as [] or left out.
func (c *Config) normalize() {
	nilIfEmpty(&c.Discovery.Endpoints)
	nilIfEmpty(&c.EndpointFilters)
	nilIfEmpty(&c.ExtraEndpoints)
	nilIfEmpty(&c.AdvertisedNetworks)
	nilIfEmpty(&c.LANBypass)
	c.Filters.normalize()
	if len(c.Node.Labels) == 0 {
		c.Node.Labels = nil
	}
	if len(c.StaticPeers) == 0 {
		c.StaticPeers = nil
	}
	for i := range c.StaticPeers {
		nilIfEmpty(&c.StaticPeers[i].Endpoints)
		nilIfEmpty(&c.StaticPeers[i].Networks)
	}
	if len(c.Firewall.Rules) == 0 {
		c.Firewall.Rules = nil
	}
	for i := range c.Firewall.Rules {
		nilIfEmpty(&c.Firewall.Rules[i].Sources)
	}
}

func nilIfEmpty(s *[]string) {
	if len(*s) == 0 {
		*s = nil
	}
}

// clone copies c deeply enough that normalize and ApplyDefaults on the copy
// leave c untouched (Render must not change its argument).
func (c *Config) clone() Config {
	out := *c
	if c.Node.Labels != nil {
		out.Node.Labels = make(map[string]string, len(c.Node.Labels))
		for k, v := range c.Node.Labels {
			out.Node.Labels[k] = v
		}
	}
	out.StaticPeers = append([]StaticPeer(nil), c.StaticPeers...)
	out.Firewall.Rules = append([]FirewallRule(nil), c.Firewall.Rules...)
	out.Filters.ApprovedRoutes = append([]ApprovedRoute(nil), c.Filters.ApprovedRoutes...)
	return out
}
