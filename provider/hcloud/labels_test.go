package hcloud

import "testing"

func TestHcloudSelectorError(t *testing.T) {
	for _, ok := range []string{"role=worker", "role==worker", "role!=worker", "env in (prod,staging)", "env notin (dev)",
		"!draining", "mesh", "example.com/role=cp,env in (prod, staging),!draining", "role="} {
		if err := selectorError(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", " ", "role=worker,,env=prod", "env in prod", "env in (a", "env in (a))", "role=work er",
		"-role=x", "role=x\n", "role=x\nenv=y", "hetzner cloud=x"} {
		if err := selectorError(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHcloudLabelError(t *testing.T) {
	for k, v := range map[string]string{"cluster": "demo", "example.com/role": "cp", "empty": ""} {
		if err := labelError(k, v); err != nil {
			t.Errorf("%s=%s refused: %v", k, v, err)
		}
	}
	for k, v := range map[string]string{"hetzner.cloud/x": "y", "team": "a\nb", "a\n": "b", "bad key": "x"} {
		if err := labelError(k, v); err == nil {
			t.Errorf("%q=%q accepted", k, v)
		}
	}
}
